//! Human-readable tables for `ctl` output.

use crate::api::{NodeView, StatusView};
use crate::config::Configuration;
use crate::state::{HistoryEntry, Plan};

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or("-".to_string(), T::to_string)
}

/// Left-aligned columns, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

pub fn nodes_table(views: &[NodeView]) -> String {
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            let labels: Vec<String> = v.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![
                v.name.clone(),
                v.address.clone(),
                v.membership.clone(),
                v.role.clone(),
                opt(&v.term),
                opt(&v.leader),
                opt(&v.applied_index),
                match (&v.degraded, v.liveness.as_str(), v.drained) {
                    (Some(_), _, _) => "degraded".to_string(),
                    (None, live, true) => format!("{live},drained"),
                    (None, live, false) => live.to_string(),
                },
                if labels.is_empty() {
                    "-".into()
                } else {
                    labels.join(",")
                },
                v.certificate.as_ref().map_or("-".into(), |c| {
                    crate::ca::format_unix(c.not_after)
                        .split(' ')
                        .next()
                        .unwrap_or_default()
                        .to_string()
                }),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "NAME",
            "ADDRESS",
            "MEMBER",
            "ROLE",
            "TERM",
            "LEADER",
            "APPLIED",
            "STATE",
            "LABELS",
            "CERT EXPIRES",
        ],
        &rows,
    );
    let now = now_unix();
    for v in views {
        if let Some(c) = &v.certificate {
            out.push_str(&expiry_warning(
                &format!("node {}", v.name),
                c.not_after,
                now,
            ));
        }
    }
    out
}

