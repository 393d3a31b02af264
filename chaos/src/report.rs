//! `report.html`: one self-contained page (inline CSS and SVG, no scripts,
//! nothing fetched) that shows a run at a glance: each invariant's verdict,
//! every operation's latency over time with the faults shaded, where each
//! app ran (overlaps in red), the volume moves, and for a linearizability
//! failure the smallest failing window of operations. Inputs that are
//! missing or malformed leave a note in their section instead of failing
//! the report. Every piece of recorded text is HTML-escaped.

use crate::check::ops::{Op, Outcome};
use crate::check::single_instance::{docker_intervals, overlaps, witness_intervals, Interval};
use crate::check::{load_json, load_jsonl, Budget, INVARIANTS};
use crate::history::{ContainerEvent, Heartbeat, MoveRecord, NemesisEvent, OpKind};
use crate::verdict::{Validity, Verdict};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// Plotted points at most; beyond it `ok` points are thinned evenly (fail
/// and info points, the interesting ones, are always drawn).
const MAX_POINTS: usize = 20_000;
/// Characters of an invariant's details JSON shown at most.
const MAX_DETAILS: usize = 20_000;
const WIDTH: f64 = 1000.0;
const LEFT: f64 = 150.0;
const RIGHT: f64 = 20.0;

/// Writes `dir/report.html` for the run in `dir` and its verdict.
pub fn write_report(dir: &Path, verdict: &Verdict) -> anyhow::Result<()> {
    use anyhow::Context;
    let html = render(dir, verdict);
    let path = dir.join("report.html");
    std::fs::write(&path, html).with_context(|| format!("writing {}", path.display()))
}

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Everything the page draws, loaded leniently.
struct Inputs {
    ops: Result<Vec<Op>, String>,
    nemesis: Result<Vec<NemesisEvent>, String>,
    docker: Result<Vec<ContainerEvent>, String>,
    witness: Result<Vec<Heartbeat>, String>,
    moves: Result<Vec<MoveRecord>, String>,
    run: Option<serde_json::Value>,
    /// The end of the time axis, ns.
    t_max: u64,
}

impl Inputs {
    fn load(dir: &Path) -> Self {
        let ops = crate::check::ops::load_history(dir);
        let nemesis = load_jsonl::<NemesisEvent>(dir, "nemesis.jsonl");
        let docker = load_jsonl::<ContainerEvent>(dir, "docker-events.jsonl");
        let witness = load_jsonl::<Heartbeat>(dir, "witness.jsonl");
        let moves = load_jsonl::<MoveRecord>(dir, "moves.jsonl");
        let run = load_json::<serde_json::Value>(dir, "run.json").ok();
        let mut t_max = 1u64;
        let mut see = |t: u64| t_max = t_max.max(t);
        for o in ops.iter().flatten() {
            see(o.complete_ns.unwrap_or(o.invoke_ns));
        }
        nemesis.iter().flatten().for_each(|e| see(e.time_ns));
        docker.iter().flatten().for_each(|e| see(e.time_ns));
        witness.iter().flatten().for_each(|e| see(e.time_ns));
        moves.iter().flatten().for_each(|m| see(m.end_ns));
        Inputs {
            ops,
            nemesis,
            docker,
            witness,
            moves,
            run,
            t_max,
        }
    }

    fn x(&self, t: u64) -> f64 {
        LEFT + (WIDTH - LEFT - RIGHT) * (t as f64 / self.t_max as f64).min(1.0)
    }
}

