//! deployment.yml, checked against the example application file.
#![no_main]

use flocker_fuzz::{check, text, EXAMPLE_APPLICATION};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check(&text(data), EXAMPLE_APPLICATION);
});
