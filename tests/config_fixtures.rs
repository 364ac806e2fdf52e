//! The shipped example `gateway.yaml` loads, each invalid fixture under
//! `tests/fixtures/config/` fails with its pinned error (field path and line),
//! and a generated 10,000-route config loads.

use std::path::{Path, PathBuf};

use consent_gateway::config::{self, AuthMode, Binding, ConfigError};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn fixture(name: &str) -> PathBuf {
    repo("tests/fixtures/config").join(name)
}

/// Loads a fixture that must fail; returns its errors.
fn errors_of(name: &str) -> Vec<ConfigError> {
    match config::load(&fixture(name)) {
        Ok(_) => panic!("{name} loaded but should not"),
        Err(errors) => errors.0,
    }
}

/// One expected error: which file (fixture-relative), line, field path, and
/// a fragment of the message.
struct Expect<'a> {
    file: &'a str,
    line: usize,
    path: &'a str,
    says: &'a str,
}

fn expect(name: &str, expected: &[Expect<'_>]) {
    let errors = errors_of(name);
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errors.len(),
        expected.len(),
        "{name}:\n{}",
        shown.join("\n")
    );
    for (error, want) in errors.iter().zip(expected) {
        assert_eq!(error.file, fixture(want.file), "{error}");
        assert_eq!(error.line, Some(want.line), "{error}");
        assert_eq!(error.path, want.path, "{error}");
        assert!(error.message.contains(want.says), "{error}");
    }
}

fn one(name: &str, line: usize, path: &str, says: &str) {
    expect(
        name,
        &[Expect {
            file: name,
            line,
            path,
            says,
        }],
    );
}

