//! End-to-end behaviour of `RUN --mount` (cache, secret, bind, tmpfs) and `RUN --network`
//! against the lab registry: what a RUN can see, what it leaves behind (read back with
//! skopeo, umoci, GNU tar and gzip — tools independent of ocibuild), how cache mounts
//! persist and are shared between processes, and how mounts interact with the layer cache.

use crate::common::*;
use std::fs;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `ocibuild build --context CTX ARGS...` (not asserted).
fn build(ctx: &Path, args: &[&str]) -> Output {
    let mut all = vec!["build", "--context", ctx.to_str().unwrap()];
    all.extend_from_slice(args);
    ocibuild(&all)
}

/// `ocibuild build --context CTX ARGS...`, panicking with the log when it fails.
fn build_ctx_ok(ctx: &Path, args: &[&str]) -> Output {
    let mut all = vec!["--context", ctx.to_str().unwrap()];
    all.extend_from_slice(args);
    build_ok(&all)
}

fn read(root: &Path, path: &str) -> String {
    let file = root.join(path.trim_start_matches('/'));
    fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// Every regular file under `dir` (recursively) whose name is `name`.
fn find_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                todo.push(entry.path());
            } else if kind.is_file() && entry.file_name() == name {
                found.push(entry.path());
            }
        }
    }
    found
}

/// Every regular file under `dir` (recursively; symlinks are not followed).
fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                todo.push(entry.path());
            } else if kind.is_file() {
                found.push(entry.path());
            }
        }
    }
    found
}

/// The entry names of every layer of an unpacked image, as GNU tar lists them.
fn all_tar_names(img: &Unpacked) -> Vec<String> {
    img.layer_files()
        .iter()
        .flat_map(|layer| tar_names(layer))
        .map(|n| n.trim_start_matches("./").to_string())
        .collect()
}

