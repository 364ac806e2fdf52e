//! One issuer's signing keys over time: the last good key set (published
//! with one atomic swap), the stale bound that fails closed, the single-flight
//! rate-limited refetch for an unknown `kid`, the background refresh loop with
//! its backoff, and the facts `/status` and the metrics report.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use prometheus::IntGauge;
use serde::Serialize;
use thiserror::Error;
use tokio::runtime::Handle;
use tokio::sync::watch;

use super::fetch::{FetchError, JwksFetcher};
use super::keyset::{KeySet, KeySetError};
use crate::clock::{Clock, UnixTime};
use crate::config::Issuer;
use crate::metrics::Metrics;
use crate::time::unix_rfc3339_millis;

/// First retry delay after a failed fetch (SPEC section 12).
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(500);
/// Longest retry delay after failed fetches (SPEC section 12).
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Backstop on one fetch, whatever the fetcher's own timeouts: a refetch that
/// requests wait for can never hang them longer than this.
pub const FETCH_DEADLINE: Duration = Duration::from_secs(10);

/// The `outcome` label and `/status` value of a successful fetch.
pub const OUTCOME_SUCCESS: &str = "success";
/// The `outcome` label and `/status` value of a failed fetch.
pub const OUTCOME_FAILURE: &str = "failure";

/// Why one refresh did not replace the key set (the last good one is kept).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RefreshError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("JWKS rejected: {0}")]
    Rejected(#[from] KeySetError),
    #[error("JWKS fetch did not finish within {0:?}")]
    Deadline(Duration),
}

/// One issuer's key facts for the admin `/status` endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssuerStatus {
    /// Ids of the keys in force, sorted; empty when the issuer has no keys
    /// (never fetched, or stale beyond `jwks_max_stale`).
    pub key_ids: Vec<String>,
    /// When the last fetch finished (RFC 3339, UTC), whatever its outcome.
    pub last_refresh: Option<String>,
    /// `"success"` or `"failure"`: the outcome of that fetch.
    pub last_refresh_outcome: Option<&'static str>,
    /// Why the last fetch failed; `None` once a later one succeeded.
    pub last_error: Option<String>,
    /// When the key set in force was last fetched successfully (RFC 3339).
    pub last_success: Option<String>,
    /// Whether requests can be verified now (`current()` is `Some`).
    pub has_keys: bool,
}

/// A key set with the time of the fetch that last confirmed it.
struct HeldKeys {
    set: Arc<KeySet>,
    fetched_at: UnixTime,
}

/// What the last fetch did, for `/status`.
#[derive(Default)]
struct RefreshRecord {
    last_refresh: Option<UnixTime>,
    last_outcome: Option<&'static str>,
    last_error: Option<String>,
}

/// The unknown-kid refetch: the one in flight, and when the last one began.
#[derive(Default)]
struct UnknownKidFlight {
    /// Completion signal of the refetch in flight (becomes `true`, or its
    /// sender is dropped, when it ends).
    in_flight: Option<watch::Receiver<bool>>,
    /// Clock time the last unknown-kid refetch started.
    last_started: Option<UnixTime>,
}

/// The keys of one issuer, shared by every request and the refresh task.
pub struct IssuerKeys {
    /// Itself, so `&self` methods can hand an owned handle to spawned work.
    me: Weak<IssuerKeys>,
    issuer: Issuer,
    fetcher: Arc<dyn JwksFetcher>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    /// `jwks_keys{issuer}`: set on every fetch, and zeroed as soon as the
    /// keys are found stale (a gauge showing keys while requests get 503
    /// would mislead the operator).
    keys_gauge: IntGauge,
    /// The runtime every fetch of this issuer runs on.
    runtime: Handle,
    held: ArcSwapOption<HeldKeys>,
    record: Mutex<RefreshRecord>,
    flight: Mutex<UnknownKidFlight>,
    /// Serialises refreshes, so an older answer never overwrites a newer one.
    refresh_lock: tokio::sync::Mutex<()>,
    /// Bumped on every successful refresh (wakes `wait_ready`).
    updates: watch::Sender<u64>,
}

