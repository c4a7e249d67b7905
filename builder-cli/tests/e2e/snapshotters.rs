//! The snapshotters: overlay is chosen wherever it can be mounted and says so, the walk
//! takes over by itself where it cannot (and says why), both give byte-identical layers,
//! the layer store is shared by later builds, a fully cached build extracts and mounts
//! nothing, and no build (failing, killed or running) leaves a mount in the host's mount
//! table or a step directory behind.

use crate::common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `ocibuild build` of `ctx` with `--layer-store store` and `extra` flags, at debug
/// verbosity (so extractions and rootfs are logged).
fn build_in(ctx: &Path, store: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "build",
        "--context",
        ctx.to_str().unwrap(),
        "--insecure",
        "--insecure-pull",
        "--layer-store",
        store.to_str().unwrap(),
        "--verbosity",
        "debug",
    ];
    args.extend_from_slice(extra);
    ocibuild(&args)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(out: &Output) -> String {
    let text = stderr(out);
    assert!(out.status.success(), "build failed:\n{text}");
    text
}

/// The line naming the snapshotter.
fn snapshotter_line(log: &str) -> String {
    log.lines()
        .find(|l| l.starts_with("snapshotter: "))
        .unwrap_or_else(|| panic!("no snapshotter line in:\n{log}"))
        .to_string()
}

