//! Shared state (SPEC section 13): one-time consent use and per-consumer rate
//! limits, consulted by the proxy glue only after `policy::decide` allowed.
//! One `Store` per process, in memory or on Redis, kept across reloads while
//! `state` is unchanged.

pub mod gcra;
pub mod memory;
pub mod redis;
pub mod redis_conn;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::digest::{digest, SHA256};

use crate::clock::UnixTime;
use crate::config::{Config, RateLimit, RatePer, Route, StateBackend};
use crate::error::Reason;
use crate::metrics::Metrics;
use crate::policy::Authorized;

pub use gcra::RateDecision;

/// Why a store call failed. Every failure is the store being unavailable:
/// the caller fails closed (one-time) or follows `on_store_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The circuit is open: the store was not asked.
    CircuitOpen,
    /// No answer within `state.redis.timeout`.
    Timeout,
    /// The store answered with an error or the connection failed.
    Failed(String),
    /// The memory store is full of live entries.
    Full,
}

impl StoreError {
    fn outcome(&self) -> &'static str {
        match self {
            StoreError::CircuitOpen => "circuit_open",
            StoreError::Timeout => "timeout",
            StoreError::Failed(_) | StoreError::Full => "error",
        }
    }
}

/// What `/readyz` and `/status` say of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub backend: &'static str,
    /// Redis: `standalone`, `sentinel` or `cluster`.
    pub mode: Option<&'static str>,
    pub reachable: bool,
    pub last_error: Option<String>,
}

/// The store of one process.
pub enum Store {
    Memory(memory::MemoryStore),
    Redis(redis::RedisStore),
}

/// The store operations, as the `op` label of the state metrics.
/// `rate_limit_use_once` is the rate check and the one-time use in one call
/// (a one-time, rate-limited route on memory, standalone or Sentinel).
pub const OPS: [&str; 5] = [
    "use_once",
    "give_back",
    "rate_limit",
    "rate_limit_use_once",
    "ping",
];

/// What the combined call says: the rate decision and, when the rate
/// allowed, whether this call took the one-time key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateAndOnce {
    pub decision: RateDecision,
    /// `None`: the rate refused and the key was not touched (the consent
    /// stays unused); `Some(true)`: this call took it; `Some(false)`: a
    /// live use holds it.
    pub claimed: Option<bool>,
}

impl Store {
    /// Builds the store `state` names; a Redis store connects lazily and
    /// probes from `control`.
    pub fn build(
        state: &StateBackend,
        control: &tokio::runtime::Handle,
        metrics: &Arc<Metrics>,
    ) -> Result<Arc<Store>, String> {
        match state {
            StateBackend::Memory => {
                metrics.state_up.set(1);
                Ok(Arc::new(Store::Memory(memory::MemoryStore::new())))
            }
            StateBackend::Redis(cfg) => {
                let redis = redis::RedisStore::new(cfg, control, Arc::clone(metrics))?;
                let store = Arc::new(Store::Redis(redis));
                if let Store::Redis(redis) = &*store {
                    redis.start_prober(Arc::downgrade(&store), control);
                }
                Ok(store)
            }
        }
    }

    pub fn health(&self) -> Health {
        match self {
            Store::Memory(_) => Health {
                backend: "memory",
                mode: None,
                reachable: true,
                last_error: None,
            },
            Store::Redis(r) => r.health(),
        }
    }

    /// `SET key NX PX ttl`: `true` when this call took the key.
    pub async fn use_once(
        &self,
        metrics: &Metrics,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let started = Instant::now();
        let result = match self {
            Store::Memory(m) => m.use_once(key, token, ttl),
            Store::Redis(r) => r.use_once(key, token, ttl).await,
        };
        observe(metrics, "use_once", started, &result);
        result
    }

