//! TLS listeners (rustls): the gateway serves HTTPS with the configured
//! certificate, sets `X-Forwarded-Proto: https`, and applies the same rules.

mod common;

use common::*;

#[test]
fn tls_listener_serves_with_the_configured_certificate() {
    let world = World::new();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let tls_addr = free_addr();
    let template = format!(
        r#"
server:
  listen: ["{{listen}}"]
  tls:
    - listen: "{tls_addr}"
      cert: tls.crt
      key: tls.key
  admin_listen: "{{admin}}"
  threads: 1
upstreams:
  - name: echo
    targets: ["{{upstream}}"]
routes:
  - name: open
    path: /open/{{*rest}}
    upstream: echo
    auth: none
"#
    );
    let cert_pem = cert.cert.pem();
    let key_pem = cert.signing_key.serialize_pem();
    let gw = world.start_with(&template, &[("tls.crt", &cert_pem), ("tls.key", &key_pem)]);
    world.echo.clear();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .resolve("localhost", tls_addr)
        .build()
        .unwrap();
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
