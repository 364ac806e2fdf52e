//! Redis Sentinel, Redis Cluster and TLS set-ups of real `redis-server`
//! processes on loopback ephemeral ports, for the state tests; readiness
//! and failovers are polled with deadlines, never slept for.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{eventually, free_addr, RedisServer, REDIS_SERVER};

pub const REDIS_CLI: &str = "/usr/bin/redis-cli";
pub const MASTER_NAME: &str = "cgw-master";

/// Whether the Redis binaries are installed (else the test is skipped).
pub fn available() -> bool {
    super::installed(REDIS_SERVER, "redis-server") && super::installed(REDIS_CLI, "redis-tools")
}

/// `redis-cli -p PORT ARGS...` on loopback: its stdout.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new(REDIS_CLI)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A child process killed when dropped.
pub struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A master, its replica and one sentinel (quorum 1) watching them.
pub struct SentinelSet {
    pub master: RedisServer,
    pub replica: RedisServer,
    pub sentinel_port: u16,
    _sentinel: Proc,
    _dir: tempfile::TempDir,
}

impl SentinelSet {
    pub fn start() -> Option<SentinelSet> {
        if !available() {
            return None;
        }
        let master = RedisServer::start()?;
        let port = master.port.to_string();
        let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port])?;
        let dir = tempfile::tempdir().expect("tempdir");
        let sentinel_port = free_addr().port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {port} 1\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                 sentinel failover-timeout {MASTER_NAME} 10000\n",
                dir.path().display()
            ),
        )
        .expect("write sentinel.conf");
        let child = Command::new(REDIS_SERVER)
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sentinel");
        let set = SentinelSet {
            master,
            replica,
            sentinel_port,
            _sentinel: Proc(child),
            _dir: dir,
        };
        eventually(20, "the sentinel knows the master and its replica", || {
            let replicas = cli(sentinel_port, &["SENTINEL", "REPLICAS", MASTER_NAME]);
            replicas.contains(&set.replica.port.to_string())
                && cli(set.replica.port, &["INFO", "replication"]).contains("master_link_status:up")
        });
        Some(set)
    }

    pub fn sentinel_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.sentinel_port)
    }

    /// The master's port as the sentinel names it now.
    pub fn master_port(&self) -> Option<u16> {
        let out = cli(
            self.sentinel_port,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
        );
        out.lines().nth(1).and_then(|p| p.trim().parse().ok())
    }

    /// Waits until the replica has applied everything the master took.
    pub fn wait_replicated(&self) {
        let offset = |port: u16, field: &str| -> Option<u64> {
            let info = cli(port, &["INFO", "replication"]);
            info.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().parse().ok())
        };
        eventually(10, "the replica caught up", || {
            let master = offset(self.master.port, "master_repl_offset:");
            let replica = offset(self.replica.port, "slave_repl_offset:");
            master.is_some() && master == replica
        });
    }
}

/// Three masters of one Redis Cluster, every slot covered, and with
/// `start_with_replicas` a replica each (`nodes[3..]`).
pub struct Cluster {
    pub nodes: Vec<RedisServer>,
}

impl Cluster {
    pub fn start() -> Option<Cluster> {
        Self::start_nodes(0, "5000")
    }

    /// Three masters and three replicas, `cluster-node-timeout` 1000 ms:
    /// a killed master's replica is promoted within seconds.
    pub fn start_with_replicas() -> Option<Cluster> {
        let cluster = Self::start_nodes(1, "1000")?;
        eventually(30, "every replica is linked to its master", || {
            cluster.nodes.iter().all(|n| {
                let info = cli(n.port, &["INFO", "replication"]);
                info.contains("role:master") || info.contains("master_link_status:up")
            }) && cluster.masters().len() == 3
        });
        Some(cluster)
    }

    fn start_nodes(replicas: usize, node_timeout: &str) -> Option<Cluster> {
        if !available() {
            return None;
        }
        let args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            node_timeout,
        ];
        let nodes: Vec<RedisServer> = (0..3 * (1 + replicas))
            .map(|_| RedisServer::start_with(&args))
            .collect::<Option<_>>()?;
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let replicas = replicas.to_string();
        let mut create = vec!["--cluster", "create"];
        create.extend(addrs.iter().map(String::as_str));
        create.extend(["--cluster-replicas", &replicas, "--cluster-yes"]);
        let out = cli(nodes[0].port, &create);
        assert!(out.contains("All 16384 slots covered"), "{out}");
        let cluster = Cluster { nodes };
        eventually(30, "every node says cluster_state:ok", || {
            cluster
                .nodes
                .iter()
                .all(|n| cli(n.port, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        });
        Some(cluster)
    }

    /// The ports of the nodes that say `ROLE` master (a killed one says
    /// nothing).
    pub fn masters(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .map(|n| n.port)
            .filter(|p| cli(*p, &["ROLE"]).starts_with("master"))
            .collect()
    }

    /// The port of the replica of the master at `port`.
    pub fn replica_of(&self, port: u16) -> Option<u16> {
        let id = self.id(port);
        let replicas = cli(port, &["CLUSTER", "REPLICAS", &id]);
        self.nodes
            .iter()
            .map(|n| n.port)
            .find(|p| *p != port && replicas.contains(&format!("127.0.0.1:{p}@")))
    }

    /// Waits until the replica at `replica` has applied everything its
    /// master at `master` took.
    pub fn wait_replicated(&self, master: u16, replica: u16) {
        let offset = |port: u16, field: &str| -> Option<u64> {
            cli(port, &["INFO", "replication"])
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().parse().ok())
        };
        eventually(10, "the cluster replica caught up", || {
            let m = offset(master, "master_repl_offset:");
            m.is_some() && m == offset(replica, "slave_repl_offset:")
        });
    }