fn render(dir: &Path, verdict: &Verdict) -> String {
    let inputs = Inputs::load(dir);
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>flocker chaos run: {}</title><style>{CSS}</style></head><body>\n",
        verdict.valid.as_str()
    );
    header(&mut h, verdict, &inputs);
    invariants(&mut h, verdict);
    lin_failure(&mut h, verdict);
    latency(&mut h, &inputs);
    placement(&mut h, &inputs);
    moves(&mut h, &inputs);
    h.push_str("</body></html>\n");
    h
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}\
.valid{background:#2a9d3f;color:#fff}.invalid{background:#d62828;color:#fff}.unknown{background:#888;color:#fff}\
.badge{padding:2px 8px;border-radius:4px;font-weight:bold}.note{color:#777;font-style:italic}\
tr.failing td{background:#fde2e2}pre{font-size:.8em;max-height:300px;overflow:auto;background:#f6f6f6;padding:6px}\
svg{font-size:10px;font-family:system-ui,sans-serif}.legend span{margin-right:14px}";

fn class(v: Validity) -> &'static str {
    v.as_str()
}

fn header(h: &mut String, verdict: &Verdict, inputs: &Inputs) {
    let _ = write!(
        h,
        "<h1>flocker chaos run <span class=\"badge {}\">{}</span></h1><table>",
        class(verdict.valid),
        esc(verdict.valid.as_str())
    );
    let mut row = |k: &str, v: String| {
        let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    };
    row("seed", verdict.seed.to_string());
    row("operations", verdict.operations.to_string());
    if let Some(run) = &inputs.run {
        for k in ["cluster_id", "nodes", "nemeses", "plant_bug", "time_s"] {
            if let Some(v) = run.get(k) {
                let text = match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Array(a) => a
                        .iter()
                        .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                        .collect::<Vec<_>>()
                        .join(", "),
                    other => other.to_string(),
                };
                row(k, text);
            }
        }
    }
    h.push_str("</table>\n");
}

fn invariants(h: &mut String, verdict: &Verdict) {
    h.push_str(
        "<h2>Invariants</h2><table><tr><th>invariant</th><th>result</th><th>summary</th></tr>",
    );
    // The known invariants first, in their usual order, then any others.
    let mut names: Vec<&str> = INVARIANTS
        .iter()
        .copied()
        .filter(|n| verdict.invariants.contains_key(*n))
        .collect();
    names.extend(
        verdict
            .invariants
            .keys()
            .map(String::as_str)
            .filter(|n| !INVARIANTS.contains(n)),
    );
    for name in names {
        let r = &verdict.invariants[name];
        let mut details = serde_json::to_string_pretty(&r.details).unwrap_or_default();
        if details.len() > MAX_DETAILS {
            let cut = (0..=MAX_DETAILS)
                .rev()
                .find(|&i| details.is_char_boundary(i))
                .unwrap_or(0);
            details.truncate(cut);
            details.push_str("\n… (truncated; see verdict.json)");
        }
        let _ = write!(
            h,
            "<tr><td>{}</td><td><span class=\"badge {}\">{}</span></td><td>{}\
             <details><summary>details</summary><pre>{}</pre></details></td></tr>",
            esc(name),
            class(r.valid),
            esc(r.valid.as_str()),
            esc(&r.summary),
            esc(&details)
        );
    }
    h.push_str("</table>\n");
}

fn secs(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e9)
}

