//! Criterion benches of routing and configuration: path normalisation, route
//! matching (`RouteTable::find`) at 10, 1,000 and 10,000 routes, and loading
//! plus validating a generated `gateway.yaml` of 10,000 routes.
//!
//! `cargo bench --bench routes`. Speed is measured here, never asserted.

mod common;

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

use consent_gateway::config::{self, Config};
use consent_gateway::policy::routes::{normalize_path, RouteMatch, RouteTable};

/// A valid configuration of `routes` routes, as a large deployment might
/// write it: two of three are consent routes with subject and metadata
/// bindings, one of three a token route with a wildcard tail; every tenth is
/// bound to a host.
fn generated_config(routes: usize) -> String {
    let mut yaml = String::from(
        "server:\n  listen: [\"127.0.0.1:8080\"]\n  admin_listen: null\n  threads: 1\n\
         issuers:\n  - name: mp\n    issuer: \"https://test.maskinporten.no/\"\n    \
         jwks_uri: \"http://127.0.0.1:1/jwk\"\n\
         upstreams:\n  - name: api\n    targets: [\"127.0.0.1:8081\"]\n\
         routes:\n",
    );
    for i in 0..routes {
        let host = if i % 10 == 0 {
            format!("    host: tenant{i}.example.no\n")
        } else {
            String::new()
        };
        if i % 3 == 2 {
            let _ = write!(
                yaml,
                "  - name: codes-{i}\n{host}    path: /svc{i}/codes/{{*rest}}\n    \
                 methods: [GET, HEAD]\n    upstream: api\n    auth: token\n    issuers: [mp]\n    \
                 scopes:\n      all: [\"demo:inntekt.read\"]\n    consumers:\n      \
                 allow: [\"0192:310497460\"]\n"
            );
        } else {
            let _ = write!(
                yaml,
                "  - name: income-{i}\n{host}    path: /svc{i}/income/{{fnr}}/{{year}}\n    \
                 methods: [GET]\n    upstream: api\n    issuers: [mp]\n    \
                 scopes:\n      all: [\"demo:inntekt.read\"]\n    consent:\n      \
                 resources: [\"demo-samtykke-inntekt\"]\n      subject:\n        \
                 path_param: fnr\n        types: [person]\n      metadata:\n        \
                 required: [inntektsaar]\n        match:\n          \
                 inntektsaar: {{ path_param: year }}\n"
            );
        }
    }
    yaml
}

fn load(text: &str) -> Config {
    match config::load_str(text, Path::new("/nonexistent/gateway.yaml")) {
        Ok(config) => config,
        Err(errors) => panic!("the generated config is valid: {errors}"),
    }
}

fn bench_normalize(c: &mut Criterion) {
    let mut group = common::group(
        c,
        "normalize_path",
        50,
        Duration::from_millis(300),
        Duration::from_secs(1),
    );
    for (name, path) in [
        ("clean", "/income/17839116535/2025"),
        ("dot_segments", "/income/./a/../17839116535//2025/"),
        ("escapes", "/codes/%61%62c/%C3%A6%20x/kommune%2Dnr"),
    ] {
        assert!(normalize_path(path).is_ok(), "{name}");
        group.bench_function(name, |b| b.iter(|| normalize_path(black_box(path))));
    }
    group.finish();
}

fn bench_find(c: &mut Criterion) {
    let config = load(&generated_config(10_000));
    let mut group = common::group(
        c,
        "route_find",
        50,
        Duration::from_millis(300),
        Duration::from_secs(1),
    );
    for size in [10usize, 1_000, 10_000] {
        let table = RouteTable::new(&config.routes[..size]).expect("route table");
        // The last consent route of the table (the worst case for a linear
        // scan), a wildcard route, and a path no route matches.
        let last = (0..size).rev().find(|i| i % 3 != 2 && i % 10 != 0);
        let last = last.expect("a consent route without host");
        let hit = format!("/svc{last}/income/17839116535/2025");
        let first_codes = format!("/svc2/codes/{}", "a/b/c");
        let miss = "/nowhere/17839116535/2025";
        assert!(matches!(
            table.find("api.example.no", &hit, "GET"),
            RouteMatch::Found { route, .. } if route == last
        ));
        assert!(matches!(
            table.find("api.example.no", &first_codes, "GET"),
            RouteMatch::Found { route: 2, .. }
        ));
        assert_eq!(
            table.find("api.example.no", miss, "GET"),
            RouteMatch::NotFound
        );
        group.bench_with_input(BenchmarkId::new("last_route", size), &hit, |b, path| {
            b.iter(|| table.find(black_box("api.example.no"), black_box(path), "GET"))
        });
        group.bench_with_input(
            BenchmarkId::new("wildcard_route", size),
            &first_codes,
            |b, path| b.iter(|| table.find(black_box("api.example.no"), black_box(path), "GET")),
        );
        group.bench_with_input(BenchmarkId::new("no_route", size), miss, |b, path| {
            b.iter(|| table.find(black_box("api.example.no"), black_box(path), "GET"))
        });
    }
    group.finish();
}

fn bench_load(c: &mut Criterion) {
    let text = generated_config(10_000);
    assert_eq!(load(&text).routes.len(), 10_000);
    let mut group = common::group(
        c,
        "config_load",
        10,
        Duration::from_millis(500),
        Duration::from_secs(5),
    );
    group.bench_function("load_str_10000_routes", |b| {
        b.iter(|| load(black_box(&text)))
    });
    group.bench_function("load_str_and_route_table_10000_routes", |b| {
        b.iter(|| {
            let config = load(black_box(&text));
            RouteTable::new(&config.routes).expect("route table")
        })
    });
    group.finish();
}

criterion_group!(benches, bench_normalize, bench_find, bench_load);
criterion_main!(benches);
