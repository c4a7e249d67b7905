//! Docker's and buildah's habits (`build .`, `-t/--tag`, `--file`, the digest alone on
//! standard output), the checks before a build (references, a reachable registry that
//! accepts the push, root), the tip of a misspelt flag, and the generated man pages and
//! shell completions.

use crate::common::*;
use serde_json::{json, Value};
use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `ocibuild ARGS` in the directory `dir` with extra environment variables.
fn ocibuild_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ocibuild"))
        .current_dir(dir)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("running ocibuild")
}

/// A context of one COPY onto scratch (no base image to pull).
fn scratch_context() -> tempfile::TempDir {
    let greeting = unique_string("habits");
    context_with(
        "FROM scratch\nCOPY greeting /greeting\n",
        &[("greeting", &greeting)],
    )
}

/// Whether the log shows a build step (`[1/2] (stage 0) FROM scratch`).
fn ran_a_step(stderr: &str) -> bool {
    stderr.lines().any(|l| l.starts_with("[1/"))
}

/// Asserts that a build failed quickly, before its first step; returns its stderr.
fn assert_failed_before_building(out: &Output, elapsed: Duration) -> String {
    let stderr = stderr_of(out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!ran_a_step(&stderr), "a step ran:\n{stderr}");
    assert!(
        elapsed < Duration::from_secs(10),
        "took {elapsed:?}:\n{stderr}"
    );
    assert!(stdout_of(out).is_empty(), "{}", stdout_of(out));
    stderr
}