/// The linearizability failure's window: a table and a per-process timeline.
fn lin_failure(h: &mut String, verdict: &Verdict) {
    let Some(f) = verdict
        .invariants
        .get("linearizable")
        .and_then(|r| r.details.get("failure"))
    else {
        return;
    };
    let window = f
        .get("window")
        .and_then(|w| w.as_array())
        .cloned()
        .unwrap_or_default();
    let key = f.get("key").and_then(|k| k.as_str()).unwrap_or("?");
    let states: Vec<String> = f
        .get("possible_states")
        .and_then(|s| s.as_array())
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or("null").to_string())
                .collect()
        })
        .unwrap_or_default();
    let _ = write!(
        h,
        "<h2>Linearizability failure on key {}</h2><p>{} ops before this window linearize; \
         no order of them lets the highlighted op complete. The register could only hold: {}.</p>",
        esc(key),
        esc(&f
            .get("linearizable_prefix_ops")
            .map(|v| v.to_string())
            .unwrap_or_default()),
        esc(&if states.is_empty() {
            "-".into()
        } else {
            states.join(" or ")
        })
    );
    let num = |o: &serde_json::Value, k: &str| o.get(k).and_then(|v| v.as_u64());
    let text = |o: &serde_json::Value, k: &str| match o.get(k) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => "null".into(),
        Some(v) => v.to_string(),
    };
    // Timeline: one row per process over the window's time span.
    let t0 = window
        .iter()
        .filter_map(|o| num(o, "invoke_ns"))
        .min()
        .unwrap_or(0);
    let t1 = window
        .iter()
        .flat_map(|o| [num(o, "invoke_ns"), num(o, "complete_ns")])
        .flatten()
        .max()
        .unwrap_or(t0)
        .max(t0 + 1);
    let mut procs: Vec<u64> = window.iter().filter_map(|o| num(o, "process")).collect();
    procs.sort_unstable();
    procs.dedup();
    let row_h = 22.0;
    let height = 40.0 + row_h * procs.len() as f64;
    let span = (t1 - t0) as f64 * 1.08;
    let x = |t: u64| LEFT + (WIDTH - LEFT - RIGHT) * ((t - t0) as f64 / span);
    let _ = write!(
        h,
        "<svg width=\"{WIDTH}\" height=\"{height}\" role=\"img\">"
    );
    for (row, p) in procs.iter().enumerate() {
        let y = 20.0 + row_h * row as f64;
        let _ = write!(h, "<text x=\"4\" y=\"{:.1}\">process {p}</text>", y + 13.0);
        for o in window.iter().filter(|o| num(o, "process") == Some(*p)) {
            let a = x(num(o, "invoke_ns").unwrap_or(t0));
            let open = text(o, "type") == "info" || num(o, "complete_ns").is_none();
            let b = if open {
                WIDTH - RIGHT
            } else {
                x(num(o, "complete_ns").unwrap_or(t1))
            };
            let failing = o.get("failing").and_then(|v| v.as_bool()).unwrap_or(false);
            let fill = if failing {
                "#d62828"
            } else if text(o, "f") == "write" {
                "#457b9d"
            } else {
                "#8ab17d"
            };
            let label = format!("{} {}", text(o, "f"), text(o, "value"));
            // Roughly 6 px a character: inside the bar when it fits.
            let fits = (b - a) > 6.0 * label.chars().count() as f64 + 4.0;
            let _ = write!(
                h,
                "<rect x=\"{a:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"16\" fill=\"{fill}\" opacity=\"{}\"><title>{}</title></rect>\
                 <text x=\"{:.1}\" y=\"{:.1}\" fill=\"{}\">{}</text>",
                (b - a).max(2.0),
                if open { "0.5" } else { "0.9" },
                esc(&format!("op {} {label} ({})", text(o, "index"), text(o, "type"))),
                if fits { a + 2.0 } else { b + 3.0 },
                y + 12.0,
                if fits { "#fff" } else { fill },
                esc(&label)
            );
        }
    }
    let axis_y = height - 8.0;
    let _ = write!(
        h,
        "<text x=\"{LEFT}\" y=\"{axis_y}\">{} s</text><text x=\"{}\" y=\"{axis_y}\" text-anchor=\"end\">{} s</text>",
        secs(t0),
        x(t1),
        secs(t1)
    );
    h.push_str("</svg>");
    h.push_str(
        "<table><tr><th>index</th><th>process</th><th>f</th><th>type</th><th>value</th>\
         <th>invoke (s)</th><th>complete (s)</th><th>node</th></tr>",
    );
    for o in &window {
        let failing = o.get("failing").and_then(|v| v.as_bool()).unwrap_or(false);
        let _ = write!(
            h,
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if failing { " class=\"failing\"" } else { "" },
            esc(&text(o, "index")),
            esc(&text(o, "process")),
            esc(&text(o, "f")),
            esc(&text(o, "type")),
            esc(&text(o, "value")),
            num(o, "invoke_ns").map(secs).unwrap_or_default(),
            num(o, "complete_ns").map(secs).unwrap_or_else(|| "-".into()),
            esc(&text(o, "node")),
        );
    }
    h.push_str("</table>\n");
}

