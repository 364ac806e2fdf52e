//! Integration-test harness: the real `consent-gateway` binary, a real JWKS
//! server and real echo upstreams on loopback ephemeral ports. Readiness is
//! polled, never slept for.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use consent_gateway::dev_issuer::{DevIssuer, TokenSpec};
use consent_gateway::support::echo::EchoServer;
use consent_gateway::support::jwks_server::JwksServer;

pub mod redis_ha;
pub mod templates;
pub mod tls;

pub const ISS: &str = "https://test.maskinporten.no/";
pub const PERSON: &str = "17839116535";
pub const OTHER_PERSON: &str = "05917596738";
pub const CONSUMER: &str = "0192:310497460";
pub const SUPPLIER: &str = "0192:303137211";

/// A free loopback port (bound and released; the race is accepted in tests).
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// A running gateway process and its loopback world.
pub struct Gateway {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Placeholders in a YAML template: `{listen}`, `{admin}`, `{jwks}`,
/// `{upstream}` and `{upstream2}`.
pub struct World {
    pub rt: tokio::runtime::Runtime,
    pub issuer: DevIssuer,
    pub jwks: JwksServer,
    pub echo: EchoServer,
    pub echo2: EchoServer,
}

impl World {
    pub fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let issuer = DevIssuer::generate("test-key").expect("rsa key");
        let jwks = JwksServer::start(issuer.jwks_json());
        let echo = rt.block_on(EchoServer::start()).expect("echo");
        let echo2 = rt.block_on(EchoServer::start()).expect("echo2");
        Self {
            rt,
            issuer,
            jwks,
            echo,
            echo2,
        }
    }

    /// Fills a template's placeholders.
    pub fn render(&self, template: &str, listen: SocketAddr, admin: SocketAddr) -> String {
        template
            .replace("{listen}", &listen.to_string())
            .replace("{admin}", &admin.to_string())
            .replace("{jwks}", &self.jwks.url())
            .replace("{upstream}", &self.echo.addr().to_string())
            .replace("{upstream2}", &self.echo2.addr().to_string())
    }

    /// Starts the gateway binary with the rendered template and waits until
    /// `/readyz` answers 200.
    pub fn start(&self, template: &str) -> Gateway {
        self.start_with(template, &[])
    }

    /// As `start`, with extra files written beside gateway.yaml.
    pub fn start_with(&self, template: &str, files: &[(&str, &str)]) -> Gateway {
        let gw = self.spawn(template, files);
        wait_ready(&gw);
        gw
    }

    /// Starts the binary without waiting for readiness.
    pub fn spawn(&self, template: &str, files: &[(&str, &str)]) -> Gateway {
        self.spawn_custom(template, files, &[], &|dir, text| {
            let config_path = dir.join("gateway.yaml");
            std::fs::write(&config_path, text).expect("write config");
            config_path
        })
    }

    /// As `spawn`, with extra `run` arguments, and `place` writing the
    /// rendered config under the temporary directory as it likes (a symlink
    /// layout, a hard link) and returning the path given to `-c`.
    pub fn spawn_custom(
        &self,
        template: &str,
        files: &[(&str, &str)],
        args: &[&str],
        place: &dyn Fn(&std::path::Path, &str) -> PathBuf,
    ) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, content) in files {
            let p = dir.path().join(name);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            std::fs::write(p, content).expect("write file");
        }
        let addr = free_addr();
        let admin = free_addr();
        let config_path = place(dir.path(), &self.render(template, addr, admin));
        let stdout_path = dir.path().join("stdout.log");
        let stderr_path = dir.path().join("stderr.log");
        let child = Command::new(env!("CARGO_BIN_EXE_consent-gateway"))
            .args(["run", "-c"])
            .arg(&config_path)
            .args(["--upgrade-sock"])
            .arg(dir.path().join("upgrade.sock"))
            .args(args)
            .stdout(Stdio::from(
                std::fs::File::create(&stdout_path).expect("stdout"),
            ))
            .stderr(Stdio::from(
                std::fs::File::create(&stderr_path).expect("stderr"),
            ))
            .spawn()
            .expect("spawn consent-gateway");
        Gateway {
            child,
            addr,
            admin,
            dir,
            config_path,
            stdout_path,
            stderr_path,
        }
    }

    /// A token with a consent for `PERSON`, resource `demo-samtykke-inntekt`,
    /// metadata inntektsaar=2025, issued now for one hour.
    pub fn spec(&self) -> TokenSpec {
        TokenSpec {
            iss: ISS.into(),
            scope: "demo:inntekt.read".into(),
            consumer: CONSUMER.into(),
            from: Some(PERSON.into()),
            resource: Some("demo-samtykke-inntekt".into()),
            metadata: vec![("inntektsaar".into(), "2025".into())],
            ttl_seconds: 3600,
            ..TokenSpec::default()
        }
    }

    pub fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    /// A signed token for these claims.
    pub fn token(&self, claims: &serde_json::Value) -> String {
        self.issuer.sign(claims)
    }

    /// The standard valid token.
    pub fn valid_token(&self) -> String {
        self.token(&self.spec().claims(Self::now()))
    }
}

