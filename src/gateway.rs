//! The gateway's shared state: the configuration generation in force (an
//! `Arc<Snapshot>` behind one `ArcSwap`), the key registry, the verified-token
//! cache and the metrics. A snapshot is built whole off to the side, then
//! published with one store; each request pins the one it started with.
//!
//! Background work (key refreshes, health checks, the Altinn sync, the
//! reload triggers, the state store's prober) runs on one control-plane
//! runtime started here, not as pingora `BackgroundService`s: the first
//! key fetch must start before the listeners (a `--upgrade` process fetches
//! its keys, then takes the sockets over; pingora starts background services
//! only inside `run`), and the work outlives configuration generations
//! (keys and lists carry across reloads). Each generation's own tasks
//! (health checks) stop through a watch when it is replaced; at shutdown
//! nothing of it needs draining (no answer waits on it), so it ends with the
//! process.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::altinn::maskinporten::{MaskinportenClient, Step};
use crate::altinn::sync::ListStore;
use crate::clock::Clock;
use crate::config::{self, AuthMode, Config};
use crate::keys::cache::IssuerKeys;
use crate::keys::fetch::http_fetcher_for;
use crate::keys::registry::KeyRegistry;
use crate::keys::KeySet;
use crate::metrics::{Metrics, RouteMetrics};
use crate::policy::routes::RouteTable;
use crate::policy::token_cache::TokenCache;
use crate::policy::{decide, Checking, KeySource, RequestFacts, Verdict};
use crate::state::Store;
use crate::upstream::UpstreamPool;

/// How many verified tokens the cache remembers at most. Clients reuse a
/// token for its lifetime, so this covers thousands of clients; it bounds the
/// cache's memory (each entry holds the token and its parsed claims, a few
/// KiB) whatever a client with many valid tokens does.
pub const TOKEN_CACHE_CAPACITY: usize = 10_000;

/// How long a reload that adds an issuer waits for its keys (SPEC section 12).
pub const NEW_ISSUER_KEY_WAIT: Duration = Duration::from_secs(5);

/// One configuration generation, compiled and ready to serve.
pub struct Snapshot {
    pub generation: u64,
    pub loaded_at: SystemTime,
    pub config: Config,
    pub routes: RouteTable,
    pub upstreams: Vec<Arc<UpstreamPool>>,
    /// Indexed like `config.issuers`.
    pub issuer_keys: Vec<Arc<IssuerKeys>>,
    /// Indexed like `config.routes`: each route's resolved metric series.
    pub route_metrics: Vec<RouteMetrics>,
    /// The shared-state store (`config.state`): the same one across
    /// reloads that keep `state` unchanged.
    pub store: Arc<Store>,
    /// Stops this generation's health-check tasks when it is replaced.
    health_stop: watch::Sender<bool>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("generation", &self.generation)
            .finish()
    }
}

impl KeySource for Snapshot {
    fn keys(&self, issuer: usize) -> Option<Arc<KeySet>> {
        self.issuer_keys.get(issuer)?.current()
    }
}

impl Snapshot {
    /// This generation as the decision reads it.
    pub fn generation_view(&self) -> crate::policy::Generation<'_> {
        crate::policy::Generation {
            config: &self.config,
            routes: &self.routes,
            keys: self,
        }
    }

    /// Names of issuers used by at least one authenticating route.
    pub fn issuers_in_use(&self) -> Vec<usize> {
        let mut used: Vec<usize> = self
            .config
            .routes
            .iter()
            .filter(|r| r.auth.mode != AuthMode::None)
            .flat_map(|r| r.auth.issuers.iter().copied())
            .collect();
        used.sort_unstable();
        used.dedup();
        used
    }
}

/// The outcome of the most recent reload attempt, for `/status`.
#[derive(Debug, Default, Clone)]
pub struct ReloadState {
    pub last_error: Option<String>,
    /// Every file the most recent attempt read or tried to read (the config
    /// and the files it names), so that the watcher also follows a file a
    /// failed config names but that does not exist yet.
    pub attempted_files: Vec<PathBuf>,
}

/// The real file system, remembering every path asked for.
#[derive(Default)]
struct RecordingFs {
    asked: Mutex<Vec<PathBuf>>,
}

impl config::FileSource for RecordingFs {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        if let Ok(mut asked) = self.asked.lock() {
            asked.push(path.to_path_buf());
        }
        std::fs::read(path)
    }
}