/// Nemesis periods: (start, stop or None, nemesis, detail), pairing each
/// stop with the earliest open start of the same nemesis.
fn nemesis_periods(events: &[NemesisEvent]) -> Vec<(u64, Option<u64>, String, String)> {
    let mut sorted: Vec<&NemesisEvent> = events.iter().collect();
    sorted.sort_by_key(|e| e.time_ns);
    let mut out: Vec<(u64, Option<u64>, String, String)> = Vec::new();
    for e in sorted {
        match e.phase.as_str() {
            "start" => out.push((e.time_ns, None, e.nemesis.clone(), e.detail.clone())),
            "stop" => {
                if let Some(p) = out.iter_mut().find(|p| p.1.is_none() && p.2 == e.nemesis) {
                    p.1 = Some(e.time_ns);
                }
            }
            _ => {}
        }
    }
    out
}

fn nemesis_colour(n: &str) -> &'static str {
    match n {
        "partition" => "#e76f51",
        "kill" => "#9b2226",
        "pause" => "#6a4c93",
        "clock" => "#2a9d8f",
        "link" => "#e9c46a",
        "membership" => "#264653",
        "crash" => "#540b0e",
        _ => "#999999",
    }
}

fn node_colour(node: &str) -> &'static str {
    const PALETTE: [&str; 8] = [
        "#457b9d", "#2a7f74", "#9c6644", "#6a4c93", "#3d5a80", "#1d3557", "#5b8e3e", "#7d5a80",
    ];
    let h = node
        .bytes()
        .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(b as u32));
    PALETTE[(h % PALETTE.len() as u32) as usize]
}

/// A time axis along the bottom of a chart at `y`.
fn time_axis(h: &mut String, inputs: &Inputs, y: f64) {
    let total_s = inputs.t_max as f64 / 1e9;
    let step = [
        0.001, 0.01, 0.1, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    ]
    .into_iter()
    .find(|s| total_s / s <= 12.0)
    .unwrap_or(3600.0);
    let _ = write!(
        h,
        "<line x1=\"{LEFT}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#333\"/>",
        WIDTH - RIGHT
    );
    let mut k = 0u32;
    while (k as f64) * step <= total_s && k <= 100 {
        let t = (k as f64 * step * 1e9) as u64;
        let x = inputs.x(t);
        let _ = write!(
            h,
            "<line x1=\"{x:.1}\" y1=\"{y}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#333\"/>\
             <text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}s</text>",
            y + 4.0,
            y + 15.0,
            (k as f64 * step * 1000.0).round() / 1000.0
        );
        k += 1;
    }
}

/// Shaded nemesis periods over a chart from `top` to `bottom`.
fn shade_nemeses(h: &mut String, inputs: &Inputs, top: f64, bottom: f64, labels: bool) {
    let Ok(events) = &inputs.nemesis else { return };
    // A fault's steps between its start and stop (the membership nemesis's
    // removal, probe, rejoin): a thin line each, described on hover.
    for e in events
        .iter()
        .filter(|e| e.phase != "start" && e.phase != "stop")
    {
        let x = inputs.x(e.time_ns);
        let _ = write!(
            h,
            "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{bottom}\" stroke=\"{}\" stroke-dasharray=\"2,3\" opacity=\"0.6\"><title>{}</title></line>",
            nemesis_colour(&e.nemesis),
            esc(&format!("{} {}: {}", e.nemesis, e.phase, e.detail))
        );
    }
    for (i, (start, stop, name, detail)) in nemesis_periods(events).iter().enumerate() {
        let a = inputs.x(*start);
        let b = inputs.x(stop.unwrap_or(inputs.t_max));
        let _ = write!(
            h,
            "<rect x=\"{a:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\" opacity=\"0.15\"><title>{}</title></rect>",
            (b - a).max(1.0),
            bottom - top,
            nemesis_colour(name),
            esc(&format!("{name}: {detail}"))
        );
        if labels {
            let _ = write!(
                h,
                "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{}\">{}</text>",
                a + 2.0,
                top + 10.0 + 11.0 * (i % 3) as f64,
                nemesis_colour(name),
                esc(&format!("{name}: {detail}"))
            );
        }
    }
}

