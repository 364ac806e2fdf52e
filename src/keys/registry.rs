//! Which issuers have keys, across config reloads: keeps an issuer's
//! `IssuerKeys` (and its keys) while its key settings are unchanged, starts
//! the refresh task of new or changed issuers on one runtime, and stops the
//! tasks of issuers no longer configured.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::runtime::Handle;
use tokio::sync::watch;

use super::cache::IssuerKeys;
use super::fetch::{http_fetcher_for, JwksFetcher};
use crate::clock::Clock;
use crate::config::Issuer;
use crate::metrics::Metrics;

/// Builds the fetcher of an issuer (the HTTP one in production).
pub type FetcherFactory = Arc<dyn Fn(&Issuer) -> Arc<dyn JwksFetcher> + Send + Sync>;

struct Entry {
    keys: Arc<IssuerKeys>,
    /// Dropping or setting it stops the issuer's refresh task.
    stop: watch::Sender<bool>,
}

/// The per-issuer key caches of the running gateway.
pub struct KeyRegistry {
    runtime: Handle,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    fetchers: FetcherFactory,
    entries: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for KeyRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.all().into_iter().map(|(name, _)| name).collect();
        f.debug_struct("KeyRegistry")
            .field("issuers", &names)
            .finish()
    }
}

/// Whether two issuer configurations fetch and parse keys the same way
/// (audiences, leeway and token lifetime do not touch the keys).
pub fn same_key_settings(a: &Issuer, b: &Issuer) -> bool {
    a.issuer == b.issuer
        && a.jwks_uri == b.jwks_uri
        && a.jwks_file == b.jwks_file
        && a.ca_file == b.ca_file
        && a.algorithms == b.algorithms
        && a.jwks_refresh == b.jwks_refresh
        && a.jwks_min_refresh == b.jwks_min_refresh
        && a.jwks_max_stale == b.jwks_max_stale
}