impl std::fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerKeys")
            .field("issuer", &self.issuer.name)
            .field("key_ids", &self.current().map(|set| set.key_ids()))
            .finish()
    }
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Resolves when `stop` is true or its sender is gone.
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

impl IssuerKeys {
    /// Keys for `issuer`, fetched with `fetcher` on `runtime` (the run loop
    /// and every unknown-kid refetch run there). Holds no keys until the
    /// first successful refresh.
    pub fn new(
        issuer: Issuer,
        fetcher: Arc<dyn JwksFetcher>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        runtime: Handle,
    ) -> Arc<Self> {
        let keys_gauge = metrics.jwks_keys.with_label_values(&[issuer.name.as_str()]);
        keys_gauge.set(0);
        Arc::new_cyclic(|me| IssuerKeys {
            me: me.clone(),
            issuer,
            fetcher,
            clock,
            metrics,
            keys_gauge,
            runtime,
            held: ArcSwapOption::empty(),
            record: Mutex::new(RefreshRecord::default()),
            flight: Mutex::new(UnknownKidFlight::default()),
            refresh_lock: tokio::sync::Mutex::new(()),
            updates: watch::channel(0).0,
        })
    }

    /// The issuer's configured name (the `issuer` metric label).
    pub fn name(&self) -> &str {
        &self.issuer.name
    }

    /// The issuer settings these keys were built for.
    pub fn issuer(&self) -> &Issuer {
        &self.issuer
    }

    /// The key set in force: `None` if never fetched, or if the last
    /// successful fetch is older than `jwks_max_stale` (fail closed).
    pub fn current(&self) -> Option<Arc<KeySet>> {
        let held = self.held.load();
        let held = held.as_ref()?;
        let age = self.clock.now() - held.fetched_at;
        if age > self.issuer.jwks_max_stale.as_secs_f64() {
            self.keys_gauge.set(0);
            return None;
        }
        Some(Arc::clone(&held.set))
    }

    /// Clock time of the last successful fetch, if any.
    pub fn last_success(&self) -> Option<UnixTime> {
        self.held.load().as_ref().map(|held| held.fetched_at)
    }

    /// One fetch and parse. On success the new set is in force; on any
    /// failure (fetch error, rejected document) the last good set is kept.
    /// Counted in `jwks_refresh_total` either way.
    pub async fn refresh(&self) -> Result<(), RefreshError> {
        let _serial = self.refresh_lock.lock().await;
        let name = self.issuer.name.as_str();
        let result = match tokio::time::timeout(FETCH_DEADLINE, self.fetcher.fetch()).await {
            Err(_) => Err(RefreshError::Deadline(FETCH_DEADLINE)),
            Ok(Err(error)) => Err(RefreshError::Fetch(error)),
            Ok(Ok(body)) => {
                let previous = self.held.load_full();
                KeySet::parse(
                    &body,
                    &self.issuer.algorithms,
                    previous.as_deref().map(|held| held.set.as_ref()),
                )
                .map_err(RefreshError::Rejected)
            }
        };
        let now = self.clock.now();
        let outcome = match result {
            Ok(set) => {
                let old_ids = self.current().map(|old| old.key_ids());
                let new_ids = set.key_ids();
                if old_ids.as_ref() != Some(&new_ids) {
                    log::info!("issuer {name}: JWKS now has keys {new_ids:?}");
                } else {
                    log::debug!("issuer {name}: JWKS refreshed, keys unchanged");
                }
                self.held.store(Some(Arc::new(HeldKeys {
                    set: Arc::new(set),
                    fetched_at: now,
                })));
                self.metrics
                    .jwks_last_success_timestamp_seconds
                    .with_label_values(&[name])
                    .set(now as i64);
                let mut record = locked(&self.record);
                record.last_refresh = Some(now);
                record.last_outcome = Some(OUTCOME_SUCCESS);
                record.last_error = None;
                Ok(())
            }
            Err(error) => {
                match self.last_success() {
                    Some(at) if self.current().is_some() => log::warn!(
                        "issuer {name}: JWKS refresh failed ({error}); keeping the keys fetched at {}",
                        unix_rfc3339_millis(at).unwrap_or_default()
                    ),
                    _ => log::warn!("issuer {name}: JWKS refresh failed ({error}); no usable keys"),
                }
                let mut record = locked(&self.record);
                record.last_refresh = Some(now);
                record.last_outcome = Some(OUTCOME_FAILURE);
                record.last_error = Some(error.to_string());
                Err(error)
            }
        };
        let label = if outcome.is_ok() {
            OUTCOME_SUCCESS
        } else {
            OUTCOME_FAILURE
        };
        self.metrics
            .jwks_refresh_total
            .with_label_values(&[name, label])
            .inc();
        self.keys_gauge
            .set(self.current().map_or(0, |set| set.len() as i64));
        if outcome.is_ok() {
            self.updates.send_modify(|generation| *generation += 1);
        }
        outcome
    }

