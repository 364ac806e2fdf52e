//! The command implementations behind `main.rs`: run, demo, token, explain.

pub mod demo;
pub mod explain;
pub mod run;
pub mod token;