/// Polls `/readyz` until 200 (or panics after 30 s with the gateway's stderr).
pub fn wait_ready(gw: &Gateway) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = raw(
            gw.admin,
            "GET /readyz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
        ) {
            if r.status == 200
                && raw(
                    gw.addr,
                    "GET /__probe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                )
                .is_ok()
            {
                return;
            }
        }
        if Instant::now() > deadline {
            panic!("gateway not ready: {}", gw.stderr());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `check` until it holds (or panics after `secs`).
pub fn eventually(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        if Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

impl Gateway {
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Sends a GET with an optional bearer token and extra headers.
    pub fn get(&self, path: &str, token: Option<&str>, extra: &[(&str, &str)]) -> Response {
        let mut req =
            format!("GET {path} HTTP/1.1\r\nHost: api.example.no\r\nConnection: close\r\n");
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        for (n, v) in extra {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        raw(self.addr, &req).expect("request")
    }

    /// Sends raw bytes to the proxy listener.
    pub fn raw(&self, request: &str) -> Response {
        raw(self.addr, request).expect("request")
    }

    /// GET on the admin listener.
    pub fn admin_get(&self, path: &str) -> Response {
        raw(
            self.admin,
            &format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"),
        )
        .expect("admin request")
    }

    /// The process id, as `kill` takes it.
    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Sends a signal (`"HUP"`, `"TERM"`, `"QUIT"`) with the `kill` command.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Rewrites the config with a new template (same listeners), atomically:
    /// a temporary file in the same directory renamed over the config.
    pub fn rewrite(&self, world: &World, template: &str) {
        let text = world.render(template, self.addr, self.admin);
        let tmp = self.dir.path().join(".gateway.yaml.tmp");
        std::fs::write(&tmp, text).expect("write temporary config");
        std::fs::rename(&tmp, &self.config_path).expect("rename config");
    }

    /// The parsed `/status` document.
    pub fn status(&self) -> serde_json::Value {
        self.admin_get("/status").json()
    }

    /// The configuration generation `/status` reports.
    pub fn generation(&self) -> u64 {
        self.status()["generation"].as_u64().unwrap_or(0)
    }

    /// Every complete audit line (one JSON object a line on stdout).
    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        self.stdout()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The value of the series `name` whose labels are exactly `labels`
    /// (in any order); `None` when absent.
    pub fn series(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        series_value(&self.admin_get("/metrics").body, name, labels)
    }

    /// The value of a metric line (`name{labels}`) in `/metrics`, if present.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let body = self.admin_get("/metrics").body;
        body.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

/// Finds the series `name` with exactly `labels` in a Prometheus text body.
pub fn series_value(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    wanted.sort();
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, have) = match series.split_once('{') {
                Some((m, rest)) => {
                    let mut have: Vec<String> = rest
                        .trim_end_matches('}')
                        .split(',')
                        .filter(|p| !p.is_empty())
                        .map(str::to_string)
                        .collect();
                    have.sort();
                    (m, have)
                }
                None => (series, Vec::new()),
            };
            (metric == name && have == wanted)
                .then(|| value.parse().ok())
                .flatten()
        })
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn reason(&self) -> String {
        self.json()["reason"].as_str().unwrap_or("").to_string()
    }
}

/// Sends raw request bytes and reads the whole response (the request should
/// say `Connection: close`).
pub fn raw(addr: SocketAddr, request: &str) -> std::io::Result<Response> {
    raw_bytes(addr, request.as_bytes())
}

pub fn raw_bytes(addr: SocketAddr, request: &[u8]) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    stream.write_all(request)?;
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    parse_response(&buf)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no HTTP response"))
}

fn parse_response(buf: &[u8]) -> Option<Response> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = buf[end..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Some(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            std::str::from_utf8(&data[..pos])
                .unwrap_or("0")
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = pos + 2;
        if data.len() < start + size {
            break;
        }
        out.extend_from_slice(&data[start..start + size]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}

/// A real `redis-server` on a loopback ephemeral port, no persistence;
/// killed on drop. `None` (with a message) when the binary is absent.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Extra `redis-server` arguments (replica, cluster mode).
    extra: Vec<String>,
}

/// Whether the real server at `path` is installed, for the tests that start
/// one. Without it they are skipped (and say so), except where
/// `CONSENT_GATEWAY_TESTS_NEED_SERVERS=1` (set by `.ci/run`, which installs
/// them): there a missing server is a failure, never a silent pass.
pub fn installed(path: &str, package: &str) -> bool {
    if std::path::Path::new(path).exists() {
        return true;
    }
    let required = std::env::var("CONSENT_GATEWAY_TESTS_NEED_SERVERS").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "{path} is not installed (Debian package {package})"
    );
    eprintln!("SKIPPED: {path} is not installed (Debian package {package})");
    false
}

/// Where the tests look for `redis-server`.
pub const REDIS_SERVER: &str = "/usr/bin/redis-server";

impl RedisServer {
    pub fn start() -> Option<RedisServer> {
        Self::start_with(&[])
    }

    /// As `start`, with extra `redis-server` arguments.
    pub fn start_with(extra: &[&str]) -> Option<RedisServer> {
        if !installed(REDIS_SERVER, "redis-server") {
            return None;
        }
        let mut server = RedisServer {
            port: free_addr().port(),
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
            extra: extra.iter().map(|a| a.to_string()).collect(),
        };
        server.restart();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it (again) on the same port and waits for `PONG`.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new(REDIS_SERVER)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        eventually(10, "redis-server answers PING", || self.ping());
    }

    /// Kills it (the gateways see a dead store).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// One `PING` over a plain socket.
    pub fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }
}

impl RedisServer {
    /// Sends `SIGSTOP` (`pause`) or `SIGCONT`: a store that accepts
    /// connections and never answers, then answers again.
    pub fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([&format!("-{name}"), &child.id().to_string()])
                .status()
                .expect("kill");
            assert!(status.success(), "kill -{name}");
        }
    }

    /// One command in RESP over a plain socket; the raw reply.
    pub fn command(&self, args: &[&str]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect redis");
        s.set_read_timeout(Some(Duration::from_millis(300))).ok();
        s.write_all(&resp(args)).expect("write redis");
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// `args` as one RESP command.
pub fn resp(args: &[&str]) -> Vec<u8> {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    req.into_bytes()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