/// `config::load`, also returning every file it read or tried to read.
fn load_recording(path: &Path) -> (Result<Config, String>, Vec<PathBuf>) {
    let files = RecordingFs::default();
    let result = match std::fs::read(path) {
        Err(e) => Err(format!(
            "{}: cannot read the config file: {e}",
            path.display()
        )),
        Ok(bytes) => match String::from_utf8(bytes) {
            Err(_) => Err(format!(
                "{}: the config file is not UTF-8 text",
                path.display()
            )),
            Ok(text) => config::load_with(&text, path, &files).map_err(|e| e.to_string()),
        },
    };
    let mut asked = files.asked.into_inner().unwrap_or_else(|p| p.into_inner());
    asked.push(path.to_path_buf());
    (result, asked)
}

/// Everything the proxy, the admin endpoint and the background services share.
pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    pub config_path: PathBuf,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub keys: KeyRegistry,
    pub token_cache: TokenCache,
    /// The control-plane runtime: key refreshes, health checks, reloads.
    pub control: tokio::runtime::Handle,
    pub reload_state: Mutex<ReloadState>,
    /// The last good copy of every Altinn access list (SPEC section 13).
    pub altinn_lists: Arc<ListStore>,
    /// The consent resources as last looked up in the Resource Registry, by
    /// identifier (the `/status` view).
    pub altinn_resources: Mutex<std::collections::BTreeMap<String, serde_json::Value>>,
    /// Consent resources the Resource Registry marks `isOneTimeConsent`
    /// (kept by the Altinn sync): their consents are one-time on every route.
    pub one_time_resources: ArcSwap<std::collections::HashSet<String>>,
    /// The Maskinporten client in use by the Altinn sync (for `/status`).
    pub altinn_client: Mutex<Option<Arc<MaskinportenClient>>>,
    /// Held while a new generation is built and swapped in (a reload or an
    /// access-list change), so neither undoes the other.
    publish: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("config_path", &self.config_path)
            .finish()
    }
}

/// Starts a dedicated runtime for the control plane, alive for the process.
pub fn start_control_plane() -> std::io::Result<tokio::runtime::Handle> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("control-plane")
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("control-plane".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
    Ok(handle)
}

