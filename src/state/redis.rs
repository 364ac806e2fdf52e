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

/// The GCRA step of both rate scripts, on the server's clock (`TIME`), so
/// replicas share one time line: KEYS[1] the cell, ARGV[1] interval and
/// ARGV[2] tolerance (microseconds). A refusal returns {0, 0,
/// retry_after_us, reset_us} and writes nothing; past it the new `tat` is
/// stored and `remaining` computed. The arithmetic of `gcra::step`.
macro_rules! gcra_step_lua {
    () => {
        r"
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
"
    };
}

/// GCRA alone. Returns {allowed, remaining, retry_after_us, reset_us}.
const GCRA_LUA: &str = concat!(
    gcra_step_lua!(),
    "return {1, remaining, 0, new_tat - now}\n"
);

/// GCRA on KEYS[1] and, only when it allows, `SET KEYS[2] ARGV[3] NX PX
/// ARGV[4]` (the one-time use, the claim token as its value): one round
/// trip, atomic. Returns the GCRA reply, with a fifth element when allowed:
/// 1 this call took KEYS[2], 0 a live use holds it. A refusal (four
/// elements) never touches KEYS[2].
const RATE_AND_ONCE_LUA: &str = concat!(
    gcra_step_lua!(),
    r"local claimed = 0
if redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4]) then claimed = 1 end
return {1, remaining, 0, new_tat - now, claimed}
"
);

/// Deletes the key only while it holds this request's token.
const GIVE_BACK_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// `GIVE_BACK_LUA` as `EVAL` (not `EVALSHA`): one round trip even where
/// the server does not have the script cached (new, restarted, promoted). A
/// give-back often follows a failure, when a second and third round trip
/// (`NOSCRIPT`, `SCRIPT LOAD`) would not fit in the time-out; the script is
/// short. On Cluster `EVAL` is routed by its key like `EVALSHA`.
fn give_back_eval(key: &str, token: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(GIVE_BACK_LUA).arg(1).arg(key).arg(token);
    cmd
}

/// The Redis store.
pub struct RedisStore {
    /// `state_up` follows `reachable`; probes count as `op="ping"`.
    metrics: Arc<Metrics>,
    link: Link,
    /// `RedisServers::mode`, for `/status`.
    mode: &'static str,
    /// Whether both keys of a request are in one slot (see `combines`).
    one_slot: bool,
    wait_for_replicas: u32,
    timeout: Duration,
    gcra: Script,
    rate_and_once: Script,
    started: Instant,
    failures: AtomicU32,
    /// Milliseconds since `started` until which the circuit is open.
    open_until: AtomicU64,
    /// The last call or probe succeeded.
    reachable: AtomicBool,
    last_error: Mutex<Option<String>>,
}

/// The hash tag Redis Cluster hashes a key starting with `prefix` on: the
/// text between the first `{` and the first `}` after it, when not empty.
/// (The rest of a gateway key, `once:<hex>` or `rl:<hex>`, has no braces,
/// so the prefix alone decides.)
fn hash_tag(prefix: &str) -> Option<&str> {
    let open = prefix.find('{')?;
    let rest = &prefix[open + 1..];
    let close = rest.find('}')?;
    Some(&rest[..close]).filter(|tag| !tag.is_empty())
}

