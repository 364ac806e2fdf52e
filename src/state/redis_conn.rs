//! The connection behind the Redis store, one per `state.redis`: a
//! `ConnectionManager` (standalone), the master the sentinels name (found
//! again after a failover), or a Redis Cluster connection (follows `MOVED`);
//! TLS (`rediss://`) on rustls with `state.redis.tls`.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, ClientTlsConfig, Cmd, ConnectionAddr, IntoConnectionInfo,
    Pipeline, RedisFuture, RedisResult, TlsCertificates, TlsMode, Value,
};

use crate::config::{RedisServers, RedisState, RedisTls};

/// Where commands go.
pub enum Link {
    Standalone(ConnectionManager),
    Sentinel(Box<SentinelLink>),
    Cluster(ClusterConnection),
}

/// The master the sentinels name, connected once and kept until a call on
/// it fails (the master died, or a failover made it a read-only replica).
pub struct SentinelLink {
    /// One discovery at a time.
    client: tokio::sync::Mutex<SentinelClient>,
    current: Mutex<Option<MultiplexedConnection>>,
    config: AsyncConnectionConfig,
}

/// One call's connection: cheap clones of the shared multiplexed ones.
pub enum Conn {
    Manager(ConnectionManager),
    Multiplexed(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Link {
    /// Connects lazily (the first call or probe); must run inside a tokio
    /// runtime (the control plane's).
    pub fn new(cfg: &RedisState) -> Result<Link, String> {
        let certs = certificates(cfg.tls.as_ref())?;
        match &cfg.servers {
            RedisServers::Standalone { url } => {
                let client = match certs {
                    Some(certs) => Client::build_with_tls(url.as_str(), certs),
                    None => Client::open(url.as_str()),
                }
                .map_err(|e| format!("state.redis.url: {:?}", e.kind()))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(cfg.timeout))
                    .set_response_timeout(Some(cfg.timeout))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(10))
                    .set_max_delay(Duration::from_millis(200));
                let conn = ConnectionManager::new_lazy_with_config(client, config)
                    .map_err(|e| format!("state.redis: {:?}", e.kind()))?;
                Ok(Link::Standalone(conn))
            }
            RedisServers::Sentinel { .. } => {
                Ok(Link::Sentinel(Box::new(SentinelLink::new(cfg, certs)?)))
            }
            RedisServers::Cluster { urls } => {
                let mut builder = ClusterClientBuilder::new(urls.iter().map(String::as_str))
                    .connection_timeout(cfg.timeout)
                    .response_timeout(cfg.timeout)
                    .retries(1);
                if let Some(certs) = certs {
                    // TLS itself follows the URLs' `rediss://`.
                    builder = builder.certs(certs);
                }
                let client = builder
                    .build()
                    .map_err(|e| format!("state.redis.cluster: {:?}", e.kind()))?;
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(cfg.timeout)
                    .set_response_timeout(cfg.timeout);
                Ok(Link::Cluster(
                    client.get_pending_async_connection_with_config(config),
                ))
            }
        }
    }

    /// The connection for one call.
    pub async fn conn(&self) -> RedisResult<Conn> {
        match self {
            Link::Standalone(m) => Ok(Conn::Manager(m.clone())),
            Link::Sentinel(s) => s.master().await.map(Conn::Multiplexed),
            Link::Cluster(c) => Ok(Conn::Cluster(c.clone())),
        }
    }

    /// A call failed: the next one asks the sentinels where the master is.
    /// (The manager and the cluster connection reconnect by themselves.)
    pub fn forget(&self) {
        if let Link::Sentinel(s) = self {
            if let Ok(mut current) = s.current.lock() {
                *current = None;
            }
        }
    }
}

