//! Side-by-side Dockerfile conformance: every case under `testdata/conformance/` is built by
//! ocibuild, once with each snapshotter (`--snapshotter overlay` and `--snapshotter walk`),
//! and by buildah (the reference); the images are pushed to the lab registry, unpacked
//! with skopeo + umoci, and each ocibuild image's file tree and config are compared with
//! buildah's.
//!
//! Run it with the lab up:
//!
//! ```sh
//! eval "$(scripts/lab.sh env)"
//! cargo test -p ocibuild-cli --test e2e conformance_suite_matches_buildah -- --nocapture
//! ```
//!
//! `OCIBUILD_CONFORMANCE_CASES=name1,name2` restricts the run to those cases (for working on
//! one behaviour; the full suite is what `cargo test` runs). Case files are described in
//! `conformance/case.rs`. `OCIBUILD_CONFORMANCE_AS_USER=ocibuild-rootless` builds the
//! ocibuild side rootless, as that lab user (see the `rootless` module).
//!
//! Compared per path: type, permission bits (with setuid/setgid/sticky), uid, gid, size and
//! sha256 of files, symlink targets and hard-link groups. Compared config fields: see
//! `image::CONFIG_FIELDS`. Nothing else differs silently: everything not compared or
//! accepted is in [`ALLOWED`], plus the per-case `allow` lines of `case.conf`.

mod case;
mod image;

use crate::common::*;
use case::Case;
use image::Entry;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// The one allow-list: what is not compared, or accepted from buildah, and why.
///
/// Keys starting with `buildah-run-artifact:` name paths buildah leaves in the layer of every
/// RUN; they are accepted only when buildah's copy is an empty file or an empty directory and
/// ocibuild's image does not have the path at all.
const ALLOWED: &[(&str, &str)] = &[
    (
        "mtime",
        "not compared: build times differ between any two builds (and Docker does not \
         preserve context mtimes for every builder)",
    ),
    (
        "created",
        "not compared: the config's `created` is the build time",
    ),
    (
        "history",
        "not compared: `created_by` texts are each builder's own wording (buildah prefixes \
         `/bin/sh -c #(nop)`), and empty_layer placement follows its layer choices",
    ),
    (
        "layers",
        "not compared: how content is split into layers and compressed is not behaviour a \
         Dockerfile specifies; the unpacked tree is",
    ),
    (
        "buildah-run-artifact:/etc/hosts",
        "buildah bind-mounts /etc/hosts for RUN and leaves an empty mount point file in the layer",
    ),
    (
        "buildah-run-artifact:/etc/hostname",
        "buildah bind-mounts /etc/hostname for RUN and leaves an empty mount point file",
    ),
    (
        "buildah-run-artifact:/etc/resolv.conf",
        "buildah bind-mounts /etc/resolv.conf for RUN and leaves an empty mount point file",
    ),
    (
        "buildah-run-artifact:/run",
        "buildah mounts a tmpfs on /run for RUN and leaves the empty mount point directory",
    ),
    (
        "buildah-run-artifact:/dev",
        "buildah mounts /dev for RUN and leaves the empty mount point directory",
    ),
    (
        "buildah-run-artifact:/proc",
        "buildah mounts /proc for RUN and leaves the empty mount point directory",
    ),
    (
        "buildah-run-artifact:/sys",
        "buildah mounts /sys for RUN and leaves the empty mount point directory",
    ),
    (
        "config:Labels.io.buildah.version",
        "buildah stamps its own version label on every image",
    ),
];

/// One difference: `key` is `PATH:FIELD` for the tree, `config:FIELD` for the config.
struct Difference {
    key: String,
    ocibuild: String,
    buildah: String,
    allowed: Option<String>,
}

/// What is compared of one built image.
struct Captured {
    tree: BTreeMap<String, Entry>,
    config: BTreeMap<String, Value>,
}

/// The snapshotters every case is built with, each image compared with buildah's.
const SNAPSHOTTERS: [&str; 2] = ["overlay", "walk"];