/// Warn when a certificate expires within this many days.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// A warning line for a certificate that has expired or expires within
/// [`EXPIRY_WARNING_DAYS`], else nothing.
pub fn expiry_warning(whose: &str, not_after: i64, now: i64) -> String {
    let days = (not_after - now).div_euclid(86_400);
    let when = crate::ca::format_unix(not_after);
    if not_after < now {
        format!("warning: the certificate of {whose} expired on {when}\n")
    } else if days < EXPIRY_WARNING_DAYS {
        format!(
            "warning: the certificate of {whose} expires on {when} (in {days} days): renew it with `flocker ca renew`\n"
        )
    } else {
        String::new()
    }
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub fn status_table(view: &StatusView) -> String {
    let mut out = format!("configuration version {}\n", view.config_version);
    let rows: Vec<Vec<String>> = view
        .apps
        .iter()
        .map(|a| {
            let state = if a.instances.is_empty() {
                "-".to_string()
            } else {
                a.instances
                    .iter()
                    .map(|i| format!("{}@{}", i.state, i.node))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            vec![
                a.name.clone(),
                a.image.clone(),
                opt(&a.desired_node),
                state,
                opt(&a.waiting),
            ]
        })
        .collect();
    out.push_str(&table(
        &["APP", "IMAGE", "NODE", "OBSERVED", "WAITING"],
        &rows,
    ));
    for a in &view.apps {
        if let Some(m) = &a.moving {
            out.push_str(&format!(
                "moving: {}\n",
                super::moving::progress_line(&a.name, m)
            ));
        }
        if let Some(warning) = a.volume.as_ref().and_then(|v| v.warning.as_ref()) {
            out.push_str(&format!("volume of {}: {warning}\n", a.name));
        }
        if let Some(volume) = a.volume.as_ref() {
            out.push_str(&replica_lines(&a.name, volume));
        }
    }
    for r in &view.routing {
        out.push_str(&routing_line(r));
    }
    out
}

/// `volume of db: owner n1 at epoch 3; replicas: n2 in-sync (point 14,
/// 1.2 s old), n3 seeding 40% (12.0 MiB of 30.0 MiB)`, and the copies a
/// failover left aside.
pub fn replica_lines(app: &str, volume: &crate::api::VolumeView) -> String {
    let mut out = String::new();
    if !volume.replicas.is_empty() {
        let replicas: Vec<String> = volume.replicas.iter().map(replica_words).collect();
        out.push_str(&format!(
            "volume of {app}: owner {} at epoch {}; replicas: {}\n",
            volume.owner,
            volume.epoch,
            replicas.join(", ")
        ));
    }
    if !volume.diverged.is_empty() {
        out.push_str(&format!(
            "volume of {app}: kept aside after a failover on {} (what they wrote after the last point); `ctl volume forget-diverged {app}` removes them\n",
            volume.diverged.join(", ")
        ));
    }
    out
}

fn replica_words(r: &crate::api::ReplicaView) -> String {
    let mut words = format!("{} {}", r.node, r.state);
    let human = super::moving::human_bytes;
    let mut details = Vec::new();
    if let (Some(seq), Some(epoch)) = (r.seq, r.epoch) {
        details.push(match r.age_ms {
            Some(ms) => format!(
                "point {seq} of epoch {epoch}, {:.1} s old",
                ms as f64 / 1000.0
            ),
            None => format!("point {seq} of epoch {epoch}, age unknown here"),
        });
    }
    match (r.sending, r.bytes_behind) {
        (Some((sent, total)), _) if total > 0 => details.push(format!(
            "{}% of {} on its way",
            sent * 100 / total,
            human(total)
        )),
        (_, Some(behind)) if behind > 0 => details.push(format!("{} behind", human(behind))),
        _ => {}
    }
    if let Some(e) = &r.last_error {
        details.push(format!("last point failed: {e}"));
    }
    if !details.is_empty() {
        words.push_str(&format!(" ({})", details.join("; ")));
    }
    words
}

/// `routing: web:8080/tcp -> n2 from every node (3)`, or which nodes do
/// something else: what tells the operator that, after a move, every node
/// sends new connections to the new node.
pub fn routing_line(r: &crate::api::RouteView) -> String {
    let to = r.serving.as_deref().unwrap_or("nowhere (not placed)");
    let mut line = format!("routing: {}:{}/{} -> {to}", r.app, r.port, r.protocol);
    if r.elsewhere.is_empty() {
        line.push_str(&format!(" from every node ({})", r.routed_by.len()));
    } else {
        let others: Vec<String> = r
            .elsewhere
            .iter()
            .map(|(node, what)| format!("{node} {what}"))
            .collect();
        line.push_str(&format!(
            " from {}/{} nodes; {}",
            r.routed_by.len(),
            r.routed_by.len() + r.elsewhere.len(),
            others.join("; ")
        ));
    }
    line.push('\n');
    line
}

pub fn history_table(entries: &[HistoryEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.index.to_string(),
                rfc3339_ms(e.proposed_at_ms),
                e.author.clone(),
                e.via.clone().unwrap_or_else(|| "-".into()),
                e.request_id.clone(),
                e.summary.clone(),
            ]
        })
        .collect();
    table(
        &["INDEX", "TIME", "AUTHOR", "VIA", "REQUEST", "CHANGE"],
        &rows,
    )
}

pub fn plan_text(plan: &Plan) -> String {
    let mut out = String::new();
    if plan.is_noop() {
        out.push_str(&format!(
            "no changes: the configuration stays at version {}\n",
            plan.from_version
        ));
        return out;
    }
    let next = if plan.config_changed {
        plan.from_version + 1
    } else {
        plan.from_version
    };
    out.push_str(&format!(
        "plan: version {} -> {next} (dry run: nothing committed)\n",
        plan.from_version
    ));
    let mut line = |what: &str, apps: &[String]| {
        if !apps.is_empty() {
            out.push_str(&format!("  {what:<8} {}\n", apps.join(", ")));
        }
    };
    line("added", &plan.added);
    line("changed", &plan.changed);
    line("removed", &plan.removed);
    let moved: Vec<String> = plan
        .moved
        .iter()
        .map(|m| {
            format!(
                "{} ({} -> {})",
                m.app,
                m.from.as_deref().unwrap_or("unplaced"),
                m.to.as_deref().unwrap_or("unplaced")
            )
        })
        .collect();
    line("moved", &moved);
    out
}

/// The configuration as Flocker's two files, each under a comment naming it:
/// saved as such, they deploy back to the same configuration.
pub fn config_text(configuration: &Configuration) -> String {
    let (deployment, application) = crate::config::to_files(configuration);
    format!("# deployment.yml\n{deployment}---\n# application.yml\n{application}")
}

pub fn rfc3339_ms(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}
