//! What a build shows while it runs: the live view on a terminal (run under a
//! pseudo-terminal with `script`), plain lines otherwise or with `--progress plain`,
//! colour with `--log-format color` unless `NO_COLOR`, JSON lines with structured fields
//! (errors included), and `-v debug`/`trace` diagnostics that never show credentials.

use crate::common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `ocibuild ARGS...` on a pseudo-terminal (`script`), with `TERM=xterm` and `env`;
/// returns whether it succeeded and everything it wrote to the terminal.
fn on_terminal(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let line: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_ocibuild"))
        .chain(args.iter().copied())
        .map(quote)
        .collect();
    let out = Command::new("script")
        .args(["-qfec", &line.join(" "), "/dev/null"])
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("running script (util-linux)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Whether `text` holds an SGR (colour) escape sequence: `ESC [ digits;… m`.
fn has_colour(text: &str) -> bool {
    text.split("\x1b[").skip(1).any(|rest| {
        let codes: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == ';')
            .collect();
        rest[codes.len()..].starts_with('m')
    })
}

/// Whether `text` shows `what` followed by an elapsed time such as ` 0.4s`.
fn shows_elapsed(text: &str, what: &str) -> bool {
    text.match_indices(what).any(|(at, _)| {
        let rest = &text[at + what.len()..];
        let rest = rest.strip_prefix(' ').unwrap_or("");
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        !digits.is_empty() && rest[digits.len()..].starts_with('.') && rest.contains('s')
    })
}

/// `build` of `ctx` pushed to `dest` with the layer cache in `cache`, then `extra`.
/// The base layer is downloaded by every build: the layer store is a fresh one inside the
/// test's own `cache` directory (the lab's shared store would already hold it).
fn pushing(ctx: &Path, dest: &str, cache: &Path, extra: &[&str]) -> Vec<String> {
    let store = cache.join("layer-store");
    let fixed = [
        "build",
        "--context",
        ctx.to_str().unwrap(),
        "--destination",
        dest,
        "--insecure",
        "--cache",
        "--cache-dir",
        cache.to_str().unwrap(),
        "--layer-store",
        store.to_str().unwrap(),
    ];
    fixed.iter().chain(extra).map(|a| a.to_string()).collect()
}

/// `args` borrowed, as the runners take them.
fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// A context that pulls the lab's busybox, prints from a RUN that takes a second, and
/// makes a 2 MiB layer to push.
fn busy_context() -> tempfile::TempDir {
    context_with(
        &format!(
            "FROM {}/busybox:latest\n\
             RUN echo run-output-line && sleep 1\n\
             RUN head -c 2097152 /dev/urandom > /blob\n",
            registry()
        ),
        &[],
    )
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn on_a_terminal_the_live_view_shows_steps_transfers_output_and_a_summary_table() {
    let ctx = busy_context();
    let cache = tempfile::tempdir().unwrap();
    let dest = format!("{}:live", unique_repo("progress"));
    let args = pushing(ctx.path(), &dest, cache.path(), &[]);
    let args = strs(&args);
    // NO_COLOR: the view is drawn, but nothing is coloured.
    let (ok, first) = on_terminal(&args, &[("NO_COLOR", "1")]);
    assert!(ok, "{first}");
    assert!(!has_colour(&first), "colour despite NO_COLOR:\n{first}");
    // The current step with its elapsed time, redrawn in place.
    assert!(
        shows_elapsed(&first, "[2/3] RUN echo run-output-line && sleep 1"),
        "{first}"
    );
    assert!(first.contains("\x1b[2K"), "no line redrawn:\n{first}");
    // The transfers' bars (bytes of size, rate) and their completion lines.
    assert!(first.contains("↓ pull sha256:"), "{first}");
    assert!(first.contains("↑ push sha256:"), "{first}");
    assert!(
        first.contains("MiB/s") || first.contains("KiB/s"),
        "{first}"
    );
    assert!(first.contains("      pulled sha256:"), "{first}");
    assert!(first.contains("      pushed sha256:"), "{first}");
    // RUN output on its own line above the bars (printed after clearing the bars' line).
    let mut printed_lines = first.lines().map(|l| {
        l.rsplit("\x1b[2K")
            .next()
            .unwrap_or(l)
            .trim_end_matches('\r')
    });
    assert!(printed_lines.any(|l| l == "run-output-line"), "{first}");
    // The summary table: a heading, one row per step, the totals, the digest.
    let table = first.split("STEP ").nth(1).expect("a summary table");
    for column in ["TIME", "CACHE", "LAYER", "SIZE", "INSTRUCTION"] {
        assert!(table.contains(column), "{column}:\n{first}");
    }
    let row = |text: &str, step: &str| {
        text.lines()
            .find(|l| l.starts_with(step))
            .unwrap_or_else(|| panic!("no row {step}:\n{text}"))
            .to_string()
    };
    assert!(row(table, "3/3").contains(" miss "), "{table}");
    assert!(row(table, "3/3").contains("2.0 MiB"), "{table}");
    assert!(table.contains("image: 2 layers"), "{table}");
    assert!(table.contains("built sha256:"), "{table}");
    // Built again: the cached steps are hits in the table.
    let (ok, second) = on_terminal(&args, &[("NO_COLOR", "1")]);
    assert!(ok, "{second}");
    let table = second.split("STEP ").nth(1).expect("a summary table");
    assert!(row(table, "3/3").contains(" hit "), "{table}");
    assert!(second.contains("CACHE HIT"), "{second}");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn without_a_terminal_or_with_progress_plain_the_log_is_plain_lines() {
    let ctx = busy_context();
    let path = ctx.path().to_str().unwrap();
    let args = ["build", "--context", path, "--no-push", "--insecure-pull"];
    let out = ocibuild(&args);
    let piped = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{piped}");
    assert!(!piped.contains('\x1b'), "escape codes in a pipe:\n{piped}");
    assert!(piped.contains("[2/3] (stage 0) RUN echo run-output-line"));
    assert!(piped.lines().any(|l| l == "run-output-line"), "{piped}");
    assert!(piped.contains("built sha256:"), "{piped}");
    assert!(
        !piped.contains("STEP "),
        "a table in plain output:\n{piped}"
    );
    // On a terminal, `--progress plain` prints the same lines, and NO_COLOR keeps them
    // free of escape codes.
    let plain: Vec<&str> = args
        .iter()
        .copied()
        .chain(["--progress", "plain"])
        .collect();
    let (ok, text) = on_terminal(&plain, &[("NO_COLOR", "1")]);
    assert!(ok, "{text}");
    assert!(
        !text.contains('\x1b'),
        "escape codes with NO_COLOR:\n{text}"
    );
    assert!(text.contains("[2/3] (stage 0) RUN echo run-output-line"));
    assert!(!text.contains("↓ pull"), "{text}");
    assert!(!text.contains("STEP "), "{text}");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn log_format_color_paints_headers_cache_hits_warnings_and_errors_on_a_terminal() {
    let ctx = context_with(
        &format!(
            "FROM {}/busybox:latest\nRUN echo cached > /cached\nARG FAIL=0\nRUN test \"$FAIL\" = 0\n",
            registry()
        ),
        &[],
    );
    let cache = tempfile::tempdir().unwrap();
    let args = [
        "build",
        "--context",
        ctx.path().to_str().unwrap(),
        "--no-push",
        "--insecure-pull",
        "--cache",
        "--cache-dir",
        cache.path().to_str().unwrap(),
    ];
    build_ok(&args[1..]);
    let failing: Vec<&str> = args
        .iter()
        .copied()
        .chain([
            "--build-arg",
            "FAIL=1",
            "--single-snapshot",
            "--progress",
            "plain",
        ])
        .collect();
    let (ok, text) = on_terminal(&failing, &[]);
    assert!(!ok, "{text}");
    assert!(text.contains("\x1b[1;36m[1/4] (stage 0) FROM"), "{text}");
    assert!(text.contains("\x1b[32m      CACHE HIT "), "{text}");
    assert!(text.contains("\x1b[33mwarning: "), "{text}");
    assert!(text.contains("\x1b[1;31merror: "), "{text}");
    // NO_COLOR (any non-empty value) turns it off, as does `--log-format text`.
    let (_, no_color) = on_terminal(&failing, &[("NO_COLOR", "yes")]);
    assert!(!no_color.contains('\x1b'), "{no_color}");
    assert!(no_color.contains("error: "), "{no_color}");
    let text_format: Vec<&str> = failing
        .iter()
        .copied()
        .chain(["--log-format", "text"])
        .collect();
    let (_, text) = on_terminal(&text_format, &[]);
    assert!(!text.contains('\x1b'), "{text}");
}

/// The JSON objects of `stderr`, asserting that every line is one, with a level and time.
fn json_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\n{stderr}"));
            assert!(value["level"].is_string(), "{line}");
            assert!(value["time"].is_string(), "{line}");
            assert!(value["msg"].is_string(), "{line}");
            value
        })
        .collect()
}

/// The objects of `lines` whose `event` is `event`.
fn events<'a>(lines: &'a [Value], event: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["event"] == event).collect()
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn json_logs_are_one_object_per_line_with_structured_fields_errors_included() {
    let ctx = busy_context();
    let cache = tempfile::tempdir().unwrap();
    let dest = format!("{}:json", unique_repo("progress"));
    let args = pushing(
        ctx.path(),
        &dest,
        cache.path(),
        &["--log-format", "json", "-v", "debug"],
    );
    let out = ocibuild(&strs(&args));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines = json_lines(&stderr);
    let steps = events(&lines, "step");
    assert_eq!(steps.len(), 3, "{stderr}");
    assert_eq!(steps[1]["step"], 2);
    assert_eq!(
        steps[1]["instruction"],
        "RUN echo run-output-line && sleep 1"
    );
    let done = events(&lines, "step_done");
    assert!(done[1]["duration_ms"].as_u64().unwrap() >= 1000, "{stderr}");
    assert!(
        done[2]["layer"]["size"].as_u64().unwrap() > 2_000_000,
        "{stderr}"
    );
    assert!(done[2]["layer"]["digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    let cached = events(&lines, "cache");
    assert!(cached.iter().all(|c| c["cache"] == "miss"), "{stderr}");
    assert!(events(&lines, "output")
        .iter()
        .any(|o| o["msg"] == "run-output-line" && o["step"] == 2));
    let pulled = events(&lines, "blob_pulled");
    assert!(pulled[0]["bytes"].as_u64().unwrap() > 0, "{stderr}");
    assert!(pulled[0]["duration_ms"].is_u64(), "{stderr}");
    assert!(!events(&lines, "blob_pushed").is_empty(), "{stderr}");
    let requests: Vec<&Value> = events(&lines, "diagnostic")
        .into_iter()
        .filter(|d| d["method"].is_string())
        .collect();
    assert!(
        requests
            .iter()
            .any(|r| r["method"] == "PUT" && r["status"] == 201 && r["url"].is_string()),
        "{stderr}"
    );
    let summary = events(&lines, "summary");
    let summary = summary.last().expect("a summary line");
    assert_eq!(summary["steps"].as_array().unwrap().len(), 3);
    assert_eq!(summary["layers"].as_array().unwrap().len(), 2);
    assert_eq!(summary["cache_misses"], 2);
    assert!(summary["manifest_digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert!(summary["pushed"]["bytes"].as_u64().unwrap() > 2_000_000);

    // A failing RUN: its output and the final error are JSON too.
    let failing = context_with(
        &format!(
            "FROM {}/busybox:latest\nRUN echo visible-output && exit 3\n",
            registry()
        ),
        &[],
    );
    let out = ocibuild(&[
        "build",
        "--context",
        failing.path().to_str().unwrap(),
        "--no-push",
        "--insecure-pull",
        "--log-format",
        "json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let lines = json_lines(&stderr);
    let last = lines.last().unwrap();
    assert_eq!(last["level"], "error", "{stderr}");
    assert_eq!(last["event"], "error", "{stderr}");
    assert!(last["msg"].as_str().unwrap().contains("exited with code 3"));
    assert!(events(&lines, "output")
        .iter()
        .any(|o| o["msg"] == "visible-output"));
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn debug_shows_registry_requests_scopes_cache_keys_and_snapshots_but_no_credentials() {
    let AuthRegistry {
        registry: auth_reg,
        docker_config,
        password,
        basic,
        ..
    } = auth_registry();
    let with_creds = [("DOCKER_CONFIG", docker_config.path().to_str().unwrap())];
    let ctx = busy_context();
    let dest = format!("{auth_reg}/progress-debug:{}", std::process::id());
    // Each build with an empty cache directory: every step runs and is snapshotted.
    let build = |level: &str| {
        let cache = tempfile::tempdir().unwrap();
        let args = pushing(ctx.path(), &dest, cache.path(), &["-v", level]);
        let out = ocibuild_with_env(&strs(&args), &with_creds);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        for secret in [password.as_str(), basic.as_str()] {
            assert!(
                !stderr.contains(secret),
                "a credential in the log:\n{stderr}"
            );
        }
        assert!(
            stderr
                .split("_state=")
                .skip(1)
                .all(|rest| rest.starts_with("REDACTED")),
            "upload state shown:\n{stderr}"
        );
        stderr
    };
    let info = build("info");
    assert!(!info.contains("debug: "), "{info}");
    let debug = build("debug");
    let get = debug
        .lines()
        .find(|l| l.starts_with("debug: GET http://") && l.contains("/v2/"))
        .unwrap_or_else(|| panic!("no GET line:\n{debug}"));
    assert!(
        get.contains("-> 200 OK in ") && get.ends_with(" ms"),
        "{get}"
    );
    assert!(
        debug.contains(&format!(
            "debug: basic auth for {auth_reg} (scopes [repository:progress-debug:pull,push]) with credential username and password"
        )),
        "{debug}"
    );
    assert!(
        debug.contains(&format!(
            "debug: HEAD http://{auth_reg}/v2/progress-debug/blobs/"
        )),
        "{debug}"
    );
    assert!(debug.contains("debug: cache key "), "{debug}");
    assert!(debug.contains("argv=[\"/bin/sh\", \"-c\", \"echo run-output-line"));
    assert!(debug.contains("debug: snapshot ("), "{debug}");
    assert!(debug.contains("paths examined") || debug.contains("(overlay)"));
    assert!(!debug.contains("trace: "), "{debug}");
    let trace = build("trace");
    assert!(trace.contains("sent authorization Basic"), "{trace}");
    assert!(trace.contains("trace: snapshot ("), "{trace}");
}
