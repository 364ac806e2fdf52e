//! SPEC section 13, "Consumer documentation": `consent-gateway docs` on the
//! shipped `gateway.yaml` against golden files in all three formats; every
//! reason a route can answer is in its documentation (and the running
//! gateway answers none outside it); no upstream target, access-list member,
//! supplier or file path reaches any output; the README's reason table is the
//! one generated from `Reason`; problem bodies carry `documentation`.
//!
//! Regenerate the golden files and the README table after a deliberate change:
//! `UPDATE_GOLDEN=1 cargo test --test docs`, then review the diff.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use consent_gateway::config::{self, Config};
use consent_gateway::dev_issuer::TokenSpec;
use consent_gateway::docs::{self, markdown::route_anchor, Format};
use consent_gateway::error::Reason;

const FORMATS: [(Format, &str, &str); 3] = [
    (Format::Markdown, "markdown", "gateway.md"),
    (Format::Html, "html", "gateway.html"),
    (Format::Openapi, "openapi", "gateway.openapi.json"),
];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn updating() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some()
}

fn shipped() -> Config {
    config::load(&repo("gateway.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `consent-gateway docs` (the real binary) with `args`.
fn docs_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_consent-gateway"))
        .arg("docs")
        .args(args)
        .output()
        .expect("run consent-gateway docs")
}

#[test]
fn shipped_example_matches_the_golden_files() {
    let config = repo("gateway.yaml");
    for (_, flag, golden) in FORMATS {
        let out = docs_cli(&["-c", config.to_str().unwrap(), "--format", flag]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("utf-8");
        let path = repo("tests/golden").join(golden);
        if updating() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
        assert!(
            text == want,
            "{flag} output differs from {}: run `UPDATE_GOLDEN=1 cargo test --test docs` and review the diff",
            path.display()
        );
    }
}

#[test]
fn markdown_is_the_default_format_and_bad_input_fails_cleanly() {
    let config = repo("gateway.yaml");
    let out = docs_cli(&["-c", config.to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        docs::render(&shipped(), Format::Markdown)
    );
    let out = docs_cli(&["-c", config.to_str().unwrap(), "--format", "pdf"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown format is a usage error"
    );
    let bad = repo("tests/fixtures/config/unknown_upstream.yaml");
    let out = docs_cli(&["-c", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown upstream"));
    assert!(
        out.stdout.is_empty(),
        "no documentation of an invalid config"
    );
}

/// The README's reason table is the generated one (between its markers).
#[test]
fn readme_reason_table_is_generated_from_reason() {
    let path = repo("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let (begin, end) = ("<!-- reasons:begin -->\n", "<!-- reasons:end -->");
    let start = readme
        .find(begin)
        .expect("README has <!-- reasons:begin -->")
        + begin.len();
    let stop = readme[start..]
        .find(end)
        .expect("README has <!-- reasons:end -->")
        + start;
    let table = docs::reason_table_markdown();
    if updating() {
        let updated = format!("{}{table}{}", &readme[..start], &readme[stop..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    assert!(
        readme[start..stop] == table,
        "README's reason table differs from Reason: run `UPDATE_GOLDEN=1 cargo test --test docs`"
    );
    for reason in Reason::ALL {
        assert!(table.contains(reason.consumer_advice()), "{reason:?}");
    }
}

/// The Markdown section of one route (from its anchor to the next route's).
fn section<'a>(markdown: &'a str, config: &Config, index: usize) -> &'a str {
    let anchor = |i: usize| format!("<a id=\"{}\"></a>", route_anchor(&config.routes[i]));
    let start = markdown.find(&anchor(index)).expect("route anchor");
    let end = if index + 1 < config.routes.len() {
        markdown
            .find(&anchor(index + 1))
            .expect("next route anchor")
    } else {
        markdown.find("## Reason codes").expect("reason section")
    };
    &markdown[start..end]
}

#[test]
fn every_reason_a_route_can_answer_is_in_its_documentation() {
    let config = shipped();
    let markdown = docs::render(&config, Format::Markdown);
    let html = docs::render(&config, Format::Html);
    let openapi: serde_json::Value =
        serde_json::from_str(&docs::render(&config, Format::Openapi)).unwrap();
    for (i, route) in config.routes.iter().enumerate() {
        let text = section(&markdown, &config, i);
        let reasons = docs::route_reasons(&config, route);
        assert!(!reasons.is_empty());
        let path = docs::openapi::openapi_path(&route.path);
        let method = route.methods[0].to_ascii_lowercase();
        let responses = &openapi["paths"][&path][&method]["responses"];
        for reason in &reasons {
            let link = format!("[`{0}`](#{0})", reason.code());
            assert!(text.contains(&link), "{}: {reason:?} missing", route.name);
            let status = &responses[reason.status().to_string()];
            let codes = &status["content"]["application/problem+json"]["schema"]["allOf"][1]
                ["properties"]["reason"]["enum"];
            assert!(
                codes.as_array().unwrap().contains(&reason.code().into()),
                "{}: {reason:?} missing in OpenAPI",
                route.name
            );
        }
        for reason in Reason::ALL {
            if !reasons.iter().any(|r| r.code() == reason.code()) {
                let link = format!("[`{0}`](#{0})", reason.code());
                assert!(!text.contains(&link), "{}: {reason:?} listed", route.name);
            }
        }
    }
    // Each reason has exactly one anchor in the page.
    for reason in Reason::ALL {
        let anchor = format!("<a id=\"{}\"></a>", reason.code());
        assert_eq!(html.matches(&anchor).count(), 1, "{reason:?}");
        let listed = config
            .routes
            .iter()
            .any(|r| docs::route_reasons(&config, r).contains(&reason));
        let link = format!("<a href=\"#{}\">", reason.code());
        assert_eq!(html.contains(&link), listed, "{reason:?}");
    }
    for route in &config.routes {
        let anchor = format!("<a id=\"{}\"></a>", route_anchor(route));
        assert_eq!(html.matches(&anchor).count(), 1, "{}", route.name);
    }
}

/// A route's rules decide which reasons it documents.
#[test]
fn reasons_follow_the_route_rules() {
    let config = shipped();
    let reasons = |name: &str| {
        let route = config.routes.iter().find(|r| r.name == name).unwrap();
        docs::route_reasons(&config, route)
    };
    let income = reasons("income");
    assert!(income.contains(&Reason::ConsentMetadataMismatch));
    assert!(income.contains(&Reason::SupplierNotAllowed));
    assert!(income.contains(&Reason::TokenLifetimeTooLong));
    assert!(
        !income.contains(&Reason::AudienceMismatch),
        "no audiences configured"
    );
    let codes = reasons("income-codes");
    assert!(codes.contains(&Reason::ConsumerNotAllowed));
    assert!(!codes.contains(&Reason::ConsentMissing), "auth: token");
    let health = reasons("health");
    assert!(!health.contains(&Reason::MissingToken), "auth: none");
    assert!(health.contains(&Reason::UpstreamUnavailable));
    assert!(!health.contains(&Reason::NoRoute));
}

/// Production and test issuers, `any` scopes, header and query bindings,
/// report-only, any method: what the documentation says about each.
#[test]
fn rich_config_is_documented_rule_by_rule() {
    let config = config::load(&repo("tests/fixtures/config/docs_rich.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let doc: serde_json::Value =
        serde_json::from_str(&docs::render(&config, Format::Openapi)).unwrap();
    let post = &doc["paths"]["/loans/{orgnr}"]["post"];
    // Two issuers times one of two `any` scopes, each with the `all` scope.
    let security = post["security"].as_array().unwrap();
    assert_eq!(security.len(), 4, "{security:?}");
    assert!(
        security.contains(&serde_json::json!({"maskinporten": ["bank:loans", "bank:loans.write"]}))
    );
    assert_eq!(
        doc["paths"]["/loans/{orgnr}"]["put"]["operationId"],
        "loans-put"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["maskinporten"]["flows"]["clientCredentials"]
            ["tokenUrl"],
        "https://maskinporten.no/token"
    );
    assert_eq!(doc["info"]["contact"]["url"], "https://example.no/contact");
    // A route without `methods` is written for the common methods.
    let preview = doc["paths"]["/preview/{rest}"].as_object().unwrap();
    assert_eq!(preview.len(), 7);
    // Routes sharing a path by method are one path item, each with its rules.
    let offers = &doc["paths"]["/offers/{id}"];
    assert_eq!(offers["get"]["security"], serde_json::json!([]));
    assert_eq!(
        offers["post"]["security"],
        serde_json::json!([{"maskinporten": ["bank:offers.write"]}])
    );
    assert!(offers["get"]["responses"].get("401").is_none());
    assert!(offers["post"]["responses"].get("401").is_some());
    // Report-only answers none of the token or consent reasons.
    let preview_route = &config.routes[1];
    let reasons = docs::route_reasons(&config, preview_route);
    assert!(!reasons.contains(&Reason::MissingToken), "{reasons:?}");
    assert!(reasons.contains(&Reason::UpstreamTimeout));
    let markdown = docs::render(&config, Format::Markdown);
    assert!(markdown.contains("report only"));
    assert!(markdown.contains("Maskinporten production"));
    assert!(markdown.contains("at least one of `bank:loans.read`, `bank:loans.write`"));
    assert!(markdown.contains("in the header `x-org-id`"));
    assert!(markdown.contains("an organization (9-digit organisation number)"));
    assert!(!section(&markdown, &config, 0).contains("a person (11-digit"));
    assert!(markdown.contains("`purpose`: required in the consent; not carried in the request"));
    assert!(
        markdown.contains("one of `https://api.example.no`"),
        "the audience"
    );
}

const SECRET_CONFIG: &str = r#"
service:
  name: Leak test
  contact: https://example.no/contact
server:
  listen: ["127.0.0.1:18080"]
  tls:
    - listen: "127.0.0.1:18443"
      cert: SECRETDIR/tls-cert-marker.pem
      key: SECRETDIR/tls-key-marker.pem
issuers:
  - name: prod
    issuer: "https://maskinporten.no/"
    jwks_uri: "https://maskinporten.no/jwk"
    ca_file: SECRETDIR/issuer-ca-marker.pem
    audiences: ["https://api.example.no"]
upstreams:
  - name: upstream-name-marker
    targets: ["10.77.66.55:8443", "backend-marker.internal:9443"]
    tls: true
    sni: sni-marker.internal
    ca_file: SECRETDIR/upstream-ca-marker.pem
routes:
  - name: loans
    path: /loans/{orgnr}
    methods: [POST]
    upstream: upstream-name-marker
    strip_prefix: /loans
    issuers: [prod]
    scopes:
      any: ["bank:loans.read", "bank:loans.write"]
    delegation:
      suppliers: ["0192:303137211"]
    consumers:
      allow: ["0192:310497460"]
      file: members.txt
    consent:
      resources: ["loan-consent"]
      subject:
        header: X-Org-Id
        types: [organization]
      metadata:
        required: [amount]
        match:
          amount: { query: amount }
audit:
  personal_data: pseudonymized
  pseudonym_key_file: SECRETDIR/pseudonym-key-marker.bin
"#;

#[test]
fn no_target_member_supplier_or_path_reaches_any_output() {
    let dir = tempfile::tempdir().unwrap();
    let secret_dir = dir.path().join("host-dir-marker");
    std::fs::create_dir_all(&secret_dir).unwrap();
    for file in [
        "tls-cert-marker.pem",
        "tls-key-marker.pem",
        "issuer-ca-marker.pem",
        "upstream-ca-marker.pem",
        "pseudonym-key-marker.bin",
    ] {
        std::fs::write(
            secret_dir.join(file),
            "secret-bytes-marker-0123456789abcdef",
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("members.txt"), "991825827\n").unwrap();
    let text = SECRET_CONFIG.replace("SECRETDIR", secret_dir.to_str().unwrap());
    let config_path = dir.path().join("gateway.yaml");
    std::fs::write(&config_path, &text).unwrap();
    let config = config::load(&config_path).unwrap_or_else(|e| panic!("{e}"));
    let forbidden = [
        "10.77.66.55",
        "9443",
        "backend-marker",
        "sni-marker",
        "marker.pem",
        "marker.bin",
        "host-dir-marker",
        "secret-bytes-marker",
        "members.txt",
        "991825827",
        "310497460",
        "303137211",
        "upstream-name-marker",
        "maskinporten.no/jwk",
        dir.path().to_str().unwrap(),
    ];
    for (format, flag, _) in FORMATS {
        let out = docs::render(&config, format);
        for needle in forbidden {
            assert!(!out.contains(needle), "{flag} output contains `{needle}`");
        }
        // What the consumer does need is there.
        for needle in ["bank:loans.read", "x-org-id", "amount", "loan-consent"] {
            assert!(out.contains(needle), "{flag} output lacks `{needle}`");
        }
    }
    let openapi = docs::render(&config, Format::Openapi);
    let doc: serde_json::Value = serde_json::from_str(&openapi).unwrap();
    let flows = &doc["components"]["securitySchemes"]["prod"]["flows"]["clientCredentials"];
    assert_eq!(flows["tokenUrl"], "https://maskinporten.no/token");
    assert!(flows["scopes"]["bank:loans.write"].is_string());
    let op = &doc["paths"]["/loans/{orgnr}"]["post"];
    assert_eq!(
        op["security"].as_array().unwrap().len(),
        2,
        "any: one of two"
    );
    let params = op["parameters"].as_array().unwrap();
    assert!(params
        .iter()
        .any(|p| p["in"] == "header" && p["name"] == "x-org-id"));
    assert!(params
        .iter()
        .any(|p| p["in"] == "query" && p["name"] == "amount"));
    assert!(params
        .iter()
        .any(|p| p["in"] == "path" && p["name"] == "orgnr"));
    let markdown = docs::render(&config, Format::Markdown);
    assert!(markdown.contains("Maskinporten production"));
    assert!(markdown.contains("audience_mismatch"));
}

/// The shipped example too: neither its upstream, its access-list file and
/// members, its supplier nor its JWKS URI is in any format.
#[test]
fn the_shipped_example_leaks_nothing_either() {
    let config = shipped();
    let list = std::fs::read_to_string(repo("access-lists/income-consumers.txt")).unwrap();
    let Ok(members) = config::parse_access_list(&list) else {
        panic!("the shipped list parses")
    };
    assert!(!members.is_empty());
    let mut forbidden: Vec<String> = members
        .iter()
        .flat_map(|m| [m.clone(), m.trim_start_matches("0192:").to_string()])
        .collect();
    forbidden.extend(config.upstreams.iter().flat_map(|u| u.targets.clone()));
    forbidden.extend(config.issuers.iter().map(|i| i.jwks_uri.clone()));
    forbidden.extend(
        [
            "income-consumers.txt",
            "303137211",
            "310497460",
            "income-api",
        ]
        .map(String::from),
    );
    for (format, flag, _) in FORMATS {
        let out = docs::render(&config, format);
        for needle in &forbidden {
            assert!(
                !out.contains(needle.as_str()),
                "{flag} output contains `{needle}`"
            );
        }
    }
}

#[test]
fn the_html_page_is_self_contained_and_escapes_config_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(
        &path,
        "service:\n  name: \"<script>alert(1)</script> API\"\n  contact: \"<img src=x onerror=y>\"\n\
         upstreams:\n  - {name: u, targets: ['127.0.0.1:1']}\n\
         routes:\n  - {name: \"r<b>`x|y\", path: /open, upstream: u, auth: none}\n",
    )
    .unwrap();
    let config = config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let html = docs::render(&config, Format::Html);
    assert_only_own_markup(&html);
    assert!(
        html.contains("<h1>&lt;script&gt;alert(1)&lt;/script&gt; API"),
        "{html}"
    );
    assert!(
        html.contains(
            "<title>&lt;script&gt;alert(1)&lt;/script&gt; API: consumer documentation</title>"
        ),
        "{html}"
    );
    assert_only_own_markup(&docs::render(&shipped(), Format::Html));
}

/// Every tag in the page is one of the few it is built of; links stay on
/// the page; the style loads nothing.
fn assert_only_own_markup(html: &str) {
    const TAGS: [&str; 24] = [
        "!DOCTYPE", "html", "head", "meta", "title", "style", "body", "main", "h1", "h2", "h3",
        "p", "ul", "ol", "li", "table", "thead", "tbody", "tr", "th", "td", "code", "strong", "a",
    ];
    for (at, _) in html.match_indices('<') {
        let rest = &html[at + 1..];
        let rest = rest.strip_prefix('/').unwrap_or(rest);
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '!')
            .collect();
        assert!(TAGS.contains(&name.as_str()), "tag <{name}> in the page");
        if name == "a" && !rest.starts_with("a>") {
            let attrs = &rest[..rest.find('>').unwrap()];
            assert!(
                attrs.starts_with("a href=\"#") || attrs.starts_with("a id=\""),
                "<{attrs}>"
            );
        }
    }
    for asset in ["url(", "@import", "src="] {
        let style = &html[html.find("<style>").unwrap()..html.find("</style>").unwrap()];
        assert!(!style.contains(asset), "`{asset}` in the style");
    }
}

const LIVE: &str = r#"
service:
  name: Live
  contact: api@example.no
  documentation_url: "https://docs.example.no/consumers.html"
server:
  listen: ["{listen}"]
  admin_listen: "{admin}"
  threads: 1
  limits:
    max_request_header_bytes: 2048
issuers:
  - name: test
    issuer: "https://test.maskinporten.no/"
    jwks_uri: "{jwks}"
upstreams:
  - name: echo
    targets: ["{upstream}"]
routes:
  - name: income
    path: /income/{fnr}
    methods: [GET]
    upstream: echo
    issuers: [test]
    scopes:
      all: ["demo:inntekt.read"]
    delegation:
      allow: false
    consumers:
      allow: ["0192:310497460"]
    consent:
      resources: ["demo-samtykke-inntekt"]
      subject:
        path_param: fnr
      metadata:
        required: [inntektsaar]
        match:
          inntektsaar: { query: year }
"#;

/// A token for the live route, `edit` applied to the standard facts.
fn live_token(world: &World, edit: impl FnOnce(&mut TokenSpec)) -> String {
    let mut spec = world.spec();
    edit(&mut spec);
    world.token(&spec.claims(World::now()))
}

/// Requests that the live route refuses, each with the reason it must get.
fn live_refusals(world: &World, gw: &Gateway) -> Vec<(Response, &'static str)> {
    let ok = format!("/income/{PERSON}?year=2025");
    let tok = |edit: fn(&mut TokenSpec)| live_token(world, edit);
    vec![
        (gw.get(&ok, None, &[]), "missing_token"),
        (gw.get(&ok, Some("not-a-jwt"), &[]), "malformed_token"),
        (
            gw.get(&format!("{ok}&access_token=x"), Some(&tok(|_| ())), &[]),
            "invalid_request",
        ),
        (
            gw.get(&ok, Some(&tok(|s| s.scope = "other:scope".into())), &[]),
            "insufficient_scope",
        ),
        (
            gw.get(&ok, Some(&tok(|s| s.supplier = Some(SUPPLIER.into()))), &[]),
            "supplier_not_allowed",
        ),
        (
            gw.get(
                &ok,
                Some(&tok(|s| s.consumer = "0192:991825827".into())),
                &[],
            ),
            "consumer_not_allowed",
        ),
        (
            gw.get(
                &ok,
                Some(&tok(|s| {
                    s.from = None;
                    s.resource = None;
                })),
                &[],
            ),
            "consent_missing",
        ),
        (
            gw.get(&ok, Some(&tok(|s| s.resource = Some("other".into()))), &[]),
            "consent_resource_mismatch",
        ),
        (
            gw.get(
                &ok,
                Some(&tok(|s| s.valid_to = Some("2020-01-01T00:00:00Z".into()))),
                &[],
            ),
            "consent_expired",
        ),
        (
            gw.get(
                &format!("/income/{OTHER_PERSON}?year=2025"),
                Some(&tok(|_| ())),
                &[],
            ),
            "consent_subject_mismatch",
        ),
        (
            gw.get(
                &format!("/income/{PERSON}?year=2024"),
                Some(&tok(|_| ())),
                &[],
            ),
            "consent_metadata_mismatch",
        ),
        (
            gw.raw(&format!(
                "POST {ok} HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )),
            "method_not_allowed",
        ),
        // A refusal of the connection guard (before any route) links it too.
        (
            gw.raw(&format!(
                "GET {ok} HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
                "x".repeat(4096)
            )),
            "headers_too_large",
        ),
    ]
}

/// Through the running gateway: every problem body links its reason's
/// anchor, and each reason it answers on the route is in the route's docs.
#[test]
fn problem_bodies_link_their_reason_in_the_documentation() {
    let world = World::new();
    let gw = world.start(LIVE);
    let config = config::load(&gw.config_path).unwrap_or_else(|e| panic!("{e}"));
    let documented = docs::route_reasons(&config, &config.routes[0]);
    let ok = format!("/income/{PERSON}?year=2025");
    let cases = live_refusals(&world, &gw);
    for (answer, want) in &cases {
        let body = answer.json();
        assert_eq!(body["reason"], *want, "{}", answer.body);
        assert_eq!(
            body["documentation"],
            format!("https://docs.example.no/consumers.html#{want}")
        );
        assert!(
            documented.iter().any(|r| r.code() == *want),
            "{want} answered but not documented"
        );
    }
    // The allowed request is unaffected.
    assert_eq!(gw.get(&ok, Some(&world.valid_token()), &[]).status, 200);
}