    /// Kills the node at `port` (SIGKILL).
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port == port) {
            node.stop();
        }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// The node id of `port`.
    pub fn id(&self, port: u16) -> String {
        cli(port, &["CLUSTER", "MYID"]).trim().to_string()
    }

    /// The port of the node that holds `key` (the others answer `MOVED`).
    pub fn owner(&self, key: &str) -> u16 {
        self.nodes
            .iter()
            .map(|n| n.port)
            .find(|port| cli(*port, &["EXISTS", key]).trim() == "1")
            .expect("a node holds the key")
    }

    /// Whether the node at `port` serves `key`'s slot (held or not).
    pub fn serves(&self, port: u16, key: &str) -> bool {
        matches!(cli(port, &["EXISTS", key]).trim(), "0" | "1")
    }

    /// Every key under `pattern`, on all masters.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut all: Vec<String> = self
            .masters()
            .into_iter()
            .flat_map(|port| {
                cli(port, &["KEYS", pattern])
                    .lines()
                    .map(str::to_string)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort();
        all
    }

    /// Moves `key`'s slot (and the key) from its node to another, the way
    /// `redis-cli --cluster reshard` does: IMPORTING, MIGRATING, MIGRATE,
    /// then NODE on every master. Returns the new owner's port.
    pub fn move_slot_of(&self, key: &str) -> u16 {
        let slot = cli(self.nodes[0].port, &["CLUSTER", "KEYSLOT", key]);
        let slot = slot.trim().to_string();
        let from = self.owner(key);
        let to = self
            .nodes
            .iter()
            .map(|n| n.port)
            .find(|p| *p != from)
            .expect("another node");
        let (from_id, to_id) = (self.id(from), self.id(to));
        let ok = |out: String| assert!(out.trim() == "OK", "{out}");
        ok(cli(
            to,
            &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id],
        ));
        ok(cli(
            from,
            &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id],
        ));
        let to_port = to.to_string();
        let args = [
            "MIGRATE",
            "127.0.0.1",
            &to_port,
            "",
            "0",
            "5000",
            "KEYS",
            key,
        ];
        ok(cli(from, &args));
        for node in &self.nodes {
            ok(cli(
                node.port,
                &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id],
            ));
        }
        to
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, by
/// rcgen.
pub struct Pki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

impl Pki {
    pub fn new() -> Pki {
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        // A name of its own: a bundle of two CAs of one name would be
        // looked up by name and verify against the wrong one.
        static CAS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = CAS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ca.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("consent-gateway test CA {n}"),
        );
        let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().expect("server key");
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("server params");
        let cert = params.signed_by(&key, &issuer).expect("server cert");
        let client_key = rcgen::KeyPair::generate().expect("client key");
        let mut client =
            rcgen::CertificateParams::new(Vec::<String>::new()).expect("client params");
        client
            .distinguished_name
            .push(rcgen::DnType::CommonName, "consent-gateway");
        let client_cert = client.signed_by(&client_key, &issuer).expect("client cert");
        Pki {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
        }
    }
}

/// `redis-server` speaking TLS only (`--port 0`), with a certificate from
/// `pki`; clients need no certificate of their own.
pub struct TlsRedis {
    pub port: u16,
    pub dir: tempfile::TempDir,
    _proc: Proc,
}