enum Outcome {
    /// With the number of allowed differences.
    Identical(usize),
    Differs(Vec<String>),
    OcibuildOnly(String),
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn conformance_suite_matches_buildah() {
    let reg = std::env::var("OCIBUILD_TEST_REGISTRY").unwrap_or_else(|_| {
        panic!(
            "OCIBUILD_TEST_REGISTRY is not set: the conformance suite needs the test lab \
             (buildah, skopeo, umoci and the registry with the base images); run \
             `scripts/lab.sh up && eval \"$(scripts/lab.sh env)\"` or `scripts/test.sh`"
        )
    });
    let only: Option<Vec<String>> = std::env::var("OCIBUILD_CONFORMANCE_CASES")
        .ok()
        .map(|s| s.split(',').map(|c| c.trim().to_string()).collect());
    let mut cases = case::load_all(&testdata("conformance"));
    if let Some(only) = &only {
        cases.retain(|c| only.contains(&c.name));
        assert!(!cases.is_empty(), "no case matches {only:?}");
    }
    // Private buildah storage: nothing depends on (or changes) the machine's containers.
    let storage = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut results = Vec::new();
    for case in &cases {
        let t = Instant::now();
        let outcomes = run_case(case, &reg, storage.path());
        let secs = t.elapsed().as_secs_f32();
        let mut labels = Vec::new();
        let mut all_lines = Vec::new();
        for (snapshotter, outcome) in &outcomes {
            let (label, lines) = describe(outcome);
            labels.push(format!("{snapshotter}: {label}"));
            all_lines.extend(lines.into_iter().map(|l| format!("[{snapshotter}] {l}")));
        }
        println!("{:<40} {} ({secs:.1}s)", case.name, labels.join("; "));
        for line in &all_lines {
            println!("    {line}");
        }
        for (snapshotter, outcome) in outcomes {
            results.push((snapshotter, case.name.clone(), outcome));
        }
    }
    let mut differ = Vec::new();
    for snapshotter in SNAPSHOTTERS {
        let built: Vec<_> = results
            .iter()
            .filter(|(s, _, _)| *s == snapshotter)
            .collect();
        let failed: Vec<String> = built
            .iter()
            .filter(|(_, _, o)| matches!(o, Outcome::Differs(_)))
            .map(|(s, n, _)| format!("{n} ({s})"))
            .collect();
        let who = match std::env::var("OCIBUILD_CONFORMANCE_AS_USER") {
            Ok(user) => format!(", rootless as {user}"),
            Err(_) => String::new(),
        };
        println!(
            "conformance ({snapshotter}{who}): {} cases, {} identical, {} differ",
            built.len(),
            built.len() - failed.len(),
            failed.len()
        );
        differ.extend(failed);
    }
    println!("(took {:.0}s)", started.elapsed().as_secs_f32());
    assert!(differ.is_empty(), "cases that differ: {differ:?}");
}

/// The label of an outcome and the lines that explain it.
fn describe(outcome: &Outcome) -> (String, Vec<String>) {
    match outcome {
        Outcome::Identical(0) => ("identical".to_string(), Vec::new()),
        Outcome::Identical(n) => (format!("identical ({n} allowed differences)"), Vec::new()),
        Outcome::OcibuildOnly(reason) => (format!("ocibuild-only (buildah: {reason})"), Vec::new()),
        Outcome::Differs(lines) => ("differs".to_string(), lines.clone()),
    }
}

/// Builds `case` with ocibuild once per snapshotter and with buildah, and compares each
/// ocibuild image with buildah's (or with the case's expectations).
fn run_case(case: &Case, reg: &str, storage: &Path) -> Vec<(&'static str, Outcome)> {
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    case.prepare_context(&ctx);
    let pid = std::process::id();
    let theirs = format!("{reg}/conf-buildah-{}:{pid}", case.name);

    let (ours_results, theirs_result) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            SNAPSHOTTERS.map(|snapshotter| {
                let ours = format!("{reg}/conf-ocibuild-{snapshotter}-{}:{pid}", case.name);
                build_ocibuild(case, reg, &ctx, &ours, snapshotter).and_then(|()| capture(&ours))
            })
        });
        let b = s.spawn(|| match case.buildah_skip {
            Some(_) => None,
            None => Some(
                build_buildah(case, reg, &ctx, &theirs, storage).and_then(|()| capture(&theirs)),
            ),
        });
        let ours = a.join().unwrap_or_else(|p| {
            SNAPSHOTTERS.map(|_| Err(format!("panicked: {}", panic_text(&*p))))
        });
        (ours, b.join())
    });
    let theirs = match theirs_result {
        Ok(Some(Ok(image))) => Ok(Some(image)),
        Ok(Some(Err(e))) => Err(format!("buildah failed: {e}")),
        Ok(None) => Ok(None),
        Err(panic) => Err(format!("buildah side panicked: {}", panic_text(&*panic))),
    };
    SNAPSHOTTERS
        .into_iter()
        .zip(ours_results)
        .map(|(snapshotter, ours)| (snapshotter, outcome(case, ours, &theirs)))
        .collect()
}