/// A Docker config directory with the lab's credentials for its auth registry.
fn auth_config() -> tempfile::TempDir {
    let auth_reg = std::env::var("OCIBUILD_TEST_AUTH_REGISTRY").unwrap();
    let user = std::env::var("OCIBUILD_TEST_AUTH_USER").unwrap();
    let password = std::env::var("OCIBUILD_TEST_AUTH_PASSWORD").unwrap();
    let token = run(
        "sh",
        &["-c", &format!("printf %s '{user}:{password}' | base64")],
    );
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"auths": {auth_reg: {"auth": token.trim()}}});
    fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    dir
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn build_dot_with_two_tags_pushes_both_and_prints_only_the_digest() {
    let ctx = scratch_context();
    let repo = unique_repo("habits-tags");
    let (one, two) = (format!("{repo}:1"), format!("{repo}:two"));
    let digest_file = ctx.path().join("digest");
    let names_file = ctx.path().join("names");
    let out = ocibuild_in(
        ctx.path(),
        &[
            "build",
            ".",
            "-t",
            &one,
            "--tag",
            &two,
            "--digest-file",
            digest_file.to_str().unwrap(),
            "--image-name-with-digest-file",
            names_file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    let stdout = stdout_of(&out);
    let digest = stdout.strip_suffix('\n').expect("one line");
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71 && !digest.contains('\n'),
        "stdout is the digest alone: {stdout:?}"
    );
    for tag in [&one, &two] {
        assert_eq!(skopeo_inspect(tag)["Digest"], digest, "{tag}");
    }
    assert!(ran_a_step(&stderr_of(&out)), "the log is on stderr");
    assert_eq!(fs::read_to_string(&digest_file).unwrap(), digest);
    assert_eq!(
        fs::read_to_string(&names_file).unwrap(),
        format!("{repo}@{digest}\n{repo}@{digest}\n")
    );
}

#[test]
fn every_tag_names_the_tarball_and_the_oci_layout() {
    let ctx = scratch_context();
    let greeting = fs::read_to_string(ctx.path().join("greeting")).unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let tar = out_dir.path().join("image.tar");
    let layout = out_dir.path().join("layout");
    let out = ocibuild(&[
        "build",
        ctx.path().to_str().unwrap(),
        "--no-push",
        "-t",
        "app:1",
        "-t",
        "127.0.0.1:5000/team/app:latest",
        "--destination",
        "other/app:2",
        "--tar-path",
        tar.to_str().unwrap(),
        "--oci-layout-path",
        layout.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let digest = stdout_of(&out).trim().to_string();
    let manifest: Value = serde_json::from_str(&run(
        "tar",
        &["-xOf", tar.to_str().unwrap(), "manifest.json"],
    ))
    .unwrap();
    assert_eq!(
        manifest[0]["RepoTags"],
        json!([
            "docker.io/library/app:1",
            "127.0.0.1:5000/team/app:latest",
            "docker.io/other/app:2"
        ]),
        "{manifest}"
    );
    // One index entry per tag, as buildah and skopeo write them, all the same manifest.
    let index: Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let entries = index["manifests"].as_array().unwrap();
    let names: Vec<&str> = entries
        .iter()
        .map(|e| {
            assert_eq!(e["digest"], digest.as_str(), "{index}");
            e["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(names, ["1", "latest", "2"], "{index}");
    for tag in names {
        let reference = format!("oci:{}:{tag}", layout.display());
        let inspected: Value =
            serde_json::from_str(&run("skopeo", &["inspect", &reference])).unwrap();
        assert_eq!(inspected["Digest"], digest.as_str(), "{reference}");
        let bundle = out_dir.path().join(format!("bundle-{tag}"));
        let rootfs = umoci_unpack(&layout, tag, &bundle);
        assert_eq!(
            fs::read_to_string(rootfs.join("greeting")).unwrap(),
            greeting,
            "umoci unpacks tag {tag}"
        );
    }
}

#[test]
fn a_positional_context_and_context_are_not_both_taken() {
    let ctx = scratch_context();
    let dir = ctx.path().to_str().unwrap();
    let out = ocibuild(&["build", dir, "--context", dir, "--no-push"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("cannot be used with '--context"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn file_is_an_alias_of_dockerfile() {
    let ctx = context_with(
        "FROM scratch\n",
        &[("other.Dockerfile", "FROM scratch AS other\n")],
    );
    let out = ocibuild_in(
        ctx.path(),
        &["build", ".", "--file", "other.Dockerfile", "--dryrun"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stdout_of(&out).contains("FROM scratch AS other"),
        "{}",
        stdout_of(&out)
    );
}

#[test]
fn a_misspelt_tag_flag_suggests_tag_and_a_misspelt_target_target() {
    for (typo, flag) in [
        ("--tga", "'--tag'"),
        ("--tg", "'--tag'"),
        ("--targte", "'--target'"),
    ] {
        let out = ocibuild(&["build", ".", typo, "x"]);
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{typo}: {stderr}");
        assert!(
            stderr.contains(&format!("tip: a similar argument exists: {flag}")),
            "{typo}: {stderr}"
        );
    }
}

#[test]
fn an_invalid_destination_fails_before_any_step() {
    let ctx = scratch_context();
    for (dest, why) in [
        ("127.0.0.1:5000/Upper/app:1", "must be lowercase"),
        ("127.0.0.1:5000/app:bad tag", "whitespace"),
    ] {
        let start = Instant::now();
        let out = ocibuild(&["build", ctx.path().to_str().unwrap(), "-t", dest]);
        let stderr = assert_failed_before_building(&out, start.elapsed());
        assert!(stderr.contains(why), "{dest}: {stderr}");
        assert!(stderr.contains("--destination"), "{dest}: {stderr}");
    }
}

#[test]
fn a_registry_on_a_wrong_port_fails_in_seconds_naming_it() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let registry = format!("127.0.0.1:{port}");
    let ctx = scratch_context();
    let start = Instant::now();
    let out = ocibuild(&[
        "build",
        ctx.path().to_str().unwrap(),
        "-t",
        &format!("{registry}/app:1"),
    ]);
    let stderr = assert_failed_before_building(&out, start.elapsed());
    assert!(
        stderr.contains(&format!("cannot connect to registry {registry}")),
        "{stderr}"
    );
    assert!(stderr.trim().lines().count() == 1, "one line: {stderr}");
    assert!(stderr.len() < 300, "short: {stderr}");
    assert!(
        !stderr.contains("--insecure"),
        "plain HTTP is in use: {stderr}"
    );

    // With --no-push, kaniko checks the cache repository that layers are still pushed to.
    let start = Instant::now();
    let cache_repo = format!("{registry}/cache");
    let out = ocibuild(&[
        "build",
        ctx.path().to_str().unwrap(),
        "--no-push",
        "--cache",
        "--cache-repo",
        &cache_repo,
    ]);
    let stderr = assert_failed_before_building(&out, start.elapsed());
    assert!(
        stderr.contains(&format!("(--cache-repo {registry}/cache)")),
        "{stderr}"
    );
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn pushing_without_credentials_fails_before_building_unless_the_check_is_skipped() {
    let auth_reg = std::env::var("OCIBUILD_TEST_AUTH_REGISTRY").unwrap();
    let ctx = scratch_context();
    let dest = format!("{auth_reg}/habits-check:{}", std::process::id());
    let empty = tempfile::tempdir().unwrap();
    let no_credentials = [("DOCKER_CONFIG", empty.path().to_str().unwrap())];
    let build = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["build", ".", "-t", &dest];
        args.extend_from_slice(extra);
        let start = Instant::now();
        (ocibuild_in(ctx.path(), &args, env), start.elapsed())
    };

    let (out, elapsed) = build(&[], &no_credentials);
    let stderr = assert_failed_before_building(&out, elapsed);
    assert!(
        stderr.contains(&format!("cannot push to {dest}")),
        "{stderr}"
    );
    assert!(stderr.contains("wants them to push"), "{stderr}");
    assert!(stderr.contains("--skip-push-permission-check"), "{stderr}");

    // Skipped, the build runs and fails only at the push.
    let (out, _) = build(&["--skip-push-permission-check"], &no_credentials);
    let stderr = stderr_of(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(ran_a_step(&stderr), "{stderr}");
    assert!(stderr.contains("pushing to"), "{stderr}");

    // With the credentials, the check passes and the image is pushed.
    let config = auth_config();
    let with_credentials = [("DOCKER_CONFIG", config.path().to_str().unwrap())];
    let (out, _) = build(&[], &with_credentials);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let digest = stdout_of(&out).trim().to_string();
    let pushed = stderr_of(&out);
    assert!(
        pushed.contains(&format!("pushed {dest}@{digest}")),
        "{pushed}"
    );
}

#[test]
fn a_non_root_user_without_subordinate_ids_is_told_what_fails_and_the_fix() {
    // A copy of the binary in a directory everyone may enter (the build tree may not be),
    // copied by a child process (see `throwaway_root` on ETXTBSY).
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("ocibuild");
    run(
        "cp",
        &[env!("CARGO_BIN_EXE_ocibuild"), exe.to_str().unwrap()],
    );
    fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
    run("chmod", &["-R", "a+rX", dir.path().to_str().unwrap()]);
    let home = dir.path().join("home");
    fs::create_dir(&home).unwrap();
    run("chown", &["nobody:nogroup", home.to_str().unwrap()]);
    // A shared TMPDIR holding what a root build left (its lock unreadable by others):
    // not this user's to sweep, and no reason to fail.
    let tmp = tempfile::tempdir().unwrap();
    run("chmod", &["1777", tmp.path().to_str().unwrap()]);
    let roots = tmp.path().join("ocibuild-1-0-00000000");
    fs::create_dir(&roots).unwrap();
    let roots_lock = tmp.path().join("ocibuild-1-0-00000000.lock");
    fs::write(&roots_lock, "").unwrap();
    run("chmod", &["600", roots_lock.to_str().unwrap()]);
    let as_nobody = |extra: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(&exe)
            .args(["build", dir.path().to_str().unwrap(), "--no-push"])
            .args(extra)
            .env_clear()
            .env("HOME", &home)
            .env("PATH", "/usr/bin:/bin")
            .env("TMPDIR", tmp.path())
            .output()
            .expect("running setpriv (util-linux)")
    };
    let out = as_nobody(&[]);
    let stderr = stderr_of(&out);
    assert!(out.status.success(), "{stderr}");
    let warning = stderr
        .lines()
        .find(|l| l.starts_with("warning: building without root"))
        .unwrap_or_else(|| panic!("no warning: {stderr}"));
    for words in [
        "usermod --add-subuids 100000-165535 --add-subgids 100000-165535 nobody",
        "USER nobody",
        "COPY --chown",
    ] {
        assert!(warning.contains(words), "{words:?} missing: {warning}");
    }
    let out = as_nobody(&["--dryrun"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(roots.exists() && roots_lock.exists(), "root's entries stay");
}

/// The subcommands `ocibuild --help` lists (but `help`).
fn subcommands() -> Vec<String> {
    let help = stdout_of(&ocibuild(&["--help"]));
    let (_, commands) = help.split_once("Commands:\n").expect("a Commands: section");
    let names: Vec<String> = commands
        .lines()
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect();
    assert!(names.len() >= 6, "{help}");
    names
}

#[test]
fn the_man_page_covers_every_subcommand() {
    let out = ocibuild(&["man"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let page = stdout_of(&out);
    assert!(page.starts_with(".ie \\n(.g .ds Aq"), "roff: {page}");
    assert!(page.contains(".TH ocibuild 1"), "{page}");
    for name in subcommands() {
        assert!(
            page.contains(&format!("ocibuild\\-{name}(1)")),
            "{name}: {page}"
        );
    }

    // One page per subcommand, with its flags.
    let dir = tempfile::tempdir().unwrap();
    let out = ocibuild(&["man", "--out-dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    for name in subcommands() {
        let path = dir.path().join(format!("ocibuild-{name}.1"));
        assert!(path.is_file(), "{} missing", path.display());
    }
    let build = fs::read_to_string(dir.path().join("ocibuild-build.1")).unwrap();
    for flag in [
        "\\-\\-tag",
        "\\-\\-skip\\-push\\-permission\\-check",
        "CONTEXT",
    ] {
        assert!(build.contains(flag), "{flag}: {build}");
    }
    assert!(dir.path().join("ocibuild-executor-push.1").is_file());
}

#[test]
fn the_bash_completion_completes_the_build_flags() {
    let out = ocibuild(&["completions", "bash"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let script = stdout_of(&out);
    for word in [
        "--tag",
        "--destination",
        "--file",
        "--skip-push-permission-check",
    ] {
        assert!(script.contains(word), "{word} missing");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ocibuild.bash");
    fs::write(&path, &script).unwrap();
    run("bash", &["-n", path.to_str().unwrap()]);
    // Completing `ocibuild build --ta` in bash offers --tag.
    let probe = format!(
        "source {}; COMP_WORDS=(ocibuild build --ta); COMP_CWORD=2; _ocibuild ocibuild --ta build; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        path.display()
    );
    let offered = run("bash", &["-c", &probe]);
    assert!(offered.lines().any(|l| l == "--tag"), "{offered}");
    assert!(offered.lines().any(|l| l == "--target"), "{offered}");
}

#[test]
fn completions_and_man_pages_that_cannot_be_written_are_an_error_not_a_panic() {
    // /dev/full fails every write (ENOSPC), as a closed pipe would (`| head`).
    let commands: [&[&str]; 2] = [&["completions", "bash"], &["man"]];
    for args in commands {
        let full = fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_ocibuild"))
            .args(args)
            .stdout(full)
            .output()
            .unwrap();
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: writing the "),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
