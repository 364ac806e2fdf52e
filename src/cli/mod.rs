//! The command implementations behind `main.rs`: run, demo, token, explain,
//! altinn.

pub mod altinn;
pub mod demo;
pub mod explain;
pub mod run;
pub mod token;
