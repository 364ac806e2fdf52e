//! The `redis` backend (Redis 6+ standalone, Sentinel or Cluster; the
//! connection is `redis_conn`'s): every call bounded by
//! `state.redis.timeout`, and a circuit that stops asking a store that keeps
//! failing; a prober on the control plane PINGs once a second and closes it
//! again.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use redis::{RedisResult, Script};

use super::gcra::{Params, RateDecision};
use super::redis_conn::{Conn, Link};
use super::{Store, StoreError};
use crate::config::RedisState;
use crate::metrics::Metrics;

/// Consecutive failures that open the circuit.
const OPEN_AFTER: u32 = 3;
/// How long an open circuit refuses calls before letting them try again.
const OPEN_FOR: Duration = Duration::from_secs(1);
/// The prober's period.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// GCRA on the server's clock (`TIME`), so replicas share one time line.
/// ARGV: interval, tolerance (microseconds). Returns {allowed, remaining,
/// retry_after_us, reset_us}. The arithmetic of `gcra::step`.
const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then
  return {0, 0, allow_at - now, tat - now}
end
local new_tat = tat + interval
local ttl_ms = math.floor((new_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', ttl_ms)
local remaining = 0
if now + tolerance >= new_tat then
  remaining = math.floor((now + tolerance - new_tat) / interval) + 1
end
return {1, remaining, 0, new_tat - now}
";

/// Deletes the key only while it holds this request's token.
const GIVE_BACK_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// The Redis store.
pub struct RedisStore {
    /// `state_up` follows `reachable`; probes count as `op="ping"`.
    metrics: Arc<Metrics>,
    link: Link,
    /// `RedisServers::mode`, for `/status`.
    mode: &'static str,
    wait_for_replicas: u32,
    timeout: Duration,
    gcra: Script,
    give_back: Script,
    started: Instant,
    failures: AtomicU32,
    /// Milliseconds since `started` until which the circuit is open.
    open_until: AtomicU64,
    /// The last call or probe succeeded.
    reachable: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl RedisStore {
    /// Connects lazily (the first call or probe), on `control`.
    pub fn new(
        cfg: &RedisState,
        control: &tokio::runtime::Handle,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let link = {
            let _runtime = control.enter();
            Link::new(cfg)?
        };
        metrics.state_up.set(0);
        Ok(Self {
            metrics,
            link,
            mode: cfg.servers.mode(),
            wait_for_replicas: cfg.wait_for_replicas,
            timeout: cfg.timeout,
            gcra: Script::new(GCRA_LUA),
            give_back: Script::new(GIVE_BACK_LUA),
            started: Instant::now(),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            reachable: AtomicBool::new(false),
            last_error: Mutex::new(Some("not connected yet".into())),
        })
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn health(&self) -> super::Health {
        super::Health {
            backend: "redis",
            mode: Some(self.mode),
            reachable: self.reachable.load(Ordering::Relaxed),
            last_error: self.last_error.lock().map(|e| e.clone()).unwrap_or(None),
        }
    }

    fn succeeded(&self) {
        self.failures.store(0, Ordering::Relaxed);
        self.open_until.store(0, Ordering::Relaxed);
        if !self.reachable.swap(true, Ordering::Relaxed) {
            self.metrics.state_up.set(1);
            log::info!("the Redis state store is reachable");
        }
        if let Ok(mut e) = self.last_error.lock() {
            *e = None;
        }
    }

    fn failed(&self, error: &StoreError) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= OPEN_AFTER {
            let until = self.millis() + u64::try_from(OPEN_FOR.as_millis()).unwrap_or(1000);
            self.open_until.store(until, Ordering::Relaxed);
            if self.reachable.swap(false, Ordering::Relaxed) {
                self.metrics.state_up.set(0);
                log::error!("the Redis state store is unreachable ({error:?}); circuit open");
            }
        }
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(format!("{error:?}"));
        }
    }

    /// Runs one call through the circuit and the time-out, on the
    /// connection of the moment (for Sentinel: the master the sentinels
    /// name; a failed call makes the next one ask again).
    async fn call<T, F>(&self, call: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut Conn) -> RedisResult<T>,
    {
        if self.millis() < self.open_until.load(Ordering::Relaxed) {
            return Err(StoreError::CircuitOpen);
        }
        let result = self.bounded(call).await;
        match &result {
            Ok(_) => self.succeeded(),
            Err(e) => self.failed(e),
        }
        result
    }

    /// One call on a connection within `timeout`.
    async fn bounded<T, F>(&self, call: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut Conn) -> RedisResult<T>,
    {
        let run = async {
            let mut conn = self.link.conn().await?;
            call(&mut conn).await
        };
        // Boxed: the sentinel and cluster futures are deep types.
        let result = match tokio::time::timeout(self.timeout, Box::pin(run)).await {
            Err(_) => Err(StoreError::Timeout),
            Ok(Err(e)) if e.is_timeout() => Err(StoreError::Timeout),
            Ok(Err(e)) => Err(StoreError::Failed(format!("{:?}", e.kind()))),
            Ok(Ok(value)) => Ok(value),
        };
        if result.is_err() {
            self.link.forget();
        }
        result
    }

    pub async fn use_once(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(token).arg("NX").arg("PX").arg(ttl_ms);
        if self.wait_for_replicas == 0 {
            let set: Option<String> = self
                .call(async |conn: &mut Conn| cmd.query_async(conn).await)
                .await?;
            return Ok(set.is_some());
        }
        // SET and WAIT in one round trip; WAIT gets half the time-out.
        let wait_ms = u64::try_from(self.timeout.as_millis() / 2)
            .unwrap_or(1)
            .max(1);
        let mut pipe = redis::pipe();
        pipe.add_command(cmd)
            .cmd("WAIT")
            .arg(self.wait_for_replicas)
            .arg(wait_ms);
        let (set, acked): (Option<String>, u32) = self
            .call(async |conn: &mut Conn| pipe.query_async(conn).await)
            .await?;
        if set.is_some() && acked < self.wait_for_replicas {
            // Only on the master: a failover now could forget it. Give it
            // back and fail closed rather than risk a second use.
            log::warn!(
                "a one-time use reached {acked} of {} replicas: given back",
                self.wait_for_replicas
            );
            self.give_back(key, token).await?;
            return Err(StoreError::Failed("not replicated".into()));
        }
        Ok(set.is_some())
    }

    pub async fn give_back(&self, key: &str, token: &str) -> Result<(), StoreError> {
        let mut invocation = self.give_back.key(key);
        invocation.arg(token);
        let _: i64 = self
            .call(async |conn: &mut Conn| invocation.invoke_async(conn).await)
            .await?;
        Ok(())
    }

    pub async fn rate(&self, key: &str, p: &Params) -> Result<RateDecision, StoreError> {
        let mut invocation = self.gcra.key(key);
        invocation.arg(p.interval).arg(p.tolerance);
        let v: Vec<i64> = self
            .call(async |conn: &mut Conn| invocation.invoke_async(conn).await)
            .await?;
        let [allowed, remaining, retry_after, reset] = v[..] else {
            return Err(StoreError::Failed("unexpected GCRA reply".into()));
        };
        let micros = |n: i64| Duration::from_micros(u64::try_from(n).unwrap_or(0));
        Ok(RateDecision {
            allowed: allowed == 1,
            remaining: u64::try_from(remaining).unwrap_or(0),
            retry_after: micros(retry_after),
            reset: micros(reset),
        })
    }

    /// One PING, past the circuit (the probe is what closes it).
    async fn probe(&self) -> Result<(), StoreError> {
        let ping = redis::cmd("PING");
        let result = self
            .bounded(async |conn: &mut Conn| ping.query_async::<String>(conn).await)
            .await
            .map(drop);
        match &result {
            Ok(()) => self.succeeded(),
            Err(e) => {
                // A failed probe keeps (or puts) the circuit open.
                self.failures.fetch_max(OPEN_AFTER - 1, Ordering::Relaxed);
                self.failed(e);
            }
        }
        result
    }

    /// PINGs every second while the store is alive (`store` upgrades).
    pub fn start_prober(&self, store: Weak<Store>, control: &tokio::runtime::Handle) {
        control.spawn(async move {
            loop {
                let Some(store) = store.upgrade() else {
                    return;
                };
                if let Store::Redis(redis) = &*store {
                    let started = Instant::now();
                    let result = redis.probe().await;
                    super::observe(&redis.metrics, "ping", started, &result);
                }
                drop(store);
                tokio::time::sleep(PROBE_EVERY).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store on a port where nothing listens.
    fn dead_store() -> RedisStore {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(1);
        let cfg = RedisState {
            servers: crate::config::RedisServers::Standalone {
                url: format!("redis://127.0.0.1:{port}/0"),
            },
            tls: None,
            key_prefix: "t:".into(),
            wait_for_replicas: 0,
            timeout: Duration::from_millis(200),
        };
        let metrics = Arc::new(Metrics::new());
        RedisStore::new(&cfg, &tokio::runtime::Handle::current(), metrics).expect("store")
    }

    #[tokio::test]
    async fn a_dead_store_opens_the_circuit_and_stops_asking() {
        let store = dead_store();
        assert!(!store.health().reachable);
        for _ in 0..OPEN_AFTER {
            let e = store.use_once("k", "t", Duration::from_secs(9)).await;
            assert!(
                matches!(e, Err(StoreError::Failed(_) | StoreError::Timeout)),
                "{e:?}"
            );
        }
        // Open: refused without a call.
        assert_eq!(
            store.use_once("k", "t", Duration::from_secs(9)).await,
            Err(StoreError::CircuitOpen)
        );
        let p = Params {
            interval: 1,
            tolerance: 0,
        };
        assert_eq!(store.rate("r", &p).await, Err(StoreError::CircuitOpen));
        let health = store.health();
        assert!(!health.reachable && health.last_error.is_some());
        assert_eq!(store.metrics.state_up.get(), 0);
        // A failed probe keeps it open.
        assert!(store.probe().await.is_err());
        assert_eq!(
            store.give_back("k", "t").await,
            Err(StoreError::CircuitOpen)
        );
    }

    #[test]
    fn the_lua_scripts_touch_one_key_each() {
        // One key per script: fine on Redis Cluster without hash tags.
        for script in [GCRA_LUA, GIVE_BACK_LUA] {
            assert!(script.contains("KEYS[1]") && !script.contains("KEYS[2]"));
        }
    }
}