impl TlsRedis {
    pub fn start(pki: &Pki) -> Option<TlsRedis> {
        if !available() {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, text: &str| -> PathBuf {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write pem");
            p
        };
        let (ca, cert, key) = (
            write("ca.pem", &pki.ca_pem),
            write("server.pem", &pki.cert_pem),
            write("server.key", &pki.key_pem),
        );
        let port = free_addr().port();
        let child = Command::new(REDIS_SERVER)
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(&ca)
            .args(["--tls-auth-clients", "no", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server --tls-port");
        let server = TlsRedis {
            port,
            dir,
            _proc: Proc(child),
        };
        eventually(10, "redis-server answers PING over TLS", || {
            server.cli(&["PING"]).contains("PONG")
        });
        Some(server)
    }

    /// `redis-cli --tls` trusting the test CA.
    pub fn cli(&self, args: &[&str]) -> String {
        let ca = self.dir.path().join("ca.pem");
        let mut all = vec!["--tls", "--cacert"];
        let ca = ca.to_string_lossy().into_owned();
        all.push(&ca);
        all.extend_from_slice(args);
        cli(self.port, &all)
    }
}
/// The PEM files of a TLS set-up in `dir`: the CAs every server trusts
/// (one bundle), the sentinel's and the data nodes' certificates, and the
/// client certificate.
pub struct PkiFiles {
    pub ca: PathBuf,
    pub sentinel_cert: PathBuf,
    pub sentinel_key: PathBuf,
    pub data_cert: PathBuf,
    pub data_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl PkiFiles {
    /// The sentinel's certificate from `sentinel`, the master's and
    /// replica's from `data`, the client's from `sentinel`; every server
    /// trusts both CAs.
    pub fn write(sentinel: &Pki, data: &Pki, dir: &Path) -> PkiFiles {
        let write = |name: &str, text: &str| -> PathBuf {
            let p = dir.join(name);
            std::fs::write(&p, text).expect("write pem");
            p
        };
        PkiFiles {
            ca: write("ca.pem", &format!("{}{}", sentinel.ca_pem, data.ca_pem)),
            sentinel_cert: write("sentinel.pem", &sentinel.cert_pem),
            sentinel_key: write("sentinel.key", &sentinel.key_pem),
            data_cert: write("server.pem", &data.cert_pem),
            data_key: write("server.key", &data.key_pem),
            client_cert: write("client.pem", &sentinel.client_cert_pem),
            client_key: write("client.key", &sentinel.client_key_pem),
        }
    }

    /// The `tls-*` lines of a TLS-only server (`port 0`) that asks clients
    /// for a certificate (`tls-auth-clients yes`) and replicates (or, a
    /// sentinel, monitors) over TLS.
    fn server_conf(&self, tls_port: u16, cert: &Path, key: &Path) -> String {
        format!(
            "port 0\ntls-port {tls_port}\nbind 127.0.0.1\n\
             tls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
             tls-auth-clients yes\ntls-replication yes\n",
            cert.display(),
            key.display(),
            self.ca.display()
        )
    }

    /// `redis-cli --tls` with the CAs and the client certificate.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let paths = [&self.ca, &self.client_cert, &self.client_key]
            .map(|p| p.to_string_lossy().into_owned());
        let mut all = vec!["--tls", "--cacert", &paths[0], "--cert", &paths[1]];
        all.extend(["--key", &paths[2]]);
        all.extend_from_slice(args);
        cli(port, &all)
    }
}

/// A master, its replica and one sentinel, all TLS only (`port 0`), with
/// client certificates required and replication over TLS.
pub struct TlsSentinelSet {
    pub files: PkiFiles,
    pub master_port: u16,
    pub replica_port: u16,
    pub sentinel_port: u16,
    _procs: Vec<Proc>,
    _dir: tempfile::TempDir,
}

impl TlsSentinelSet {
    /// Every certificate from `pki`.
    pub fn start(pki: &Pki) -> Option<TlsSentinelSet> {
        Self::start_split(pki, pki)
    }

    /// The sentinel's certificate (and the client's) from `sentinel`, the
    /// master's and the replica's from `data`.
    pub fn start_split(sentinel: &Pki, data: &Pki) -> Option<TlsSentinelSet> {
        if !available() {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let files = PkiFiles::write(sentinel, data, dir.path());
        let [master_port, replica_port, sentinel_port] = [0; 3].map(|_| free_addr().port());
        let node = |name: &str, port: u16, extra: &str| -> Proc {
            let data = dir.path().join(name);
            std::fs::create_dir_all(&data).expect("data dir");
            let conf = data.join("redis.conf");
            let (cert, key) = match name {
                "sentinel" => (&files.sentinel_cert, &files.sentinel_key),
                _ => (&files.data_cert, &files.data_key),
            };
            let text = format!(
                "{}dir {}\n{extra}",
                files.server_conf(port, cert, key),
                data.display()
            );
            std::fs::write(&conf, text).expect("write redis.conf");
            let mut cmd = Command::new(REDIS_SERVER);
            cmd.arg(&conf);
            if name == "sentinel" {
                cmd.arg("--sentinel");
            } else {
                cmd.args(["--save", "", "--appendonly", "no"]);
            }
            let child = cmd
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server (TLS)");
            Proc(child)
        };
        let procs = vec![
            node("master", master_port, ""),
            node(
                "replica",
                replica_port,
                &format!("replicaof 127.0.0.1 {master_port}\n"),
            ),
            node(
                "sentinel",
                sentinel_port,
                &format!(
                    "sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 1\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                ),
            ),
        ];
        let set = TlsSentinelSet {
            files,
            master_port,
            replica_port,
            sentinel_port,
            _procs: procs,
            _dir: dir,
        };
        eventually(
            30,
            "the TLS sentinel knows the master and its replica",
            || {
                let replicas = set
                    .files
                    .cli(sentinel_port, &["SENTINEL", "REPLICAS", MASTER_NAME]);
                replicas.contains(&replica_port.to_string())
                    && set
                        .files
                        .cli(replica_port, &["INFO", "replication"])
                        .contains("master_link_status:up")
            },
        );
        Some(set)
    }

    pub fn sentinel_url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.sentinel_port)
    }
}