    /// For a token whose `kid` is not in the current set: refetches at most
    /// once per `jwks_min_refresh`, single-flight (callers arriving while a
    /// refetch is in flight wait for that one), and answers whether the set
    /// in force now has `kid`. A call inside the window with no refetch in
    /// flight answers at once. The fetch runs on the issuer's runtime, so
    /// this may be awaited from any runtime.
    pub async fn refetch_for_unknown_kid(&self, kid: &str) -> bool {
        let has_kid = || self.current().is_some_and(|set| set.get(kid).is_some());
        if has_kid() {
            return true;
        }
        let mut started = None;
        let mut done = {
            let mut flight = locked(&self.flight);
            match &flight.in_flight {
                Some(done) => done.clone(),
                None => {
                    let now = self.clock.now();
                    let window = self.issuer.jwks_min_refresh.as_secs_f64();
                    // A clock that went backwards opens the window again.
                    if flight
                        .last_started
                        .is_some_and(|last| (0.0..window).contains(&(now - last)))
                    {
                        // Asked again under the lock: a refetch that ended
                        // between the first look and here (it publishes its
                        // keys before clearing `in_flight`) may have brought
                        // the kid.
                        return has_kid();
                    }
                    let Some(me) = self.me.upgrade() else {
                        return false;
                    };
                    let (sender, done) = watch::channel(false);
                    flight.in_flight = Some(done.clone());
                    flight.last_started = Some(now);
                    log::debug!(
                        "issuer {}: unknown kid, refetching the JWKS",
                        self.issuer.name
                    );
                    started = Some(FlightGuard { keys: me, sender });
                    done
                }
            }
        };
        // Spawned outside the lock: a task refused by a runtime that is
        // shutting down drops its guard at once, and the guard takes the lock.
        if let Some(guard) = started {
            self.runtime.spawn(async move {
                let _ = guard.keys.refresh().await;
                drop(guard);
            });
        }
        // Ends when the refetch finishes, or its task is dropped (the guard
        // drops the sender).
        let _ = done.wait_for(|finished| *finished).await;
        has_kid()
    }

    /// Waits until the issuer has keys in force, at most `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut updates = self.updates.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.current().is_some() {
                return true;
            }
            match tokio::time::timeout_at(deadline, updates.changed()).await {
                Ok(Ok(())) => continue,
                _ => return self.current().is_some(),
            }
        }
    }

    /// The facts `/status` shows for this issuer.
    pub fn status(&self) -> IssuerStatus {
        let current = self.current();
        let record = locked(&self.record);
        IssuerStatus {
            key_ids: current
                .as_ref()
                .map(|set| set.key_ids())
                .unwrap_or_default(),
            last_refresh: record.last_refresh.and_then(unix_rfc3339_millis),
            last_refresh_outcome: record.last_outcome,
            last_error: record.last_error.clone(),
            last_success: self.last_success().and_then(unix_rfc3339_millis),
            has_keys: current.is_some(),
        }
    }

    /// The background loop: fetches at start, retrying with backoff (0.5 s
    /// doubling to 10 s) until it succeeds; then refreshes every
    /// `jwks_refresh`, retrying a failed refresh with the same backoff capped
    /// by `jwks_refresh`. Returns promptly when `stop` becomes true or its
    /// sender is dropped.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let period = self.issuer.jwks_refresh;
        let mut backoff = BACKOFF_INITIAL;
        let mut ever_succeeded = false;
        loop {
            let succeeded = tokio::select! {
                result = self.refresh() => result.is_ok(),
                _ = stop_requested(&mut stop) => return,
            };
            let delay = if succeeded {
                ever_succeeded = true;
                backoff = BACKOFF_INITIAL;
                period
            } else {
                let cap = if ever_succeeded {
                    BACKOFF_MAX.min(period)
                } else {
                    BACKOFF_MAX
                };
                let delay = backoff.min(cap);
                backoff = (backoff * 2).min(cap);
                delay
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop_requested(&mut stop) => return,
            }
        }
    }
}

