//! The added cost of the shared state per request (issue 16): the memory
//! store's CPU per call, and the latency of the Redis store's calls on
//! loopback (a `redis-server` started here on an ephemeral port; standalone,
//! and Sentinel / Cluster when `redis-cli` can build them) as p50 / p99 /
//! max, for a rate limit, a one-time use, and both as a request on a
//! one-time rate-limited route makes them: `rate_limit + use_once` is the
//! one combined call (memory, standalone, Sentinel) or, on Cluster, the two
//! calls in a row; `two calls` is always the two in a row (the previous
//! version's way, for comparison).
//!
//! `cargo bench --bench state`. Speed is measured here, never asserted.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use consent_gateway::config::{RateLimit, RatePer, RedisServers, RedisState, StateBackend};
use consent_gateway::metrics::Metrics;
use consent_gateway::state::{Claim, RateAndOnce, Store};

const REDIS_SERVER: &str = "/usr/bin/redis-server";
const REDIS_CLI: &str = "/usr/bin/redis-cli";
const ROUNDS: usize = 20_000;

fn limit() -> RateLimit {
    RateLimit {
        per: RatePer::Consumer,
        requests: 1_000_000,
        period: Duration::from_secs(1),
        burst: 0,
        allow_on_store_error: true,
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Children killed when the bench ends.
struct Procs(Vec<Child>, Vec<tempfile::TempDir>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new(REDIS_CLI)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn redis_server(procs: &mut Procs, extra: &[&str]) -> u16 {
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let child = Command::new(REDIS_SERVER)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir.path())
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server");
    procs.0.push(child);
    procs.1.push(dir);
    wait_for("redis-server", || cli(port, &["PING"]).contains("PONG"));
    port
}

fn cluster(procs: &mut Procs) -> Vec<String> {
    let args = [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
    ];
    let ports: Vec<u16> = (0..3).map(|_| redis_server(procs, &args)).collect();
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut create = vec!["--cluster", "create"];
    create.extend(addrs.iter().map(String::as_str));
    create.push("--cluster-yes");
    cli(ports[0], &create);
    wait_for("cluster_state:ok", || {
        ports
            .iter()
            .all(|p| cli(*p, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
    });
    ports
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect()
}

fn sentinel(procs: &mut Procs) -> Vec<String> {
    let master = redis_server(procs, &[]);
    let _replica = redis_server(procs, &["--replicaof", "127.0.0.1", &master.to_string()]);
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("sentinel.conf");
    std::fs::write(
        &conf,
        format!("port {port}\nbind 127.0.0.1\nsentinel monitor bench 127.0.0.1 {master} 1\n"),
    )
    .expect("sentinel.conf");
    let child = Command::new(REDIS_SERVER)
        .arg(&conf)
        .arg("--sentinel")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sentinel");
    procs.0.push(child);
    procs.1.push(dir);
    wait_for("the sentinel", || {
        cli(port, &["SENTINEL", "MASTERS"]).contains("bench")
    });
    vec![format!("redis://127.0.0.1:{port}")]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{name:<46} p50 {:>8.1} us  p99 {:>8.1} us  max {:>8.1} us",
        us(percentile(&samples, 0.5)),
        us(percentile(&samples, 0.99)),
        us(samples[samples.len() - 1])
    );
}

/// `ROUNDS` rate checks, one-time uses, both in a row, and both as the
/// gateway makes them (`Store::rate_and_use_once`), one at a time.
async fn measure(label: &str, store: &Store, metrics: &Metrics) {
    let limit = limit();
    let ttl = Duration::from_secs(60);
    let (mut rate, mut once, mut both) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        let key = format!("bench:once:{label}:{i}");
        let started = Instant::now();
        let r = store.rate(metrics, "bench:rl:1", &limit).await;
        let mid = Instant::now();
        let u = store.use_once(metrics, &key, "t", ttl).await;
        let end = Instant::now();
        assert!(r.is_ok() && u == Ok(true), "{label}: {r:?} {u:?}");
        rate.push(mid - started);
        once.push(end - mid);
        both.push(end - started);
    }
    let mut admitted = Vec::new();
    for i in 0..ROUNDS {
        let claim = Claim {
            key: format!("bench:once1:{label}:{i}"),
            token: "t".into(),
        };
        let started = Instant::now();
        let r = store
            .rate_and_use_once(metrics, "bench:rl:1", &limit, &claim, ttl)
            .await;
        admitted.push(started.elapsed());
        assert!(
            matches!(
                r,
                Ok(RateAndOnce {
                    claimed: Some(true),
                    ..
                })
            ),
            "{label}: {r:?}"
        );
    }
    let calls = if store.combines() {
        "one call"
    } else {
        "two calls"
    };
    report(&format!("{label} rate_limit"), rate);
    report(&format!("{label} use_once"), once);
    report(
        &format!("{label} rate_limit + use_once ({calls})"),
        admitted,
    );
    report(&format!("{label} two calls"), both);
}

fn redis_store(
    servers: RedisServers,
    rt: &tokio::runtime::Runtime,
    metrics: &Arc<Metrics>,
) -> Arc<Store> {
    let state = StateBackend::Redis(Box::new(RedisState {
        servers,
        tls: None,
        key_prefix: "bench:".into(),
        wait_for_replicas: 0,
        timeout: Duration::from_millis(500),
    }));
    Store::build(&state, rt.handle(), metrics).expect("store")
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let metrics = Arc::new(Metrics::new());
    let memory = Store::build(&StateBackend::Memory, rt.handle(), &metrics).expect("memory");
    rt.block_on(async {
        let limit = limit();
        let started = Instant::now();
        for i in 0..ROUNDS {
            let claim = Claim {
                key: format!("m:once:{i}"),
                token: "t".into(),
            };
            let _ = memory
                .rate_and_use_once(&metrics, "m:rl", &limit, &claim, Duration::from_secs(60))
                .await;
        }
        let per = started.elapsed().as_secs_f64() * 1e9 / ROUNDS as f64;
        println!("memory rate_limit + use_once        {per:.0} ns per request (one call, one thread, metrics included)");
    });
    if !std::path::Path::new(REDIS_SERVER).exists() {
        println!("SKIPPED the Redis part: {REDIS_SERVER} is not installed");
        return;
    }
    let mut procs = Procs(Vec::new(), Vec::new());
    let standalone = redis_server(&mut procs, &[]);
    let url = format!("redis://127.0.0.1:{standalone}/0");
    let setups: Vec<(&str, RedisServers)> = vec![
        ("standalone", RedisServers::Standalone { url }),
        (
            "sentinel",
            RedisServers::Sentinel {
                master_name: "bench".into(),
                urls: sentinel(&mut procs),
                db: 0,
                username: None,
                password: None,
            },
        ),
        (
            "cluster",
            RedisServers::Cluster {
                urls: cluster(&mut procs),
            },
        ),
    ];
    for (label, servers) in setups {
        let store = redis_store(servers, &rt, &metrics);
        rt.block_on(async {
            // Connect and warm up before measuring.
            for i in 0..200 {
                let _ = store
                    .rate(&metrics, &format!("bench:warm:{i}"), &limit())
                    .await;
            }
            measure(label, &store, &metrics).await;
        });
    }
}
