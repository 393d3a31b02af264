//! The one place the run hands its directory to the checkers and the
//! report (`check::check_run`, `report::write_report`, written separately):
//! it returns the exit code the verdict calls for.

use std::path::Path;
use std::time::Duration;

/// Checks `dir`, writes `verdict.json` and `report.html`; returns 0 (valid),
/// 1 (a violation) or 3 (unknown: a checker ran out of budget or input).
pub fn check_and_report(dir: &Path, budget: Duration) -> anyhow::Result<i32> {
    // TODO(check): the lead wires the final entry points here; these are
    // the signatures agreed for them.
    let verdict = crate::check::check_run(dir, budget);
    verdict.write_json(&dir.join("verdict.json"))?;
    if let Err(e) = crate::report::write_report(dir, &verdict) {
        eprintln!("flocker-chaos: report.html not written: {e:#}");
    }
    Ok(verdict.exit_code())
}
