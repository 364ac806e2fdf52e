//! consent-gateway: a pingora reverse proxy that lets a request through only
//! when its Maskinporten token is genuine and the Altinn 3 consent it carries
//! covers exactly this request.
#![forbid(unsafe_code)]

pub mod altinn;
pub mod audit;
pub mod authz;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dev_issuer;
pub mod docs;
pub mod error;
pub mod gateway;
pub mod header_names;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod otlp;
pub mod policy;
pub mod proxy;
pub mod server;
pub mod services;
pub mod state;
pub mod support;
pub mod time;
pub mod trace_context;
pub mod upstream;