/// Latency (log scale) against invoke time, one dot per operation.
fn latency(h: &mut String, inputs: &Inputs) {
    h.push_str("<h2>Latency</h2>");
    let ops = match &inputs.ops {
        Ok(o) => o,
        Err(e) => {
            let _ = write!(h, "<p class=\"note\">No latency chart: {}</p>", esc(e));
            return;
        }
    };
    let (top, bottom) = (40.0, 300.0);
    // Latency in ms; an op that never completed counts to the end.
    let lat = |o: &Op| {
        (o.complete_ns
            .unwrap_or(inputs.t_max)
            .saturating_sub(o.invoke_ns) as f64
            / 1e6)
            .max(0.01)
    };
    let max_ms = ops.iter().map(lat).fold(1.0f64, f64::max);
    let min_ms = ops.iter().map(lat).fold(max_ms, f64::min);
    let hi = max_ms.log10().ceil().max(0.0);
    let lo = min_ms.log10().floor().min(hi - 1.0);
    let y = |ms: f64| bottom - (bottom - top) * ((ms.log10() - lo) / (hi - lo));
    let _ = write!(
        h,
        "<svg width=\"{WIDTH}\" height=\"{}\" role=\"img\">",
        bottom + 25.0
    );
    shade_nemeses(h, inputs, top, bottom, true);
    let mut e = lo.floor() as i32;
    while (e as f64) <= hi {
        let ms = 10f64.powi(e);
        let yy = y(ms);
        let _ = write!(
            h,
            "<line x1=\"{LEFT}\" y1=\"{yy:.1}\" x2=\"{}\" y2=\"{yy:.1}\" stroke=\"#eee\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{} ms</text>",
            WIDTH - RIGHT,
            LEFT - 4.0,
            yy + 3.0,
            ms
        );
        e += 1;
    }
    time_axis(h, inputs, bottom);
    let ok_count = ops.iter().filter(|o| o.outcome == Outcome::Ok).count();
    let stride = ok_count.div_ceil(MAX_POINTS).max(1);
    let mut seen_ok = 0usize;
    for o in ops {
        if o.outcome == Outcome::Ok {
            seen_ok += 1;
            if seen_ok % stride != 0 {
                continue;
            }
        }
        let colour = match o.outcome {
            Outcome::Ok => "#2a9d3f",
            Outcome::Fail => "#d62828",
            Outcome::Info => "#f4a261",
        };
        let f = match o.f {
            OpKind::Read => "read",
            OpKind::Write => "write",
            OpKind::Move => "move",
        };
        let _ = write!(
            h,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\" fill=\"{colour}\"><title>{}</title></circle>",
            inputs.x(o.invoke_ns),
            y(lat(o)),
            esc(&format!(
                "{} {f} {} {} on {} by {}: {:.1} ms",
                o.outcome.as_str(),
                o.key,
                o.value.as_deref().unwrap_or("null"),
                o.node,
                o.process,
                lat(o)
            ))
        );
    }
    h.push_str(
        "</svg><p class=\"legend\"><span style=\"color:#2a9d3f\">● ok</span>\
        <span style=\"color:#d62828\">● fail</span><span style=\"color:#f4a261\">● info</span>\
        shaded: nemesis active</p>\n",
    );
}

