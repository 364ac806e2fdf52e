//! Reload (SPEC sections 7 and 12 "Reload") through the real binary: every
//! trigger (edit in place, save by rename, Kubernetes `..data` swap, SIGHUP),
//! invalid configs that leave the old one serving, access-list changes,
//! reloads under a continuous stream of requests, restart-only settings.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;

/// How long a reload may take to show. SPEC section 7 says 2 s; the bound
/// here is looser so a loaded CI machine does not flake (a missed trigger
/// never reloads at all, so the test still fails on it).
const RELOAD_SECS: u64 = 10;

/// A config with auth-free routes at `paths`, all to `{upstream}`.
fn open_routes(paths: &[&str]) -> String {
    let mut yaml = String::from(
        r#"
server:
  listen: ["{listen}"]
  admin_listen: "{admin}"
  threads: 1
upstreams:
  - name: echo
    targets: ["{upstream}"]
routes:
"#,
    );
    for (i, path) in paths.iter().enumerate() {
        yaml.push_str(&format!(
            "  - name: r{i}\n    path: {path}\n    upstream: echo\n    auth: none\n"
        ));
    }
    yaml
}

fn status_of(gw: &Gateway, path: &str) -> u16 {
    gw.get(path, None, &[]).status
}

fn reloads(gw: &Gateway, outcome: &str) -> f64 {
    gw.series(
        "consent_gateway_config_reloads_total",
        &[("outcome", outcome)],
    )
    .unwrap_or(-1.0)
}

/// Overwrites a file in place: same inode, truncated, then written.
fn write_in_place(path: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .expect("open in place");
    file.write_all(text.as_bytes()).expect("write in place");
}

/// Saves by rename: a temporary file in the same directory, renamed over.
fn write_by_rename(path: &Path, text: &str) {
    let tmp = path.with_file_name(".save.tmp");
    std::fs::write(&tmp, text).expect("write temporary");
    std::fs::rename(&tmp, path).expect("rename over");
}

#[test]
fn edit_in_place_and_save_by_rename_are_seen() {
    let world = World::new();
    let gw = world.start(&open_routes(&["/a"]));
    assert_eq!(status_of(&gw, "/a"), 200);
    assert_eq!(status_of(&gw, "/b"), 404);
    assert_eq!(gw.generation(), 1);
    assert_eq!(gw.metric("consent_gateway_config_generation"), Some(1.0));

    // Edit in place (truncate + write, the inode stays).
    let text = world.render(&open_routes(&["/a", "/b"]), gw.addr, gw.admin);
    write_in_place(&gw.config_path, &text);
    eventually(RELOAD_SECS, "edit in place applies", || {
        status_of(&gw, "/b") == 200
    });
    assert_eq!(gw.generation(), 2);
    assert_eq!(gw.metric("consent_gateway_config_generation"), Some(2.0));

    // Save by rename (how most editors and config tools write).
    let text = world.render(&open_routes(&["/c"]), gw.addr, gw.admin);
    write_by_rename(&gw.config_path, &text);
    eventually(RELOAD_SECS, "save by rename applies", || {
        status_of(&gw, "/c") == 200
    });
    assert_eq!(status_of(&gw, "/a"), 404);
    assert_eq!(status_of(&gw, "/b"), 404);
    assert_eq!(gw.generation(), 3);
    assert_eq!(gw.status()["last_reload_error"], serde_json::Value::Null);
}

/// The layout the kubelet gives a mounted ConfigMap.
fn configmap_layout(dir: &Path, text: &str) -> PathBuf {
    let version = dir.join("..2026_01_01_00_00_00.1");
    std::fs::create_dir(&version).expect("mkdir version");
    std::fs::write(version.join("gateway.yaml"), text).expect("write config");
    std::os::unix::fs::symlink("..2026_01_01_00_00_00.1", dir.join("..data")).expect("..data");
    std::os::unix::fs::symlink("..data/gateway.yaml", dir.join("gateway.yaml"))
        .expect("gateway.yaml link");
    dir.join("gateway.yaml")
}

