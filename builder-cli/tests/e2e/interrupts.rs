//! SIGINT, SIGTERM and SIGHUP during a build: ocibuild stops the running RUN, kills every
//! process of it, removes its work directory and the fetched context, and exits with
//! 128 + the signal's number within a few seconds; a second signal ends it at once. The
//! temporary directories a killed ocibuild (SIGKILL) leaves are removed by the next one.
//!
//! Every build runs with `TMPDIR` set to a directory of the test's own, where ocibuild
//! makes its (default) work directory and unpacks the `tar://` context; the RUN is
//! `sleep <marker>` with a marker no other process on the machine has.

use crate::common::*;
use crate::sandbox::{host_processes, sleep_seconds, KillOnDrop};
use std::fs;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long the build may take to reach its RUN (pulling busybox from the lab).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long ocibuild may take to clean up and exit after a signal.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// An `ocibuild build` of a `tar://` context whose Dockerfile RUNs `sleep <marker>`, with
/// `TMPDIR` of its own; killed on drop if still running.
struct SleepingBuild {
    child: Child,
    tmpdir: tempfile::TempDir,
    marker: String,
    _inputs: tempfile::TempDir,
    _cleanup: KillOnDrop,
}

impl SleepingBuild {
    /// Starts the build with `--isolation isolation` and waits until its RUN runs.
    fn start(isolation: &str, marker_prefix: &str) -> SleepingBuild {
        let marker = sleep_seconds(marker_prefix);
        let inputs = context_with(
            &format!("FROM {}/busybox:latest\nRUN sleep {marker}\n", registry()),
            &[],
        );
        let tar = inputs.path().join("ctx.tar.gz");
        let context = format!("tar://{}", tar.display());
        run(
            "tar",
            &[
                "-czf",
                tar.to_str().unwrap(),
                "-C",
                inputs.path().to_str().unwrap(),
                "Dockerfile",
            ],
        );
        let tmpdir = tempfile::tempdir().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ocibuild"))
            .args([
                "build",
                "--no-push",
                "--isolation",
                isolation,
                "-c",
                &context,
            ])
            .env("TMPDIR", tmpdir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("running ocibuild");
        let mut build = SleepingBuild {
            child,
            tmpdir,
            _cleanup: KillOnDrop(marker.clone()),
            marker,
            _inputs: inputs,
        };
        build.wait_for_the_run();
        build
    }

    fn wait_for_the_run(&mut self) {
        let started = Instant::now();
        while host_processes(&self.marker).is_empty() {
            let exited = self.child.try_wait().unwrap();
            assert!(
                exited.is_none(),
                "ocibuild ended before its RUN: {exited:?}"
            );
            assert!(started.elapsed() < START_TIMEOUT, "the RUN never started");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            !self.temp_dirs().is_empty(),
            "the work directory is in TMPDIR while the build runs"
        );
    }

    /// Sends `signal` (a `kill -s` name) to ocibuild.
    fn signal(&self, signal: &str) {
        run("kill", &["-s", signal, &self.child.id().to_string()]);
    }

    /// Waits for ocibuild to exit (failing after `limit`); its status and how long it took.
    fn exit_within(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let sent = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, sent.elapsed());
            }
            assert!(
                sent.elapsed() < limit,
                "ocibuild still runs {limit:?} after the signal"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `ocibuild-*` entries (directories and their lock files) in its TMPDIR.
    fn temp_dirs(&self) -> Vec<String> {
        ocibuild_entries(self.tmpdir.path())
    }

    /// Asserts that nothing of the build is left: no process of its RUN, no temporary
    /// directory, no mount.
    fn assert_nothing_left(&self) {
        let left = host_processes(&self.marker);
        assert!(
            left.is_empty(),
            "`sleep {}` still runs as {left:?}",
            self.marker
        );
        assert_eq!(self.temp_dirs(), Vec::<String>::new(), "left in TMPDIR");
        let mounts = fs::read_to_string("/proc/1/mountinfo").unwrap();
        let tmpdir = self.tmpdir.path().to_str().unwrap();
        let left: Vec<&str> = mounts.lines().filter(|l| l.contains(tmpdir)).collect();
        assert!(left.is_empty(), "mounts left: {left:?}");
    }
}

impl Drop for SleepingBuild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `ocibuild-*` entries of `dir`.
fn ocibuild_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("ocibuild-"))
        .collect();
    names.sort();
    names
}