/// A GCRA reply read: the decision and, from the combined script, the
/// fifth element (whether the one-time key was taken). `None` when it is
/// not such a reply.
fn gcra_reply(v: &[i64]) -> Option<(RateDecision, Option<bool>)> {
    let (&[allowed, remaining, retry_after, reset], claimed) = (v.get(..4)?, v.get(4)) else {
        return None;
    };
    if v.len() > 5 {
        return None;
    }
    let micros = |n: i64| Duration::from_micros(u64::try_from(n).unwrap_or(0));
    let decision = RateDecision {
        allowed: allowed == 1,
        remaining: u64::try_from(remaining).unwrap_or(0),
        retry_after: micros(retry_after),
        reset: micros(reset),
    };
    Some((decision, claimed.map(|c| *c == 1)))
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
            one_slot: cfg.servers.mode() != "cluster" || hash_tag(&cfg.key_prefix).is_some(),
            wait_for_replicas: cfg.wait_for_replicas,
            timeout: cfg.timeout,
            gcra: Script::new(GCRA_LUA),
            rate_and_once: Script::new(RATE_AND_ONCE_LUA),
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

    /// How long `WAIT` may wait: half the time-out.
    fn wait_ms(&self) -> u64 {
        u64::try_from(self.timeout.as_millis() / 2)
            .unwrap_or(1)
            .max(1)
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
        // SET and WAIT in one round trip.
        let wait_ms = self.wait_ms();
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
        let eval = give_back_eval(key, token);
        let _: i64 = self
            .call(async |conn: &mut Conn| eval.query_async(conn).await)
            .await?;
        Ok(())
    }

    /// `give_back` of a claim whose call timed out (it may have run, its
    /// reply late): past the circuit, which that very time-out may have
    /// opened (the call is one, bounded by the same time-out, and only ever
    /// follows a call the circuit let through), and counted in it like any
    /// call. `true` when the key held this token and was deleted.
    pub async fn give_back_after_timeout(
        &self,
        key: &str,
        token: &str,
    ) -> Result<bool, StoreError> {
        let eval = give_back_eval(key, token);
        let result = self
            .bounded(async |conn: &mut Conn| eval.query_async::<i64>(conn).await)
            .await;
        match &result {
            Ok(_) => self.succeeded(),
            Err(e) => self.failed(e),
        }
        result.map(|deleted| deleted == 1)
    }

    pub async fn rate(&self, key: &str, p: &Params) -> Result<RateDecision, StoreError> {
        let mut invocation = self.gcra.key(key);
        invocation.arg(p.interval).arg(p.tolerance);
        let v: Vec<i64> = self
            .call(async |conn: &mut Conn| invocation.invoke_async(conn).await)
            .await?;
        match gcra_reply(&v) {
            Some((decision, None)) => Ok(decision),
            _ => Err(StoreError::Failed("unexpected GCRA reply".into())),
        }
    }

    /// Whether the rate check and the one-time use go in one script: not
    /// on Cluster, where their keys are in different slots, unless the
    /// `key_prefix` carries a hash tag (`{cgw}:`) that puts every key of
    /// the gateway in one slot.
    pub fn combines(&self) -> bool {
        self.one_slot
    }

    /// `RATE_AND_ONCE_LUA`: one round trip (with `wait_for_replicas`, the
    /// script and `WAIT` pipelined, still one; a use fewer replicas
    /// acknowledged is given back and fails closed, as in `use_once`).
    pub async fn rate_and_use_once(
        &self,
        rate_key: &str,
        p: &Params,
        once_key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<super::RateAndOnce, StoreError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut invocation = self.rate_and_once.key(rate_key);
        invocation
            .key(once_key)
            .arg(p.interval)
            .arg(p.tolerance)
            .arg(token)
            .arg(ttl_ms);
        let (v, acked): (Vec<i64>, Option<u32>) = if self.wait_for_replicas == 0 {
            let v = self
                .call(async |conn: &mut Conn| invocation.invoke_async(conn).await)
                .await?;
            (v, None)
        } else {
            let mut pipe = redis::pipe();
            pipe.invoke_script(&invocation)
                .cmd("WAIT")
                .arg(self.wait_for_replicas)
                .arg(self.wait_ms());
            let script = &self.rate_and_once;
            let (v, acked) = self
                .call(async |conn: &mut Conn| {
                    let first: RedisResult<(Vec<i64>, u32)> = pipe.query_async(conn).await;
                    match first {
                        Err(e)
                            if e.kind()
                                == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                        {
                            // Not cached on this server yet (new, restarted,
                            // promoted): load it and send the pair again.
                            script.load_async(conn).await?;
                            pipe.query_async(conn).await
                        }
                        other => other,
                    }
                })
                .await?;
            (v, Some(acked))
        };
        let Some((decision, claimed)) = gcra_reply(&v) else {
            return Err(StoreError::Failed("unexpected rate and once reply".into()));
        };
        if decision.allowed != claimed.is_some() {
            return Err(StoreError::Failed("unexpected rate and once reply".into()));
        }
        if let (Some(true), Some(acked)) = (claimed, acked) {
            if acked < self.wait_for_replicas {
                log::warn!(
                    "a one-time use reached {acked} of {} replicas: given back",
                    self.wait_for_replicas
                );
                self.give_back(once_key, token).await?;
                return Err(StoreError::Failed("not replicated".into()));
            }
        }
        Ok(super::RateAndOnce { decision, claimed })
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
        // The give-back of a claim whose call timed out is tried past it
        // (and fails here, bounded, counted).
        let e = store.give_back_after_timeout("k", "t").await;
        assert!(
            matches!(e, Err(StoreError::Failed(_) | StoreError::Timeout)),
            "{e:?}"
        );
        assert!(!store.health().reachable);
    }

    #[test]
    fn the_give_back_is_one_eval_of_its_script() {
        let eval = give_back_eval("t:once:ab", "claim");
        let packed = String::from_utf8_lossy(&eval.get_packed_command()).into_owned();
        assert!(packed.contains("EVAL\r\n") && !packed.contains("EVALSHA"));
        assert!(packed.contains(GIVE_BACK_LUA));
        assert!(packed.ends_with("$1\r\n1\r\n$9\r\nt:once:ab\r\n$5\r\nclaim\r\n"));
    }

    #[test]
    fn the_lua_scripts_touch_one_key_each() {
        // One key per script used on Redis Cluster: no hash tags needed.
        for script in [GCRA_LUA, GIVE_BACK_LUA] {
            assert!(script.contains("KEYS[1]") && !script.contains("KEYS[2]"));
        }
        // The combined script (not on Cluster) touches exactly two: the
        // rate cell, then the one-time key, after the GCRA step.
        let s = RATE_AND_ONCE_LUA;
        assert!(s.contains("KEYS[1]") && s.contains("KEYS[2]") && !s.contains("KEYS[3]"));
        assert!(s.starts_with(gcra_step_lua!()));
        let refusal = s.find("return {0,").expect("a refusal");
        assert!(refusal < s.find("KEYS[2]").expect("the once key"));
        assert_eq!(
            s.matches("KEYS[2]").count(),
            1,
            "one SET NX of the once key"
        );
    }

    #[test]
    fn a_hash_tag_is_read_as_redis_cluster_reads_it() {
        assert_eq!(hash_tag("{cgw}:"), Some("cgw"));
        assert_eq!(hash_tag("a{b}c{d}:"), Some("b"));
        assert_eq!(hash_tag("cgw:"), None);
        assert_eq!(
            hash_tag("{}cgw{x}:"),
            None,
            "an empty tag hashes the whole key"
        );
        assert_eq!(hash_tag("cgw{:"), None);
        assert_eq!(hash_tag("}{x"), None);
    }

    #[test]
    fn gcra_replies_are_read_strictly() {
        let allowed = gcra_reply(&[1, 4, 0, 200_000]).expect("a reply");
        assert!(allowed.0.allowed && allowed.0.remaining == 4 && allowed.1.is_none());
        assert_eq!(gcra_reply(&[1, 0, 0, 5, 1]).map(|r| r.1), Some(Some(true)));
        assert_eq!(gcra_reply(&[1, 0, 0, 5, 0]).map(|r| r.1), Some(Some(false)));
        let refused = gcra_reply(&[0, 0, 1_500_000, 9]).expect("a refusal");
        assert_eq!(refused.0.retry_after, Duration::from_millis(1500));
        assert!(gcra_reply(&[1, 2, 3]).is_none());
        assert!(gcra_reply(&[1, 2, 3, 4, 5, 6]).is_none());
        assert!(gcra_reply(&[]).is_none());
    }
}
