//! What every fuzz target checks: the parsers never panic, and whatever they
//! accept survives being written back ([`flocker::config::to_files`]) and
//! read again unchanged, with the same bytes written the second time.

use flocker::config::{parse, to_files};
use std::borrow::Cow;

/// A deployment placing nothing: every valid application file passes with it.
pub const NO_PLACEMENTS: &str = "version: 1\nnodes: {}\n";
/// The shipped example files, as the fixed other half of a pair.
pub const EXAMPLE_DEPLOYMENT: &str = include_str!("../../cluster-examples/deployment.yml");
pub const EXAMPLE_APPLICATION: &str = include_str!("../../cluster-examples/application.yml");

/// The fuzzer's bytes as text. `flocker::config::load` refuses a file that
/// is not UTF-8 before parsing, so only text reaches `parse`; replacing
/// invalid bytes keeps every input useful.
pub fn text(data: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// Parses the pair; when it is accepted, checks the round trip.
pub fn check(deployment: &str, application: &str) {
    let Ok(configuration) = parse(deployment, "deployment.yml", application, "application.yml")
    else {
        return;
    };
    let (d, a) = to_files(&configuration);
    match parse(&d, "deployment.yml", &a, "application.yml") {
        Ok(back) => {
            assert_eq!(
                back, configuration,
                "the written files read back differently:\n--- deployment.yml\n{d}--- application.yml\n{a}"
            );
            assert_eq!(to_files(&back), (d, a), "writing is not stable");
        }
        Err(errors) => {
            let errors: String = errors.iter().map(|e| format!("{e}\n")).collect();
            panic!(
                "the written files do not read back:\n{errors}--- deployment.yml\n{d}--- application.yml\n{a}"
            );
        }
    }
}
