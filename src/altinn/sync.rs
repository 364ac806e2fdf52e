//! The access-list store and one sync of one list: the last good copy of
//! every Altinn access list (members, when and where from, `ETag`, the last
//! error), how each generation is filled from it, and the last good copies
//! on disk (`cache_dir`, written atomically, read at start when Altinn is
//! unreachable). The loop that drives it is `services::altinn`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub(crate) use super::count;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::maskinporten::MaskinportenClient;
use super::registry::{fetch_members, Fetched, Members};
use super::AltinnError;
use crate::config::{normalize_org_entry, AccessListRef, Altinn, Config, Freshness};
use crate::metrics::Metrics;

/// Largest cache file read back.
const MAX_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Where a list's copy came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Altinn,
    Cache,
}

/// One list as the store holds it.
#[derive(Debug, Clone, Default)]
pub struct ListState {
    pub members: Arc<HashSet<String>>,
    /// When the copy was last confirmed by Altinn (kept from the cache file).
    pub last_good: Option<SystemTime>,
    pub source: Option<Source>,
    pub etag: Option<String>,
    pub ignored: usize,
    pub last_attempt: Option<SystemTime>,
    pub last_error: Option<String>,
    /// Shared with every generation holding the list.
    pub fresh: Freshness,
}

impl ListState {
    /// The `/status` and `altinn lists` view (no members).
    pub fn to_json(&self, max_stale: Duration, now: SystemTime) -> serde_json::Value {
        let time = |t: Option<SystemTime>| t.map(crate::time::rfc3339);
        let usable = self.fresh.usable(unix_secs(now));
        serde_json::json!({
            "members": self.members.len(),
            "ignored_members": self.ignored,
            "source": self.source.map(|s| match s { Source::Altinn => "altinn", Source::Cache => "cache" }),
            "last_success": time(self.last_good),
            "last_attempt": time(self.last_attempt),
            "last_outcome": match (self.last_attempt, &self.last_error) {
                (None, _) => serde_json::Value::Null,
                (Some(_), None) => "success".into(),
                (Some(_), Some(_)) => "failure".into(),
            },
            "last_error": self.last_error,
            "usable": usable,
            "stale_at": time(self.last_good.map(|t| t + max_stale)),
        })
    }
}

/// Every Altinn access list the gateway knows, across generations.
#[derive(Debug, Default)]
pub struct ListStore {
    lists: Mutex<BTreeMap<AccessListRef, ListState>>,
}

impl ListStore {
    /// A copy of one list's state.
    pub fn get(&self, list: &AccessListRef) -> Option<ListState> {
        self.lock().get(list).cloned()
    }

