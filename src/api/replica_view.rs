//! The replicas of an app's volume as `ctl status` shows them (issue 15):
//! each replica's state, the point it holds and how old that is, and what
//! the owner says it still lacks. Pure: the ages come in measured.

use super::freshness::ReplicaAges;
use super::messages::ReplicaView;
use super::status_view::MemberObservations;
use crate::config::VolumeSpec;
use crate::state::State;
use std::time::Duration;

/// How old a point of age `age` counts: with the owner down (for
/// `down_for`), how old it was when the owner's app last wrote — its lease
/// ran out at most DOWN_GRACE - NODE_LEASE before it was declared down
/// (later if a leader change delayed the declaration: then this overstates
/// the loss, never understates it).
fn lag_at_loss(age: Option<Duration>, down_for: Option<&Duration>) -> Option<Duration> {
    match down_for {
        Some(down_for) => age.map(|a| a.saturating_sub(*down_for + LEASE_BEFORE_DOWN)),
        None => age,
    }
}

/// How long before a node is declared down its lease (and so any write of
/// its fenced apps) ended at the latest.
const LEASE_BEFORE_DOWN: Duration = Duration::from_millis(
    crate::agent::lease::DOWN_GRACE.as_millis() as u64
        - crate::agent::lease::NODE_LEASE.as_millis() as u64,
);