/// How one ocibuild image (`ours`) compares with buildah's (`theirs`: `None` for a
/// `buildah = skip` case).
fn outcome(
    case: &Case,
    ours: Result<Captured, String>,
    theirs: &Result<Option<Captured>, String>,
) -> Outcome {
    let ours_image = match ours {
        Ok(image) => image,
        Err(e) => return Outcome::Differs(vec![format!("ocibuild failed: {e}")]),
    };
    let diffs = match theirs {
        Ok(None) => expectations(case, &ours_image),
        Ok(Some(image)) => compare(case, &ours_image, image),
        Err(e) => return Outcome::Differs(vec![e.clone()]),
    };
    let mut lines = Vec::new();
    let mut differs = false;
    for d in &diffs {
        match &d.allowed {
            Some(reason) => lines.push(format!(
                "(allowed) {}: ocibuild={} buildah={} -- {reason}",
                d.key, d.ocibuild, d.buildah
            )),
            None => {
                differs = true;
                lines.push(format!(
                    "{}: ocibuild={} buildah={}",
                    d.key, d.ocibuild, d.buildah
                ));
            }
        }
    }
    match (&case.buildah_skip, differs) {
        (_, true) => Outcome::Differs(lines),
        (Some(reason), false) => Outcome::OcibuildOnly(reason.clone()),
        (None, false) => Outcome::Identical(diffs.len()),
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "?".to_string())
}

/// Runs a command; on failure, the last lines of its stderr.
fn run_quiet(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("running {cmd:?}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let tail = lines[lines.len().saturating_sub(12)..].join("\n        ");
    Err(format!("{}\n        {tail}", out.status))
}

fn build_ocibuild(
    case: &Case,
    reg: &str,
    ctx: &Path,
    dest: &str,
    snapshotter: &str,
) -> Result<(), String> {
    let mut cmd = ocibuild_command(ctx);
    cmd.arg("build")
        .args(["--snapshotter", snapshotter])
        .arg("--context")
        .arg(ctx)
        .arg("--dockerfile")
        .arg(ctx.join(&case.dockerfile))
        .args(["--destination", dest])
        .args(["--build-arg", &format!("BASE_REGISTRY={reg}")]);
    for arg in &case.build_args {
        cmd.args(["--build-arg", arg]);
    }
    if let Some(target) = &case.target {
        cmd.args(["--target", target]);
    }
    run_quiet(&mut cmd)
}

/// `ocibuild`, or with `OCIBUILD_CONFORMANCE_AS_USER=USER` (a user with subordinate ids,
/// e.g. the lab's `ocibuild-rootless`) a rootless `ocibuild` run as that user, with a home
/// of its own next to the context `ctx` (which is made readable by everyone, `a+rX`: the
/// buildah side builds the same context).
fn ocibuild_command(ctx: &Path) -> Command {
    let Ok(user) = std::env::var("OCIBUILD_CONFORMANCE_AS_USER") else {
        return Command::new(env!("CARGO_BIN_EXE_ocibuild"));
    };
    let work = ctx.parent().unwrap();
    let home = work.join(format!("home-{}", unique_string("user")));
    std::fs::create_dir(&home).unwrap();
    run("chown", &[&user, home.to_str().unwrap()]);
    run("chmod", &["-R", "a+rX", ctx.to_str().unwrap()]);
    run("chmod", &["a+x", work.to_str().unwrap()]);
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", &user, "--regid", &user, "--init-groups"])
        .arg(binary_for_users())
        .env_clear()
        .env("HOME", home)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin");
    cmd
}

fn buildah(storage: &Path) -> Command {
    let mut cmd = Command::new("buildah");
    cmd.arg("--root")
        .arg(storage.join("root"))
        .arg("--runroot")
        .arg(storage.join("run"))
        .args(["--storage-driver", "vfs"]);
    cmd
}

fn build_buildah(
    case: &Case,
    reg: &str,
    ctx: &Path,
    tag: &str,
    storage: &Path,
) -> Result<(), String> {
    let mut cmd = buildah(storage);
    cmd.args([
        "bud",
        "--isolation",
        "chroot",
        "--format",
        "docker",
        "--layers",
        "--tls-verify=false",
    ])
    .args(["--build-arg", &format!("BASE_REGISTRY={reg}")]);
    for arg in &case.build_args {
        cmd.args(["--build-arg", arg]);
    }
    if let Some(target) = &case.target {
        cmd.args(["--target", target]);
    }
    cmd.arg("-f")
        .arg(ctx.join(&case.dockerfile))
        .args(["-t", tag])
        .arg(ctx);
    run_quiet(&mut cmd)?;
    run_quiet(buildah(storage).args([
        "push",
        "--tls-verify=false",
        tag,
        &format!("docker://{tag}"),
    ]))
}

fn capture(reference: &str) -> Result<Captured, String> {
    let img = unpack(&format!("docker://{reference}"));
    Ok(Captured {
        tree: image::tree(&img.rootfs),
        config: image::config_fields(&skopeo_config(reference)),
    })
}

fn global_allowance(key: &str) -> Option<String> {
    ALLOWED
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, reason)| format!("{key}: {reason}"))
}

