//! `consent-gateway altinn lists -c FILE`: syncs each Altinn access list the
//! configuration names once (Altinn first, else the cached copy), and prints
//! its members and sync state. Exit 0 when every list has a usable copy.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use crate::altinn::maskinporten::{MaskinportenClient, Step};
use crate::altinn::sync::{sync_list, ListStore};
use crate::config::{self, Altinn};
use crate::metrics::Metrics;

/// Runs `altinn lists`.
pub fn lists(path: &Path) -> ExitCode {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: configuration is invalid", path.display());
            return ExitCode::from(1);
        }
    };
    let Some(altinn) = config.altinn.clone() else {
        eprintln!("{}: no `altinn` section", path.display());
        return ExitCode::from(1);
    };
    let client = match MaskinportenClient::new(&altinn) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("the Maskinporten client: {e}");
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let store = ListStore::default();
    let metrics = Arc::new(Metrics::new());
    let lists = Altinn::lists_in_use(&config);
    runtime.block_on(async {
        for list in &lists {
            sync_list(&client, &altinn, &store, &metrics, list).await;
        }
    });
    println!(
        "Altinn {} ({}), Maskinporten client {}",
        altinn.environment.name(),
        altinn.platform_url,
        altinn.client_id
    );
    for step in [Step::Maskinporten, Step::Exchange] {
        let status = client.status(step).to_json();
        println!(
            "  {}: {}{}",
            step.name(),
            status["last_outcome"].as_str().unwrap_or("not tried"),
            status["last_error"]
                .as_str()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
    let now = SystemTime::now();
    let mut all_usable = true;
    for list in &lists {
        let state = store.get(list).unwrap_or_default();
        let view = state.to_json(altinn.max_stale, now);
        all_usable &= view["usable"] == true;
        println!("{list}: {}", describe(&view));
        let mut members: Vec<&String> = state.members.iter().collect();
        members.sort();
        for member in members {
            println!("  {member}");
        }
    }
    if lists.is_empty() {
        println!("no route names an Altinn access list");
    }
    if all_usable {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// One line of sync state from a list's `/status` view.
fn describe(view: &serde_json::Value) -> String {
    let text = |key: &str| view[key].as_str().unwrap_or("-").to_string();
    let mut line = match view["source"].as_str() {
        None => "no copy".to_string(),
        Some(source) => format!(
            "{} organisation(s) from {source} ({}), {} other member(s) ignored, {}",
            view["members"],
            text("last_success"),
            view["ignored_members"],
            if view["usable"] == true {
                "usable"
            } else {
                "stale"
            }
        ),
    };
    if let Some(error) = view["last_error"].as_str() {
        line.push_str(&format!("; last sync failed: {error}"));
    }
    line
}

/// `check --online`: each consent route's resources looked up in the
/// Resource Registry; prints every problem with its field path. True when
/// there is none.
pub fn check_online(config: &config::Config) -> bool {
    let Some(altinn) = &config.altinn else {
        eprintln!("check --online: needs the `altinn` section (where resources are looked up)");
        return false;
    };
    let transport = match crate::altinn::transport::Transport::new(altinn.timeout) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("check --online: {e}");
            return false;
        }
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("check --online: no runtime");
        return false;
    };
    let metrics = Metrics::new();
    let mut ok = true;
    for (i, route) in config.routes.iter().enumerate() {
        let Some(consent) = &route.auth.consent else {
            continue;
        };
        for (j, id) in consent.resources.iter().enumerate() {
            let path = format!("routes[{i}].consent.resources[{j}]");
            let found = runtime.block_on(crate::altinn::resources::fetch_resource(
                &transport,
                &altinn.platform_url,
                id,
            ));
            let outcome = if found.is_ok() { "success" } else { "failure" };
            crate::altinn::count(&metrics, "resource", outcome);
            let problems = match found {
                Err(e) => vec![format!("cannot be looked up: {e}")],
                Ok(None) => vec!["is unknown to the Resource Registry".to_string()],
                Ok(Some(resource)) => {
                    let problems =
                        crate::altinn::resources::review(&resource, &consent.metadata_required);
                    if problems.is_empty() {
                        println!(
                            "{path}: `{id}` is a consent resource{}",
                            if resource.one_time {
                                " (one-time consent)"
                            } else {
                                ""
                            }
                        );
                    }
                    problems
                }
            };
            for problem in problems {
                ok = false;
                println!("{path}: `{id}` {problem}");
            }
        }
    }
    ok
}