/// The decompressed bytes of every layer of an unpacked image (decompressed by gzip).
fn layer_contents(img: &Unpacked) -> Vec<Vec<u8>> {
    img.layer_files()
        .iter()
        .map(|layer| {
            let out = Command::new("gzip")
                .arg("-dc")
                .arg(layer)
                .output()
                .expect("running gzip");
            assert!(out.status.success(), "gzip -dc {}", layer.display());
            out.stdout
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// One step of a build log and its cache result (`None`: not looked up).
#[derive(Debug)]
struct Step {
    instruction: String,
    hit: Option<bool>,
}

/// The steps of a build log: `[N/M] (stage s) INSTRUCTION` lines, each followed by at most
/// one `CACHE HIT <key>` / `CACHE MISS <key>` line.
fn steps(stderr: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for line in stderr.lines() {
        if line.starts_with('[') && line.contains("] (stage ") {
            steps.push(Step {
                instruction: line.split_once(") ").unwrap().1.to_string(),
                hit: None,
            });
            continue;
        }
        let trimmed = line.trim_start();
        let hit = if trimmed.starts_with("CACHE HIT ") {
            Some(true)
        } else if trimmed.starts_with("CACHE MISS ") {
            Some(false)
        } else {
            None
        };
        if let Some(hit) = hit {
            let step = steps.last_mut().expect("a CACHE line before any step");
            assert!(
                step.hit.is_none(),
                "two CACHE lines for one step:\n{stderr}"
            );
            step.hit = Some(hit);
        }
    }
    steps
}

/// The cache result of the one step whose instruction contains `marker`.
fn result_of(stderr: &str, marker: &str) -> Option<bool> {
    let found: Vec<Step> = steps(stderr)
        .into_iter()
        .filter(|s| s.instruction.contains(marker))
        .collect();
    assert_eq!(found.len(), 1, "one step containing {marker:?}:\n{stderr}");
    found[0].hit
}

// ---------------------------------------------------------------------------------------
// type=cache
// ---------------------------------------------------------------------------------------

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn cache_mount_keeps_a_download_across_processes_and_leaves_no_trace_in_the_image() {
    let reg = registry();
    let body = unique_string("downloaded");
    let server = Counter::start(body.clone());
    let mounts = tempfile::tempdir().unwrap();
    let mounts_dir = mounts.path().to_str().unwrap();
    let ctx = context_with(
        &format!(
            "FROM {reg}/busybox:latest\n\
             RUN --mount=type=cache,target=/var/cache/dl,id=dl sh -c '[ -f /var/cache/dl/file ] || \
             wget -q -O /var/cache/dl/file http://127.0.0.1:{}/file; cp /var/cache/dl/file /got'\n",
            server.port
        ),
        &[],
    );

    // First build: the cache is empty, so the RUN downloads.
    let first = format!("{}:1", unique_repo("cachemount"));
    build_ctx_ok(
        ctx.path(),
        &["--destination", &first, "--cache-mounts-dir", mounts_dir],
    );
    assert_eq!(server.count(), 1, "the first build downloads once");

    // The cache directory on the host holds the download.
    let files = find_named(mounts.path(), "file");
    assert_eq!(files.len(), 1, "one cached file: {files:?}");
    assert_eq!(fs::read_to_string(&files[0]).unwrap(), body);

    // Second build: another process, no layer cache, same cache mount directory.
    let second = format!("{}:2", unique_repo("cachemount"));
    let out = build_ctx_ok(
        ctx.path(),
        &["--destination", &second, "--cache-mounts-dir", mounts_dir],
    );
    assert!(
        !stderr_of(&out).contains("CACHE HIT"),
        "the layer cache is off, so the RUN really ran:\n{}",
        stderr_of(&out)
    );
    assert_eq!(
        server.count(),
        1,
        "the second build found the file in the cache mount and did not download"
    );
    assert_eq!(fs::read_to_string(&files[0]).unwrap(), body);

    for dest in [&first, &second] {
        let img = unpack(&format!("docker://{dest}"));
        assert_eq!(read(&img.rootfs, "got"), body, "{dest}: the RUN copied it");
        // Nothing of the cache mount is in any layer, nor in the root filesystem; the
        // target's parent /var/cache did not exist in busybox and was created only for the
        // step, so it is gone too.
        let names = all_tar_names(&img);
        assert!(names.iter().any(|n| n == "got"), "{names:?}");
        assert!(
            !names.iter().any(|n| n.starts_with("var/cache")),
            "{dest}: no var/cache entries in any layer: {names:?}"
        );
        assert!(!img.rootfs.join("var/cache/dl/file").exists());
        assert!(!img.rootfs.join("var/cache/dl").exists());
        assert!(
            !img.rootfs.join("var/cache").exists(),
            "the mount point created for the step is not in the image"
        );
        assert!(img.rootfs.join("var").is_dir(), "busybox's /var is kept");
    }
}

/// Starts two `ocibuild build`s of `ctx` at once with `--build-arg TAG=a` / `TAG=b` and the
/// same cache mount directory; waits for both and panics if one fails.
fn two_builds_at_once(ctx: &Path, mounts_dir: &Path, name: &str) {
    let children: Vec<_> = ["a", "b"]
        .iter()
        .map(|tag| {
            let dest = format!("{}:{tag}", unique_repo(name));
            let child = Command::new(env!("CARGO_BIN_EXE_ocibuild"))
                .args([
                    "build",
                    "--context",
                    ctx.to_str().unwrap(),
                    "--destination",
                    &dest,
                    "--build-arg",
                    &format!("TAG={tag}"),
                    "--cache-mounts-dir",
                    mounts_dir.to_str().unwrap(),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("starting ocibuild");
            (tag, child)
        })
        .collect();
    for (tag, child) in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "build {tag} failed:\n{}",
            stderr_of(&out)
        );
    }
}

/// A Dockerfile whose RUN logs `start TAG T` to `/c/log` in a cache mount with `sharing`,
/// then waits (up to 6 s) until two `start` lines are in the log — a barrier that only
/// passes at once when the other build's RUN runs at the same time — then sleeps 1 s and
/// logs `end TAG T`. T is /proc/uptime in centiseconds (busybox `date` has no `%N`).
fn barrier_dockerfile(reg: &str, sharing: &str) -> String {
    format!(
        "FROM {reg}/busybox:latest\n\
         ARG TAG\n\
         RUN --mount=type=cache,target=/c,id=turns,sharing={sharing} sh -c '\
         now() {{ cut -d\" \" -f1 /proc/uptime | tr -d .; }}; \
         echo \"start $TAG $(now)\" >> /c/log; \
         i=0; while [ $i -lt 60 ] && [ $(grep -c ^start /c/log) -lt 2 ]; do sleep 0.1; i=$((i+1)); done; \
         sleep 1; \
         echo \"end $TAG $(now)\" >> /c/log'\n"
    )
}

/// The `(event, tag, time)` lines of the log the two builds wrote into their cache mount.
fn turn_log(mounts_dir: &Path) -> Vec<(String, String, u64)> {
    let logs = find_named(mounts_dir, "log");
    assert_eq!(logs.len(), 1, "one log in the cache mount dir: {logs:?}");
    let text = fs::read_to_string(&logs[0]).unwrap();
    let lines: Vec<(String, String, u64)> = text
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(w.len(), 3, "log line {l:?}");
            (w[0].to_string(), w[1].to_string(), w[2].parse().unwrap())
        })
        .collect();
    assert_eq!(lines.len(), 4, "two starts and two ends:\n{text}");
    lines
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn sharing_locked_serialises_two_concurrent_builds_on_one_cache_id() {
    let reg = registry();
    let mounts = tempfile::tempdir().unwrap();
    let ctx = context_with(&barrier_dockerfile(&reg, "locked"), &[]);
    two_builds_at_once(ctx.path(), mounts.path(), "locked");
    let log = turn_log(mounts.path());
    let events: Vec<&str> = log.iter().map(|(e, _, _)| e.as_str()).collect();
    assert_eq!(
        events,
        ["start", "end", "start", "end"],
        "with sharing=locked the second RUN starts only after the first ended: {log:?}"
    );
    assert_eq!(log[0].1, log[1].1, "{log:?}");
    assert_eq!(log[2].1, log[3].1, "{log:?}");
    assert_ne!(log[0].1, log[2].1, "both builds ran: {log:?}");
    assert!(log[2].2 >= log[1].2, "start after the end: {log:?}");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn sharing_shared_lets_two_concurrent_builds_use_one_cache_id_at_once() {
    // The contrast to the locked test: the same barrier passes because both RUNs are in the
    // cache mount at the same time, and both write into the same directory.
    let reg = registry();
    let mounts = tempfile::tempdir().unwrap();
    let ctx = context_with(&barrier_dockerfile(&reg, "shared"), &[]);
    two_builds_at_once(ctx.path(), mounts.path(), "shared");
    let log = turn_log(mounts.path());
    let events: Vec<&str> = log.iter().map(|(e, _, _)| e.as_str()).collect();
    assert_eq!(
        events,
        ["start", "start", "end", "end"],
        "with sharing=shared both RUNs overlap: {log:?}"
    );
    assert_ne!(log[0].1, log[1].1, "{log:?}");
}

// ---------------------------------------------------------------------------------------
// type=secret
// ---------------------------------------------------------------------------------------

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn secrets_are_readable_in_the_run_and_appear_nowhere_else() {
    let reg = registry();
    let npmrc = unique_string("npmrc-value");
    let token = unique_string("token-value");
    let secret_dir = tempfile::tempdir().unwrap();
    let npmrc_file = secret_dir.path().join("npmrc");
    fs::write(&npmrc_file, &npmrc).unwrap();
    let ctx = context_with(
        &format!(
            "FROM {reg}/busybox:latest\n\
             RUN --mount=type=secret,id=npmrc,target=/root/.npmrc --mount=type=secret,id=tok,env=TOKEN \
             sh -c 'sha256sum /root/.npmrc > /npmrc.sum; [ -n \"$TOKEN\" ] && echo \"$TOKEN\" | sha256sum > /tok.sum'\n\
             RUN --mount=type=secret,id=npmrc sh -c 'sha256sum < /run/secrets/npmrc > /default.sum; \
             stat -c %a /run/secrets/npmrc > /default.mode; \
             if echo x 2>/dev/null > /run/secrets/npmrc; then echo writable; else echo read-only; fi > /default.ro'\n\
             RUN env > /env.txt\n"
        ),
        &[],
    );
    let dest = format!("{}:1", unique_repo("secrets"));
    let work = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let secret_flag = format!("id=npmrc,src={}", npmrc_file.display());
    let out = ocibuild_with_env(
        &[
            "build",
            "--context",
            ctx.path().to_str().unwrap(),
            "--destination",
            &dest,
            "--secret",
            &secret_flag,
            "--secret",
            "id=tok,env=TOKEN_VAR",
            "-v",
            "trace",
            "--work-dir",
            work.path().to_str().unwrap(),
            "--cache",
            "--cache-dir",
            cache.path().to_str().unwrap(),
            "--layer-store",
            store.path().to_str().unwrap(),
        ],
        &[("TOKEN_VAR", &token)],
    );
    assert!(out.status.success(), "build failed:\n{}", stderr_of(&out));

    let img = unpack(&format!("docker://{dest}"));
    // The RUNs read the values.
    let npmrc_sum = sha256_hex(npmrc.as_bytes());
    assert_eq!(
        read(&img.rootfs, "npmrc.sum"),
        format!("{npmrc_sum}  /root/.npmrc\n")
    );
    assert_eq!(
        read(&img.rootfs, "tok.sum"),
        format!("{}  -\n", sha256_hex(format!("{token}\n").as_bytes()))
    );
    assert_eq!(
        read(&img.rootfs, "default.sum"),
        format!("{npmrc_sum}  -\n")
    );
    assert_eq!(read(&img.rootfs, "default.mode"), "400\n");
    assert_eq!(read(&img.rootfs, "default.ro"), "read-only\n");
    // The env secret was only in the environment of its RUN.
    let env = read(&img.rootfs, "env.txt");
    assert!(!env.contains("TOKEN"), "{env}");

    // The values appear nowhere: not in layer contents, config, history, manifest or log.
    for value in [&npmrc, &token] {
        for (i, layer) in layer_contents(&img).iter().enumerate() {
            assert!(
                !contains(layer, value.as_bytes()),
                "a secret value is in layer {i}"
            );
        }
        let config = skopeo_config(&dest).to_string();
        assert!(
            !config.contains(value.as_str()),
            "secret in config: {config}"
        );
        let manifest = skopeo_manifest(&dest).to_string();
        assert!(!manifest.contains(value.as_str()));
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains(value.as_str()),
            "secret in stdout"
        );
        assert!(
            !stderr_of(&out).contains(value.as_str()),
            "secret in stderr:\n{}",
            stderr_of(&out)
        );
    }
    // Nor in any file left in the work directory (root filesystems, layers, mount
    // scratch), in the layer cache directory (keys, blobs, mount caches) or in the layer
    // store (extracted layers, the steps' upper directories).
    assert!(
        !find_named(work.path(), "npmrc.sum").is_empty()
            || !find_named(store.path(), "npmrc.sum").is_empty(),
        "the work directory or the layer store keeps the steps' files, so they are worth \
         searching"
    );
    for dir in [work.path(), cache.path(), store.path()] {
        for file in all_files(dir) {
            let data = fs::read(&file).unwrap();
            for value in [&npmrc, &token] {
                assert!(
                    !contains(&data, value.as_bytes()),
                    "a secret value is in {}",
                    file.display()
                );
            }
        }
    }
    // History was checked as part of the config; make sure it is there to check.
    let config = skopeo_config(&dest);
    let history = config["history"].as_array().unwrap();
    assert!(
        history
            .iter()
            .any(|h| h["created_by"].as_str().unwrap_or("").contains("id=npmrc")),
        "{history:?}"
    );

    // The mount points are not in the image.
    let names = all_tar_names(&img);
    assert!(img.rootfs.join("root").is_dir(), "busybox's /root is kept");
    assert!(!img.rootfs.join("root/.npmrc").exists());
    assert!(!img.rootfs.join("run/secrets").exists());
    assert!(
        !img.rootfs.join("run").exists(),
        "/run was made for the step"
    );
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("run") || n.ends_with(".npmrc")),
        "{names:?}"
    );
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_missing_required_secret_fails_naming_the_id_line_and_flag() {
    let reg = registry();
    let ctx = context_with(
        &format!(
            "FROM {reg}/busybox:latest\n\
             RUN --mount=type=secret,id=missing,required=true true\n"
        ),
        &[],
    );
    let out = build(ctx.path(), &["--no-push"]);
    let stderr = stderr_of(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("\"missing\""), "names the id: {stderr}");
    assert!(stderr.contains("Dockerfile:2"), "names the line: {stderr}");
    assert!(
        stderr.contains("--secret id=missing"),
        "names the flag: {stderr}"
    );

    // Also as an environment variable.
    let ctx = context_with(
        &format!(
            "FROM {reg}/busybox:latest\n\
             RUN true\n\
             RUN --mount=type=secret,id=missing-env,env=M,required true\n"
        ),
        &[],
    );
    let out = build(ctx.path(), &["--no-push"]);
    let stderr = stderr_of(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("Dockerfile:3"), "{stderr}");
    assert!(stderr.contains("--secret id=missing-env"), "{stderr}");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_missing_optional_secret_is_just_not_mounted() {
    let reg = registry();
    let ctx = context_with(
        &format!(
            "FROM {reg}/busybox:latest\n\
             RUN --mount=type=secret,id=missing --mount=type=secret,id=missing2,env=M \
             sh -c '[ ! -e /run/secrets/missing ] && [ -z \"${{M+set}}\" ] && echo absent > /r'\n"
        ),
        &[],
    );
    let dest = format!("{}:1", unique_repo("optsecret"));
    build_ctx_ok(ctx.path(), &["--destination", &dest]);
    let img = unpack(&format!("docker://{dest}"));
    assert_eq!(read(&img.rootfs, "r"), "absent\n");
    assert!(!img.rootfs.join("run").exists());
}

// ---------------------------------------------------------------------------------------
// --network
// ---------------------------------------------------------------------------------------

// The fixture's busybox wget crashes (SIGSEGV) with `-T`, so busybox `timeout` bounds it.
#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn network_none_cuts_the_run_off_while_the_default_reaches_the_host() {
    let reg = registry();
    let server = Counter::start("hello\n");
    let offline = context_with(
        &format!(
            "FROM {reg}/busybox:latest\n\
             RUN --network=none timeout 10 wget -q -O- http://127.0.0.1:{}/\n",
            server.port
        ),
        &[],
    );
    let out = build(offline.path(), &["--no-push"]);
    assert!(
        !out.status.success(),
        "wget must fail without a network:\n{}",
        stderr_of(&out)
    );
    let stderr = stderr_of(&out);
    assert!(stderr.contains("Dockerfile:2"), "{stderr}");
    assert!(
        stderr.contains("Network is unreachable") && stderr.contains("exited with code 1"),
        "wget itself reports the missing network: {stderr}"
    );
    assert_eq!(server.count(), 0, "no request left the RUN");

    let online = context_with(
        &format!(
            "FROM {reg}/busybox:latest\n\
             RUN timeout 10 wget -q -O- http://127.0.0.1:{}/\n",
            server.port
        ),
        &[],
    );
    let out = build(online.path(), &["--no-push"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(server.count(), 1);
}

// ---------------------------------------------------------------------------------------
// type=bind and type=tmpfs
// ---------------------------------------------------------------------------------------

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn bind_mounts_of_stages_and_context_and_tmpfs_leave_nothing_behind() {
    let reg = registry();
    let ctx = context_with(
        &format!(
            "FROM {reg}/busybox:latest AS src\n\
             RUN mkdir -p /data && echo from-src > /data/f\n\
             FROM {reg}/busybox:latest\n\
             RUN --mount=type=bind,from=src,source=/data,target=/in sh -c 'cat /in/f > /seen; \
             if echo x 2>/dev/null > /in/new; then echo writable; else echo read-only; fi > /ro-result'\n\
             RUN --mount=type=bind,from=src,source=/data,target=/in,rw sh -c \
             'echo changed > /in/f && echo new > /in/new && cat /in/f /in/new > /rw-seen'\n\
             RUN --mount=type=bind,from=src,source=/data,target=/in sh -c 'cat /in/f > /after; ls /in > /after-ls'\n\
             RUN --mount=type=bind,source=sub,target=/ctx cat /ctx/a.txt > /ctx-seen\n\
             RUN --mount=type=bind,target=/whole sh -c 'cat /whole/top.txt /whole/sub/a.txt > /whole-seen; \
             if touch /whole/x 2>/dev/null; then echo writable; else echo read-only; fi >> /whole-seen'\n\
             RUN --mount=type=tmpfs,target=/scratch sh -c 'echo t > /scratch/t && cat /scratch/t > /tmpfs-seen \
             && grep -c \" /scratch tmpfs \" /proc/mounts >> /tmpfs-seen'\n"
        ),
        &[("top.txt", "top\n"), ("sub/a.txt", "a in sub\n")],
    );
    let dest = format!("{}:1", unique_repo("bind"));
    build_ctx_ok(ctx.path(), &["--destination", &dest]);
    let img = unpack(&format!("docker://{dest}"));
    let root = &img.rootfs;
    assert_eq!(read(root, "seen"), "from-src\n");
    assert_eq!(
        read(root, "ro-result"),
        "read-only\n",
        "binds are read-only"
    );
    assert_eq!(
        read(root, "rw-seen"),
        "changed\nnew\n",
        "rw binds are writable"
    );
    assert_eq!(
        read(root, "after"),
        "from-src\n",
        "rw writes do not reach the source stage"
    );
    assert_eq!(read(root, "after-ls"), "f\n");
    assert_eq!(read(root, "ctx-seen"), "a in sub\n");
    assert_eq!(read(root, "whole-seen"), "top\na in sub\nread-only\n");
    assert_eq!(read(root, "tmpfs-seen"), "t\n1\n");
    // Nothing of the mounts is in the image.
    let names = all_tar_names(&img);
    for gone in ["in", "ctx", "whole", "scratch", "data"] {
        assert!(!root.join(gone).exists(), "/{gone} is not in the image");
        assert!(
            !names
                .iter()
                .any(|n| n == gone || n.starts_with(&format!("{gone}/"))),
            "no {gone} entries: {names:?}"
        );
    }
    assert!(!ctx.path().join("x").exists(), "the context is untouched");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn mounts_over_existing_directories_hide_them_only_for_the_step_and_make_no_layer() {
    let reg = registry();
    let mounts = tempfile::tempdir().unwrap();
    let ctx = context_with(
        &format!(
            "FROM {reg}/busybox:latest\n\
             RUN --mount=type=cache,target=/etc,id=etc sh -c 'rm -f /etc/passwd; echo x > /etc/newfile'\n\
             RUN --mount=type=tmpfs,target=/root --mount=type=secret,id=s,target=/usr/s.conf \
             --mount=type=bind,target=/usr/src/ctx sh -c 'touch /root/y && cat /usr/s.conf /usr/src/ctx/f'\n"
        ),
        &[("f", "context file\n")],
    );
    let dest = format!("{}:1", unique_repo("shadow"));
    let out = ocibuild_with_env(
        &[
            "build",
            "--context",
            ctx.path().to_str().unwrap(),
            "--destination",
            &dest,
            "--cache-mounts-dir",
            mounts.path().to_str().unwrap(),
            "--secret",
            "id=s,env=SHADOW_SECRET",
        ],
        &[("SHADOW_SECRET", "shadow-secret-value\n")],
    );
    let stderr = stderr_of(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("shadow-secret-value\ncontext file\n"),
        "the RUN saw the secret and the context: {stderr}"
    );
    // The RUNs only wrote into their mounts: the image has the base layers and no more.
    let base = skopeo_manifest(&format!("{reg}/busybox:latest"));
    let built = skopeo_manifest(&dest);
    assert_eq!(
        built["layers"].as_array().unwrap().len(),
        base["layers"].as_array().unwrap().len(),
        "mount points make no layer: {stderr}"
    );
    let img = unpack(&format!("docker://{dest}"));
    assert!(
        img.rootfs.join("etc/passwd").is_file(),
        "/etc was only hidden"
    );
    assert!(!img.rootfs.join("etc/newfile").exists());
    assert!(img.rootfs.join("root").is_dir());
    assert!(!img.rootfs.join("root/y").exists());
    assert!(!img.rootfs.join("usr/s.conf").exists());
    assert!(!img.rootfs.join("usr/src").exists());
    // The write went to the cache directory.
    let newfile = find_named(mounts.path(), "newfile");
    assert_eq!(newfile.len(), 1, "{newfile:?}");
    assert_eq!(fs::read_to_string(&newfile[0]).unwrap(), "x\n");
}

// ---------------------------------------------------------------------------------------
// Layer cache interplay
// ---------------------------------------------------------------------------------------

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn cache_mount_contents_do_not_bust_the_layer_cache_but_bound_context_files_do() {
    let reg = registry();
    let cache = tempfile::tempdir().unwrap();
    let mounts = tempfile::tempdir().unwrap();
    let ctx = context_with(
        &format!(
            "FROM {reg}/busybox:latest\n\
             RUN --mount=type=cache,target=/c,id=interplay sh -c 'ls /c > /listing; echo run >> /c/runs'\n\
             RUN --mount=type=bind,source=input.txt,target=/input.txt cat /input.txt > /copied\n"
        ),
        &[("input.txt", "one\n")],
    );
    let cached = |tag: &str| -> (String, String) {
        let dest = format!("{}:{tag}", unique_repo("interplay"));
        let out = build_ctx_ok(
            ctx.path(),
            &[
                "--cache",
                "--cache-dir",
                cache.path().to_str().unwrap(),
                "--cache-mounts-dir",
                mounts.path().to_str().unwrap(),
                "--destination",
                &dest,
            ],
        );
        (dest, stderr_of(&out))
    };

    let (_, log) = cached("1");
    assert_eq!(result_of(&log, "id=interplay"), Some(false), "{log}");
    assert_eq!(result_of(&log, "source=input.txt"), Some(false), "{log}");
    let runs = find_named(mounts.path(), "runs");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(fs::read_to_string(&runs[0]).unwrap(), "run\n");

    // Change what is in the cache mount: the step still hits (and does not run).
    fs::write(runs[0].with_file_name("added-between-builds"), "x").unwrap();
    let (dest, log) = cached("2");
    assert_eq!(
        result_of(&log, "id=interplay"),
        Some(true),
        "cache mount contents are not part of the key:\n{log}"
    );
    assert_eq!(result_of(&log, "source=input.txt"), Some(true), "{log}");
    assert_eq!(fs::read_to_string(&runs[0]).unwrap(), "run\n", "not rerun");
    let img = unpack(&format!("docker://{dest}"));
    assert_eq!(read(&img.rootfs, "listing"), "", "the first build's layer");
    assert_eq!(read(&img.rootfs, "copied"), "one\n");

    // Change the bound context file: that step misses, the one before still hits.
    fs::write(ctx.path().join("input.txt"), "two\n").unwrap();
    let (dest, log) = cached("3");
    assert_eq!(result_of(&log, "id=interplay"), Some(true), "{log}");
    assert_eq!(
        result_of(&log, "source=input.txt"),
        Some(false),
        "a bound context file is part of the key:\n{log}"
    );
    let img = unpack(&format!("docker://{dest}"));
    assert_eq!(read(&img.rootfs, "copied"), "two\n");
    assert!(!img.rootfs.join("input.txt").exists());
    assert!(!img.rootfs.join("c").exists());
}
