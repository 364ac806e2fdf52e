//! A bare pingora pass-through proxy: every request goes to one upstream,
//! unchanged. The baseline the load comparison (`benches/load/compare.sh`)
//! measures consent-gateway against: same pingora version, same thread count,
//! same server and peer settings, no decision, no metrics, no audit.
//!
//! ```text
//! cargo run --release --example passthrough -- --listen 127.0.0.1:8090 --upstream 127.0.0.1:8081 --threads 1
//! ```
#![forbid(unsafe_code)]

use std::time::Duration;

use async_trait::async_trait;
use clap::Parser;
use pingora_core::apps::HttpServerOptions;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_proxy::{ProxyHttp, Session};

/// mimalloc, as in the gateway binary, so that the comparison measures the
/// proxy's work and not the allocator's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "A bare pingora pass-through proxy to one upstream")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: String,
    /// The one upstream, host:port (plain HTTP).
    #[arg(long)]
    upstream: String,
    /// Worker threads (the gateway's `server.threads`).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Also take HTTP/2 with prior knowledge (the gateway's `server.h2c`),
    /// with the gateway's HTTP/2 settings (`benches/load/h2.sh`).
    #[arg(long)]
    h2c: bool,
}

/// Forwards every request to `upstream`, with the peer settings the gateway
/// uses for a plain-HTTP upstream (`proxy::upstream::UpstreamPool`).
struct Passthrough {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Passthrough {
    type CTX = ();

    fn new_ctx(&self) {}

    /// Runs before connecting upstream: the one peer, every time.
    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream.as_str(), false, String::new());
        peer.options.connection_timeout = Some(Duration::from_secs(1));
        peer.options.total_connection_timeout = Some(Duration::from_secs(2));
        peer.options.read_timeout = Some(Duration::from_secs(30));
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }
}

fn main() {
    let args = Args::parse();
    let conf = ServerConf {
        threads: args.threads.max(1),
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service_with_name(
        &server.configuration,
        Passthrough {
            upstream: args.upstream,
        },
        "passthrough",
    );
    if let Some(app) = proxy.app_logic_mut() {
        let mut server_options = HttpServerOptions::default();
        server_options.allow_connect_method_proxying = true;
        server_options.h2c = args.h2c;
        server_options.h2_idle_timeout = Some(Duration::from_secs(60));
        app.server_options = Some(server_options);
    }
    proxy.add_tcp(&args.listen);
    server.add_service(proxy);
    server.run_forever();
}