    /// Deletes `key` if it still holds `token` (the use is given back).
    pub async fn give_back(
        &self,
        metrics: &Metrics,
        key: &str,
        token: &str,
    ) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = match self {
            Store::Memory(m) => {
                m.give_back(key, token);
                Ok(())
            }
            Store::Redis(r) => r.give_back(key, token).await,
        };
        observe(metrics, "give_back", started, &result);
        result
    }

    /// `give_back` of a claim whose store call timed out: on Redis past the
    /// circuit, bounded by the same time-out (see
    /// `RedisStore::give_back_after_timeout`). `true` when the key held
    /// `token` and was deleted.
    pub async fn give_back_after_timeout(
        &self,
        metrics: &Metrics,
        key: &str,
        token: &str,
    ) -> Result<bool, StoreError> {
        let started = Instant::now();
        let result = match self {
            Store::Memory(m) => {
                // Never times out; kept for a caller that asks anyway.
                m.give_back(key, token);
                Ok(true)
            }
            Store::Redis(r) => r.give_back_after_timeout(key, token).await,
        };
        observe(metrics, "give_back", started, &result);
        result
    }

    /// One request against the GCRA limit kept at `key`.
    pub async fn rate(
        &self,
        metrics: &Metrics,
        key: &str,
        limit: &RateLimit,
    ) -> Result<RateDecision, StoreError> {
        let started = Instant::now();
        let params = gcra::Params::of(limit);
        let result = match self {
            Store::Memory(m) => m.rate(key, &params),
            Store::Redis(r) => r.rate(key, &params).await,
        };
        observe(metrics, "rate_limit", started, &result);
        result
    }

    /// Whether `rate_and_use_once` is one atomic call here: memory,
    /// standalone and Sentinel. Not Redis Cluster: the two keys are in
    /// different slots (a hash tag the gateway added would change the key
    /// names that replicas of the previous version share), so there the
    /// rate check and the one-time use stay two calls, unless the
    /// configured `key_prefix` already carries a hash tag.
    pub fn combines(&self) -> bool {
        match self {
            Store::Memory(_) => true,
            Store::Redis(r) => r.combines(),
        }
    }

    /// The GCRA limit at `rate_key` and, only if it allows, `SET once_key
    /// token NX PX ttl`, in one call (one round trip on Redis). Where the
    /// store cannot (`combines` is false) it is the two calls in a row.
    pub async fn rate_and_use_once(
        &self,
        metrics: &Metrics,
        rate_key: &str,
        limit: &RateLimit,
        once: &Claim,
        ttl: Duration,
    ) -> Result<RateAndOnce, StoreError> {
        let params = gcra::Params::of(limit);
        if !self.combines() {
            let decision = self.rate(metrics, rate_key, limit).await?;
            let claimed = match decision.allowed {
                true => Some(self.use_once(metrics, &once.key, &once.token, ttl).await?),
                false => None,
            };
            return Ok(RateAndOnce { decision, claimed });
        }
        let started = Instant::now();
        let result = match self {
            Store::Memory(m) => m.rate_and_use_once(rate_key, &params, &once.key, &once.token, ttl),
            Store::Redis(r) => {
                r.rate_and_use_once(rate_key, &params, &once.key, &once.token, ttl)
                    .await
            }
        };
        observe(metrics, "rate_limit_use_once", started, &result);
        result
    }
}

/// Counts one store call and its latency.
pub(crate) fn observe<T>(
    metrics: &Metrics,
    op: &str,
    started: Instant,
    result: &Result<T, StoreError>,
) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(e) => e.outcome(),
    };
    metrics
        .state_requests_total
        .with_label_values(&[op, outcome])
        .inc();
    metrics
        .state_request_duration_seconds
        .with_label_values(&[op])
        .observe(started.elapsed().as_secs_f64());
}

/// A one-time consent this request took: given back if the upstream fails
/// before any response byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub key: String,
    pub token: String,
}

/// A rate limit's state after this request, for the response headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateInfo {
    pub per: RatePer,
    pub requests: u64,
    pub period: Duration,
    pub decision: RateDecision,
}

impl RateInfo {
    /// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers): the
    /// configured `requests` per `period` seconds.
    pub fn policy_header(&self) -> String {
        format!(
            "\"{}\";q={};w={}",
            self.per.as_str(),
            self.requests,
            ceil_secs(self.period)
        )
    }

    /// `RateLimit`: what is left now and when the bucket is full again.
    pub fn limit_header(&self) -> String {
        format!(
            "\"{}\";r={};t={}",
            self.per.as_str(),
            self.decision.remaining,
            ceil_secs(self.decision.reset)
        )
    }