#[test]
fn kubernetes_configmap_symlink_swap_is_seen() {
    let world = World::new();
    let gw = world.spawn_custom(&open_routes(&["/a"]), &[], &[], &configmap_layout);
    wait_ready(&gw);
    assert_eq!(status_of(&gw, "/b"), 404);

    // What the kubelet does on an update: a new timestamped directory, a
    // `..data_tmp` symlink to it, renamed over `..data`, the old one removed.
    let dir = gw.dir.path();
    let second = dir.join("..2026_01_01_00_00_00.2");
    std::fs::create_dir(&second).expect("mkdir second version");
    let text = world.render(&open_routes(&["/a", "/b"]), gw.addr, gw.admin);
    std::fs::write(second.join("gateway.yaml"), text).expect("write second config");
    std::os::unix::fs::symlink("..2026_01_01_00_00_00.2", dir.join("..data_tmp"))
        .expect("..data_tmp");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap ..data");
    // The swap alone is the trigger (the kubelet removes the old version
    // right after it, which is seen as well).
    eventually(RELOAD_SECS, "ConfigMap update applies", || {
        status_of(&gw, "/b") == 200
    });
    std::fs::remove_dir_all(dir.join("..2026_01_01_00_00_00.1")).expect("remove old version");
    assert_eq!(status_of(&gw, "/a"), 200);
    assert_eq!(gw.generation(), 2);
    let config_bytes = std::fs::read(&gw.config_path).expect("read config");
    assert_eq!(
        gw.status()["config_sha256"].as_str(),
        Some(sha256_hex(&config_bytes).as_str()),
        "/status names the new file's digest"
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The config is a hard link to a file in a subdirectory that nobody
/// watches: editing it there is invisible to the watcher, so only SIGHUP can
/// make the change apply.
fn hidden_hard_link_layout(dir: &Path, text: &str) -> PathBuf {
    let hidden = dir.join("hidden");
    std::fs::create_dir(&hidden).expect("mkdir hidden");
    std::fs::write(hidden.join("real.yaml"), text).expect("write config");
    std::fs::hard_link(hidden.join("real.yaml"), dir.join("gateway.yaml")).expect("hard link");
    dir.join("gateway.yaml")
}

#[test]
fn sighup_reloads() {
    let world = World::new();
    let gw = world.spawn_custom(&open_routes(&["/a"]), &[], &[], &hidden_hard_link_layout);
    wait_ready(&gw);
    assert_eq!(status_of(&gw, "/b"), 404);
    let successes = reloads(&gw, "success");
    assert_eq!(successes, 0.0);

    // Unchanged content: SIGHUP still counts a (successful) reload attempt,
    // and the generation stays.
    gw.signal("HUP");
    eventually(RELOAD_SECS, "SIGHUP counts a reload", || {
        reloads(&gw, "success") == successes + 1.0
    });
    assert_eq!(gw.generation(), 1);
    assert!(gw.stderr().contains("SIGHUP"), "{}", gw.stderr());

    // A change the watcher cannot see applies on SIGHUP.
    let text = world.render(&open_routes(&["/a", "/b"]), gw.addr, gw.admin);
    write_in_place(&gw.dir.path().join("hidden/real.yaml"), &text);
    assert_eq!(
        reloads(&gw, "success"),
        successes + 1.0,
        "the hidden edit was not seen by the watcher"
    );
    gw.signal("HUP");
    eventually(RELOAD_SECS, "SIGHUP applies the change", || {
        status_of(&gw, "/b") == 200
    });
    assert_eq!(gw.generation(), 2);
    assert_eq!(reloads(&gw, "success"), successes + 2.0);
    assert_eq!(reloads(&gw, "failure"), 0.0);
}

const GUARDED: &str = r#"
server:
  listen: ["{listen}"]
  admin_listen: "{admin}"
  threads: 1
issuers:
  - name: test
    issuer: "https://test.maskinporten.no/"
    jwks_uri: "{jwks}"
upstreams:
  - name: echo
    targets: ["{upstream}"]
routes:
  - name: open
    path: /a
    upstream: echo
    auth: none
  - name: listed
    path: /listed
    upstream: echo
    auth: token
    issuers: [test]
    consumers:
      file: consumers.txt
"#;

const CONSUMERS: &str = "# who may call\n0192:310497460\n302685991 # bare number\n";
const OTHER_CONSUMERS: &str = "0192:302685991\n";

#[test]
fn invalid_configs_keep_the_old_one_serving_until_a_good_one_arrives() {
    let world = World::new();
    let gw = world.start_with(GUARDED, &[("consumers.txt", CONSUMERS)]);
    let token = world.valid_token();
    let with_b =
        format!("{GUARDED}  - name: b\n    path: /b\n    upstream: echo\n    auth: none\n");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "bad YAML",
            format!("{with_b}  - name: [unclosed\n"),
            "gateway.yaml",
        ),
        (
            "unknown key",
            with_b.replace("    auth: none\n", "    auth: none\n    colour: blue\n"),
            "colour",
        ),
        (
            "dangling upstream",
            with_b.replace(
                "  - name: b\n    path: /b\n    upstream: echo",
                "  - name: b\n    path: /b\n    upstream: nowhere",
            ),
            "nowhere",
        ),
        (
            "unreadable access list",
            with_b.replace("file: consumers.txt", "file: missing.txt"),
            "missing.txt",
        ),
    ];
    let mut failures = reloads(&gw, "failure");
    assert_eq!(failures, 0.0, "both outcomes are exposed from the start");
    for (what, template, hint) in cases {
        gw.rewrite(&world, &template);
        eventually(RELOAD_SECS, what, || reloads(&gw, "failure") > failures);
        failures = reloads(&gw, "failure");
        let status = gw.status();
        let error = status["last_reload_error"].as_str().unwrap_or_default();
        assert!(error.contains(hint), "{what}: {error}");
        assert_eq!(status["generation"], 1, "{what}");
        assert_eq!(gw.metric("consent_gateway_config_generation"), Some(1.0));
        // The old generation still serves, rules included.
        assert_eq!(status_of(&gw, "/a"), 200, "{what}");
        assert_eq!(status_of(&gw, "/b"), 404, "{what}");
        assert_eq!(gw.get("/listed", Some(&token), &[]).status, 200, "{what}");
        assert_eq!(gw.get("/listed", None, &[]).status, 401, "{what}");
        assert!(gw.stderr().contains("keeping the old one"), "{what}");
    }

    // The last bad config names `missing.txt`: creating that file is seen
    // (the watcher also follows the files a failed attempt tried to read).
    write_by_rename(&gw.dir.path().join("missing.txt"), OTHER_CONSUMERS);
    eventually(RELOAD_SECS, "creating the missing list applies", || {
        status_of(&gw, "/b") == 200
    });
    let status = gw.status();
    assert_eq!(status["generation"], 2);
    assert_eq!(status["last_reload_error"], serde_json::Value::Null);
    assert_eq!(
        gw.get("/listed", Some(&token), &[]).reason(),
        "consumer_not_allowed"
    );

    // Back to the first config: a new generation.
    gw.rewrite(&world, GUARDED);
    eventually(RELOAD_SECS, "the first config again", || {
        status_of(&gw, "/b") == 404
    });
    assert_eq!(gw.generation(), 3);
    assert_eq!(gw.get("/listed", Some(&token), &[]).status, 200);

    // The access-list file itself disappearing is a failed reload too.
    let list = gw.dir.path().join("consumers.txt");
    failures = reloads(&gw, "failure");
    std::fs::remove_file(&list).expect("remove access list");
    eventually(RELOAD_SECS, "a removed access list fails", || {
        reloads(&gw, "failure") > failures
    });
    let error = gw.status()["last_reload_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(error.contains("consumers.txt"), "{error}");
    assert_eq!(gw.get("/listed", Some(&token), &[]).status, 200);

    // Restoring the same content: a success that clears the error but is
    // not a new generation.
    let successes = reloads(&gw, "success");
    write_by_rename(&list, CONSUMERS);
    eventually(RELOAD_SECS, "restoring the access list", || {
        reloads(&gw, "success") > successes
    });
    let status = gw.status();
    assert_eq!(status["last_reload_error"], serde_json::Value::Null);
    assert_eq!(status["generation"], 3);

    // A good change: a new generation.
    gw.rewrite(&world, &with_b);
    eventually(RELOAD_SECS, "a good config applies", || {
        status_of(&gw, "/b") == 200
    });
    assert_eq!(gw.generation(), 4);
    assert_eq!(gw.status()["last_reload_error"], serde_json::Value::Null);
}

#[test]
fn an_access_list_change_applies() {
    let world = World::new();
    let gw = world.start_with(GUARDED, &[("consumers.txt", CONSUMERS)]);
    let token = world.valid_token();
    assert_eq!(gw.get("/listed", Some(&token), &[]).status, 200);

    let list = gw.dir.path().join("consumers.txt");
    write_in_place(&list, OTHER_CONSUMERS);
    eventually(RELOAD_SECS, "the consumer is removed", || {
        gw.get("/listed", Some(&token), &[]).reason() == "consumer_not_allowed"
    });
    let denied = gw.get("/listed", Some(&token), &[]);
    assert_eq!(denied.status, 403);
    assert_eq!(gw.generation(), 2);

    write_by_rename(&list, CONSUMERS);
    eventually(RELOAD_SECS, "the consumer is back", || {
        gw.get("/listed", Some(&token), &[]).status == 200
    });
    assert_eq!(gw.generation(), 3);
}

/// Two generations: A routes `/stream/{*rest}` unchanged to `{upstream}`,
/// B strips `/stream` and sends it to `{upstream2}`. A response says which
/// generation served it (the path the upstream saw), and the request id
/// says which upstream got it: the two must agree.
fn stream_config(generation_b: bool) -> String {
    let (upstream, strip) = if generation_b {
        ("second", "    strip_prefix: /stream\n")
    } else {
        ("first", "")
    };
    format!(
        r#"
server:
  listen: ["{{listen}}"]
  admin_listen: "{{admin}}"
  threads: 2
issuers:
  - name: test
    issuer: "https://test.maskinporten.no/"
    jwks_uri: "{{jwks}}"
upstreams:
  - name: first
    targets: ["{{upstream}}"]
  - name: second
    targets: ["{{upstream2}}"]
routes:
  - name: stream
    path: /stream/{{fnr}}/{{year}}
    upstream: {upstream}
{strip}    issuers: [test]
    consent:
      resources: ["demo-samtykke-inntekt"]
      subject:
        path_param: fnr
      metadata:
        match:
          inntektsaar: {{ path_param: year }}
"#
    )
}

#[test]
fn twenty_reloads_under_a_stream_of_requests_fail_none() {
    let world = World::new();
    let gw = Arc::new(world.start(&stream_config(false)));
    let token = world.valid_token();
    let path = format!("/stream/{PERSON}/2025");
    let stop = Arc::new(AtomicBool::new(false));

    let client = {
        let gw = Arc::clone(&gw);
        let stop = Arc::clone(&stop);
        let path = path.clone();
        std::thread::spawn(move || {
            let mut outcomes = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = format!("stream-{n}");
                let response = common::raw(
                    gw.addr,
                    &format!(
                        "GET {path} HTTP/1.1\r\nHost: api.example.no\r\nAuthorization: Bearer {token}\r\nX-Request-Id: {id}\r\nConnection: close\r\n\r\n"
                    ),
                );
                outcomes.push((id, response));
            }
            outcomes
        })
    };

    for round in 1..=20u64 {
        gw.rewrite(&world, &stream_config(round % 2 == 1));
        eventually(RELOAD_SECS, "the reload applies", || {
            gw.generation() == round + 1
        });
    }
    stop.store(true, Ordering::Relaxed);
    let outcomes = client.join().expect("client thread");
    assert_eq!(reloads(&gw, "failure"), 0.0);
    assert!(outcomes.len() >= 20, "only {} requests", outcomes.len());

    let first: Vec<_> = world.echo.seen();
    let second: Vec<_> = world.echo2.seen();
    let mut served = [0usize; 2];
    for (id, outcome) in &outcomes {
        let response = match outcome {
            Ok(r) => r,
            Err(e) => panic!("request {id} failed: {e}"),
        };
        assert_eq!(response.status, 200, "{id}: {}", response.body);
        let seen_uri = response.json()["uri"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let in_first = first.iter().any(|s| s.header("x-request-id") == Some(id));
        let in_second = second.iter().any(|s| s.header("x-request-id") == Some(id));
        if seen_uri == path {
            assert!(
                in_first && !in_second,
                "{id}: generation A went to A's upstream"
            );
            assert!(response.json()["headers"]
                .to_string()
                .contains("x-consent-id"));
            served[0] += 1;
        } else if seen_uri == format!("/{PERSON}/2025") {
            assert!(
                in_second && !in_first,
                "{id}: generation B went to B's upstream"
            );
            served[1] += 1;
        } else {
            panic!("{id}: an upstream saw {seen_uri}");
        }
    }
    assert!(
        served[0] > 0 && served[1] > 0,
        "both generations served: {served:?}"
    );
}

#[test]
fn a_restart_only_change_warns_and_the_rest_applies() {
    let world = World::new();
    let gw = world.start(&open_routes(&["/a"]));
    let elsewhere = free_addr();
    let moved = open_routes(&["/a", "/b"])
        .replace("[\"{listen}\"]", &format!("[\"{elsewhere}\"]"))
        .replace(
            "threads: 1",
            "threads: 3\n  work_stealing: false\n  upstream_keepalive_pool_size: 16",
        );
    gw.rewrite(&world, &moved);
    eventually(RELOAD_SECS, "the route change applies", || {
        status_of(&gw, "/b") == 200
    });
    assert_eq!(gw.generation(), 2);
    let stderr = gw.stderr();
    assert!(stderr.contains("server.listen needs a restart"), "{stderr}");
    for setting in [
        "server.threads",
        "server.work_stealing",
        "server.upstream_keepalive_pool_size",
    ] {
        assert!(
            stderr.contains(&format!("{setting} needs a restart")),
            "{setting}: {stderr}"
        );
    }
    // Still on the old address only.
    assert!(common::raw(
        elsewhere,
        "GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .is_err());
    assert_eq!(reloads(&gw, "failure"), 0.0);
}

#[test]
fn a_change_written_while_the_gateway_starts_is_not_lost() {
    // A config large enough that loading it and starting take a while: the
    // file changes after the gateway has read it and before it answers. A
    // watcher armed only later would never hear of that change.
    let world = World::new();
    let names: Vec<String> = (0..3000).map(|i| format!("/r{i}")).collect();
    let mut paths: Vec<&str> = names.iter().map(String::as_str).collect();
    let gw = world.spawn(&open_routes(&paths), &[]);
    paths.push("/new");
    std::thread::sleep(std::time::Duration::from_millis(150));
    gw.rewrite(&world, &open_routes(&paths));
    wait_ready(&gw);
    eventually(
        RELOAD_SECS,
        "the change written during the start applies",
        || status_of(&gw, "/new") == 200,
    );
    assert_eq!(status_of(&gw, "/r2999"), 200);
    assert_eq!(reloads(&gw, "failure"), 0.0);
}
