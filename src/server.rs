//! Assembles the pingora server from a loaded configuration: the proxy
//! service on every listener, the admin service, the authorization
//! listeners (HTTP and gRPC), and the control plane.
//! Used by `run`, `demo` and the integration tests alike.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::protocols::http::v2::server::H2Options;
use pingora_core::protocols::ALPN;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::listening::Service;

use crate::authz::grpc::{AuthzGrpcApp, OpenGrpcConnections};
use crate::authz::http::AuthzHttpApp;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::gateway::{start_control_plane, Gateway};
use crate::proxy::guard::{GuardedApp, OpenConnections};
use crate::proxy::ConsentProxy;
use crate::services::admin::AdminApp;

/// Process-level options that are not part of `gateway.yaml`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Take over the listeners of a running instance (pingora's zero-downtime
    /// upgrade; the old process gets SIGQUIT).
    pub upgrade: bool,
    /// Path of the socket used to hand listeners over during an upgrade.
    pub upgrade_sock: Option<String>,
    /// Seconds to keep serving in-flight requests after SIGTERM.
    pub grace_period_seconds: u64,
}

/// How long `--upgrade` waits for every issuer's keys before it takes the
/// listeners over (it gives up, leaving the old process serving, after it).
pub const UPGRADE_KEY_WAIT: Duration = Duration::from_secs(30);