    /// `Retry-After` of a refusal: whole seconds, at least 1.
    pub fn retry_after(&self) -> u64 {
        ceil_secs(self.decision.retry_after).max(1)
    }

    /// The headers a response carries; with `Retry-After` on a refusal.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("ratelimit-policy", self.policy_header()),
            ("ratelimit", self.limit_header()),
        ];
        if !self.decision.allowed {
            headers.push(("retry-after", self.retry_after().to_string()));
        }
        headers
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_micros().div_ceil(1_000_000) as u64
}

/// What the shared state says of an allowed request.
#[derive(Debug, Default)]
pub struct Admission {
    /// `Some`: refused for this reason (or shadow-denied on `report_only`).
    pub refused: Option<Reason>,
    pub claim: Option<Claim>,
    pub rate: Option<RateInfo>,
}

/// Whether an allowed request's consent is one-time: the route says so
/// (`consent.one_time`), or the Resource Registry marks the consent's
/// resource `isOneTimeConsent` (`registry`: the resources the Altinn sync
/// saw so marked).
pub fn is_one_time(
    route: &Route,
    authorized: &Authorized,
    registry: &std::collections::HashSet<String>,
) -> bool {
    route.one_time
        || authorized
            .consent
            .as_ref()
            .is_some_and(|c| registry.contains(&c.resource))
}

/// The key of a one-time consent: the issuer (`iss`) and the consent `id`,
/// hashed (bounded length, nothing personal in the store).
pub fn once_key(prefix: &str, iss: &str, consent_id: &str) -> String {
    format!("{prefix}once:{}", hash_hex(&[iss, consent_id]))
}

/// The key of a route's rate limit for one consumer (and subject). The
/// limit is part of it: a reload that changes the limit starts afresh.
pub fn rate_key(
    prefix: &str,
    route: &str,
    limit: &RateLimit,
    consumer: &str,
    subject: Option<&str>,
) -> String {
    let shape = format!(
        "{}/{}/{}",
        limit.requests,
        limit.period.as_micros(),
        limit.burst
    );
    let hash = match subject {
        Some(subject) => hash_hex(&[route, &shape, consumer, subject]),
        None => hash_hex(&[route, &shape, consumer]),
    };
    format!("{prefix}rl:{hash}")
}

fn hash_hex(parts: &[&str]) -> String {
    let joined = parts.join("\n");
    let d = digest(&SHA256, joined.as_bytes());
    hex::encode(&d.as_ref()[..16])
}

/// The rate limit, then the one-time use, of an allowed request on `route`.
/// Pure apart from the store calls: one call when the route has both and
/// the store `combines` them, else one call each.
pub async fn admit(
    store: &Store,
    metrics: &Metrics,
    config: &Config,
    route: &Route,
    authorized: &Authorized,
    one_time: bool,
    now: UnixTime,
) -> Admission {
    let prefix = match &config.state {
        StateBackend::Redis(r) => r.key_prefix.as_str(),
        StateBackend::Memory => "",
    };
    let rate = route
        .rate_limit
        .as_ref()
        .zip(authorized.token.as_ref())
        .map(|(limit, token)| {
            let subject = match limit.per {
                RatePer::Consumer => None,
                RatePer::ConsumerAndSubject => {
                    authorized.consent.as_ref().map(|c| c.subject.as_str())
                }
            };
            let key = rate_key(prefix, &route.name, limit, &token.consumer, subject);
            (limit, key)
        });
    let once = match one_time {
        true => once_claim(config, prefix, authorized, now),
        false => None,
    };
    if let (Some((limit, key)), Some((claim, ttl))) = (&rate, &once) {
        if store.combines() {
            return admit_combined(store, metrics, route, limit, key, claim.clone(), *ttl).await;
        }
    }
    let mut admission = Admission::default();
    if let Some((limit, key)) = &rate {
        match store.rate(metrics, key, limit).await {
            Ok(decision) => {
                let allowed = decision.allowed;
                admission.rate = Some(rate_info(limit, decision));
                if !allowed {
                    admission.refused = Some(Reason::RateLimited);
                    return admission;
                }
            }
            Err(e) => {
                log::warn!(
                    "rate limit store call failed on route {}: {e:?}",
                    route.name
                );
                if !limit.allow_on_store_error {
                    admission.refused = Some(Reason::StateUnavailable);
                    return admission;
                }
            }
        }
    }
    if !one_time {
        return admission;
    }
    let Some((claim, ttl)) = once else {
        // Validation keeps `one_time` to `auth: consent`; fail closed anyway.
        admission.refused = Some(Reason::ConsentMissing);
        return admission;
    };
    match store.use_once(metrics, &claim.key, &claim.token, ttl).await {
        Ok(true) => admission.claim = Some(claim),
        Ok(false) => admission.refused = Some(Reason::ConsentAlreadyUsed),
        Err(StoreError::Timeout) => {
            give_back_after_timeout(store, metrics, route, "one-time", &claim).await;
            admission.refused = Some(Reason::StateUnavailable);
        }
        Err(e) => {
            log::warn!("one-time store call failed on route {}: {e:?}", route.name);
            admission.refused = Some(Reason::StateUnavailable);
        }
    }
    admission
}