    /// A copy of every list's state.
    pub fn all(&self) -> BTreeMap<AccessListRef, ListState> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<AccessListRef, ListState>> {
        self.lists.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts the store's copies into `config`'s routes (a new generation),
    /// with `config`'s `max_stale`.
    pub fn fill(&self, config: &mut Config) {
        let Some(max_stale) = config.altinn.as_ref().map(|a| a.max_stale) else {
            return;
        };
        let mut lists = self.lock();
        for route in &mut config.routes {
            for synced in route
                .auth
                .altinn
                .iter_mut()
                .flat_map(|a| a.lists.iter_mut())
            {
                let state = lists.entry(synced.list.clone()).or_default();
                synced.members = Arc::clone(&state.members);
                // A generation without a copy keeps a cell of its own, never
                // set: the first good copy must not make its empty member set
                // usable (that would refuse everyone with 403 until the
                // generation that holds the members is in force); the list
                // stays unavailable (503) and not ready until then.
                synced.fresh = match state.last_good {
                    Some(good) => {
                        state.fresh.set(until_ms(good, max_stale));
                        state.fresh.clone()
                    }
                    None => Freshness::default(),
                };
            }
        }
    }

    /// Does every list in `lists` have a copy (from Altinn or the cache)?
    pub fn missing(&self, lists: &[AccessListRef]) -> Vec<AccessListRef> {
        let held = self.lock();
        lists
            .iter()
            .filter(|l| held.get(l).is_none_or(|s| s.last_good.is_none()))
            .cloned()
            .collect()
    }

    /// Records a good copy; true when the members changed (or it is the
    /// first copy), which makes a new generation.
    fn store_good(&self, list: &AccessListRef, copy: GoodCopy, max_stale: Duration) -> bool {
        let mut lists = self.lock();
        let state = lists.entry(list.clone()).or_default();
        let changed = state.last_good.is_none()
            || copy.members.as_ref().is_some_and(|m| {
                m.len() != state.members.len() || !m.iter().all(|x| state.members.contains(x))
            });
        if let Some(members) = copy.members {
            state.members = Arc::new(members.into_iter().collect());
            state.ignored = copy.ignored;
            state.etag = copy.etag;
        }
        state.last_good = Some(copy.at);
        state.source = Some(copy.source);
        state.fresh.set(until_ms(copy.at, max_stale));
        changed
    }

    fn store_error(&self, list: &AccessListRef, at: SystemTime, error: &AltinnError) {
        let mut lists = self.lock();
        let state = lists.entry(list.clone()).or_default();
        state.last_attempt = Some(at);
        state.last_error = Some(error.to_string());
    }

    fn attempted(&self, list: &AccessListRef, at: SystemTime) {
        let mut lists = self.lock();
        let state = lists.entry(list.clone()).or_default();
        state.last_attempt = Some(at);
        state.last_error = None;
    }
}

/// A good copy about to be stored; `members: None` for a 304.
#[derive(Debug)]
struct GoodCopy {
    members: Option<BTreeSet<String>>,
    ignored: usize,
    etag: Option<String>,
    at: SystemTime,
    source: Source,
}

/// Syncs one list: Altinn first; when that fails and no copy is held yet,
/// the cache. Returns whether a new generation is needed.
pub async fn sync_list(
    client: &MaskinportenClient,
    altinn: &Altinn,
    store: &ListStore,
    metrics: &Metrics,
    list: &AccessListRef,
) -> bool {
    let now = SystemTime::now();
    let held = store.get(list).unwrap_or_default();
    let result = fetch(
        client,
        altinn,
        list,
        held.etag.as_deref().filter(|_| held.last_good.is_some()),
    )
    .await;
    let label = list.to_string();
    match result {
        Ok(fetched) => {
            let outcome = if fetched == Fetched::NotModified {
                "not_modified"
            } else {
                "success"
            };
            count(metrics, "access_list", outcome);
            store.attempted(list, now);
            let copy = match fetched {
                Fetched::NotModified => GoodCopy {
                    members: None,
                    ignored: held.ignored,
                    etag: held.etag,
                    at: now,
                    source: Source::Altinn,
                },
                Fetched::Members(m) => {
                    log_members(&label, &m, held.last_good.is_some());
                    write_cache(altinn, list, &m, now);
                    GoodCopy {
                        members: Some(m.members),
                        ignored: m.ignored,
                        etag: m.etag,
                        at: now,
                        source: Source::Altinn,
                    }
                }
            };
            let changed = store.store_good(list, copy, altinn.max_stale);
            let count = store.get(list).map_or(0, |s| s.members.len());
            metrics
                .access_list_members
                .with_label_values(&[&label])
                .set(count as i64);
            changed
        }
        Err(error) => {
            count(metrics, "access_list", "failure");
            store.store_error(list, now, &error);
            log::warn!("access list {label}: sync failed: {error}; keeping the last good copy (if any, up to max_stale)");
            if held.last_good.is_none() {
                return from_cache(altinn, store, metrics, list);
            }
            false
        }
    }
}

async fn fetch(
    client: &MaskinportenClient,
    altinn: &Altinn,
    list: &AccessListRef,
    etag: Option<&str>,
) -> Result<Fetched, AltinnError> {
    let token = client.altinn_token().await?;
    let result = fetch_members(client.transport(), &altinn.platform_url, list, &token, etag).await;
    if matches!(result, Err(AltinnError::Status(401))) {
        // The Altinn token may have been revoked: exchange anew next time.
        client.invalidate().await;
    }
    result
}

fn log_members(label: &str, m: &Members, had_copy: bool) {
    if m.members.is_empty() {
        log::warn!("access list {label}: Altinn lists no organisation (an empty list admits no one through it)");
    }
    if m.ignored > 0 {
        log::info!(
            "access list {label}: {} member(s) that are not organisations ignored",
            m.ignored
        );
    }
    log::info!(
        "access list {label}: {} organisation(s) from Altinn{}",
        m.members.len(),
        if had_copy { "" } else { " (first copy)" }
    );
}

fn from_cache(altinn: &Altinn, store: &ListStore, metrics: &Metrics, list: &AccessListRef) -> bool {
    let Some(dir) = &altinn.cache_dir else {
        return false;
    };
    match read_cache(&cache_path(dir, list)) {
        Ok(copy) => {
            log::warn!(
                "access list {list}: Altinn unreachable; serving the cached copy of {} ({} organisation(s))",
                crate::time::rfc3339(copy.at),
                copy.members.as_ref().map_or(0, BTreeSet::len)
            );
            let changed = store.store_good(list, copy, altinn.max_stale);
            let count = store.get(list).map_or(0, |s| s.members.len());
            metrics
                .access_list_members
                .with_label_values(&[&list.to_string()])
                .set(count as i64);
            changed
        }
        Err(e) => {
            log::warn!("access list {list}: no usable cached copy: {e}");
            false
        }
    }
}

/// The cache file of one list (`.` cannot occur in an owner or identifier).
pub fn cache_path(dir: &Path, list: &AccessListRef) -> PathBuf {
    dir.join(format!(
        "access-list.{}.{}.json",
        list.owner, list.identifier
    ))
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheFile {
    list: String,
    fetched_at_ms: u64,
    etag: Option<String>,
    ignored: usize,
    members: Vec<String>,
}

fn write_cache(altinn: &Altinn, list: &AccessListRef, m: &Members, at: SystemTime) {
    let Some(dir) = &altinn.cache_dir else {
        return;
    };
    let file = CacheFile {
        list: list.to_string(),
        fetched_at_ms: unix_ms(at),
        etag: m.etag.clone(),
        ignored: m.ignored,
        members: m.members.iter().cloned().collect(),
    };
    if let Err(e) = write_atomically(&cache_path(dir, list), &file) {
        log::warn!(
            "access list {list}: cannot write the cached copy in {}: {e}",
            dir.display()
        );
    }
}

/// Writes a sibling temporary file, syncs it, then renames it over `path`:
/// a reader sees the old copy or the new one, never half of one.
fn write_atomically(path: &Path, file: &CacheFile) -> std::io::Result<()> {
    use std::io::Write;
    let bytes = serde_json::to_vec(file).map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut out = std::fs::File::create(&tmp)?;
    out.write_all(&bytes)?;
    out.sync_all()?;
    drop(out);
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

fn read_cache(path: &Path) -> Result<GoodCopy, String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CACHE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_CACHE_BYTES {
        return Err(format!(
            "{}: larger than {MAX_CACHE_BYTES} bytes",
            path.display()
        ));
    }
    let file: CacheFile =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let members = file
        .members
        .iter()
        .map(|m| {
            normalize_org_entry(m).map_err(|e| format!("{}: member `{m}`: {e}", path.display()))
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    Ok(GoodCopy {
        members: Some(members),
        ignored: file.ignored,
        etag: file.etag,
        at: UNIX_EPOCH + Duration::from_millis(file.fetched_at_ms),
        source: Source::Cache,
    })
}

fn until_ms(good: SystemTime, max_stale: Duration) -> u64 {
    unix_ms(good).saturating_add(max_stale.as_millis().min(u64::MAX as u128) as u64)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> AccessListRef {
        AccessListRef {
            owner: "skd".into(),
            identifier: "inntekt-banker".into(),
        }
    }

    #[test]
    fn cache_files_round_trip_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = cache_path(dir.path(), &list());
        let at = UNIX_EPOCH + Duration::from_millis(1_800_000_000_123);
        let file = CacheFile {
            list: list().to_string(),
            fetched_at_ms: unix_ms(at),
            etag: Some("\"v1\"".into()),
            ignored: 2,
            members: vec!["0192:991825827".into()],
        };
        write_atomically(&path, &file).unwrap();
        let copy = read_cache(&path).unwrap();
        assert_eq!(copy.at, at);
        assert_eq!(
            copy.members.unwrap().into_iter().collect::<Vec<_>>(),
            ["0192:991825827"]
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
        std::fs::write(&path, br#"{"list":"x","fetched_at_ms":1,"etag":null,"ignored":0,"members":["0192:991825828"]}"#).unwrap();
        assert!(read_cache(&path).unwrap_err().contains("991825828"));
        std::fs::write(&path, b"{").unwrap();
        assert!(read_cache(&path).is_err());
    }

    #[test]
    fn a_good_copy_changes_the_generation_only_when_members_change() {
        let store = ListStore::default();
        let copy = |members: &[&str]| GoodCopy {
            members: Some(members.iter().map(|m| m.to_string()).collect()),
            ignored: 0,
            etag: None,
            at: SystemTime::now(),
            source: Source::Altinn,
        };
        let day = Duration::from_secs(86_400);
        assert!(
            store.store_good(&list(), copy(&[]), day),
            "the first copy, even empty"
        );
        assert!(!store.store_good(&list(), copy(&[]), day));
        assert!(store.store_good(&list(), copy(&["0192:991825827"]), day));
        assert!(!store.store_good(
            &list(),
            GoodCopy {
                members: None,
                ..copy(&[])
            },
            day
        ));
        assert_eq!(
            store.get(&list()).unwrap().members.len(),
            1,
            "a 304 keeps the members"
        );
        assert!(store.missing(&[list()]).is_empty());
    }

    #[test]
    fn a_generation_without_a_copy_stays_without_one_until_the_next_is_built() {
        let dir = tempfile::tempdir().unwrap();
        let key = crate::dev_issuer::DevIssuer::generate("gw").unwrap();
        std::fs::write(dir.path().join("mp.pem"), key.private_pem()).unwrap();
        let yaml = r#"
issuers:
  - name: test
    issuer: "https://test.maskinporten.no/"
    jwks_uri: "https://test.maskinporten.no/jwk"
upstreams:
  - name: echo
    targets: ["127.0.0.1:9"]
routes:
  - name: banks
    path: /income/{fnr}
    upstream: echo
    auth: token
    issuers: [test]
    consumers:
      altinn_access_lists: [{owner: skd, identifier: inntekt-banker}]
altinn:
  environment: tt02
  maskinporten:
    client_id: "gw-client-1"
    kid: "gw-key-2026"
    key_file: mp.pem
"#;
        let file = dir.path().join("gateway.yaml");
        let load = || crate::config::load_str(yaml, &file).expect("valid");
        let store = ListStore::default();
        let mut before = load();
        store.fill(&mut before);
        assert_eq!(Altinn::lists_without_copy(&before), vec![list()]);
        let copy = GoodCopy {
            members: Some(["0192:991825827".to_string()].into()),
            ignored: 0,
            etag: None,
            at: SystemTime::now(),
            source: Source::Altinn,
        };
        assert!(store.store_good(&list(), copy, Duration::from_secs(3600)));
        // The generation built before the copy neither turns usable (with no
        // members: everyone refused) nor ready.
        assert_eq!(Altinn::lists_without_copy(&before), vec![list()]);
        let mut after = load();
        store.fill(&mut after);
        assert!(Altinn::lists_without_copy(&after).is_empty());
        let synced = &after.routes[0].auth.altinn.as_ref().unwrap().lists[0];
        assert!(synced.members.contains("0192:991825827"));
        assert!(synced.fresh.usable(unix_secs(SystemTime::now())));
    }
}