/// `signal` during the RUN under `--isolation isolation`: exit `code` within
/// [`STOP_TIMEOUT`], nothing left.
fn signal_stops_the_run_and_cleans_up(
    isolation: &str,
    marker_prefix: &str,
    signal: &str,
    code: i32,
) {
    let mut build = SleepingBuild::start(isolation, marker_prefix);
    build.signal(signal);
    let (status, took) = build.exit_within(Duration::from_secs(10));
    assert_eq!(status.code(), Some(code), "{status:?}");
    assert!(took <= STOP_TIMEOUT, "took {took:?} to stop");
    build.assert_nothing_left();
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn sigterm_during_a_run_kills_it_removes_the_work_and_context_dirs_and_exits_143() {
    signal_stops_the_run_and_cleans_up("namespaces", "8811", "TERM", 143);
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn sigterm_during_a_chroot_run_leaves_no_process_of_it_behind() {
    signal_stops_the_run_and_cleans_up("chroot", "8812", "TERM", 143);
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn sigint_during_a_run_exits_130_and_cleans_up() {
    signal_stops_the_run_and_cleans_up("namespaces", "8813", "INT", 130);
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_second_signal_exits_at_once() {
    let mut build = SleepingBuild::start("namespaces", "8814");
    build.signal("TERM");
    build.signal("TERM");
    let (status, took) = build.exit_within(STOP_TIMEOUT);
    assert_eq!(status.code(), Some(143), "{status:?}");
    assert!(took < Duration::from_millis(900), "took {took:?} to exit");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn the_temporary_dirs_of_a_killed_ocibuild_are_removed_by_the_next_one() {
    let mut killed = SleepingBuild::start("namespaces", "8815");
    killed.signal("KILL");
    killed.exit_within(STOP_TIMEOUT);
    let stale = killed.temp_dirs();
    assert!(
        stale.iter().any(|name| name.ends_with(".lock")),
        "a SIGKILLed ocibuild leaves its directories: {stale:?}"
    );
    // A directory that is not one of ocibuild's (no lock file) stays.
    let own = killed.tmpdir.path().join("ocibuild-not-a-build");
    fs::create_dir(&own).unwrap();
    let ctx = context_with(
        &format!("FROM {}/busybox:latest\nRUN true\n", registry()),
        &[],
    );
    let out = ocibuild_with_env(
        &["build", "--no-push", "-c", ctx.path().to_str().unwrap()],
        &[("TMPDIR", killed.tmpdir.path().to_str().unwrap())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(killed.temp_dirs(), ["ocibuild-not-a-build"]);
}

/// The moments (ms after the start) at which whole builds are interrupted: during the
/// base image's pull, the COPY of 1 MiB, each RUN, and the layers' commits and pushes.
const INTERRUPT_AT_MS: [u64; 4] = [300, 1200, 2300, 3500];

/// A build of several steps (a COPY, two RUNs of about a second each whose `sh` carries a
/// marker, a second COPY) with the layer cache in a directory, its own layer store and
/// `TMPDIR`, pushed to the lab registry with `--reproducible`; interrupted and then
/// built to the end.
struct WholeBuild {
    ctx: tempfile::TempDir,
    cache: tempfile::TempDir,
    store: tempfile::TempDir,
    tmpdir: tempfile::TempDir,
    repo: String,
    marker: String,
    _cleanup: KillOnDrop,
}

impl WholeBuild {
    fn new(name: &str) -> WholeBuild {
        let marker = unique_string("interrupted");
        let ctx = context_with(
            &format!(
                "FROM {}/busybox:latest\n\
                 COPY big.bin /big.bin\n\
                 RUN sh -c 'sleep 1; cat /big.bin /big.bin > /twice' {marker}\n\
                 RUN sh -c 'sleep 1; echo two > /two' {marker}\n\
                 COPY small.txt /small.txt\n",
                registry()
            ),
            &[("small.txt", "small\n")],
        );
        fs::write(
            ctx.path().join("big.bin"),
            incompressible(b"interrupts", 1 << 20),
        )
        .unwrap();
        WholeBuild {
            ctx,
            cache: tempfile::tempdir().unwrap(),
            store: tempfile::tempdir().unwrap(),
            tmpdir: tempfile::tempdir().unwrap(),
            repo: unique_repo(name),
            _cleanup: KillOnDrop(marker.clone()),
            marker,
        }
    }

    /// The command building `:tag`, with the cache directory when `cached`.
    fn command(&self, tag: &str, cached: bool) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ocibuild"));
        command
            .args(["build", "--reproducible", "-c"])
            .arg(self.ctx.path())
            .arg("--layer-store")
            .arg(self.store.path())
            .args(["-d", &format!("{}:{tag}", self.repo)])
            .env("TMPDIR", self.tmpdir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if cached {
            command
                .arg("--cache")
                .arg("--cache-dir")
                .arg(self.cache.path());
        }
        command
    }

    /// Builds `:tag` to the end; its manifest digest.
    fn complete(&self, tag: &str, cached: bool) -> String {
        let out = self.command(tag, cached).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), ":{tag} failed:\n{stderr}");
        let digest = skopeo_inspect(&format!("{}:{tag}", self.repo))["Digest"].clone();
        digest.as_str().unwrap().to_string()
    }

    /// Starts building `:tag` with the cache, sends `signal` after `delay`, and waits for
    /// the end; whether it was still running when the signal came.
    fn interrupt(&self, tag: &str, delay: Duration, signal: &str) -> bool {
        let mut child = self
            .command(tag, true)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        // A build taking most of its steps from the cache may be done already.
        let running = child.try_wait().unwrap().is_none();
        if running {
            run("kill", &["-s", signal, &child.id().to_string()]);
        }
        let sent = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                sent.elapsed() < STOP_TIMEOUT * 3,
                "SIG{signal} did not end it"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        if running && signal == "TERM" {
            // (Or done between the check and the signal.)
            assert!(status.code() == Some(143) || status.success(), "{status:?}");
        }
        running
    }

    /// Asserts that no process of the build's RUNs is left (they may take a moment to see
    /// their parent gone), and no mount of its directories in this process's or in
    /// init's mount namespace.
    fn assert_no_process_or_mount(&self) {
        let started = Instant::now();
        while !host_processes(&self.marker).is_empty() {
            assert!(
                started.elapsed() < START_TIMEOUT / 6,
                "RUN processes left: {:?}",
                host_processes(&self.marker)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let dirs = [self.tmpdir.path(), self.store.path(), self.cache.path()];
        for table in ["/proc/self/mountinfo", "/proc/1/mountinfo"] {
            let mounts = fs::read_to_string(table).unwrap();
            let left: Vec<&str> = mounts
                .lines()
                .filter(|l| dirs.iter().any(|d| l.contains(d.to_str().unwrap())))
                .collect();
            assert!(left.is_empty(), "mounts left in {table}: {left:?}");
        }
    }

    /// Asserts that each tag the interrupted builds left names a whole image: skopeo
    /// copies it (every blob there, each matching its digest).
    fn assert_tags_whole(&self, tags: &[String]) {
        let url = format!("http://{}/v2/{}/tags/list", registry(), {
            self.repo.split_once('/').unwrap().1
        });
        let listed: serde_json::Value = serde_json::from_str(&run("curl", &["-s", &url])).unwrap();
        let listed: Vec<&str> = listed["tags"]
            .as_array()
            .map(|t| t.iter().filter_map(|t| t.as_str()).collect())
            .unwrap_or_default();
        for tag in tags.iter().filter(|t| listed.contains(&t.as_str())) {
            let img = unpack(&format!("docker://{}:{tag}", self.repo));
            assert!(img.rootfs.join("two").exists(), ":{tag} is incomplete");
        }
    }
}

/// Interrupts the build with `signal` at each of [`INTERRUPT_AT_MS`], checking what each
/// left; then builds it to the end with the same cache: the image of a clean build, and
/// nothing of any build left in `TMPDIR`, in the cache directory's `tmp/` or in the layer
/// store's step and temporary directories.
fn builds_interrupted_at_several_moments(name: &str, signal: &str) {
    let build = WholeBuild::new(name);
    let clean = build.complete("clean", false);
    let mut tags = Vec::new();
    let mut interrupted = 0;
    for (i, at) in INTERRUPT_AT_MS.iter().enumerate() {
        let tag = format!("i{i}");
        if build.interrupt(&tag, Duration::from_millis(*at), signal) {
            interrupted += 1;
        }
        build.assert_no_process_or_mount();
        if signal == "TERM" {
            assert_eq!(ocibuild_entries(build.tmpdir.path()), Vec::<String>::new());
        }
        tags.push(tag);
    }
    assert!(
        interrupted >= 2,
        "most builds were interrupted, not finished"
    );
    build.assert_tags_whole(&tags);
    assert_eq!(
        build.complete("final", true),
        clean,
        "the image of a clean build"
    );
    assert_eq!(ocibuild_entries(build.tmpdir.path()), Vec::<String>::new());
    crate::faults::assert_no_temp_files(build.cache.path());
    for left in ["steps", "tmp"] {
        let dir = build.store.path().join(left);
        let names: Vec<_> = fs::read_dir(&dir)
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(
            names.is_empty(),
            "left in the layer store's {left}/: {names:?}"
        );
    }
    build.assert_no_process_or_mount();
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn builds_killed_at_several_moments_leave_a_usable_cache_and_no_broken_tag() {
    builds_interrupted_at_several_moments("killed-builds", "KILL");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn builds_terminated_at_several_moments_clean_up_and_leave_a_usable_cache() {
    builds_interrupted_at_several_moments("terminated-builds", "TERM");
}