impl Gateway {
    /// Builds the first generation from a loaded configuration and starts
    /// fetching its keys (on `control`).
    pub fn new(
        config_path: &Path,
        config: Config,
        control: tokio::runtime::Handle,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, String> {
        let metrics = Arc::new(Metrics::new());
        let keys = KeyRegistry::new(
            control.clone(),
            Arc::clone(&clock),
            Arc::clone(&metrics),
            Arc::new(http_fetcher_for),
        );
        let token_cache = TokenCache::new(TOKEN_CACHE_CAPACITY, &metrics);
        let altinn_lists = Arc::new(ListStore::default());
        let store = Store::build(&config.state, &control, &metrics)?;
        let first = build_snapshot(config, 1, &keys, &control, &altinn_lists, store)?;
        metrics.config_generation.set(1);
        // Both outcomes exist from the start, so `increase(...)` sees the
        // first failure.
        for outcome in ["success", "failure"] {
            metrics.config_reloads_total.with_label_values(&[outcome]);
        }
        Ok(Arc::new(Self {
            snapshot: ArcSwap::from_pointee(first),
            config_path: config_path.to_path_buf(),
            metrics,
            clock,
            keys,
            token_cache,
            control,
            reload_state: Mutex::new(ReloadState::default()),
            altinn_lists,
            altinn_client: Mutex::new(None),
            altinn_resources: Mutex::default(),
            one_time_resources: ArcSwap::default(),
            publish: tokio::sync::Mutex::new(()),
        }))
    }

    /// A new generation of the configuration in force with the access lists'
    /// current copies (a sync changed members). Returns its number.
    pub async fn republish_lists(&self) -> Result<u64, String> {
        let _publishing = self.publish.lock().await;
        let current = self.snapshot();
        let generation = current.generation + 1;
        let next = build_snapshot(
            current.config.clone(),
            generation,
            &self.keys,
            &self.control,
            &self.altinn_lists,
            Arc::clone(&current.store),
        )?;
        let old = self.snapshot.swap(Arc::new(next));
        let _ = old.health_stop.send(true);
        self.metrics.config_generation.set(generation as i64);
        log::info!("access lists changed; generation {generation}");
        Ok(generation)
    }

    /// The generation in force. A request keeps the one it got.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Checks 0-21 for one request on `snapshot` (SPEC section 13, "One
    /// decision"): `policy::decide`, answering its call for keys with one
    /// single-flight, rate-limited refetch and a second call when the key
    /// set changed. Every network door (proxy, authorization endpoints)
    /// decides through here; the result is never `Verdict::NeedKeys`.
    pub async fn decide(&self, snapshot: &Snapshot, facts: &RequestFacts<'_>) -> Verdict {
        let generation = snapshot.generation_view();
        let mut checking = Checking {
            now: self.clock.now(),
            cache: Some(&self.token_cache),
            verify_signature: true,
            may_refetch: true,
        };
        loop {
            let started = std::time::Instant::now();
            let verdict = decide(facts, &generation, &checking, None);
            self.metrics
                .decision_duration_seconds
                .observe(started.elapsed().as_secs_f64());
            let Verdict::NeedKeys {
                issuer,
                kid,
                otherwise,
            } = verdict
            else {
                return verdict;
            };
            // Decide again only when the refetch changed the key set.
            let refetched = match snapshot.issuer_keys.get(issuer) {
                Some(keys) => keys.refetch_for_unknown_kid(&kid).await,
                None => false,
            };
            if !refetched {
                return *otherwise;
            }
            checking.may_refetch = false;
            checking.now = self.clock.now();
        }
    }

    /// The shared-state rules of an allowed request on `route` (SPEC
    /// section 13): its rate limit, then the one-time use of its consent
    /// (the route's `one_time`, or a resource the Registry marks one-time).
    /// Every door calls this after an allow; nothing to do is no store call.
    pub async fn admit(
        &self,
        snapshot: &Snapshot,
        route: &crate::config::Route,
        authorized: &crate::policy::Authorized,
    ) -> crate::state::Admission {
        let one_time =
            crate::state::is_one_time(route, authorized, &self.one_time_resources.load());
        if !one_time && route.rate_limit.is_none() {
            return crate::state::Admission::default();
        }
        crate::state::admit(
            &snapshot.store,
            &self.metrics,
            &snapshot.config,
            route,
            authorized,
            one_time,
            self.clock.now(),
        )
        .await
    }

    /// Re-reads the configuration and, if valid and changed, swaps it in.
    /// Returns the generation in force afterwards. An invalid configuration is
    /// logged, counted and ignored: the old one keeps serving.
    pub async fn reload(&self) -> Result<u64, String> {
        let outcome = self.try_reload().await;
        let label = if outcome.is_ok() {
            "success"
        } else {
            "failure"
        };
        self.metrics
            .config_reloads_total
            .with_label_values(&[label])
            .inc();
        let mut state = self
            .reload_state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match &outcome {
            Ok(generation) => {
                state.last_error = None;
                log::info!("configuration reloaded; generation {generation}");
            }
            Err(e) => {
                state.last_error = Some(e.clone());
                log::error!("configuration reload failed; keeping the old one: {e}");
            }
        }
        outcome
    }

    /// Whether the files on disk now say something other than the running
    /// configuration: checked once when the watcher is armed, so that a
    /// change written while the gateway was starting is not lost. An
    /// unreadable or invalid file counts as a change (the reload reports it).
    pub async fn changed_on_disk(&self) -> bool {
        match self.load_from_disk().await {
            Ok((Ok(config), _)) => config.content_sha256 != self.snapshot().config.content_sha256,
            Ok((Err(_), _)) => true,
            Err(_) => false,
        }
    }

    /// The configuration file loaded afresh off the request path, with the
    /// files the load asked for.
    async fn load_from_disk(&self) -> Result<(Result<Config, String>, Vec<PathBuf>), String> {
        let path = self.config_path.clone();
        tokio::task::spawn_blocking(move || load_recording(&path))
            .await
            .map_err(|e| format!("reload task failed: {e}"))
    }

    async fn try_reload(&self) -> Result<u64, String> {
        let (loaded, attempted) = self.load_from_disk().await?;
        self.reload_state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .attempted_files = attempted;
        let mut config = loaded?;
        let _publishing = self.publish.lock().await;
        let current = self.snapshot();
        if config.content_sha256 == current.config.content_sha256 {
            return Ok(current.generation);
        }
        let generation = current.generation + 1;
        let mut restart_only = restart_only_changes(&current.config.server, &config.server);
        if current.config.tracing != config.tracing {
            // The export pipeline is built once, at start.
            restart_only.push("a change of tracing");
            config.tracing.clone_from(&current.config.tracing);
        }
        // The snapshot says what actually runs: the listeners, threads and
        // admin listener of the process (a later reload warns again).
        keep_running_settings(&current.config.server, &mut config.server);
        let keys = &self.keys;
        let control = self.control.clone();
        let store = if config.state == current.config.state {
            Arc::clone(&current.store)
        } else {
            log::info!("state changed: a new store");
            Store::build(&config.state, &control, &self.metrics)?
        };
        let next = build_snapshot(
            config,
            generation,
            keys,
            &control,
            &self.altinn_lists,
            store,
        )?;
        // New issuers get up to 5 s for their keys before the swap.
        for index in next.issuers_in_use() {
            let issuer_keys = &next.issuer_keys[index];
            if issuer_keys.current().is_none() {
                issuer_keys.wait_ready(NEW_ISSUER_KEY_WAIT).await;
            }
        }
        for warning in config::warnings(&next.config) {
            log::warn!("{warning}");
        }
        let old = self.snapshot.swap(Arc::new(next));
        let _ = old.health_stop.send(true);
        self.metrics.config_generation.set(generation as i64);
        for change in restart_only {
            log::warn!(
                "{change} needs a restart to take effect; the rest of the new configuration \
                 (generation {generation}) applies"
            );
        }
        Ok(generation)
    }

    /// Ready when a configuration is loaded and every issuer in use has keys;
    /// otherwise the names of what is missing.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let snapshot = self.snapshot();
        let mut missing: Vec<String> = snapshot
            .issuers_in_use()
            .into_iter()
            .filter(|&i| !snapshot.issuer_keys[i].status().has_keys)
            .map(|i| snapshot.config.issuers[i].name.clone())
            .collect();
        // Each Altinn access list waits for its first good copy, in the
        // generation in force (the sync stores a copy, then publishes it).
        missing.extend(
            config::Altinn::lists_without_copy(&snapshot.config)
                .into_iter()
                .map(|l| format!("access list {l}")),
        );
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing)
        }
    }

    /// The store's health, and whether it keeps the gateway from being
    /// ready: a store that does not answer while some route cannot do
    /// without it (one-time consents, or `on_store_error: deny`).
    pub fn state_readiness(&self) -> (crate::state::Health, bool) {
        let snapshot = self.snapshot();
        let health = snapshot.store.health();
        let needed = snapshot
            .config
            .routes
            .iter()
            .any(|r| r.one_time || r.rate_limit.is_some_and(|l| !l.allow_on_store_error));
        let blocks = needed && !health.reachable;
        (health, blocks)
    }

    /// Blocks the calling thread (which must not be a runtime worker) until
    /// every issuer in use has keys, or `timeout` passes: then the names of
    /// those still without.
    pub fn wait_until_ready(&self, timeout: Duration) -> Result<(), Vec<String>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match self.readiness() {
                Ok(()) => return Ok(()),
                Err(missing) if std::time::Instant::now() >= deadline => return Err(missing),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The `/status` document (SPEC section 12 "Admin").
    pub fn status_json(&self) -> serde_json::Value {
        let snapshot = self.snapshot();
        let last_error = self
            .reload_state
            .lock()
            .map(|s| s.last_error.clone())
            .unwrap_or(None);
        let mut issuers = serde_json::Map::new();
        for (issuer, keys) in snapshot.config.issuers.iter().zip(&snapshot.issuer_keys) {
            let status = keys.status();
            issuers.insert(
                issuer.name.clone(),
                serde_json::json!({
                    "key_ids": status.key_ids,
                    "last_refresh": status.last_refresh,
                    "last_refresh_outcome": status.last_refresh_outcome,
                    "last_error": status.last_error,
                }),
            );
        }
        serde_json::json!({
            "generation": snapshot.generation,
            "loaded_at": crate::time::rfc3339(snapshot.loaded_at),
            "config_sha256": snapshot.config.config_sha256,
            "last_reload_error": last_error,
            "issuers": issuers,
            "state": state_json(&self.state_readiness().0),
            "audit": {
                "dropped": crate::audit::dropped(),
                "write_errors": crate::audit::write_errors(),
            },
            "altinn": self.altinn_status(&snapshot.config),
            "tracing": crate::otlp::exporter().map(|e| {
                let c = e.counters();
                serde_json::json!({
                    "otlp_endpoint": snapshot.config.tracing.as_ref().map(|t| &t.otlp_endpoint),
                    "dropped": {
                        "queue_full": c.queue_full(),
                        "export_failed": c.export_failed(),
                    },
                })
            }),
        })
    }

    /// `/status` `altinn`: both token steps and every list in use (counts,
    /// times and errors; never a member, a token or the key). `null` without
    /// an `altinn` section.
    fn altinn_status(&self, config: &Config) -> serde_json::Value {
        let Some(altinn) = &config.altinn else {
            return serde_json::Value::Null;
        };
        let client = self.altinn_client.lock().map(|c| c.clone()).unwrap_or(None);
        let step = |s: Step| client.as_ref().map(|c| c.status(s).to_json());
        let now = SystemTime::now();
        let held = self.altinn_lists.all();
        let mut lists = serde_json::Map::new();
        for list in config::Altinn::lists_in_use(config) {
            let state = held.get(&list).cloned().unwrap_or_default();
            lists.insert(list.to_string(), state.to_json(altinn.max_stale, now));
        }
        serde_json::json!({
            "environment": altinn.environment.name(),
            "platform_url": altinn.platform_url,
            "maskinporten_url": altinn.maskinporten_url,
            "client_id": altinn.client_id,
            "kid": altinn.kid,
            "maskinporten_token": step(Step::Maskinporten),
            "altinn_token_exchange": step(Step::Exchange),
            "access_lists": lists,
            "resources": self.altinn_resources.lock().map(|r| r.clone()).unwrap_or_default(),
        })
    }
}

