//! `--help` of the build commands: the flags under group headings (with docker's `-t/--tag`
//! and `--file`), kaniko's no-op flags listed under `executor` only (and still accepted,
//! with a warning, by `build`). Needs no lab.

use crate::common::*;

/// The standard output of `ocibuild ARGS... --help`.
fn help(args: &[&str]) -> String {
    let args: Vec<&str> = args.iter().copied().chain(["--help"]).collect();
    let out = ocibuild(&args);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The headings of the build flag groups, in `--help` order.
const HEADINGS: [&str; 7] = [
    "Context & Dockerfile:",
    "Destinations & outputs:",
    "Registry & TLS:",
    "Cache:",
    "Isolation & RUN:",
    "Building in / (kaniko mode, --isolation none):",
    "Logging:",
];

#[test]
fn build_help_groups_the_flags_and_hides_the_no_op_flags() {
    let text = help(&["build"]);
    for heading in HEADINGS {
        assert!(text.contains(heading), "{heading} missing:\n{text}");
    }
    assert!(text.contains("--registry-certificate"), "{text}");
    assert!(!text.contains("--compressed-caching"), "{text}");
    assert!(!text.contains("--snapshot-mode"), "{text}");
    assert!(
        text.contains("Usage: ocibuild build [OPTIONS] [CONTEXT]"),
        "{text}"
    );
    let (_, outputs) = text.split_once("Destinations & outputs:").unwrap();
    let (outputs, _) = outputs.split_once("Registry & TLS:").unwrap();
    for shown in ["[aliases: -t, --tag]", "--skip-push-permission-check"] {
        assert!(outputs.contains(shown), "{shown} missing:\n{text}");
    }
    assert!(text.contains("[alias: --file]"), "{text}");
}

#[test]
fn executor_help_lists_the_no_op_flags_under_their_own_heading() {
    let text = help(&["executor"]);
    for heading in HEADINGS {
        assert!(text.contains(heading), "{heading} missing:\n{text}");
    }
    let (_, no_ops) = text
        .split_once("Accepted kaniko flags that change nothing:")
        .unwrap_or_else(|| panic!("no heading for the no-op flags:\n{text}"));
    for flag in [
        "--compressed-caching",
        "--snapshot-mode",
        "--credential-helpers",
    ] {
        assert!(no_ops.contains(flag), "{flag} missing:\n{text}");
    }
    // The push-permission check is real: listed with the outputs, not as a no-op.
    assert!(!no_ops.contains("--skip-push-permission-check"), "{text}");
    assert!(text.contains("--skip-push-permission-check"), "{text}");
}

#[test]
fn build_still_accepts_a_hidden_no_op_flag_and_warns_about_it() {
    let out = ocibuild(&[
        "build",
        "--context",
        "../testdata/demo",
        "--dockerfile",
        "../testdata/demo/Dockerfile",
        "--dryrun",
        "--use-new-run",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: --use-new-run changes nothing in ocibuild"),
        "{stderr}"
    );
}