impl SentinelLink {
    fn new(cfg: &RedisState, certs: Option<TlsCertificates>) -> Result<SentinelLink, String> {
        let RedisServers::Sentinel {
            master_name,
            urls,
            db,
            username,
            password,
        } = &cfg.servers
        else {
            return Err("state.redis.sentinel: missing".into());
        };
        let field = "state.redis.sentinel.urls";
        let infos = urls
            .iter()
            .map(|u| u.as_str().into_connection_info())
            .collect::<RedisResult<Vec<_>>>()
            .map_err(|e| format!("{field}: {:?}", e.kind()))?;
        let addrs = infos.iter().map(|i| match i.addr() {
            // The certificates are set below, for every sentinel alike.
            ConnectionAddr::TcpTls { host, port, .. } => ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: false,
                tls_params: None,
            },
            other => other.clone(),
        });
        let mut builder =
            SentinelClientBuilder::new(addrs, master_name, SentinelServerType::Master)
                .map_err(|e| format!("{field}: {:?}", e.kind()))?
                .set_client_to_redis_db(*db);
        // The sentinels' credentials: those of the first URL (validation
        // keeps them alike).
        if let Some(first) = infos.first().map(|i| i.redis_settings()) {
            if let Some(user) = first.username() {
                builder = builder.set_client_to_sentinel_username(user);
            }
            if let Some(password) = first.password() {
                builder = builder.set_client_to_sentinel_password(password);
            }
        }
        if let Some(user) = username {
            builder = builder.set_client_to_redis_username(user);
        }
        if let Some(password) = password {
            builder = builder.set_client_to_redis_password(password);
        }
        if cfg.servers.tls() {
            builder = builder
                .set_client_to_redis_tls_mode(TlsMode::Secure)
                .set_client_to_sentinel_tls_mode(TlsMode::Secure);
            if let Some(certs) = certs {
                builder = builder
                    .set_client_to_redis_certificates(certs.clone())
                    .set_client_to_sentinel_certificates(certs);
            }
        }
        let client = builder
            .build()
            .map_err(|e| format!("state.redis.sentinel: {:?}", e.kind()))?;
        Ok(SentinelLink {
            client: tokio::sync::Mutex::new(client),
            current: Mutex::new(None),
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(cfg.timeout))
                .set_response_timeout(Some(cfg.timeout)),
        })
    }

    fn cached(&self) -> Option<MultiplexedConnection> {
        self.current.lock().ok().and_then(|c| c.clone())
    }

    /// The master's connection: the kept one, or a new one to the master
    /// the sentinels name now (they check its `ROLE`).
    async fn master(&self) -> RedisResult<MultiplexedConnection> {
        if let Some(conn) = self.cached() {
            return Ok(conn);
        }
        let mut client = self.client.lock().await;
        if let Some(conn) = self.cached() {
            return Ok(conn);
        }
        let conn = client
            .get_async_connection_with_config(&self.config)
            .await?;
        if let Ok(mut current) = self.current.lock() {
            *current = Some(conn.clone());
        }
        Ok(conn)
    }
}

/// `state.redis.tls` read: the CA instead of the system's roots, and the
/// client certificate.
fn certificates(tls: Option<&RedisTls>) -> Result<Option<TlsCertificates>, String> {
    let Some(tls) = tls else {
        return Ok(None);
    };
    let read = |field: &str, path: &Option<std::path::PathBuf>| match path {
        None => Ok(None),
        Some(p) => std::fs::read(p).map(Some).map_err(|e| {
            format!(
                "state.redis.tls.{field}: cannot read `{}`: {e}",
                p.display()
            )
        }),
    };
    let root_cert = read("ca_file", &tls.ca_file)?;
    let client_tls = match (
        read("cert_file", &tls.cert_file)?,
        read("key_file", &tls.key_file)?,
    ) {
        (Some(client_cert), Some(client_key)) => Some(ClientTlsConfig {
            client_cert,
            client_key,
        }),
        _ => None,
    };
    Ok(Some(TlsCertificates {
        client_tls,
        root_cert,
    }))
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Manager(c) => c.req_packed_command(cmd),
            Conn::Multiplexed(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Manager(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Multiplexed(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Manager(c) => c.get_db(),
            Conn::Multiplexed(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}
