//! Reload triggers (SPEC section 7): the config file and every access-list
//! file it names are watched through their directories (edit in place, save
//! by rename, Kubernetes `..data` symlink swap; a file that is a symlink is
//! also watched in its target's directory), and `SIGHUP`. Bursts of events
//! cause one reload; reloads run one at a time.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::gateway::Gateway;

/// Events closer together than this are one burst, one reload.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Whether a file-system event can change what the configuration says.
fn relevant_kind(kind: &EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        _ => false,
    }
}

/// The directories to watch and the file names in them that matter.
fn watch_set(gateway: &Gateway) -> (HashSet<PathBuf>, HashSet<OsString>) {
    let snapshot = gateway.snapshot();
    let mut dirs = HashSet::new();
    let mut names = HashSet::new();
    names.insert(OsString::from("..data"));
    let mut files = snapshot.config.source_files.clone();
    files.push(gateway.config_path.clone());
    if let Ok(state) = gateway.reload_state.lock() {
        files.extend(state.attempted_files.iter().cloned());
    }
    for file in files {
        let absolute = std::path::absolute(&file).unwrap_or(file);
        // A symlinked file (outside the Kubernetes layout, whose `..data`
        // swap is seen in the link's own directory) changes in its target's.
        let target = std::fs::canonicalize(&absolute).ok();
        for path in std::iter::once(absolute).chain(target) {
            if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
                dirs.insert(dir.to_path_buf());
                names.insert(name.to_os_string());
            }
        }
    }
    (dirs, names)
}

/// Starts the reload triggers on the control plane. `SIGHUP` is handled from
/// the moment this returns (its default action would end the process).
pub fn spawn(gateway: &Arc<Gateway>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let hangups = {
        let _runtime = gateway.control.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    };
    match hangups {
        Ok(mut hangups) => {
            let tx = tx.clone();
            gateway.control.spawn(async move {
                while hangups.recv().await.is_some() {
                    log::info!("SIGHUP: reloading the configuration");
                    let _ = tx.send(());
                }
            });
        }
        Err(e) => log::warn!("cannot listen for SIGHUP: {e}"),
    }
    // The watcher is armed here, before the listeners start, so that a
    // change written once the gateway answers is always seen.
    let watch = arm(gateway, &tx);
    let gw = Arc::clone(gateway);
    gateway.control.spawn(async move {
        match watch {
            Some(watch) => {
                // A change written between the first load and the arming
                // (the gateway was starting) would have no event: look once.
                if gw.changed_on_disk().await {
                    let _ = tx.send(());
                }
                watch_loop(gw, watch, rx).await;
            }
            None => {
                drop(tx);
                while rx.recv().await.is_some() {
                    let _ = gw.reload().await;
                }
            }
        }
    });
}

/// The armed watcher, the directories it watches and the file names in them
/// that matter (shared with its event filter).
struct Watch {
    watcher: notify::RecommendedWatcher,
    dirs: HashSet<PathBuf>,
    names: Arc<std::sync::RwLock<HashSet<OsString>>>,
}

/// Watches the configuration's directories; each relevant event sends on
/// `tx`. `None` (logged) when the platform cannot watch: then only `SIGHUP`
/// reloads.
fn arm(gateway: &Gateway, tx: &mpsc::UnboundedSender<()>) -> Option<Watch> {
    let (dirs, names) = watch_set(gateway);
    let names = Arc::new(std::sync::RwLock::new(names));
    let filter_names = Arc::clone(&names);
    let events = tx.clone();
    let mut watcher =
        match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(event) = res else { return };
            if !relevant_kind(&event.kind) {
                return;
            }
            let wanted = filter_names.read().map(|n| {
                event
                    .paths
                    .iter()
                    .any(|p| p.file_name().is_some_and(|f| n.contains(f)))
            });
            if wanted.unwrap_or(true) {
                let _ = events.send(());
            }
        }) {
            Ok(w) => w,
            Err(e) => {
                log::error!("cannot watch the configuration files: {e}; only SIGHUP reloads");
                return None;
            }
        };
    for dir in &dirs {
        if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            log::warn!("cannot watch {}: {e}", dir.display());
        }
    }
    Some(Watch {
        watcher,
        dirs,
        names,
    })
}

async fn watch_loop(gateway: Arc<Gateway>, watch: Watch, mut rx: mpsc::UnboundedReceiver<()>) {
    let Watch {
        mut watcher,
        mut dirs,
        names,
    } = watch;
    while rx.recv().await.is_some() {
        // Collect the rest of the burst.
        while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
        let _ = gateway.reload().await;
        // The new configuration may name other access-list files.
        let (new_dirs, new_names) = watch_set(&gateway);
        for dir in new_dirs.difference(&dirs) {
            if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                log::warn!("cannot watch {}: {e}", dir.display());
            }
        }
        dirs.extend(new_dirs);
        if let Ok(mut n) = names.write() {
            n.extend(new_names);
        }
    }
}