/// Ends an unknown-kid refetch, even if its task is dropped mid-way: clears
/// the in-flight marker, then wakes every waiter.
struct FlightGuard {
    keys: Arc<IssuerKeys>,
    sender: watch::Sender<bool>,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        locked(&self.keys.flight).in_flight = None;
        let _ = self.sender.send(true);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::clock::FixedClock;
    use crate::dev_issuer::DevIssuer;
    use crate::keys::fetch::{FetchLimits, HttpJwksFetcher};
    use crate::support::JwksServer;
    use std::collections::VecDeque;

    pub(crate) const T0: UnixTime = 1_700_000_000.0;

    pub(crate) fn issuer(name: &str, jwks_uri: &str) -> Issuer {
        Issuer {
            jwks_max_stale: Duration::from_secs(3600),
            ..Issuer::with_defaults(name, &format!("https://{name}.example/"), jwks_uri)
        }
    }

    struct Fixture {
        keys: Arc<IssuerKeys>,
        clock: Arc<FixedClock>,
        metrics: Arc<Metrics>,
    }

    fn http_keys(server: &JwksServer, limits: FetchLimits) -> Fixture {
        let issuer = issuer("test", &server.url());
        let fetcher = Arc::new(HttpJwksFetcher::new(&issuer.jwks_uri, None, limits).unwrap());
        let clock = Arc::new(FixedClock::new(T0));
        let metrics = Arc::new(Metrics::new());
        let keys = IssuerKeys::new(
            issuer,
            fetcher,
            clock.clone(),
            metrics.clone(),
            Handle::current(),
        );
        Fixture {
            keys,
            clock,
            metrics,
        }
    }

    fn refreshes(metrics: &Metrics, outcome: &str) -> u64 {
        metrics
            .jwks_refresh_total
            .with_label_values(&["test", outcome])
            .get()
    }

    fn jwks_of(issuers: &[&DevIssuer]) -> String {
        let keys: Vec<_> = issuers.iter().map(|i| i.jwk()).collect();
        serde_json::json!({ "keys": keys }).to_string()
    }

    #[tokio::test]
    async fn a_successful_refresh_puts_keys_in_force_and_is_reported() {
        let dev = DevIssuer::generate("k1").unwrap();
        let server = JwksServer::start(dev.jwks_json());
        let f = http_keys(&server, FetchLimits::default());
        assert!(f.keys.current().is_none());
        assert_eq!(f.keys.status().last_refresh_outcome, None);
        f.keys.refresh().await.unwrap();
        assert_eq!(f.keys.current().unwrap().key_ids(), vec!["k1".to_string()]);
        assert_eq!(refreshes(&f.metrics, "success"), 1);
        assert_eq!(refreshes(&f.metrics, "failure"), 0);
        assert_eq!(f.metrics.jwks_keys.with_label_values(&["test"]).get(), 1);
        assert_eq!(
            f.metrics
                .jwks_last_success_timestamp_seconds
                .with_label_values(&["test"])
                .get(),
            T0 as i64
        );
        let status = f.keys.status();
        assert_eq!(status.key_ids, vec!["k1".to_string()]);
        assert_eq!(
            status.last_refresh.as_deref(),
            Some("2023-11-14T22:13:20.000Z")
        );
        assert_eq!(status.last_refresh_outcome, Some("success"));
        assert_eq!(status.last_error, None);
        assert!(status.has_keys);
        let text = String::from_utf8(f.metrics.render()).unwrap();
        assert!(text
            .contains("consent_gateway_jwks_refresh_total{issuer=\"test\",outcome=\"success\"} 1"));
    }

