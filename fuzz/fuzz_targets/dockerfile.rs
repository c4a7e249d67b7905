//! Parses any text as a Dockerfile: it must give a Dockerfile or an error, never a panic,
//! a stack overflow or a hang.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = ocibuild_core::dockerfile::parse(text, Path::new("Dockerfile")) {
        let _ = e.to_string();
    }
});
