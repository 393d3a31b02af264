//! Human-readable tables for `ctl` output.

use crate::api::NodeView;

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
                if labels.is_empty() {
                    "-".into()
                } else {
                    labels.join(",")
                },
            ]
        })
        .collect();
    table(
        &[
            "NAME", "ADDRESS", "MEMBER", "ROLE", "TERM", "LEADER", "APPLIED", "LABELS",
        ],
        &rows,
    )
}
