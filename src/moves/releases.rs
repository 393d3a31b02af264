//! Stop-before-start for apps without a volume, this node's half: when the
//! state says this node holds an app's release (the app was placed
//! elsewhere while it ran here), propose `Released` once no container of it
//! runs here any more; the agent stops it. See `state::releases` for the
//! rule; volumes get the same guarantee from their move's freeze.

use super::driver::running_here;
use super::MoveContext;
use crate::state::Command;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How often the releases are looked at without a state change (a
/// container stopping is not one).
const TICK: Duration = Duration::from_millis(200);

/// Proposes this node's releases for as long as the state machine runs.
pub async fn run(ctx: Arc<MoveContext>) {
    let mut applied = ctx.sm.subscribe();
    let mut tick = tokio::time::interval(TICK);
    let mut releasing: HashMap<String, Release> = HashMap::new();
    loop {
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
        }
        release_stopped_apps(&ctx, &mut releasing).await;
    }
}

/// A release this node holds: first seen at an applied index, then proposed.
enum Release {
    Seen(u64),
    Proposing(tokio::task::JoinHandle<()>),
}

/// Proposes `Released` for every app this node must let go of (its node
/// changed) once no container of it runs here; the agent stops them.
async fn release_stopped_apps(ctx: &Arc<MoveContext>, releasing: &mut HashMap<String, Release>) {
    let (held, index): (Vec<String>, u64) = {
        let applied = ctx.sm.read();
        let held = applied
            .state
            .releases
            .iter()
            .filter(|(_, holder)| **holder == ctx.node)
            .map(|(app, _)| app.clone())
            .collect();
        (held, applied.index())
    };
    releasing.retain(|app, r| {
        held.contains(app) && !matches!(r, Release::Proposing(task) if task.is_finished())
    });
    for app in &held {
        releasing.entry(app.clone()).or_insert(Release::Seen(index));
    }
    // As in `wait_stopped`: only once the agent acted on the state in which
    // the release appeared (a start it had begun before has finished).
    let acted = ctx.observed.reconciled_index();
    let due: Vec<String> = releasing
        .iter()
        .filter(|(_, r)| matches!(r, Release::Seen(seen) if *seen <= acted))
        .map(|(app, _)| app.clone())
        .collect();
    if due.is_empty() {
        return;
    }
    let Ok(containers) = ctx.runtime.list(&ctx.labels).await else {
        return;
    };
    for app in due {
        if running_here(&containers, &app) {
            continue;
        }
        let (ctx, name) = (ctx.clone(), app.clone());
        let task = tokio::spawn(async move {
            let command = Command::Released {
                app: name.clone(),
                node: ctx.node.clone(),
            };
            if let Err(e) = ctx.api.submit_as_node(command).await {
                tracing::warn!(app = %name, "could not release: {e}");
            }
        });
        releasing.insert(app, Release::Proposing(task));
    }
}
