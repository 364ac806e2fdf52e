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
        self.entries().get(name).map(|entry| Arc::clone(&entry.keys))
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