/// One lane per app: its containers (Docker) and instances (witness) as
/// bars coloured by node, overlaps in red.
fn placement(h: &mut String, inputs: &Inputs) {
    h.push_str("<h2>Where each app ran</h2>");
    let mut lives: Vec<(&str, Interval)> = Vec::new();
    for (source, loaded) in [
        (
            "docker",
            inputs.docker.as_ref().map(|d| docker_intervals(d)),
        ),
        (
            "witness",
            inputs.witness.as_ref().map(|w| witness_intervals(w)),
        ),
    ] {
        match loaded {
            Ok(list) => lives.extend(list.into_iter().map(|i| (source, i))),
            Err(e) => {
                let _ = write!(h, "<p class=\"note\">{}</p>", esc(e));
            }
        }
    }
    if lives.is_empty() {
        h.push_str("<p class=\"note\">No container events or heartbeats recorded.</p>");
        return;
    }
    let mut apps: Vec<&str> = lives.iter().map(|(_, i)| i.app.as_str()).collect();
    apps.sort_unstable();
    apps.dedup();
    // One row per (app, source, node): an app recreated on every register
    // write has thousands of containers, but only a few nodes.
    let mut rows: Vec<(&str, &str, &str)> = lives
        .iter()
        .map(|(s, i)| (i.app.as_str(), *s, i.node.as_str()))
        .collect();
    rows.sort_unstable();
    rows.dedup();
    let row_h = 16.0;
    let height = 20.0 + row_h * (rows.len() + apps.len()) as f64 + 25.0;
    let _ = write!(
        h,
        "<svg width=\"{WIDTH}\" height=\"{height}\" role=\"img\">"
    );
    shade_nemeses(h, inputs, 10.0, height - 25.0, false);
    let budget = Budget::new(Duration::from_secs(5));
    let mut y = 20.0;
    for app in apps {
        let _ = write!(
            h,
            "<text x=\"4\" y=\"{:.1}\" font-weight=\"bold\">{}</text>",
            y + 11.0,
            esc(app)
        );
        y += row_h;
        for source in ["docker", "witness"] {
            let lane_top = y;
            let mine: Vec<Interval> = lives
                .iter()
                .filter(|(s, i)| *s == source && i.app == app)
                .map(|(_, i)| i.clone())
                .collect();
            for &(_, _, node) in rows.iter().filter(|r| r.0 == app && r.1 == source) {
                let _ = write!(
                    h,
                    "<text x=\"12\" y=\"{:.1}\">{source} {}</text>",
                    y + 10.0,
                    esc(node)
                );
                for i in mine.iter().filter(|i| i.node == node) {
                    let a = inputs.x(i.start_ns);
                    let b = inputs.x(i.end_ns.unwrap_or(inputs.t_max));
                    let _ = write!(
                        h,
                        "<rect x=\"{a:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"12\" fill=\"{}\" \
                         stroke=\"#fff\" stroke-width=\"0.5\"><title>{}</title></rect>",
                        (b - a).max(1.0),
                        node_colour(node),
                        esc(&format!(
                            "{source} {} on {}: {} s to {}",
                            i.who,
                            i.node,
                            secs(i.start_ns),
                            i.end_ns.map_or("end".into(), |e| format!("{} s", secs(e)))
                        )),
                    );
                    if b - a > 80.0 {
                        let short: String = i.who.chars().take(12).collect();
                        let _ = write!(
                            h,
                            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#fff\">{}</text>",
                            a + 2.0,
                            y + 10.0,
                            esc(&short)
                        );
                    }
                }
                y += row_h;
            }
            let (found, _) = overlaps(&mine, &budget);
            for o in found {
                let a = inputs.x(o.start_ns);
                let b = inputs.x(o.end_ns.unwrap_or(inputs.t_max));
                let _ = write!(
                    h,
                    "<rect x=\"{a:.1}\" y=\"{lane_top:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#d62828\" opacity=\"0.6\" stroke=\"#000\">\
                     <title>{}</title></rect>",
                    (b - a).max(2.0),
                    (y - lane_top).max(row_h),
                    esc(&format!(
                        "overlap ({source}): {} on {} and {} on {}",
                        o.a.who, o.a.node, o.b.who, o.b.node
                    ))
                );
            }
        }
    }
    time_axis(h, inputs, height - 25.0);
    h.push_str("</svg><p class=\"legend\">one row per node; <span style=\"color:#d62828\">red</span>: two instances at once</p>\n");
}