/// The store's part of `/status` and `/readyz`.
pub fn state_json(health: &crate::state::Health) -> serde_json::Value {
    serde_json::json!({
        "backend": health.backend,
        "mode": health.mode,
        "reachable": health.reachable,
        "last_error": health.last_error,
    })
}

/// The restart-only settings (SPEC section 7) that differ, by YAML key.
fn restart_only_changes(running: &config::Server, new: &config::Server) -> Vec<&'static str> {
    let mut changes = Vec::new();
    if running.listen != new.listen {
        changes.push("a change of server.listen");
    }
    if running.tls != new.tls {
        changes.push("a change of server.tls");
    }
    if running.threads != new.threads {
        changes.push("a change of server.threads");
    }
    if running.admin_listen != new.admin_listen {
        changes.push("a change of server.admin_listen");
    }
    // The HTTP/2 settings are given to pingora once, with the listeners.
    if running.h2c != new.h2c {
        changes.push("a change of server.h2c");
    }
    // pingora builds its runtimes and the upstream pool once.
    if running.work_stealing != new.work_stealing {
        changes.push("a change of server.work_stealing");
    }
    if running.upstream_keepalive_pool_size != new.upstream_keepalive_pool_size {
        changes.push("a change of server.upstream_keepalive_pool_size");
    }
    if running.limits.h2_max_concurrent_streams != new.limits.h2_max_concurrent_streams {
        changes.push("a change of server.limits.h2_max_concurrent_streams");
    }
    // The authz listeners are bound once; mode, prefix and secret reload.
    let authz_listen = |s: &config::Server| s.authz.as_ref().map(|a| a.listen);
    if authz_listen(running) != authz_listen(new) {
        changes.push("a change of server.authz.listen");
    }
    let grpc_listen = |s: &config::Server| s.authz.as_ref().map(|a| a.grpc_listen);
    if grpc_listen(running) != grpc_listen(new) {
        changes.push("a change of server.authz.grpc_listen");
    }
    changes
}