/// The entries of the store's step directory (running builds' step directories).
fn step_dirs(store: &Path) -> Vec<String> {
    match std::fs::read_dir(store.join("steps")) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// ocibuild's overlay mounts in a mount table (`/proc/PID/mountinfo`), one line each: their
/// source is `ocibuild`, so other tools' overlays (buildah, a container runtime) mounted
/// meanwhile on this machine do not count.
fn overlay_mounts(mountinfo: &str) -> Vec<String> {
    let text = std::fs::read_to_string(mountinfo).unwrap();
    text.lines()
        .filter(|l| {
            l.split(" - ")
                .nth(1)
                .is_some_and(|fs| fs.starts_with("overlay ocibuild "))
        })
        .map(String::from)
        .collect()
}

/// The host's overlay mounts now: init's mount table and this process's.
fn host_overlays() -> Vec<String> {
    let mut all = overlay_mounts("/proc/1/mountinfo");
    all.extend(overlay_mounts("/proc/self/mountinfo"));
    all.sort();
    all
}

/// Mount tables name ocibuild's overlays (source `ocibuild`), which is what the checks
/// for leftover mounts below look for: a RUN sees its root as one.
#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_runs_root_is_an_overlay_whose_source_is_ocibuild() {
    let reg = registry();
    let ctx = context_with(
        &format!(
            "FROM {reg}/busybox:latest\n\
             RUN grep -E '^[0-9]+ [0-9]+ [0-9:]+ / / .* - overlay ocibuild ' /proc/self/mountinfo\n"
        ),
        &[],
    );
    let store = tempfile::tempdir().unwrap();
    assert_ok(&build_in(
        ctx.path(),
        store.path(),
        &["--no-push", "--snapshotter", "overlay"],
    ));
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn auto_picks_overlay_here_and_says_so() {
    let reg = registry();
    let ctx = context_with(&format!("FROM {reg}/busybox:latest\nRUN touch /x\n"), &[]);
    let store = tempfile::tempdir().unwrap();
    let log = assert_ok(&build_in(ctx.path(), store.path(), &["--no-push"]));
    let line = snapshotter_line(&log);
    assert_eq!(
        line,
        format!(
            "snapshotter: overlay (layer store {})",
            store.path().display()
        )
    );
    assert!(
        log.contains("rootfs of stage 0: overlay of 1 layers"),
        "{log}"
    );
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn under_chroot_isolation_auto_walks_and_says_why_and_a_forced_overlay_is_refused() {
    let reg = registry();
    let ctx = context_with(&format!("FROM {reg}/busybox:latest\nRUN touch /x\n"), &[]);
    let store = tempfile::tempdir().unwrap();
    let chroot = ["--no-push", "--isolation", "chroot"];
    let log = assert_ok(&build_in(ctx.path(), store.path(), &chroot));
    assert_eq!(
        snapshotter_line(&log),
        "snapshotter: walk (overlay unavailable: --isolation chroot runs RUN without a mount \
         namespace of its own, where the overlay would be mounted)"
    );
    let forced = build_in(
        ctx.path(),
        store.path(),
        &[&chroot[..], &["--snapshotter", "overlay"]].concat(),
    );
    assert!(!forced.status.success());
    assert!(
        stderr(&forced)
            .contains("--snapshotter overlay: overlayfs cannot be used here: --isolation chroot"),
        "{}",
        stderr(&forced)
    );
}

/// A Dockerfile that exercises every kind of change: RUN, COPY and ADD with owners,
/// WORKDIR, deletions of files and directories, replaced (opaque) directories, links,
/// device nodes, a second stage copying from and mounting the first.
fn every_kind_of_change(reg: &str) -> tempfile::TempDir {
    let dockerfile = format!(
        "FROM {reg}/busybox:latest AS build\n\
         RUN mkdir -p /out/sub && echo hello > /out/a && echo deep > /out/sub/b && \\\n\
             echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd && \\\n\
             echo 'app:x:1000:' >> /etc/group\n\
         WORKDIR /work/dir\n\
         COPY --chown=app:app files/ /work/files/\n\
         COPY --chmod=0600 files/one /secret-one\n\
         ADD archive.tar /unpacked/\n\
         RUN rm -rf /usr && mkdir -p /usr/bin && cp /bin/busybox /usr/bin/sh-copy\n\
         RUN rm /etc/group && rm -rf /var && chmod 700 /out && chown 1000:1000 /out/a\n\
         RUN ln -s /out/a /link && ln /out/a /out/hard && mknod /dev-null-copy c 1 3 && \\\n\
             mkfifo /fifo && touch -d 2001-02-03 /out/sub/b\n\
         RUN mv /out/sub /out/moved && mkdir /out/sub && echo again > /out/sub/c\n\
         FROM {reg}/busybox:latest\n\
         COPY --from=build /out /copied\n\
         COPY --from=build --chown=7:8 /work/files /files-again\n\
         RUN --mount=type=bind,from=build,source=/out,target=/m cp -a /m /from-mount && \\\n\
             rm -rf /tmp && mkdir /tmp && rm /bin/vi\n\
         WORKDIR /app\n"
    );
    let ctx = context_with(
        &dockerfile,
        &[("files/one", "1\n"), ("files/nested/two", "2\n")],
    );
    let src = ctx.path().join("archive-src");
    std::fs::create_dir_all(src.join("inner")).unwrap();
    std::fs::write(src.join("inner/member"), "member\n").unwrap();
    run(
        "tar",
        &[
            "-cf",
            ctx.path().join("archive.tar").to_str().unwrap(),
            "-C",
            src.to_str().unwrap(),
            "inner",
        ],
    );
    std::fs::remove_dir_all(&src).unwrap();
    ctx
}

/// The layer digests of the manifest of `reference`, and the config digest.
fn digests(reference: &str) -> (Vec<String>, String) {
    let manifest: Value = skopeo_manifest(reference);
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    (
        layers,
        manifest["config"]["digest"].as_str().unwrap().into(),
    )
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn the_walk_and_overlay_give_identical_layers() {
    let reg = registry();
    let ctx = every_kind_of_change(&reg);
    let mut images = Vec::new();
    for snapshotter in ["overlay", "walk"] {
        let store = tempfile::tempdir().unwrap();
        let dest = format!("{}:1", unique_repo(&format!("same-{snapshotter}")));
        let flags = [
            "--snapshotter",
            snapshotter,
            "--reproducible",
            "--destination",
            &dest,
        ];
        let log = assert_ok(&build_in(ctx.path(), store.path(), &flags));
        assert!(
            snapshotter_line(&log).starts_with(&format!("snapshotter: {snapshotter} (")),
            "{log}"
        );
        images.push(digests(&dest));
    }
    let (overlay, walk) = (&images[0], &images[1]);
    assert_eq!(overlay.0.len(), walk.0.len(), "{overlay:?}\n{walk:?}");
    for (i, (o, w)) in overlay.0.iter().zip(&walk.0).enumerate() {
        assert_eq!(o, w, "layer {i} differs");
    }
    assert_eq!(overlay.1, walk.1, "the configs differ");
}

/// Runs `ocibuild ARGS` in a mount namespace of its own where an overlayfs is mounted
/// over `store`: overlayfs refuses a directory on another overlay as upper directory.
fn in_overlaid_store(store: &Path, scratch: &Path, args: &[&str]) -> Output {
    for dir in ["lower", "upper", "work"] {
        std::fs::create_dir_all(scratch.join(dir)).unwrap();
    }
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let (s, t) = (scratch.display(), store.display());
    let script = format!(
        "mount -t overlay overlay -o lowerdir={s}/lower,upperdir={s}/upper,workdir={s}/work \
         {t} && exec '{}' {}",
        env!("CARGO_BIN_EXE_ocibuild"),
        quoted.join(" ")
    );
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("running unshare")
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn the_walk_takes_over_where_overlay_cannot_mount_and_the_log_says_why() {
    let reg = registry();
    let ctx = context_with(
        &format!("FROM {reg}/busybox:latest\nRUN echo walked > /w\nCOPY f /f\n"),
        &[("f", "f\n")],
    );
    let (store, scratch) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let dest = format!("{}:1", unique_repo("fallback"));
    let base = [
        "build",
        "--context",
        ctx.path().to_str().unwrap(),
        "--insecure",
        "--insecure-pull",
        "--layer-store",
        store.path().to_str().unwrap(),
    ];
    let out = in_overlaid_store(
        store.path(),
        scratch.path(),
        &[&base[..], &["--destination", &dest]].concat(),
    );
    let log = assert_ok(&out);
    let line = snapshotter_line(&log);
    assert!(
        line.starts_with("snapshotter: walk (overlay unavailable: the kernel refused the overlay"),
        "{line}"
    );
    assert!(
        line.contains("upper"),
        "the kernel's reason is named: {line}"
    );
    let img = unpack(&format!("docker://{dest}"));
    assert_eq!(
        std::fs::read_to_string(img.rootfs.join("w")).unwrap(),
        "walked\n"
    );
    // Forced, the overlay is an error that says why.
    let forced = in_overlaid_store(
        store.path(),
        scratch.path(),
        &[&base[..], &["--no-push", "--snapshotter", "overlay"]].concat(),
    );
    let text = stderr(&forced);
    assert!(!forced.status.success(), "{text}");
    assert!(
        text.contains("--snapshotter overlay: overlayfs cannot be used here: the kernel refused"),
        "{text}"
    );
}

/// A layer that comes twice in a stage (two identical reproducible steps, both from the
/// cache) is stacked twice: an overlay takes each directory once, so the second is a copy.
#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_layer_twice_in_a_stage_is_stacked_twice() {
    let reg = registry();
    let ctx = context_with(
        &format!(
            "FROM {reg}/busybox:latest\nRUN echo same > /same\nRUN echo same > /same\n\
             ARG NONCE\nRUN echo $NONCE > /nonce && cat /same >> /nonce\n"
        ),
        &[],
    );
    let (cache, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cache_dir = cache.path().to_str().unwrap();
    let flags = |nonce: &'static str, dest: &str| -> Vec<String> {
        [
            "--reproducible",
            "--cache",
            "--cache-dir",
            cache_dir,
            "--build-arg",
            nonce,
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["--destination".to_string(), dest.to_string()])
        .collect()
    };
    let first = format!("{}:1", unique_repo("twice"));
    let args = flags("NONCE=1", &first);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_ok(&build_in(ctx.path(), store.path(), &args));
    let (layers, _) = digests(&first);
    assert_eq!(layers[1], layers[2], "the two steps made the same layer");
    let second = format!("{}:1", unique_repo("twice-again"));
    let args = flags("NONCE=2", &second);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = assert_ok(&build_in(ctx.path(), store.path(), &args));
    assert_eq!(log.matches("CACHE HIT").count(), 2, "{log}");
    let img = unpack(&format!("docker://{second}"));
    let nonce = std::fs::read_to_string(img.rootfs.join("nonce")).unwrap();
    assert_eq!(nonce, "2\nsame\n");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_stage_of_more_layers_than_one_overlay_stacks_goes_on_with_the_walk() {
    // busybox's layer and 499 COPY layers fill one overlay (on Linux 6.8+, which takes
    // one `lowerdir+` per layer); the next step needs 500.
    let limit = ocibuild_snapshot::overlay::max_step_lowers();
    let reg = registry();
    let mut dockerfile = format!("FROM {reg}/busybox:latest\n");
    for i in 0..limit {
        dockerfile.push_str(&format!("COPY x /f{i}\n"));
    }
    dockerfile.push_str(&format!(
        "RUN test \"$(ls / | grep -c '^f[0-9]')\" = {limit} && rm /f0 && echo y > /f1\n\
         RUN echo last > /last\n"
    ));
    let ctx = context_with(&dockerfile, &[("x", "x\n")]);
    let store = tempfile::tempdir().unwrap();
    let dest = format!("{}:1", unique_repo("many-lowers"));
    let before = host_overlays();
    let log = assert_ok(&build_in(
        ctx.path(),
        store.path(),
        &["--destination", &dest],
    ));
    assert!(
        log.contains(&format!(
            "{} layers are more than one overlay stacks ({limit}): this stage \
             continues with the walk snapshotter",
            limit + 1
        )),
        "{}",
        log.lines()
            .filter(|l| l.contains("layers"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(host_overlays(), before);
    let img = unpack(&format!("docker://{dest}"));
    let layers = img.layer_files();
    assert_eq!(layers.len(), 1 + limit + 2);
    // The walk's layers hold exactly what the steps changed, as overlay's would.
    let names = |layer: &Path| -> Vec<String> {
        let mut names: Vec<String> = tar_names(layer)
            .into_iter()
            .map(|n| n.trim_start_matches("./").to_string())
            .filter(|n| !n.is_empty() && n != ".")
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&layers[limit + 1]), [".wh.f0", "f1"]);
    assert_eq!(names(&layers[limit + 2]), ["last"]);
    assert!(!img.rootfs.join("f0").exists());
    assert_eq!(
        std::fs::read_to_string(img.rootfs.join("f1")).unwrap(),
        "y\n"
    );
    assert_eq!(
        std::fs::read_to_string(img.rootfs.join(format!("f{}", limit - 1))).unwrap(),
        "x\n"
    );
}

/// The extraction lines of a debug log.
fn extractions(log: &str) -> Vec<&str> {
    log.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("extracted sha256:"))
        .collect()
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_second_build_of_the_same_base_extracts_nothing() {
    let reg = registry();
    let store = tempfile::tempdir().unwrap();
    let first = context_with(&format!("FROM {reg}/busybox:latest\nRUN touch /one\n"), &[]);
    let log = assert_ok(&build_in(first.path(), store.path(), &["--no-push"]));
    assert_eq!(extractions(&log).len(), 1, "{log}");
    let layers = store.path().join("layers/sha256");
    let before = inodes(&layers);
    let second = context_with(
        &format!("FROM {reg}/busybox:latest\nRUN echo two > /two\n"),
        &[],
    );
    let log = assert_ok(&build_in(second.path(), store.path(), &["--no-push"]));
    assert!(extractions(&log).is_empty(), "{log}");
    assert!(
        !log.contains("pulled sha256:"),
        "nothing downloaded either: {log}"
    );
    let after = inodes(&layers);
    for (name, inode) in &before {
        assert_eq!(after.get(name), Some(inode), "{name} was replaced");
    }
    // The first build's step layer was adopted too: one more directory, none fewer.
    assert!(after.len() > before.len(), "{before:?} {after:?}");
}

/// The inode of each directory in `dir`, by name.
fn inodes(dir: &Path) -> std::collections::BTreeMap<String, u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().ino(),
            )
        })
        .collect()
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_fully_cached_build_extracts_and_mounts_nothing() {
    let reg = registry();
    let ctx = context_with(
        &format!("FROM {reg}/busybox:latest\nRUN echo a > /a\nCOPY f /f\nWORKDIR /w\n"),
        &[("f", "f\n")],
    );
    let (cache, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cache_flags = [
        "--no-push",
        "--cache",
        "--cache-dir",
        cache.path().to_str().unwrap(),
    ];
    let first = assert_ok(&build_in(ctx.path(), store.path(), &cache_flags));
    assert!(first.contains("rootfs of stage 0: overlay"), "{first}");
    let fresh = tempfile::tempdir().unwrap();
    let again = assert_ok(&build_in(ctx.path(), fresh.path(), &cache_flags));
    assert_eq!(again.matches("CACHE HIT").count(), 3, "{again}");
    assert!(extractions(&again).is_empty(), "{again}");
    assert!(
        !again.contains("rootfs of stage"),
        "no rootfs was made: {again}"
    );
    let layers: Vec<_> = std::fs::read_dir(fresh.path().join("layers/sha256"))
        .unwrap()
        .collect();
    assert!(layers.is_empty(), "the fresh store stays empty");
    assert!(step_dirs(fresh.path()).is_empty());
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_failing_run_leaves_no_mount_and_no_step_directory_and_the_committed_layers_in_the_store() {
    let reg = registry();
    let ctx = context_with(
        &format!("FROM {reg}/busybox:latest\nRUN echo kept > /k\nRUN echo partial > /p && false\n"),
        &[],
    );
    let store = tempfile::tempdir().unwrap();
    let before = host_overlays();
    let out = build_in(ctx.path(), store.path(), &["--no-push"]);
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("exited with code 1"),
        "{}",
        stderr(&out)
    );
    assert_eq!(host_overlays(), before);
    assert!(
        step_dirs(store.path()).is_empty(),
        "{:?}",
        step_dirs(store.path())
    );
    // busybox's layer and the first RUN's, adopted although the build failed; nothing of
    // the failed RUN.
    let layers = store.path().join("layers/sha256");
    let stored: Vec<_> = inodes(&layers).into_keys().collect();
    assert_eq!(stored.len(), 2, "{stored:?}");
    let found = |name: &str| stored.iter().any(|d| layers.join(d).join(name).exists());
    assert!(found("k") && !found("p"), "{stored:?}");
}

/// Starts a build of `ctx` whose last RUN sleeps, and returns it once that RUN runs (its
/// stderr lines so far, and a receiver of the rest).
fn start_sleeping_build(ctx: &Path, store: &Path) -> (Child, Vec<String>, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ocibuild"))
        .args([
            "build",
            "--context",
            ctx.to_str().unwrap(),
            "--no-push",
            "--insecure-pull",
            "--layer-store",
            store.to_str().unwrap(),
            "--verbosity",
            "debug",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (sender, receiver) = mpsc::channel();
    let pipe = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !seen.iter().any(|l: &String| l == "sleeping") {
        let left = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("the RUN did not start:\n{}", seen.join("\n")),
        }
    }
    (child, seen, receiver)
}

/// A build killed (SIGTERM, or SIGKILL) in the middle of a RUN: while it ran, nothing was
/// in the host's mount table; after, nothing is; its step directory is left (the process
/// could not remove it) and the next build that opens the store removes it.
fn a_killed_build_leaves_nothing(signal: &str) {
    let reg = registry();
    let ctx = context_with(
        &format!(
            "FROM {reg}/busybox:latest\nRUN echo done > /done\n\
             RUN echo sleeping && sleep 60\n"
        ),
        &[],
    );
    let store = tempfile::tempdir().unwrap();
    let before = host_overlays();
    let (mut child, seen, _rest) = start_sleeping_build(ctx.path(), store.path());
    assert!(
        seen.iter()
            .any(|l| l.contains("rootfs of stage 0: overlay")),
        "{seen:?}"
    );
    assert_eq!(
        host_overlays(),
        before,
        "a running build mounts nothing on the host"
    );
    let own = overlay_mounts(&format!("/proc/{}/mountinfo", child.id()));
    assert!(own.is_empty(), "nor in its own mount table: {own:?}");
    assert!(
        !step_dirs(store.path()).is_empty(),
        "the step directories are in use"
    );
    run("kill", &[signal, &child.id().to_string()]);
    child.wait().unwrap();
    // The sandbox dies with the builder (its parent-death signal); give it a moment.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(host_overlays(), before);
    let next = context_with(&format!("FROM {reg}/busybox:latest\nLABEL next=1\n"), &[]);
    assert_ok(&build_in(next.path(), store.path(), &["--no-push"]));
    assert!(
        step_dirs(store.path()).is_empty(),
        "left after the next start: {:?}",
        step_dirs(store.path())
    );
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_build_terminated_mid_run_leaves_no_mount_and_its_step_dirs_go_at_the_next_start() {
    a_killed_build_leaves_nothing("-TERM");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_build_killed_mid_run_leaves_no_mount_and_its_step_dirs_go_at_the_next_start() {
    a_killed_build_leaves_nothing("-KILL");
}

/// Blocks allocated (512-byte units) for every file named `name` below `dir`.
fn allocated_blocks(dir: &Path, name: &str) -> Vec<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else if entry.file_name() == name && meta.is_file() {
                found.push(meta.blocks());
            }
        }
    }
    found
}

/// A 64 MiB sparse file in the context stays sparse on disk when COPY puts it into the
/// rootfs (with either snapshotter): copied with SEEK_DATA/SEEK_HOLE, not written in full.
#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn copy_keeps_the_holes_of_a_sparse_file() {
    for snapshotter in ["overlay", "walk"] {
        let ctx = context_with(
            "FROM scratch\nCOPY sparse.bin /sparse.bin\nCOPY small.txt /small.txt\n",
            &[("small.txt", "small\n")],
        );
        let file = std::fs::File::create(ctx.path().join("sparse.bin")).unwrap();
        file.set_len(64 << 20).unwrap();
        drop(file);
        let store = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let out = build_in(
            ctx.path(),
            store.path(),
            &[
                "--snapshotter",
                snapshotter,
                "--no-push",
                "--work-dir",
                work.path().to_str().unwrap(),
            ],
        );
        assert_ok(&out);
        let mut blocks = allocated_blocks(store.path(), "sparse.bin");
        blocks.extend(allocated_blocks(work.path(), "sparse.bin"));
        assert!(
            !blocks.is_empty(),
            "{snapshotter}: the copied file is kept somewhere"
        );
        for b in blocks {
            assert!(
                b < 2048,
                "{snapshotter}: a 64 MiB sparse file took {b} blocks on disk"
            );
        }
    }
}
