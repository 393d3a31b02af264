//! The application file in any of its forms (Flocker, fig, compose: the form
//! is told from the content; `seeds/application/` has one of each), alone
//! and checked against the example deployment.
#![no_main]

use flocker_fuzz::{check, text, EXAMPLE_DEPLOYMENT, NO_PLACEMENTS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let application = text(data);
    check(NO_PLACEMENTS, &application);
    check(EXAMPLE_DEPLOYMENT, &application);
});
