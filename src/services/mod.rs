//! Background and side services: the admin endpoint, configuration reload
//! triggers, the Altinn access-list sync. Key refresh lives in `keys::cache`,
//! run on the control plane.

pub mod admin;
pub mod altinn;
pub mod reload;
