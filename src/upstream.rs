//! Upstream pools: round robin over healthy targets (pingora-load-balancing),
//! optional active health checks, passive failover of a failed connect to
//! another target, and the peer settings (timeouts, TLS, CA, HTTP version).

use std::sync::Arc;
use std::time::Duration;

use pingora_core::upstreams::peer::{HttpPeer, ALPN};
use pingora_core::utils::tls::{parse_x509, WrappedX509};
use pingora_load_balancing::health_check::HttpHealthCheck;
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::LoadBalancer;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::config::{Upstream, UpstreamProtocol};

/// Streams one HTTP/2 upstream connection carries at once before pingora
/// opens another (its default is 1: no multiplexing at all).
pub const UPSTREAM_H2_STREAMS: usize = 100;

/// The ALPN a peer asks for: `H2` alone for both HTTP/2 protocols (over
/// cleartext pingora then speaks h2 with prior knowledge), `H1` otherwise.
fn alpn_of(protocol: UpstreamProtocol) -> ALPN {
    match protocol {
        UpstreamProtocol::H1 => ALPN::H1,
        UpstreamProtocol::H2 | UpstreamProtocol::H2c => ALPN::H2,
    }
}

/// A target's address, as pingora's load balancer and peers hold it.
pub type PeerAddr = pingora_core::protocols::l4::socket::SocketAddr;

/// At most this many connects per request (the first and two failovers).
pub const MAX_CONNECT_TRIES: usize = 3;

/// One upstream's load balancer and peer template.
pub struct UpstreamPool {
    pub name: String,
    pub lb: Arc<LoadBalancer<RoundRobin>>,
    tls: bool,
    sni: String,
    ca: Option<Arc<[WrappedX509]>>,
    connect_timeout: Duration,
    read_timeout: Duration,
    protocol: UpstreamProtocol,
    /// `host:port` of the first target (or the `sni` with TLS), for `Host`
    /// when `preserve_host: false`; built once, shared by every request.
    pub host_header: http::HeaderValue,
    /// The peer of a pool with one resolved target address and no health
    /// check: nothing to choose, so it is built once and copied per request.
    only_peer: Option<HttpPeer>,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("name", &self.name)
            .finish()
    }
}

impl UpstreamPool {
    /// Builds the pool. DNS names among the targets are resolved here, once
    /// per configuration load.
    pub fn build(upstream: &Upstream) -> Result<Self, String> {
        let mut lb = LoadBalancer::<RoundRobin>::try_from_iter(upstream.targets.iter().cloned())
            .map_err(|e| format!("upstream {}: cannot resolve targets: {e}", upstream.name))?;
        let first_host = upstream
            .targets
            .first()
            .map(|t| {
                t.rsplit_once(':')
                    .map_or(t.as_str(), |(h, _)| h)
                    .to_string()
            })
            .unwrap_or_default();
        let sni = upstream.sni.clone().unwrap_or(first_host);
        if let Some(check) = &upstream.health_check {
            let mut hc = HttpHealthCheck::new(&sni, upstream.tls);
            hc.req.set_uri(
                check
                    .path
                    .parse()
                    .map_err(|e| format!("health_check.path: {e}"))?,
            );
            hc.peer_template.options.connection_timeout = Some(upstream.connect_timeout);
            hc.peer_template.options.read_timeout = Some(upstream.read_timeout);
            hc.peer_template.options.alpn = alpn_of(upstream.protocol);
            lb.set_health_check(Box::new(hc));
            lb.health_check_frequency = Some(check.interval);
        }
        // Without an active check every target counts as healthy; failed
        // connections are still answered 502.
        lb.parallel_health_check = true;
        let ca = match &upstream.ca_file {
            Some(path) => Some(load_ca(path)?),
            None => None,
        };
        let host_header = if upstream.tls {
            sni.clone()
        } else {
            upstream.targets.first().cloned().unwrap_or_default()
        };
        let host_header = http::HeaderValue::try_from(host_header).map_err(|_| {
            format!(
                "upstream {}: the target is not a valid Host header value",
                upstream.name
            )
        })?;
        let mut pool = Self {
            name: upstream.name.clone(),
            lb: Arc::new(lb),
            tls: upstream.tls,
            sni,
            ca,
            connect_timeout: upstream.connect_timeout,
            read_timeout: upstream.read_timeout,
            protocol: upstream.protocol,
            host_header,
            only_peer: None,
        };
        // One resolved address (a name may resolve to several, each its own
        // backend) and no health check: nothing to choose per request.
        if pool.lb.backends().get_backend().len() == 1 && !pool.has_health_check() {
            pool.only_peer = pool.choose_peer();
        }
        Ok(pool)
    }

    /// Whether this pool runs active health checks (then it needs a task).
    pub fn has_health_check(&self) -> bool {
        self.lb.health_check_frequency.is_some()
    }

    /// Picks a healthy target (round robin) and builds the peer for it.
    pub fn select_peer(&self) -> Option<HttpPeer> {
        match &self.only_peer {
            Some(peer) => Some(peer.clone()),
            None => self.choose_peer(),
        }
    }

    /// As `select_peer`, never choosing a target whose connect failed for
    /// this request (passive failover).
    pub fn select_peer_avoiding(&self, failed: &[PeerAddr]) -> Option<HttpPeer> {
        if failed.is_empty() {
            return self.select_peer();
        }
        let backend = self
            .lb
            .select_with(b"", 256, |b, healthy| healthy && !failed.contains(&b.addr))?;
        Some(self.peer_for(backend))
    }

