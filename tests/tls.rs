//! TLS listeners (rustls): the gateway serves HTTPS with the configured
//! certificate, sets `X-Forwarded-Proto: https`, and applies the same rules.

mod common;

use common::tls::{tls_backend, tls_template, SelfSigned};
use common::*;

#[test]
fn tls_listener_serves_with_the_configured_certificate() {
    let world = World::new();
    let cert = SelfSigned::new("localhost");
    let tls_addr = free_addr();
    let template = tls_template(tls_addr, None, "/open/{*rest}");
    let gw = world.start_with(&template, &cert.files());
    world.echo.clear();
    let client = cert.client(tls_addr);
    let url = format!("https://localhost:{}/open/x", tls_addr.port());
    let (status, nowhere) = world.rt.block_on(async {
        let ok = client.get(&url).send().await.unwrap().status().as_u16();
        let missing = client
            .get(format!("https://localhost:{}/nowhere", tls_addr.port()))
            .send()
            .await
            .unwrap();
        let ct = missing
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        (ok, (missing.status().as_u16(), ct))
    });
    assert_eq!(status, 200);
    assert_eq!(nowhere, (404, Some("application/problem+json".to_string())));
    let seen = world.echo.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("https"));
    // The plain listener still serves alongside.
    assert_eq!(gw.get("/open/y", None, &[]).status, 200);
}

#[test]
fn tls_to_the_upstream_verifies_with_ca_file_and_sni() {
    let world = World::new();
    // Gateway B terminates TLS (certificate for `backend.internal`) in front
    // of the echo upstream; gateway A proxies to it over TLS.
    let cert = SelfSigned::new("backend.internal");
    let b_tls = free_addr();
    let backend = tls_backend(&world, &cert, b_tls, None);
    let front = |sni: &str| {
        world.start_with(
            &format!(
                r#"
server:
  listen: ["{{listen}}"]
  admin_listen: "{{admin}}"
  threads: 1
upstreams:
  - name: backend
    targets: ["{b_tls}"]
    tls: true
    sni: {sni}
    ca_file: backend-ca.pem
routes:
  - name: open
    path: /{{*rest}}
    upstream: backend
    auth: none
"#
            ),
            &[("backend-ca.pem", &cert.cert_pem)],
        )
    };
    let good = front("backend.internal");
    world.echo.clear();
    let r = good.get("/through-tls", None, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = world.echo.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/through-tls");
    // The inner hop saw TLS.
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("https"));

    // A name the certificate does not carry fails verification: 502.
    let wrong = front("other.internal");
    world.echo.clear();
    let r = wrong.get("/through-tls", None, &[]);
    assert_eq!(
        (r.status, r.reason().as_str()),
        (502, "upstream_unavailable")
    );
    assert!(world.echo.seen().is_empty());
    drop(backend);
}
