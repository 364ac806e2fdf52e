//! Real helper servers for tests, the `demo` command and benches (loopback
//! only, ephemeral ports).

pub mod echo;
pub mod jwks_server;

pub use echo::EchoServer;
pub use jwks_server::JwksServer;
