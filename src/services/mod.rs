//! Background and side services: the admin endpoint, configuration reload
//! triggers. Key refresh lives in `keys::cache`, run on the control plane.

pub mod admin;
pub mod reload;
