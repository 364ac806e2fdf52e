//! TLS on loopback: a self-signed certificate (rcgen) for the gateway's
//! `server.tls` listeners, a reqwest client that trusts it, and a gateway
//! that terminates TLS in front of the echo upstream.

use std::net::SocketAddr;

use super::{Gateway, World};

/// A self-signed certificate and its key, both PEM.
pub struct SelfSigned {
    pub cert_pem: String,
    pub key_pem: String,
}

impl SelfSigned {
    /// A certificate for `name` (a DNS name: `localhost`, `backend.internal`).
    pub fn new(name: &str) -> Self {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        Self {
            cert_pem: cert.cert.pem(),
            key_pem: cert.signing_key.serialize_pem(),
        }
    }

    /// The files a listener with `cert: tls.crt` and `key: tls.key` reads,
    /// for [`World::start_with`].
    pub fn files(&self) -> [(&str, &str); 2] {
        [("tls.crt", &self.cert_pem), ("tls.key", &self.key_pem)]
    }

    /// A client that trusts only this certificate (a `localhost` one) and
    /// finds `localhost` at `addr`.
    pub fn client(&self, addr: SocketAddr) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.cert_pem.as_bytes()).unwrap())
            .resolve("localhost", addr)
            .build()
            .unwrap()
    }
}

/// A gateway.yaml template: the plain listener `{listen}` and a TLS one on
/// `tls_addr` (`tls.crt`, `tls.key`; `alpn`, a YAML list such as `[h2]`,
/// when given), and one open route, `path`, to the echo upstream.
pub fn tls_template(tls_addr: SocketAddr, alpn: Option<&str>, path: &str) -> String {
    let alpn = alpn.map_or(String::new(), |list| format!("      alpn: {list}\n"));
    format!(
        r#"
server:
  listen: ["{{listen}}"]
  tls:
    - listen: "{tls_addr}"
      cert: tls.crt
      key: tls.key
{alpn}  admin_listen: "{{admin}}"
  threads: 1
upstreams:
  - name: echo
    targets: ["{{upstream}}"]
routes:
  - name: open
    path: {path}
    upstream: echo
    auth: none
"#
    )
}

/// A gateway terminating TLS on `tls_addr` with `cert` (and `alpn`) that
/// sends every path, unchecked, to the echo upstream. A front that names
/// `ca_file` with `cert.cert_pem` reaches the echo through it over TLS.
pub fn tls_backend(
    world: &World,
    cert: &SelfSigned,
    tls_addr: SocketAddr,
    alpn: Option<&str>,
) -> Gateway {
    world.start_with(&tls_template(tls_addr, alpn, "/{*rest}"), &cert.files())
}