fn moves(h: &mut String, inputs: &Inputs) {
    h.push_str("<h2>Volume moves</h2>");
    let list = match &inputs.moves {
        Ok(l) => l,
        Err(e) => {
            let _ = write!(h, "<p class=\"note\">{}</p>", esc(e));
            return;
        }
    };
    if list.is_empty() {
        h.push_str("<p class=\"note\">No moves recorded.</p>");
        return;
    }
    h.push_str(
        "<table><tr><th>app</th><th>from</th><th>to</th><th>bytes</th><th>start (s)</th>\
         <th>duration (s)</th><th>checksum</th></tr>",
    );
    for m in list {
        let (cls, word) = match m.checksum_ok {
            Some(true) => ("valid", "match"),
            Some(false) => ("invalid", "MISMATCH"),
            None => ("unknown", "unknown"),
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td><span class=\"badge {cls}\">{word}</span></td></tr>",
            esc(&m.app),
            esc(&m.from),
            esc(&m.to),
            m.bytes.map_or("?".into(), |b| b.to_string()),
            secs(m.start_ns),
            secs(m.end_ns.saturating_sub(m.start_ns)),
        );
    }
    h.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::check_run;

    #[test]
    fn report_names_every_invariant_and_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ev = |i: u64, t: u64, p: u32, kind: &str, f: &str, v: Option<&str>| {
            serde_json::json!({"index": i, "time_ns": t, "process": p, "type": kind, "f": f,
                "key": "<db>", "value": v, "node": "n1", "request_id": "r"})
            .to_string()
        };
        let history = [
            ev(0, 1_000_000, 0, "invoke", "write", Some("a")),
            ev(1, 5_000_000, 0, "ok", "write", Some("a")),
            ev(2, 6_000_000, 1, "invoke", "read", None),
            ev(3, 7_000_000, 1, "ok", "read", Some("stale&")),
            ev(4, 8_000_000, 0, "invoke", "write", Some("b")),
            ev(5, 9_000_000, 0, "info", "write", Some("b")),
        ]
        .join("\n");
        std::fs::write(d.join("history.jsonl"), history).unwrap();
        std::fs::write(
            d.join("nemesis.jsonl"),
            r#"{"time_ns":2000000,"nemesis":"partition","phase":"start","detail":"n1 | n2,n3","nodes":["n1"]}
{"time_ns":8000000,"nemesis":"partition","phase":"stop","detail":"heal","nodes":[]}
{"time_ns":8500000,"nemesis":"membership","phase":"probe","detail":"n2 <old>","nodes":["n2"],"probe":"refused"}"#,
        )
        .unwrap();
        std::fs::write(
            d.join("docker-events.jsonl"),
            r#"{"time_ns":1000,"app":"<db>","node":"n1","container":"c1","action":"start"}
{"time_ns":3000000,"app":"<db>","node":"n2","container":"c2","action":"start"}"#,
        )
        .unwrap();
        std::fs::write(
            d.join("moves.jsonl"),
            r#"{"start_ns":1,"end_ns":2000000,"app":"<db>","from":"n1","to":"n2","bytes":5,"checksum_ok":false}"#,
        )
        .unwrap();
        let verdict = check_run(d, Duration::from_secs(5));
        assert_eq!(verdict.invariants["linearizable"].valid, Validity::Invalid);
        write_report(d, &verdict).unwrap();
        let html = std::fs::read_to_string(d.join("report.html")).unwrap();
        for name in INVARIANTS {
            assert!(html.contains(name), "{name}");
        }
        assert!(html.contains("&lt;db&gt;"));
        assert!(!html.contains("<db>"));
        assert!(html.contains("stale&amp;"));
        assert!(html.contains("membership probe: n2 &lt;old&gt;"));
        assert!(html.contains("Linearizability failure"));
        assert!(html.contains("MISMATCH"));
        assert!(html.contains("<circle"));
        assert!(
            html.contains("#d62828\" opacity=\"0.6\" stroke"),
            "overlap drawn"
        );
        assert!(!html.contains("<script"));
        // An empty directory still gets a report.
        let empty = tempfile::tempdir().unwrap();
        let v = check_run(empty.path(), Duration::from_secs(1));
        write_report(empty.path(), &v).unwrap();
        assert!(empty.path().join("report.html").exists());
    }
}
