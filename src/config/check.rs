//! `flocker config check DEPLOYMENT APPLICATION`: validates both files
//! offline. Exit 0 with a one-line summary on stdout, or exit 1 with every
//! error on stderr, one per line as `file:line:col: key.path: message`.
//! (Usage errors exit 2, from clap.)

use super::error::ConfigError;
use std::path::Path;

/// The summary line for valid files, or every error.
pub fn check_files(deployment: &Path, application: &Path) -> Result<String, Vec<ConfigError>> {
    let (configuration, format) = super::load_with_format(deployment, application)?;
    Ok(format!(
        "ok: {}, application file in {}",
        configuration.summary(),
        format.describe()
    ))
}

/// Runs the command and returns its exit code.
pub fn run_check(deployment: &Path, application: &Path) -> u8 {
    match check_files(deployment, application) {
        Ok(summary) => {
            println!("{summary}");
            0
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            let n = errors.len();
            eprintln!("{n} error{} found", if n == 1 { "" } else { "s" });
            1
        }
    }
}