    #[tokio::test]
    async fn failed_fetches_keep_the_last_good_keys() {
        let dev = DevIssuer::generate("k1").unwrap();
        let server = JwksServer::start(dev.jwks_json());
        let limits = FetchLimits {
            max_body_bytes: 4096,
            ..FetchLimits::default()
        };
        let f = http_keys(&server, limits);
        f.keys.refresh().await.unwrap();
        let before = f.keys.current().unwrap();

        server.set_failing(true);
        f.clock.set(T0 + 60.0);
        let error = f.keys.refresh().await.unwrap_err();
        assert_eq!(error, RefreshError::Fetch(FetchError::Status(500)));
        assert!(Arc::ptr_eq(&before, &f.keys.current().unwrap()));

        server.set_failing(false);
        server.set_body(format!("{{\"keys\":[],\"pad\":\"{}\"}}", "x".repeat(5000)));
        let error = f.keys.refresh().await.unwrap_err();
        assert_eq!(error, RefreshError::Fetch(FetchError::TooLarge(4096)));
        assert!(Arc::ptr_eq(&before, &f.keys.current().unwrap()));

        assert_eq!(refreshes(&f.metrics, "success"), 1);
        assert_eq!(refreshes(&f.metrics, "failure"), 2);
        assert_eq!(f.metrics.jwks_keys.with_label_values(&["test"]).get(), 1);
        let status = f.keys.status();
        assert_eq!(status.last_refresh_outcome, Some("failure"));
        assert!(status.last_error.unwrap().contains("larger than 4096"));
        assert_eq!(status.key_ids, vec!["k1".to_string()]);
        assert_eq!(
            status.last_success.as_deref(),
            Some("2023-11-14T22:13:20.000Z")
        );
        // The last success timestamp is that of the good fetch.
        assert_eq!(
            f.metrics
                .jwks_last_success_timestamp_seconds
                .with_label_values(&["test"])
                .get(),
            T0 as i64
        );

        // A later success clears the error.
        server.set_body(dev.jwks_json());
        f.keys.refresh().await.unwrap();
        assert_eq!(f.keys.status().last_error, None);
    }