/// The replicas of `app` (owned by `owner`), a warning when fewer are kept
/// than asked, and the former owners whose copies a failover left aside.
pub fn replica_views(
    state: &State,
    app: &str,
    spec: &VolumeSpec,
    owner: &str,
    observations: &[MemberObservations],
    ages: &ReplicaAges,
) -> (Vec<ReplicaView>, Option<String>, Vec<String>) {
    let Some(set) = state.replicas.get(app) else {
        return (Vec::new(), None, Vec::new());
    };
    let progress = observations
        .iter()
        .find(|(n, _)| n == owner)
        .and_then(|(_, o)| o.as_ref()?.replication.get(app));
    let max_lag = Duration::from_millis(spec.max_lag_ms);
    let views = set
        .nodes
        .iter()
        .map(|(node, point)| {
            let shipped = progress.and_then(|p| p.get(node));
            let age = ages
                .points
                .get(&(app.to_string(), node.clone()))
                .copied()
                .flatten();
            let lag = lag_at_loss(age, ages.down_for.get(owner));
            let down = state.nodes.get(node).is_none_or(|n| n.down);
            let behind = shipped.and_then(|p| p.bytes_behind);
            let state = match (down, point, age) {
                (true, _, _) => "down",
                (false, None, _) => "seeding",
                (false, Some(_), _) if lag.is_some_and(|lag| lag <= max_lag) => "in-sync",
                // Age unknown here (this node started since): in sync if
                // the owner says nothing is on its way.
                (false, Some(_), None) if behind == Some(0) => "in-sync",
                _ => "lagging",
            };
            ReplicaView {
                node: node.clone(),
                state: state.to_string(),
                epoch: point.as_ref().map(|p| p.epoch),
                seq: point.as_ref().map(|p| p.seq),
                age_ms: age.map(|a| a.as_millis() as u64),
                bytes_behind: behind,
                sending: shipped.and_then(|p| p.sending),
                last_error: shipped.and_then(|p| p.last_error.clone()),
            }
        })
        .collect::<Vec<_>>();
    let wanted = (spec.replicas as usize).saturating_sub(1);
    let short = (views.len() < wanted).then(|| {
        format!(
            "keeps {} of {} copies: no other live, undrained node can hold a replica",
            views.len() + 1,
            spec.replicas
        )
    });
    let diverged = set
        .diverged
        .iter()
        .map(|(node, epoch)| format!("{node} (epoch {epoch})"))
        .collect();
    (views, short, diverged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{Observed, ReplicaProgress};
    use crate::state::{ReplicaPoint, ReplicaSet, VolumeOwner};

    fn state() -> State {
        let mut s = State::default();
        s.apply_membership(
            [("n1", "a:1"), ("n2", "a:2"), ("n3", "a:3"), ("n4", "a:4")].into_iter(),
        );
        s.nodes.get_mut("n4").unwrap().down = true;
        s.volumes.insert(
            "db".into(),
            VolumeOwner {
                node: "n1".into(),
                epoch: 2,
                adopt: false,
                issued: 2,
                from_point: None,
                handed_from: None,
            },
        );
        let point = |seq| {
            Some(ReplicaPoint {
                epoch: 2,
                seq,
                root: String::new(),
                taken_at_ms: 0,
                age_at_commit_ms: 0,
            })
        };
        let mut set = ReplicaSet::default();
        set.nodes.insert("n2".into(), point(9));
        set.nodes.insert("n3".into(), None);
        set.nodes.insert("n4".into(), point(3));
        set.diverged.insert("n0".into(), 1);
        s.replicas.insert("db".into(), set);
        s
    }

    #[test]
    fn each_replica_says_how_fresh_it_is() {
        let s = state();
        let spec = VolumeSpec {
            replicas: 5,
            max_lag_ms: 10_000,
            ..VolumeSpec::at("/d".into())
        };
        let mut owner = Observed::default();
        let n3 = ReplicaProgress {
            bytes_behind: Some(4096),
            sending: Some((1024, 4096)),
            ..ReplicaProgress::default()
        };
        owner
            .replication
            .insert("db".into(), [("n3".to_string(), n3)].into());
        let observations = vec![("n1".to_string(), Some(owner))];
        let table = [
            // (age of n2's point, n2's state)
            (Some(Duration::from_secs(3)), "in-sync"),
            (Some(Duration::from_secs(11)), "lagging"),
            (None, "lagging"),
        ];
        for (age, expected) in table {
            let ages = ReplicaAges {
                points: [(("db".to_string(), "n2".to_string()), age)].into(),
                down_for: Default::default(),
            };
            let (views, short, diverged) =
                replica_views(&s, "db", &spec, "n1", &observations, &ages);
            let states: Vec<(&str, &str)> = views
                .iter()
                .map(|v| (v.node.as_str(), v.state.as_str()))
                .collect();
            assert_eq!(
                states,
                [("n2", expected), ("n3", "seeding"), ("n4", "down")],
                "age {age:?}"
            );
            assert_eq!(views[1].sending, Some((1024, 4096)));
            assert_eq!(views[0].seq, Some(9));
            assert_eq!(
                short.as_deref(),
                Some("keeps 4 of 5 copies: no other live, undrained node can hold a replica")
            );
            assert_eq!(diverged, ["n0 (epoch 1)"]);
        }
    }

    #[test]
    fn with_the_owner_down_a_point_counts_as_old_as_it_was_at_the_loss() {
        let mut s = state();
        s.nodes.get_mut("n1").unwrap().down = true;
        let spec = VolumeSpec {
            replicas: 5,
            max_lag_ms: 10_000,
            ..VolumeSpec::at("/d".into())
        };
        // The owner's lease ended 1.5 s before it was declared down: a
        // point 25 s old with the owner down 14 s was 9.5 s old then.
        for (age, down_for, expected) in [
            (25, 20, "in-sync"),
            (25, 14, "in-sync"),
            (25, 13, "lagging"),
            (25, 10, "lagging"),
        ] {
            let ages = ReplicaAges {
                points: [(
                    ("db".to_string(), "n2".to_string()),
                    Some(Duration::from_secs(age)),
                )]
                .into(),
                down_for: [("n1".to_string(), Duration::from_secs(down_for))].into(),
            };
            let (views, _, _) = replica_views(&s, "db", &spec, "n1", &[], &ages);
            assert_eq!(
                views[0].state, expected,
                "age {age} s, owner down {down_for} s"
            );
        }
    }
}