    /// How many connects one request may try: one per resolved target, at
    /// most `MAX_CONNECT_TRIES`.
    pub fn connect_tries(&self) -> usize {
        self.lb
            .backends()
            .get_backend()
            .len()
            .clamp(1, MAX_CONNECT_TRIES)
    }

    fn choose_peer(&self) -> Option<HttpPeer> {
        let backend = self.lb.select(b"", 256)?;
        Some(self.peer_for(backend))
    }

    fn peer_for(&self, backend: pingora_load_balancing::Backend) -> HttpPeer {
        let mut peer = HttpPeer::new(backend, self.tls, self.sni.clone());
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.total_connection_timeout = Some(self.connect_timeout * 2);
        peer.options.read_timeout = Some(self.read_timeout);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        peer.options.alpn = alpn_of(self.protocol);
        if self.protocol != UpstreamProtocol::H1 {
            peer.options.max_h2_streams = UPSTREAM_H2_STREAMS;
        }
        if let Some(ca) = &self.ca {
            peer.options.ca = Some(Arc::clone(ca));
        }
        peer
    }
}

fn load_ca(path: &std::path::Path) -> Result<Arc<[WrappedX509]>, String> {
    let certs: Vec<WrappedX509> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .filter_map(Result::ok)
        .map(|der| WrappedX509::new(der.to_vec(), parse_x509))
        .collect();
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate found", path.display()));
    }
    Ok(certs.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(targets: &str, health_check: &str) -> UpstreamPool {
        let yaml = format!(
            "upstreams:\n  - name: u\n    targets: {targets}\n{health_check}routes:\n  - name: r\n    path: /\n    upstream: u\n    auth: none\n"
        );
        let config = crate::config::load_str(&yaml, std::path::Path::new("gateway.yaml"))
            .unwrap_or_else(|e| panic!("{e:?}"));
        UpstreamPool::build(&config.upstreams[0]).unwrap()
    }

    fn address(peer: &HttpPeer) -> String {
        peer._address.to_string()
    }

    #[test]
    fn one_target_without_health_check_is_built_once() {
        let p = pool("[\"127.0.0.1:8081\"]", "");
        assert!(p.only_peer.is_some());
        let peer = p.select_peer().unwrap();
        assert_eq!(address(&peer), "127.0.0.1:8081");
        assert_eq!(peer.options.read_timeout, Some(p.read_timeout));
        assert_eq!(address(&p.select_peer().unwrap()), "127.0.0.1:8081");
    }

    #[test]
    fn several_targets_take_turns() {
        let p = pool("[\"127.0.0.1:8081\", \"127.0.0.1:8082\"]", "");
        assert!(p.only_peer.is_none());
        let seen: std::collections::BTreeSet<String> =
            (0..4).map(|_| address(&p.select_peer().unwrap())).collect();
        assert_eq!(seen.len(), 2, "{seen:?}");
    }

    #[test]
    fn a_name_resolving_to_several_addresses_is_chosen_per_request() {
        // `localhost` resolves to 127.0.0.1 and, where IPv6 is configured, ::1.
        let p = pool("[\"localhost:8081\"]", "");
        let resolved = p.lb.backends().get_backend().len();
        assert_eq!(p.only_peer.is_some(), resolved == 1, "{resolved} addresses");
        let seen: std::collections::BTreeSet<String> =
            (0..4).map(|_| address(&p.select_peer().unwrap())).collect();
        assert_eq!(seen.len(), resolved, "{seen:?}");
    }

    #[test]
    fn a_failed_target_is_avoided_and_tries_are_bounded() {
        let p = pool("[\"127.0.0.1:8081\", \"127.0.0.1:8082\"]", "");
        assert_eq!(p.connect_tries(), 2);
        let first = p.select_peer().unwrap()._address;
        for _ in 0..4 {
            let other = p
                .select_peer_avoiding(std::slice::from_ref(&first))
                .unwrap();
            assert_ne!(other._address, first);
        }
        let both = [
            first.clone(),
            p.select_peer_avoiding(&[first]).unwrap()._address,
        ];
        assert!(p.select_peer_avoiding(&both).is_none());
        let many: Vec<String> = (1..=5)
            .map(|i| format!("\"127.0.0.1:{}\"", 8080 + i))
            .collect();
        let p = pool(&format!("[{}]", many.join(", ")), "");
        assert_eq!(p.connect_tries(), MAX_CONNECT_TRIES);
    }

    #[test]
    fn the_protocol_picks_the_peer_alpn() {
        let p = pool("[\"127.0.0.1:8081\"]", "");
        assert_eq!(p.select_peer().unwrap().options.alpn, ALPN::H1);
        let p = pool("[\"127.0.0.1:8081\"]\n    protocol: h2c", "");
        let peer = p.select_peer().unwrap();
        assert_eq!(peer.options.alpn, ALPN::H2);
        assert!(
            peer.options.alpn.get_min_http_version() == 2,
            "h2c: prior knowledge"
        );
        assert_eq!(peer.options.max_h2_streams, UPSTREAM_H2_STREAMS);
    }

    #[test]
    fn a_health_checked_target_is_chosen_per_request() {
        let p = pool(
            "[\"127.0.0.1:8081\"]",
            "    health_check:\n      path: /healthz\n      interval: 5s\n",
        );
        assert!(p.only_peer.is_none());
    }
}