#[test]
fn the_example_gateway_yaml_loads() {
    let config = config::load(&repo("gateway.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.issuers.len(), 1);
    assert_eq!(config.issuers[0].issuer, "https://test.maskinporten.no/");
    assert_eq!(
        config.issuers[0].jwks_uri,
        "https://test.maskinporten.no/jwk"
    );
    let modes: Vec<AuthMode> = config.routes.iter().map(|r| r.auth.mode).collect();
    assert_eq!(
        modes,
        vec![AuthMode::Consent, AuthMode::Token, AuthMode::None]
    );
    let consent = config.routes[0].auth.consent.as_ref().unwrap();
    assert_eq!(consent.subject, Some(Binding::PathParam("fnr".to_string())));
    assert_eq!(
        consent.metadata_match,
        vec![(
            "inntektsaar".to_string(),
            Binding::PathParam("year".to_string())
        )]
    );
    let consumers = config.routes[0].auth.consumers.as_ref().unwrap();
    assert!(consumers.contains("0192:310497460"));
    assert_eq!(config.source_files.len(), 2);
    assert!(config.source_files[1].ends_with("access-lists/income-consumers.txt"));
    let summary = config::summary(&config);
    assert!(summary.contains("maskinporten-test"), "{summary}");
    assert!(
        summary.contains("income: GET /income/{fnr}/{year} -> income-api auth=consent"),
        "{summary}"
    );
}

#[test]
fn a_minimal_config_loads() {
    let config = config::load(&fixture("valid_minimal.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.routes.len(), 1);
    assert_eq!(config.source_files, vec![fixture("valid_minimal.yaml")]);
}

#[test]
fn unknown_key() {
    one(
        "unknown_key.yaml",
        10,
        "routes[0].forward.strip_authorisation",
        "unknown field `strip_authorisation`",
    );
    let error = &errors_of("unknown_key.yaml")[0];
    assert_eq!(error.column, Some(7));
}

#[test]
fn bare_number_duration() {
    one("bad_duration.yaml", 5, "issuers[0].leeway", "needs a unit");
}

#[test]
fn unknown_duration_unit() {
    one(
        "bad_duration_unit.yaml",
        4,
        "upstreams[0].connect_timeout",
        "invalid duration `1 fortnight`",
    );
}

#[test]
fn service_texts_and_documentation_url_are_validated() {
    expect(
        "bad_service.yaml",
        &[
            Expect {
                file: "bad_service.yaml",
                line: 10,
                path: "service.name",
                says: "must not be empty",
            },
            Expect {
                file: "bad_service.yaml",
                line: 12,
                path: "service.documentation_url",
                says: "https or http",
            },
        ],
    );
}

#[test]
fn unknown_service_key_is_refused() {
    one(
        "bad_service_key.yaml",
        11,
        "service.contcat",
        "unknown field `contcat`",
    );
}

#[test]
fn service_is_optional_and_compiles_when_given() {
    let config = config::load(&repo("gateway.yaml")).expect("example loads");
    assert!(config.service.contact.is_some());
    let config = config::load(&fixture("valid_minimal.yaml")).expect("minimal loads");
    assert_eq!(config.service, config::Service::default());
}

#[test]
fn unknown_upstream() {
    one(
        "unknown_upstream.yaml",
        11,
        "routes[1].upstream",
        "unknown upstream `bakend`",
    );
}

#[test]
fn consent_missing() {
    one(
        "consent_missing.yaml",
        9,
        "routes[0].consent",
        "`auth: consent` needs a `consent` block",
    );
}

#[test]
fn unknown_path_param() {
    one(
        "unknown_path_param.yaml",
        19,
        "routes[0].consent.metadata.match.inntektsaar.path_param",
        "path param `aar` is not in the route's path",
    );
}

#[test]
fn empty_targets() {
    one(
        "empty_targets.yaml",
        3,
        "upstreams[0].targets",
        "must not be empty",
    );
}

#[test]
fn bad_addresses() {
    let f = "bad_address.yaml";
    expect(
        f,
        &[
            Expect {
                file: f,
                line: 2,
                path: "server.listen[1]",
                says: "`localhost:8081` is not an ip:port address",
            },
            Expect {
                file: f,
                line: 3,
                path: "server.admin_listen",
                says: "`127.0.0.1` is not an ip:port address",
            },
            Expect {
                file: f,
                line: 8,
                path: "upstreams[0].targets[1]",
                says: "the port is missing",
            },
        ],
    );
}

#[test]
fn hs256_is_refused() {
    one(
        "alg_hs256.yaml",
        5,
        "issuers[0].algorithms[1]",
        "`HS256` is refused",
    );
}

#[test]
fn none_algorithm_is_refused() {
    one(
        "alg_none.yaml",
        6,
        "issuers[0].algorithms[0]",
        "`none` is refused",
    );
}

#[test]
fn bad_org_numbers_in_an_access_list_name_the_list_and_its_lines() {
    let list = "lists/bad.txt";
    expect(
        "bad_orgno_list.yaml",
        &[
            Expect {
                file: list,
                line: 3,
                path: "routes[0].consumers.file",
                says: "`310497461` is not an organisation number (mod-11",
            },
            Expect {
                file: list,
                line: 4,
                path: "routes[0].consumers.file",
                says: "`0192:12345` is not an organisation number",
            },
        ],
    );
    let shown = errors_of("bad_orgno_list.yaml")[0].to_string();
    assert!(
        shown.contains("lists/bad.txt:3: routes[0].consumers.file: "),
        "{shown}"
    );
}

#[test]
fn a_good_access_list_loads() {
    let text = std::fs::read_to_string(fixture("bad_orgno_list.yaml"))
        .unwrap()
        .replace("lists/bad.txt", "lists/good.txt");
    let config = config::load_str(&text, &fixture("inline.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let consumers = config.routes[0].auth.consumers.as_ref().unwrap();
    assert_eq!(consumers.len(), 2);
    assert!(consumers.contains("0192:991825827"));
    assert_eq!(config.source_files[1], fixture("lists/good.txt"));
}

#[test]
fn duplicate_names() {
    let f = "duplicate_names.yaml";
    expect(
        f,
        &[
            Expect {
                file: f,
                line: 5,
                path: "issuers[1].name",
                says: "duplicate issuer name `mp`",
            },
            Expect {
                file: f,
                line: 11,
                path: "upstreams[1].name",
                says: "duplicate upstream name `backend`",
            },
            Expect {
                file: f,
                line: 18,
                path: "routes[1].name",
                says: "duplicate route name `a`",
            },
        ],
    );
}

#[test]
fn unreadable_access_list() {
    one(
        "unreadable_access_list.yaml",
        15,
        "routes[0].consumers.file",
        "cannot read access list",
    );
}

#[test]
fn several_errors_in_one_file_are_all_reported_in_line_order() {
    let errors = errors_of("many_errors.yaml");
    let got: Vec<(Option<usize>, &str)> =
        errors.iter().map(|e| (e.line, e.path.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (Some(3), "server.threads"),
            (Some(7), "issuers[0].jwks_uri"),
            (Some(12), "upstreams[0].sni"),
            (Some(15), "routes[0].host"),
            (Some(17), "routes[0].methods[1]"),
            (Some(19), "routes[0].issuers[1]"),
            (Some(20), "routes[0].strip_prefix"),
            (Some(23), "routes[0].consent.subject"),
            (Some(27), "routes[1].path"),
            (Some(30), "routes[1].issuers"),
            (Some(31), "routes[2].issuers"),
            (Some(36), "routes[2].consumers.allow[0]"),
            (Some(37), "routes[2].consent"),
        ]
    );
}

#[test]
fn shape_errors_in_several_sections_are_all_reported_with_hints() {
    let errors = errors_of("many_shape_errors.yaml");
    let got: Vec<(Option<usize>, &str)> =
        errors.iter().map(|e| (e.line, e.path.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (Some(5), "server.admin_listn"),
            (Some(10), "issuers[0].leeway"),
            (Some(13), "upstreams[0].targets"),
            (Some(18), "routes[0].auth"),
            (Some(23), "routes[1].forward.strip_authorisation"),
            (Some(26), "tracing.queue_size"),
        ],
        "{errors:#?}"
    );
    let says = |i: usize| errors[i].message.as_str();
    assert!(
        says(0).contains("did you mean `admin_listen`?"),
        "{}",
        says(0)
    );
    assert!(says(1).contains("needs a unit"), "{}", says(1));
    assert!(
        says(2).contains("write a list, [\"127.0.0.1:8081\"]"),
        "{}",
        says(2)
    );
    assert!(says(3).contains("did you mean `none`?"), "{}", says(3));
    assert!(
        says(4).contains("did you mean `strip_authorization`?"),
        "{}",
        says(4)
    );
    assert!(
        says(5).contains("did you mean `queue_spans`?") || says(5).contains("queue_spans"),
        "{}",
        says(5)
    );
}

#[test]
fn pseudonym_key_errors_come_with_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.yaml");
    let text = "routes: []\nserver:\n  threads: 0\naudit:\n  personal_data: pseudonymized\n";
    let errors = config::load_str(text, &file).unwrap_err().0;
    let got: Vec<(Option<usize>, &str)> =
        errors.iter().map(|e| (e.line, e.path.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (Some(3), "server.threads"),
            (Some(5), "audit.personal_data")
        ],
        "{errors:#?}"
    );
    std::fs::write(dir.path().join("short.key"), "too short\n").unwrap();
    let text = "routes: []\nserver:\n  threads: 0\naudit:\n  personal_data: pseudonymized\n  pseudonym_key_file: short.key\n";
    let errors = config::load_str(text, &file).unwrap_err().0;
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_eq!(errors[1].path, "audit.pseudonym_key_file");
    assert!(
        errors[1].message.contains("at least 16 bytes"),
        "{}",
        errors[1]
    );
    std::fs::write(dir.path().join("good.key"), "0123456789abcdef0123\n").unwrap();
    let text =
        "routes: []\naudit:\n  personal_data: pseudonymized\n  pseudonym_key_file: good.key\n";
    let config = config::load_str(text, &file).unwrap();
    assert_eq!(
        config.audit.pseudonym_key.as_deref(),
        Some(&b"0123456789abcdef0123"[..])
    );
}

#[test]
fn tracing_is_validated_all_at_once_and_compiled() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.yaml");
    let text = "routes: []\nserver:\n  threads: 0\ntracing:\n  otlp_endpoint: \"grpc://collector:4317\"\n  queue_spans: 0\n";
    let errors = config::load_str(text, &file).unwrap_err().0;
    let got: Vec<(Option<usize>, &str)> =
        errors.iter().map(|e| (e.line, e.path.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (Some(3), "server.threads"),
            (Some(5), "tracing.otlp_endpoint"),
            (Some(6), "tracing.queue_spans"),
        ],
        "{errors:#?}"
    );
    assert!(errors[1].message.contains("OTLP/HTTP"), "{}", errors[1]);
    let missing = config::load_str("routes: []\ntracing: {}\n", &file)
        .unwrap_err()
        .0;
    assert_eq!(missing[0].path, "tracing.otlp_endpoint");
    assert!(
        missing[0].message.contains("http://collector:4318"),
        "{}",
        missing[0]
    );
    let config = config::load_str(
        "routes: []\ntracing:\n  otlp_endpoint: \"http://collector:4318\"\n",
        &file,
    )
    .unwrap();
    let tracing = config.tracing.unwrap();
    assert_eq!(tracing.otlp_endpoint, "http://collector:4318/v1/traces");
    assert_eq!(tracing.queue_spans, config::DEFAULT_TRACE_QUEUE_SPANS);
    assert!(config::load_str("routes: []\n", &file)
        .unwrap()
        .tracing
        .is_none());
}

#[test]
fn a_missing_config_file_is_an_error_not_a_panic() {
    let errors = config::load(&fixture("no-such-file.yaml")).unwrap_err();
    assert_eq!(errors.0.len(), 1);
    assert!(errors.0[0].message.contains("cannot read the config file"));
}

#[test]
fn ten_thousand_routes_load() {
    let mut text = String::from(
        "issuers:\n  - name: mp\n    issuer: \"https://test.maskinporten.no/\"\n    jwks_uri: \"https://test.maskinporten.no/jwk\"\n\
         upstreams:\n  - name: backend\n    targets: [\"127.0.0.1:8081\"]\n\
         routes:\n",
    );
    for i in 0..10_000 {
        text.push_str(&format!(
            "  - name: r{i}\n    host: h{i}.example.no\n    path: /api/{i}/{{fnr}}/{{year}}\n    methods: [GET]\n    upstream: backend\n    issuers: [mp]\n    consumers:\n      file: lists/good.txt\n    consent:\n      resources: [res-{i}]\n      subject:\n        path_param: fnr\n      metadata:\n        match:\n          inntektsaar: {{ path_param: year }}\n"
        ));
    }
    let config =
        config::load_str(&text, &fixture("generated.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.routes.len(), 10_000);
    assert_eq!(config.routes[9_999].name, "r9999");
    assert_eq!(config.source_files.len(), 2);
    let summary = config::summary(&config);
    assert!(summary.contains("... and 9980 more routes"), "{summary}");
    assert!(summary.lines().count() < 40, "{summary}");
}

#[test]
fn keys_may_not_go_stale_between_refreshes() {
    let text = |stale: &str| {
        format!(
            "issuers:\n  - name: i\n    issuer: \"https://i.example/\"\n    jwks_uri: \"https://i.example/jwk\"\n    jwks_refresh: 5m\n    jwks_max_stale: {stale}\nroutes: []\n"
        )
    };
    let file = Path::new("/nonexistent/gateway.yaml");
    let errors = config::load_str(&text("5m"), file).unwrap_err().0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "issuers[0].jwks_max_stale");
    assert_eq!(errors[0].line, Some(6));
    assert!(config::load_str(&text("15m"), file).is_ok());
}