/// Whether `path`, present only in buildah's image, is an empty RUN mount point.
fn buildah_run_artifact(path: &str, theirs: &BTreeMap<String, Entry>) -> Option<String> {
    let reason = global_allowance(&format!("buildah-run-artifact:{path}"))?;
    let entry = &theirs[path];
    let empty = match entry.kind {
        "file" => entry.size == Some(0),
        "dir" => {
            let prefix = format!("{path}/");
            !theirs.keys().any(|k| k.starts_with(&prefix))
        }
        _ => false,
    };
    empty.then_some(reason)
}

fn compare(case: &Case, ours: &Captured, theirs: &Captured) -> Vec<Difference> {
    let mut diffs = Vec::new();
    let mut push = |key: String, o: String, b: String, global: Option<String>| {
        let allowed = global.or_else(|| case.allowed(&key).map(|r| format!("case.conf: {r}")));
        diffs.push(Difference {
            key,
            ocibuild: o,
            buildah: b,
            allowed,
        });
    };
    let mut paths: Vec<&String> = ours.tree.keys().chain(theirs.tree.keys()).collect();
    paths.sort();
    paths.dedup();
    for path in paths {
        match (ours.tree.get(path), theirs.tree.get(path)) {
            (Some(o), Some(b)) => {
                for ((field, ov), (_, bv)) in o.fields().into_iter().zip(b.fields()) {
                    if ov != bv {
                        push(format!("{path}:{field}"), ov, bv, None);
                    }
                }
            }
            (Some(o), None) => push(
                format!("{path}:exists"),
                o.describe(),
                "absent".into(),
                None,
            ),
            (None, Some(b)) => push(
                format!("{path}:exists"),
                "absent".into(),
                b.describe(),
                buildah_run_artifact(path, &theirs.tree),
            ),
            (None, None) => unreachable!(),
        }
    }
    let fields: Vec<&String> = {
        let mut f: Vec<&String> = ours.config.keys().chain(theirs.config.keys()).collect();
        f.sort();
        f.dedup();
        f
    };
    let show = |v: Option<&Value>| v.map_or("unset".to_string(), Value::to_string);
    for field in fields {
        let (o, b) = (ours.config.get(field), theirs.config.get(field));
        if field == "Labels" {
            let empty = serde_json::Map::new();
            let ol = o.and_then(Value::as_object).unwrap_or(&empty);
            let bl = b.and_then(Value::as_object).unwrap_or(&empty);
            let mut keys: Vec<&String> = ol.keys().chain(bl.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                if ol.get(k) != bl.get(k) {
                    let key = format!("config:Labels.{k}");
                    let global = global_allowance(&key).filter(|_| ol.get(k).is_none());
                    push(key, show(ol.get(k)), show(bl.get(k)), global);
                }
            }
        } else if o != b {
            push(format!("config:{field}"), show(o), show(b), None);
        }
    }
    diffs
}

/// Checks a `buildah = skip` case against its written expectations; "buildah" in the
/// differences is the expectation.
fn expectations(case: &Case, ours: &Captured) -> Vec<Difference> {
    let mut diffs = Vec::new();
    for (path, content) in &case.expect_files {
        let want = image::content_summary(content.as_bytes());
        let got = match ours.tree.get(path) {
            Some(e) if e.kind == "file" => e.content.clone().unwrap(),
            Some(e) => e.describe(),
            None => "absent".to_string(),
        };
        if got != want {
            diffs.push(Difference {
                key: format!("{path}:content"),
                ocibuild: got,
                buildah: format!("{want} (expected)"),
                allowed: None,
            });
        }
    }
    for (field, json) in &case.expect_config {
        let want: Value = serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("{}: expect_config {field}: {e}", case.name));
        let got = ours.config.get(field);
        if got != Some(&want) {
            diffs.push(Difference {
                key: format!("config:{field}"),
                ocibuild: got.map_or("unset".to_string(), Value::to_string),
                buildah: format!("{want} (expected)"),
                allowed: None,
            });
        }
    }
    diffs
}
