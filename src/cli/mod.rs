//! The command implementations behind `main.rs`: run, demo, token, explain, docs.

pub mod demo;
pub mod docs;
pub mod explain;
pub mod run;
pub mod token;
