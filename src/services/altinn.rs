//! The Altinn access-list sync as a background task on the control plane:
//! every `altinn.refresh` (sooner, with backoff, after a failure) each list in
//! use is synced, and each consent route's resources looked up (for
//! `/status` and the metrics); a sync that changes members publishes a new
//! generation.
//! The task holds the gateway weakly and ends when it is dropped.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::altinn::maskinporten::MaskinportenClient;
use crate::altinn::resources::{fetch_resource, review};
use crate::altinn::sync::{count, sync_list};
use crate::config::Altinn;
use crate::gateway::Gateway;

/// First retry after a failed round; doubled up to `MAX_BACKOFF`.
pub const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between retries of a failing round (and `refresh` if shorter).
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often a gateway without an `altinn` section looks again (a reload
/// may add one).
const IDLE_POLL: Duration = Duration::from_secs(2);

/// Starts the sync for `gateway` on its control plane.
pub fn spawn(gateway: &Arc<Gateway>) {
    let weak = Arc::downgrade(gateway);
    gateway.control.spawn(run(weak));
}

async fn run(gateway: Weak<Gateway>) {
    let mut client: Option<(Altinn, Arc<MaskinportenClient>)> = None;
    let mut backoff = MIN_BACKOFF;
    loop {
        let wait = match gateway.upgrade() {
            None => return,
            Some(gateway) => {
                let round = one_round(&gateway, &mut client).await;
                match round {
                    Round::Idle => IDLE_POLL,
                    Round::Done(refresh) => {
                        backoff = MIN_BACKOFF;
                        refresh
                    }
                    Round::Failed(refresh) => {
                        let wait = backoff.min(refresh);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        wait
                    }
                }
            }
        };
        tokio::time::sleep(wait).await;
    }
}

enum Round {
    Idle,
    Done(Duration),
    Failed(Duration),
}

/// Syncs every list in use once; publishes a new generation when members changed.
async fn one_round(
    gateway: &Gateway,
    client: &mut Option<(Altinn, Arc<MaskinportenClient>)>,
) -> Round {
    let snapshot = gateway.snapshot();
    let Some(altinn) = snapshot.config.altinn.clone() else {
        return Round::Idle;
    };
    let lists = Altinn::lists_in_use(&snapshot.config);
    drop(snapshot);
    let current = match client {
        Some((config, c)) if *config == altinn => Arc::clone(c),
        _ => match MaskinportenClient::new(&altinn) {
            Ok(c) => {
                let c = Arc::new(c.with_metrics(Arc::clone(&gateway.metrics)));
                *client = Some((altinn.clone(), Arc::clone(&c)));
                if let Ok(mut shown) = gateway.altinn_client.lock() {
                    *shown = Some(Arc::clone(&c));
                }
                c
            }
            Err(e) => {
                log::error!("Altinn: the Maskinporten client cannot be built: {e}");
                return Round::Failed(altinn.refresh);
            }
        },
    };
    let mut changed = false;
    let mut failed = false;
    for list in &lists {
        changed |= sync_list(
            &current,
            &altinn,
            &gateway.altinn_lists,
            &gateway.metrics,
            list,
        )
        .await;
        failed |= gateway
            .altinn_lists
            .get(list)
            .is_some_and(|s| s.last_error.is_some());
    }
    sync_resources(gateway, &current, &altinn).await;
    if changed {
        if let Err(e) = gateway.republish_lists().await {
            log::error!("access lists changed, but the new generation failed: {e}");
        }
    }
    if failed {
        Round::Failed(altinn.refresh)
    } else {
        Round::Done(altinn.refresh)
    }
}

/// Keeps the set of resources the Resource Registry marks one-time.
fn mark_one_time(gateway: &Gateway, id: &str, one_time: bool) {
    let held = gateway.one_time_resources.load();
    if held.contains(id) == one_time {
        return;
    }
    let mut next = (**held).clone();
    if one_time {
        log::info!(
            "consent resource `{id}` is one-time (isOneTimeConsent): each consent is used once"
        );
        next.insert(id.to_string());
    } else {
        next.remove(id);
    }
    gateway.one_time_resources.store(std::sync::Arc::new(next));
}

/// Looks each consent route's resources up (kind `resource`): the outcome,
/// type, one-time flag and any mismatch with `metadata.required` go to
/// `/status`; a problem is logged when it first appears.
async fn sync_resources(gateway: &Gateway, client: &MaskinportenClient, altinn: &Altinn) {
    let wanted: Vec<(String, Vec<String>)> = {
        let snapshot = gateway.snapshot();
        snapshot
            .config
            .routes
            .iter()
            .filter_map(|r| r.auth.consent.as_ref())
            .flat_map(|c| {
                c.resources
                    .iter()
                    .map(|id| (id.clone(), c.metadata_required.clone()))
            })
            .collect()
    };
    for (id, required) in wanted {
        let found = fetch_resource(client.transport(), &altinn.platform_url, &id).await;
        let outcome = if found.is_ok() { "success" } else { "failure" };
        count(&gateway.metrics, "resource", outcome);
        let view = match found {
            Err(e) => serde_json::json!({"last_outcome": "failure", "last_error": e.to_string()}),
            Ok(None) => {
                serde_json::json!({"last_outcome": "success", "problems": ["unknown to the Resource Registry"]})
            }
            Ok(Some(resource)) => {
                mark_one_time(gateway, &id, resource.one_time);
                serde_json::json!({
                "last_outcome": "success",
                "resource_type": resource.resource_type,
                "one_time": resource.one_time,
                "consent_metadata": resource.metadata_keys,
                "problems": review(&resource, &required),
                })
            }
        };
        let mut held = gateway
            .altinn_resources
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let problems = &view["problems"];
        if problems.as_array().is_some_and(|p| !p.is_empty())
            && held.get(&id).map(|v| &v["problems"]) != Some(problems)
        {
            log::warn!("consent resource `{id}`: {problems}");
        }
        held.insert(id, view);
    }
}