/// How long an HTTP/2 client connection with no open stream is kept (as
/// pingora keeps an idle HTTP/1 keep-alive connection).
pub const H2_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Streams a client may reset (or that the gateway had to reset for a
/// protocol error) before its connection is closed: h2's defences against
/// rapid reset (CVE-2023-44487), bounded explicitly here.
pub const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
pub const H2_MAX_LOCAL_ERROR_RESETS: usize = 256;

/// The HTTP/2 settings of every client connection: the header list (what
/// HPACK decodes to, CONTINUATION frames included) within
/// `max_request_header_bytes`, `h2_max_concurrent_streams` streams, and the
/// reset budgets above.
pub fn h2_options(limits: &crate::config::Limits) -> H2Options {
    let mut options = pingora_core::protocols::http::v2::server::default_h2_options();
    let header_list = u32::try_from(limits.max_request_header_bytes).unwrap_or(u32::MAX);
    options
        .max_header_list_size(header_list)
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(Some(H2_MAX_LOCAL_ERROR_RESETS));
    options
}

/// The TLS settings of one listener, with the ALPN offer it lists.
fn tls_settings(tls: &crate::config::TlsListener) -> Result<TlsSettings, String> {
    let mut settings =
        TlsSettings::intermediate(&tls.cert.to_string_lossy(), &tls.key.to_string_lossy())
            .map_err(|e| format!("TLS listener {}: {e}", tls.listen))?;
    settings.set_alpn(match (tls.h2, tls.http11) {
        (true, true) => ALPN::H2H1,
        (true, false) => ALPN::H2,
        _ => ALPN::H1,
    });
    Ok(settings)
}

/// A server ready to run, and the shared state it serves.
pub struct Built {
    pub server: Server,
    pub gateway: Arc<Gateway>,
    /// The proxy's open client connections (for a prompt shutdown).
    pub connections: OpenConnections,
    /// The gRPC authorization listener's open connections (likewise).
    pub grpc_connections: OpenGrpcConnections,
}

/// Builds the pingora server for `config` (loaded from `config_path`).
pub fn build_server(
    config_path: &Path,
    config: Config,
    options: &RunOptions,
) -> Result<Built, String> {
    let control = start_control_plane().map_err(|e| format!("control plane: {e}"))?;
    let server_settings = config.server.clone();
    crate::audit::start(config.audit.queue_lines);
    if let Some(tracing) = &config.tracing {
        crate::otlp::start(tracing)?;
    }
    let gateway = Gateway::new(config_path, config, control, Arc::new(SystemClock))?;
    crate::services::altinn::spawn(&gateway);

    let conf = ServerConf {
        threads: server_settings.threads.max(1),
        work_stealing: server_settings.work_stealing,
        upstream_keepalive_pool_size: server_settings.upstream_keepalive_pool_size,
        grace_period_seconds: Some(options.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(5),
        upgrade_sock: options
            .upgrade_sock
            .clone()
            .unwrap_or_else(|| "/tmp/consent-gateway-upgrade.sock".to_string()),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: options.upgrade,
        ..Opt::default()
    };
    if options.upgrade {
        // Take the listeners over only once this process can serve every
        // route: until then the old process keeps serving, and an upgrade
        // that cannot get keys is abandoned rather than answering 503.
        if let Err(missing) = gateway.wait_until_ready(UPGRADE_KEY_WAIT) {
            return Err(format!(
                "not taking over the listeners: not ready after {}s (no keys for issuer(s), or \
                 no first copy of access list(s)): {}; the old process keeps serving",
                UPGRADE_KEY_WAIT.as_secs(),
                missing.join(", ")
            ));
        }
        log::info!(
            "ready to take over: send SIGQUIT to the old process now (upgrade socket {})",
            conf.upgrade_sock
        );
    }
    if !options.upgrade {
        // An upgrade inherits its listeners; a fresh start must be able to
        // bind every one of them, or not start at all.
        probe_listeners(&server_settings)?;
    }
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let mut proxy_app = pingora_proxy::http_proxy(
        &server.configuration,
        ConsentProxy::new(Arc::clone(&gateway)),
    );
    let mut server_options = HttpServerOptions::default();
    // CONNECT reaches our own filter, which answers it 405 problem+json.
    server_options.allow_connect_method_proxying = true;
    server_options.h2c = server_settings.h2c;
    server_options.h2_idle_timeout = Some(H2_IDLE_TIMEOUT);
    proxy_app.server_options = Some(server_options);
    let limits = server_settings.limits;
    proxy_app.h2_options = Some(h2_options(&limits));
    let guarded = GuardedApp::new(
        proxy_app,
        Arc::clone(&gateway),
        limits.header_read_timeout,
        limits.max_connections,
    )
    .with_h2c(server_settings.h2c);
    let connections = guarded.open_connections();
    let mut proxy = Service::new("consent-gateway".to_string(), guarded);
    for addr in &server_settings.listen {
        proxy.add_tcp(&addr.to_string());
    }
    for tls in &server_settings.tls {
        proxy.add_tls_with_settings(&tls.listen.to_string(), None, tls_settings(tls)?);
    }
    server.add_service(proxy);

    if let Some(admin_addr) = server_settings.admin_listen {
        let mut admin = Service::new(
            "admin".to_string(),
            AdminApp {
                gateway: Arc::clone(&gateway),
            },
        );
        admin.add_tcp(&admin_addr.to_string());
        server.add_service(admin);
    }
    if let Some(authz_addr) = server_settings.authz.as_ref().and_then(|a| a.listen) {
        // The proxy's guard: the same refusals (problem+json) of requests
        // the HTTP/1 parser would drop, the same limits.
        let app = AuthzHttpApp {
            gateway: Arc::clone(&gateway),
        };
        let guarded = GuardedApp::new(
            app,
            Arc::clone(&gateway),
            limits.header_read_timeout,
            limits.max_connections,
        );
        let mut authz = Service::new("authz".to_string(), guarded);
        authz.add_tcp(&authz_addr.to_string());
        server.add_service(authz);
    }
    let mut grpc_connections = OpenGrpcConnections::default();
    if let Some(grpc_addr) = server_settings.authz.as_ref().and_then(|a| a.grpc_listen) {
        // A pingora listener like the others (bound, inherited on upgrade,
        // closed at shutdown); each connection is served as HTTP/2 gRPC.
        let app = AuthzGrpcApp::new(Arc::clone(&gateway), limits.max_connections);
        grpc_connections = app.open_connections();
        let mut grpc = Service::new("authz-grpc".to_string(), app);
        grpc.add_tcp(&grpc_addr.to_string());
        server.add_service(grpc);
    }
    Ok(Built {
        server,
        gateway,
        connections,
        grpc_connections,
    })
}

/// Binds (and releases) every listen address, so a taken or forbidden
/// address ends the start with a clear error and exit status 1.
///
/// Works around pingora's `bind_tcp` (pingora-core `listeners/l4.rs`): it
/// retries an address in use 30 times a second apart, then the service task
/// panics on its own runtime thread while the process, its other services and
/// `/readyz` stay up. The probe sets `SO_REUSEADDR` as pingora does, so an
/// address it accepts is one pingora can bind a moment later.
pub fn probe_listeners(server: &crate::config::Server) -> Result<(), String> {
    let plain = server.listen.iter().map(|a| ("listener", *a));
    let tls = server.tls.iter().map(|t| ("TLS listener", t.listen));
    let admin = server.admin_listen.map(|a| ("admin listener", a));
    let authz = server.authz.as_ref();
    let authz_http = authz.and_then(|a| a.listen).map(|a| ("authz listener", a));
    let authz_grpc = authz.and_then(|a| a.grpc_listen);
    let authz_grpc = authz_grpc.map(|a| ("authz gRPC listener", a));
    let authz = authz_http.into_iter().chain(authz_grpc);
    for (what, addr) in plain.chain(tls).chain(admin).chain(authz) {
        std::net::TcpListener::bind(addr)
            .map_err(|e| format!("cannot listen on {addr} ({what}): {e}"))?;
    }
    Ok(())
}

/// Nothing accepted is lost: every queued audit line is written, the queued
/// spans are exported (each step bounded: 5 s), then the log is flushed.
pub fn flush_before_exit() {
    if !crate::audit::flush(Duration::from_secs(5)) {
        log::error!("audit: stdout did not take the last lines within 5s");
    }
    crate::otlp::shutdown(Duration::from_secs(5));
    log::logger().flush();
}

/// Ends the process as soon as a graceful shutdown has no connection left
/// open, instead of always sleeping the whole grace period.
///
/// Works around pingora's `Server::run` (pingora-core `server/mod.rs`),
/// which on SIGTERM sleeps `grace_period_seconds` unconditionally: a
/// thread watches the execution phase and, once the grace period starts,
/// exits with status 0 when the proxy's last client connection (lingering
/// closes included) and the gRPC listener's last connection (each closed
/// with GOAWAY once its in-flight checks are answered) are gone. Idle
/// keep-alive connections are closed by pingora at shutdown; a busy one
/// keeps the wait going, up to the period.
pub fn exit_when_drained(
    server: &Server,
    connections: OpenConnections,
    grpc: OpenGrpcConnections,
    grace: Duration,
) {
    let mut phases = server.watch_execution_phase();
    let spawned = std::thread::Builder::new()
        .name("shutdown-drain".into())
        .spawn(move || loop {
            match phases.blocking_recv() {
                Ok(pingora_core::server::ExecutionPhase::ShutdownGracePeriod) => {
                    let until = std::time::Instant::now() + grace;
                    while std::time::Instant::now() < until {
                        if connections.count() == 0 && grpc.count() == 0 {
                            log::info!("graceful shutdown: no connection left open, exiting");
                            flush_before_exit();
                            std::process::exit(0);
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    return;
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        });
    if let Err(e) = spawned {
        log::warn!("no prompt shutdown: {e}");
    }
}