impl KeyRegistry {
    /// A registry whose refresh tasks and fetches run on `runtime`.
    pub fn new(
        runtime: Handle,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        fetchers: FetcherFactory,
    ) -> Self {
        Self {
            runtime,
            clock,
            metrics,
            fetchers,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// A registry fetching over HTTP(S) with [`http_fetcher_for`].
    pub fn with_http_fetchers(
        runtime: Handle,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self::new(runtime, clock, metrics, Arc::new(http_fetcher_for))
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the registry hold exactly `issuers` (matched by name), and
    /// returns their keys in the same order. An issuer whose key settings
    /// are unchanged keeps its `IssuerKeys`; a new or changed one gets a
    /// fresh one whose refresh task starts now; the tasks of issuers no
    /// longer present are stopped.
    pub fn reconcile(&self, issuers: &[Issuer]) -> Vec<Arc<IssuerKeys>> {
        let mut entries = self.entries();
        let mut next: HashMap<String, Entry> = HashMap::with_capacity(issuers.len());
        let mut result = Vec::with_capacity(issuers.len());
        for issuer in issuers {
            if let Some(entry) = next.get(&issuer.name) {
                // A repeated name (rejected by validation): one cache serves it.
                result.push(Arc::clone(&entry.keys));
                continue;
            }
            let entry = match entries.remove(&issuer.name) {
                Some(old) if same_key_settings(old.keys.issuer(), issuer) => old,
                Some(old) => {
                    log::info!(
                        "issuer {}: key settings changed, fetching its keys anew",
                        issuer.name
                    );
                    let _ = old.stop.send(true);
                    self.start(issuer)
                }
                None => self.start(issuer),
            };
            result.push(Arc::clone(&entry.keys));
            next.insert(issuer.name.clone(), entry);
        }
        for (name, gone) in entries.drain() {
            log::info!("issuer {name}: no longer configured, stopping its key refresh");
            let _ = gone.stop.send(true);
            let _ = self.metrics.jwks_keys.remove_label_values(&[name.as_str()]);
            let _ = self
                .metrics
                .jwks_last_success_timestamp_seconds
                .remove_label_values(&[name.as_str()]);
        }
        *entries = next;
        result
    }

    fn start(&self, issuer: &Issuer) -> Entry {
        let keys = IssuerKeys::new(
            issuer.clone(),
            (self.fetchers)(issuer),
            Arc::clone(&self.clock),
            Arc::clone(&self.metrics),
            self.runtime.clone(),
        );
        let (stop, stopped) = watch::channel(false);
        self.runtime.spawn(Arc::clone(&keys).run(stopped));
        Entry { keys, stop }
    }

    /// The keys of the issuer named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<IssuerKeys>> {
        self.entries()
            .get(name)
            .map(|entry| Arc::clone(&entry.keys))
    }

    /// Every issuer's keys, sorted by name.
    pub fn all(&self) -> Vec<(String, Arc<IssuerKeys>)> {
        let mut all: Vec<(String, Arc<IssuerKeys>)> = self
            .entries()
            .iter()
            .map(|(name, entry)| (name.clone(), Arc::clone(&entry.keys)))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Stops every refresh task and forgets every issuer.
    pub fn shutdown(&self) {
        for (_, entry) in self.entries().drain() {
            let _ = entry.stop.send(true);
        }
    }
}

impl Drop for KeyRegistry {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FixedClock;
    use crate::dev_issuer::DevIssuer;
    use crate::keys::cache::tests::{issuer, T0};
    use crate::support::JwksServer;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    const READY: Duration = Duration::from_secs(30);

    struct Fixture {
        registry: KeyRegistry,
        metrics: Arc<Metrics>,
        built: Arc<AtomicUsize>,
    }

    fn registry() -> Fixture {
        let metrics = Arc::new(Metrics::new());
        let built = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&built);
        let factory: FetcherFactory = Arc::new(move |issuer: &Issuer| {
            counter.fetch_add(1, Ordering::SeqCst);
            http_fetcher_for(issuer)
        });
        let registry = KeyRegistry::new(
            Handle::current(),
            Arc::new(FixedClock::new(T0)),
            Arc::clone(&metrics),
            factory,
        );
        Fixture {
            registry,
            metrics,
            built,
        }
    }

    /// Waits until only the test holds `keys`: its refresh task has ended.
    async fn task_ended(keys: &Arc<IssuerKeys>) -> bool {
        for _ in 0..3000 {
            if Arc::strong_count(keys) == 1 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    fn names(all: &[(String, Arc<IssuerKeys>)]) -> Vec<&str> {
        all.iter().map(|(name, _)| name.as_str()).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reconcile_keeps_adds_and_drops_issuers() {
        let dev = DevIssuer::generate("k1").unwrap();
        let (sa, sb, sc) = (
            JwksServer::start(dev.jwks_json()),
            JwksServer::start(dev.jwks_json()),
            JwksServer::start(dev.jwks_json()),
        );
        let f = registry();
        let first = f
            .registry
            .reconcile(&[issuer("b", &sb.url()), issuer("a", &sa.url())]);
        assert_eq!(
            first.iter().map(|k| k.name()).collect::<Vec<_>>(),
            vec!["b", "a"]
        );
        for keys in &first {
            assert!(keys.wait_ready(READY).await, "{}", keys.name());
        }
        assert_eq!(f.built.load(Ordering::SeqCst), 2);
        let a = f.registry.get("a").unwrap();
        let b = f.registry.get("b").unwrap();
        drop(first);

        // a: only audiences and leeway change (kept); b: gone; c: new.
        let mut a_again = issuer("a", &sa.url());
        a_again.audiences = vec!["aud".into()];
        a_again.leeway = Duration::from_secs(5);
        let second = f.registry.reconcile(&[a_again, issuer("c", &sc.url())]);
        assert!(Arc::ptr_eq(&second[0], &a));
        assert!(
            second[0].current().is_some(),
            "kept issuers keep their keys"
        );
        assert_eq!(f.built.load(Ordering::SeqCst), 3);
        assert!(second[1].wait_ready(READY).await);
        assert!(f.registry.get("b").is_none());
        assert_eq!(names(&f.registry.all()), vec!["a", "c"]);
        drop(second);
        assert!(task_ended(&b).await, "the dropped issuer's task stops");
        let text = String::from_utf8(f.metrics.render()).unwrap();
        assert!(!text.contains("consent_gateway_jwks_keys{issuer=\"b\"}"));
        assert!(text.contains("consent_gateway_jwks_keys{issuer=\"c\"} 1"));
        assert_eq!(sa.hits(), 1, "a kept issuer is not fetched again");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn changed_key_settings_make_a_new_cache() {
        let dev = DevIssuer::generate("k1").unwrap();
        let server = JwksServer::start(dev.jwks_json());
        let f = registry();
        let old = f
            .registry
            .reconcile(&[issuer("a", &server.url())])
            .remove(0);
        assert!(old.wait_ready(READY).await);
        let mut changed = issuer("a", &server.url());
        changed.jwks_min_refresh = Duration::from_secs(60);
        let new = f.registry.reconcile(&[changed]).remove(0);
        assert!(!Arc::ptr_eq(&old, &new));
        assert!(new.wait_ready(READY).await);
        assert!(Arc::ptr_eq(&f.registry.get("a").unwrap(), &new));
        assert!(task_ended(&old).await, "the replaced cache's task stops");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_stops_every_task() {
        let dev = DevIssuer::generate("k1").unwrap();
        let server = JwksServer::start(dev.jwks_json());
        server.set_failing(true);
        let f = registry();
        let keys = f
            .registry
            .reconcile(&[issuer("a", &server.url())])
            .remove(0);
        f.registry.shutdown();
        assert!(f.registry.all().is_empty());
        assert!(task_ended(&keys).await);
        assert!(keys.current().is_none());
    }

    #[test]
    fn key_settings_comparison_ignores_token_rules_only() {
        let base = issuer("a", "https://a.example/jwks");
        let mut token_rules = base.clone();
        token_rules.audiences = vec!["x".into()];
        token_rules.max_token_lifetime = Some(Duration::from_secs(60));
        assert!(same_key_settings(&base, &token_rules));
        let changes: [fn(&mut Issuer); 7] = [
            |i| i.issuer.push('x'),
            |i| i.jwks_uri.push('x'),
            |i| i.ca_file = Some("/ca.pem".into()),
            |i| i.algorithms = vec![crate::keys::Alg::PS256],
            |i| i.jwks_refresh = Duration::from_secs(1),
            |i| i.jwks_min_refresh = Duration::from_secs(1),
            |i| i.jwks_max_stale = Duration::from_secs(1),
        ];
        for change in changes {
            let mut other = base.clone();
            change(&mut other);
            assert!(!same_key_settings(&base, &other));
        }
    }
}