/// Carries the running process's restart-only settings into a new config.
fn keep_running_settings(running: &config::Server, new: &mut config::Server) {
    new.listen.clone_from(&running.listen);
    new.tls.clone_from(&running.tls);
    new.threads = running.threads;
    new.admin_listen = running.admin_listen;
    new.h2c = running.h2c;
    new.work_stealing = running.work_stealing;
    new.upstream_keepalive_pool_size = running.upstream_keepalive_pool_size;
    new.limits.h2_max_concurrent_streams = running.limits.h2_max_concurrent_streams;
    if let (Some(running), Some(new)) = (&running.authz, &mut new.authz) {
        new.listen = running.listen;
        new.grpc_listen = running.grpc_listen;
    }
}

/// Compiles a configuration into a servable snapshot: route table, upstream
/// pools (with their health-check tasks on `control`) and issuer keys.
pub fn build_snapshot(
    mut config: Config,
    generation: u64,
    keys: &KeyRegistry,
    control: &tokio::runtime::Handle,
    lists: &ListStore,
    store: Arc<Store>,
) -> Result<Snapshot, String> {
    lists.fill(&mut config);
    let routes = RouteTable::new(&config.routes)?;
    let upstreams = config
        .upstreams
        .iter()
        .map(|u| UpstreamPool::build(u).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let (health_stop, stop_rx) = watch::channel(false);
    for pool in upstreams.iter().filter(|p| p.has_health_check()) {
        let lb = Arc::clone(&pool.lb);
        let stop = stop_rx.clone();
        control.spawn(async move { lb.run(stop, None).await });
    }
    let issuer_keys = keys.reconcile(&config.issuers);
    let route_metrics = config
        .routes
        .iter()
        .map(|_| RouteMetrics::default())
        .collect();
    Ok(Snapshot {
        generation,
        loaded_at: SystemTime::now(),
        config,
        routes,
        upstreams,
        issuer_keys,
        route_metrics,
        store,
        health_stop,
    })
}
