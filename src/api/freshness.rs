//! How old each replica's newest committed point is, on this node's
//! monotonic clock (issue 15: the chaos suite shifts wall clocks, so no
//! node's wall clock dates a point). A task follows the applied state; when
//! a replica's point changes, the point was taken `age_at_commit_ms` before
//! the commit, which this node saw just now. Points this node found already
//! committed when it started have no known age until the next one.

use crate::raft::StateMachineStore;
use crate::state::State;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// What this node measured, as of one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplicaAges {
    /// Age of each replica's newest committed point, by (app, replica
    /// node); `None`: not known here (this node started after the commit).
    pub points: BTreeMap<(String, String), Option<Duration>>,
    /// How long each node has been down, since this node saw it declared.
    pub down_for: BTreeMap<String, Duration>,
}

#[derive(Clone, Default)]
pub struct Freshness(Arc<Mutex<Tracked>>);

#[derive(Default)]
struct Tracked {
    points: HashMap<(String, String), Seen>,
    down_since: HashMap<String, Instant>,
}

struct Seen {
    position: (u64, u64),
    taken: Option<Instant>,
}

impl Freshness {
    /// Starts following `sm`'s applied state (needs a tokio runtime).
    pub fn follow(sm: StateMachineStore) -> Freshness {
        let freshness = Freshness::default();
        freshness.update(&sm.read().state, true);
        let follower = freshness.clone();
        let mut applied = sm.subscribe();
        tokio::spawn(async move {
            while applied.changed().await.is_ok() {
                follower.update(&sm.read().state, false);
            }
        });
        freshness
    }

    fn update(&self, state: &State, at_start: bool) {
        let now = Instant::now();
        let mut tracked = self.0.lock().expect("freshness lock");
        let down_since = std::mem::take(&mut tracked.down_since);
        tracked.down_since = state
            .nodes
            .iter()
            .filter(|(_, record)| record.down)
            .map(|(node, _)| (node.clone(), down_since.get(node).copied().unwrap_or(now)))
            .collect();
        let seen = &mut tracked.points;
        let mut current = HashMap::new();
        for (app, set) in &state.replicas {
            for (node, point) in &set.nodes {
                let Some(point) = point else { continue };
                let key = (app.clone(), node.clone());
                let entry = match seen.remove(&key) {
                    Some(old) if old.position == point.position() => old,
                    _ => Seen {
                        position: point.position(),
                        taken: (!at_start).then(|| {
                            now.checked_sub(Duration::from_millis(point.age_at_commit_ms))
                                .unwrap_or(now)
                        }),
                    },
                };
                current.insert(key, entry);
            }
        }
        *seen = current;
    }

    /// Every replica's point age, and every down node's time down, now.
    pub fn ages(&self) -> ReplicaAges {
        let now = Instant::now();
        let tracked = self.0.lock().expect("freshness lock");
        ReplicaAges {
            points: tracked
                .points
                .iter()
                .map(|(key, seen)| (key.clone(), seen.taken.map(|t| now.duration_since(t))))
                .collect(),
            down_for: tracked
                .down_since
                .iter()
                .map(|(node, since)| (node.clone(), now.duration_since(*since)))
                .collect(),
        }
    }
}
