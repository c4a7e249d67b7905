//! Parses any text as a Dockerfile, plans it and parses its `RUN --mount` values: each step
//! must give a result or an error, never a panic, a stack overflow or a hang.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ocibuild_dockerfile::mount::parse_mount;
use ocibuild_dockerfile::{parse, InstructionKind, Plan};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dockerfile = match parse(text, Path::new("Dockerfile")) {
        Ok(dockerfile) => dockerfile,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    for ins in &dockerfile.instructions {
        if let InstructionKind::Run(args) = &ins.kind {
            for mount in &args.mounts {
                let _ = parse_mount(mount).map_err(|e| e.to_string());
            }
        }
    }
    if let Ok(plan) = Plan::new(&dockerfile, &Default::default(), Default::default()) {
        let _ = plan.needed_stages(plan.stages.len() - 1);
    }
});