/// A one-time claim call that timed out may have run all the same (the
/// `SET` done, only its reply late): the request fails closed (503
/// `state_unavailable`), and the claim is given back so that the consent
/// it never served stays usable. Only after a time-out: a failed
/// connection or an open circuit means the call did not run. The
/// give-back is compare-and-delete on this request's claim token, so it
/// never frees another request's claim (nor anything when the `SET` did
/// not run, or found the key taken). Best effort: when it fails too the
/// consent stays used (closed, never open).
///
/// Inline, not spawned: the request is failing anyway and waits at most
/// one more time-out; a client that retries on the 503 then finds the
/// consent given back already (no race with a task still running); and
/// no task outlives its request, however many time out while the store
/// is slow. On standalone Redis the give-back follows the timed-out call
/// on the same multiplexed connection (a time-out does not reconnect it),
/// so the server runs it after that call; on a new connection (Sentinel
/// forgets the master's after a failure) a claim still in flight could
/// land after the give-back and stay.
async fn give_back_after_timeout(
    store: &Store,
    metrics: &Metrics,
    route: &Route,
    call: &str,
    claim: &Claim,
) {
    // One line per occurrence; the key is a hash (no consent id, no
    // subject).
    match store
        .give_back_after_timeout(metrics, &claim.key, &claim.token)
        .await
    {
        Ok(true) => log::warn!(
            "{call} store call timed out on route {}: it had claimed {}, given back",
            route.name,
            claim.key
        ),
        Ok(false) => log::warn!(
            "{call} store call timed out on route {}: it had not claimed {}, nothing to give back",
            route.name,
            claim.key
        ),
        Err(e) => log::warn!(
            "{call} store call timed out on route {}: the give-back of {} got no answer \
             either ({e:?}), the consent may stay used",
            route.name,
            claim.key
        ),
    }
}

/// The rate check and the one-time use in one store call. A rate refusal
/// leaves the consent unused; a store failure is `state_unavailable`
/// whatever `on_store_error` says (a one-time route fails closed).
async fn admit_combined(
    store: &Store,
    metrics: &Metrics,
    route: &Route,
    limit: &RateLimit,
    rate_key: &str,
    claim: Claim,
    ttl: Duration,
) -> Admission {
    let mut admission = Admission::default();
    match store
        .rate_and_use_once(metrics, rate_key, limit, &claim, ttl)
        .await
    {
        Ok(RateAndOnce { decision, claimed }) => {
            let allowed = decision.allowed;
            admission.rate = Some(rate_info(limit, decision));
            admission.refused = match (allowed, claimed) {
                (true, Some(true)) => {
                    admission.claim = Some(claim);
                    None
                }
                (true, Some(false)) => Some(Reason::ConsentAlreadyUsed),
                _ => Some(Reason::RateLimited),
            };
        }
        Err(StoreError::Timeout) => {
            // The script may have run and claimed the consent. A rate
            // refusal never `SET`s, and the give-back only deletes this
            // request's claim token: safe whatever the script did.
            let call = "rate limit and one-time";
            give_back_after_timeout(store, metrics, route, call, &claim).await;
            admission.refused = Some(Reason::StateUnavailable);
        }
        Err(e) => {
            log::warn!(
                "rate limit and one-time store call failed on route {}: {e:?}",
                route.name
            );
            admission.refused = Some(Reason::StateUnavailable);
        }
    }
    admission
}

