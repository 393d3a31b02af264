//! Both files through `parse`: the input is the deployment file, a NUL byte,
//! then the application file (NUL cannot appear in YAML text, so nothing is
//! lost by splitting there). Without a NUL, the input is the deployment and
//! the application file is empty.
#![no_main]

use flocker_fuzz::{check, text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (deployment, application) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    check(&text(deployment), &text(application));
});