    #[tokio::test]
    async fn rejected_documents_keep_the_old_set() {
        let dev = DevIssuer::generate("k1").unwrap();
        let server = JwksServer::start(dev.jwks_json());
        let f = http_keys(&server, FetchLimits::default());
        f.keys.refresh().await.unwrap();
        let before = f.keys.current().unwrap();

        server.set_body("this is not json".into());
        assert!(matches!(
            f.keys.refresh().await,
            Err(RefreshError::Rejected(KeySetError::NotAJwks(_)))
        ));
        let rotated = DevIssuer::generate("k2").unwrap();
        let jwk = rotated.jwk();
        server.set_body(serde_json::json!({ "keys": [jwk.clone(), jwk] }).to_string());
        assert_eq!(
            f.keys.refresh().await,
            Err(RefreshError::Rejected(KeySetError::DuplicateKid(
                "k2".into()
            )))
        );
        server.set_body(r#"{"keys":[{"kty":"oct","kid":"hs","k":"c2VjcmV0"}]}"#.into());
        assert_eq!(
            f.keys.refresh().await,
            Err(RefreshError::Rejected(KeySetError::NoUsableKey))
        );
        assert!(Arc::ptr_eq(&before, &f.keys.current().unwrap()));
        assert_eq!(refreshes(&f.metrics, "failure"), 3);
    }

    #[tokio::test]
    async fn keys_older_than_max_stale_are_not_used() {
        let dev = DevIssuer::generate("k1").unwrap();
        let server = JwksServer::start(dev.jwks_json());
        let f = http_keys(&server, FetchLimits::default());
        f.keys.refresh().await.unwrap();
        server.set_failing(true);
        f.clock.set(T0 + 3600.0);
        assert!(
            f.keys.current().is_some(),
            "exactly max_stale old: still in force"
        );
        f.clock.set(T0 + 3600.5);
        assert!(f.keys.current().is_none());
        // The gauge follows at once, not only at the next fetch.
        assert_eq!(f.metrics.jwks_keys.with_label_values(&["test"]).get(), 0);
        assert!(f.keys.refresh().await.is_err());
        assert_eq!(f.metrics.jwks_keys.with_label_values(&["test"]).get(), 0);
        let status = f.keys.status();
        assert!(!status.has_keys);
        assert!(status.key_ids.is_empty());
        assert!(!f.keys.wait_ready(Duration::from_millis(1)).await);
        // A success brings them back.
        server.set_failing(false);
        f.keys.refresh().await.unwrap();
        assert!(f.keys.current().is_some());
    }

    #[tokio::test]
    async fn an_unknown_kid_refetch_picks_up_a_rotated_key_with_one_fetch() {
        let old = DevIssuer::generate("k1").unwrap();
        let new = DevIssuer::generate("k2").unwrap();
        let server = JwksServer::start(old.jwks_json());
        let f = http_keys(&server, FetchLimits::default());
        f.keys.refresh().await.unwrap();
        server.set_body(jwks_of(&[&old, &new]));
        assert!(f.keys.refetch_for_unknown_kid("k2").await);
        assert_eq!(server.hits(), 2);
        assert_eq!(refreshes(&f.metrics, "success"), 2);
        // A known kid needs no fetch.
        assert!(f.keys.refetch_for_unknown_kid("k1").await);
        assert_eq!(server.hits(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unknown_kid_storm_causes_exactly_one_fetch() {
        let old = DevIssuer::generate("k1").unwrap();
        let new = DevIssuer::generate("k2").unwrap();
        let server = JwksServer::start(old.jwks_json());
        let f = http_keys(&server, FetchLimits::default());
        f.keys.refresh().await.unwrap();
        server.set_body(jwks_of(&[&old, &new]));
        // Slow answers keep the refetch in flight while the storm arrives.
        server.set_delay(Duration::from_millis(300));
        let callers: Vec<_> = (0..50)
            .map(|_| {
                let keys = Arc::clone(&f.keys);
                tokio::spawn(async move { keys.refetch_for_unknown_kid("k2").await })
            })
            .collect();
        for caller in callers {
            assert!(caller.await.unwrap());
        }
        assert_eq!(server.hits(), 2);
        assert_eq!(refreshes(&f.metrics, "success"), 2);
    }

    #[tokio::test]
    async fn unknown_kids_inside_the_min_refresh_window_do_not_fetch() {
        let dev = DevIssuer::generate("k1").unwrap();
        let server = JwksServer::start(dev.jwks_json());
        let f = http_keys(&server, FetchLimits::default());
        f.keys.refresh().await.unwrap();
        assert!(!f.keys.refetch_for_unknown_kid("nope").await);
        assert_eq!(server.hits(), 2);
        f.clock.set(T0 + 29.0);
        assert!(!f.keys.refetch_for_unknown_kid("other").await);
        assert!(!f.keys.refetch_for_unknown_kid("nope").await);
        assert_eq!(server.hits(), 2);
        // A periodic refresh does not open the window.
        f.keys.refresh().await.unwrap();
        assert!(!f.keys.refetch_for_unknown_kid("other").await);
        assert_eq!(server.hits(), 3);
        // Once the window has passed, one more refetch is allowed.
        f.clock.set(T0 + 30.0);
        assert!(!f.keys.refetch_for_unknown_kid("other").await);
        assert_eq!(server.hits(), 4);
        // A clock that went backwards does not lock refetches out.
        f.clock.set(T0 - 1000.0);
        assert!(!f.keys.refetch_for_unknown_kid("other").await);
        assert_eq!(server.hits(), 5);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_refetch_may_be_awaited_from_another_runtime() {
        let old = DevIssuer::generate("k1").unwrap();
        let new = DevIssuer::generate("k2").unwrap();
        let server = JwksServer::start(old.jwks_json());
        let f = http_keys(&server, FetchLimits::default());
        f.keys.refresh().await.unwrap();
        server.set_body(jwks_of(&[&old, &new]));
        let keys = Arc::clone(&f.keys);
        let found = tokio::task::spawn_blocking(move || {
            let other = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            other.block_on(keys.refetch_for_unknown_kid("k2"))
        })
        .await
        .unwrap();
        assert!(found);
        assert_eq!(server.hits(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_retries_the_start_up_fetch_until_the_server_answers() {
        let dev = DevIssuer::generate("k1").unwrap();
        let server = JwksServer::start(dev.jwks_json());
        server.set_failing(true);
        let f = http_keys(&server, FetchLimits::default());
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(Arc::clone(&f.keys).run(stopped));
        // Poll until two attempts have failed, then let the server answer.
        while server.hits() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(f.keys.current().is_none());
        server.set_failing(false);
        assert!(f.keys.wait_ready(Duration::from_secs(30)).await);
        assert_eq!(f.keys.current().unwrap().key_ids(), vec!["k1".to_string()]);
        assert!(refreshes(&f.metrics, "failure") >= 2);
        assert_eq!(refreshes(&f.metrics, "success"), 1);
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("run stops when told")
            .unwrap();
    }

    /// Answers from a script (then the JWKS), recording when each fetch came.
    struct ScriptedFetcher {
        script: Mutex<VecDeque<Result<Vec<u8>, FetchError>>>,
        jwks: Vec<u8>,
        calls: Mutex<Vec<tokio::time::Instant>>,
    }

    #[async_trait::async_trait]
    impl JwksFetcher for ScriptedFetcher {
        async fn fetch(&self) -> Result<Vec<u8>, FetchError> {
            locked(&self.calls).push(tokio::time::Instant::now());
            locked(&self.script)
                .pop_front()
                .unwrap_or_else(|| Ok(self.jwks.clone()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn run_backs_off_from_half_a_second_to_ten_and_refreshes_on_schedule() {
        let dev = DevIssuer::generate("k1").unwrap();
        let fail = || Err(FetchError::Status(503));
        let mut script: VecDeque<_> = (0..7).map(|_| fail()).collect();
        script.push_back(Ok(dev.jwks_json().into_bytes())); // start-up success
        script.push_back(Ok(dev.jwks_json().into_bytes())); // periodic success
        script.extend((0..5).map(|_| fail())); // periodic failures
        let fetcher = Arc::new(ScriptedFetcher {
            script: Mutex::new(script),
            jwks: dev.jwks_json().into_bytes(),
            calls: Mutex::new(Vec::new()),
        });
        let mut settings = issuer("test", "http://127.0.0.1/unused");
        settings.jwks_refresh = Duration::from_secs(3);
        let keys = IssuerKeys::new(
            settings,
            fetcher.clone(),
            Arc::new(FixedClock::new(T0)),
            Arc::new(Metrics::new()),
            Handle::current(),
        );
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(Arc::clone(&keys).run(stopped));
        while locked(&fetcher.calls).len() < 16 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(stop);
        task.await.unwrap();
        let calls = locked(&fetcher.calls).clone();
        let gaps: Vec<u64> = calls
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis() as u64)
            .collect();
        assert_eq!(
            &gaps[..15],
            &[
                500, 1000, 2000, 4000, 8000, 10000, 10000, // start-up backoff
                3000,  // first periodic refresh
                3000,  // periodic refresh that fails
                500, 1000, 2000, 3000, 3000, // retries capped by jwks_refresh
                3000, // then success and back to the period
            ]
        );
        assert!(keys.current().is_some());
    }

    #[tokio::test]
    async fn wait_ready_times_out_without_keys() {
        let f = {
            let server = JwksServer::start(String::new());
            http_keys(&server, FetchLimits::default())
        };
        assert!(!f.keys.wait_ready(Duration::from_millis(20)).await);
    }
}