fn rate_info(limit: &RateLimit, decision: RateDecision) -> RateInfo {
    RateInfo {
        per: limit.per,
        requests: limit.requests,
        period: limit.period,
        decision,
    }
}

/// The one-time key of the request's consent, a fresh claim token for its
/// value, and how long it stays used; `None` without a consent.
fn once_claim(
    config: &Config,
    prefix: &str,
    authorized: &Authorized,
    now: UnixTime,
) -> Option<(Claim, Duration)> {
    let (Some(token), Some(consent)) = (&authorized.token, &authorized.consent) else {
        return None;
    };
    let issuer = config.issuers.iter().find(|i| i.name == token.issuer);
    let iss = issuer.map_or(token.issuer.as_str(), |i| i.issuer.as_str());
    let leeway = issuer.map_or(0.0, |i| i.leeway.as_secs_f64());
    let ttl = once_ttl(crate::time::parse_rfc3339(&consent.valid_to), leeway, now);
    let claim = Claim {
        key: once_key(prefix, iss, &consent.id),
        token: uuid::Uuid::new_v4().to_string(),
    };
    Some((claim, ttl))
}

/// How long a used consent stays used: until `validTo` + leeway, at least
/// one second; a year when `validTo` cannot be read (never shorter).
pub fn once_ttl(valid_to: Option<f64>, leeway: f64, now: UnixTime) -> Duration {
    const FALLBACK: Duration = Duration::from_secs(366 * 24 * 60 * 60);
    match valid_to {
        Some(at) => {
            let left = at + leeway - now;
            if left.is_finite() && left > 1.0 {
                Duration::from_secs_f64(left.min(FALLBACK.as_secs_f64()))
            } else {
                Duration::from_secs(1)
            }
        }
        None => FALLBACK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded_and_distinct() {
        let a = once_key("cgw:", "https://iss/", "id-1");
        let b = once_key("cgw:", "https://other/", "id-1");
        assert_ne!(a, b);
        assert!(a.starts_with("cgw:once:") && a.len() == "cgw:once:".len() + 32);
        let limit = RateLimit {
            per: RatePer::Consumer,
            requests: 5,
            period: Duration::from_secs(1),
            burst: 0,
            allow_on_store_error: true,
        };
        let raised = RateLimit {
            requests: 6,
            ..limit
        };
        let key = rate_key("", "r", &limit, "0192:1", None);
        assert_ne!(key, rate_key("", "r", &limit, "0192:1", Some("x")));
        assert_ne!(key, rate_key("", "r", &raised, "0192:1", None));
    }

    #[test]
    fn ttl_runs_to_valid_to_plus_leeway() {
        assert_eq!(
            once_ttl(Some(1000.0), 30.0, 900.0),
            Duration::from_secs(130)
        );
        assert_eq!(once_ttl(Some(10.0), 0.0, 900.0), Duration::from_secs(1));
        assert!(once_ttl(None, 0.0, 0.0) > Duration::from_secs(86400));
    }

    #[test]
    fn headers_follow_the_ratelimit_draft() {
        let info = RateInfo {
            per: RatePer::Consumer,
            requests: 100,
            period: Duration::from_secs(1),
            decision: RateDecision {
                allowed: false,
                remaining: 0,
                retry_after: Duration::from_millis(1500),
                reset: Duration::from_millis(200),
            },
        };
        let headers = info.headers();
        assert_eq!(
            headers[0],
            ("ratelimit-policy", "\"consumer\";q=100;w=1".into())
        );
        assert_eq!(headers[1], ("ratelimit", "\"consumer\";r=0;t=1".into()));
        assert_eq!(headers[2], ("retry-after", "2".into()));
    }
}
