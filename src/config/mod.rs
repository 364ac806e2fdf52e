//! `gateway.yaml` -> validated, compiled configuration (pure: files are read,
//! nothing is fetched).

pub mod model;

pub use model::*;
