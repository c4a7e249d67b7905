//! End-to-end behaviour of the layer cache (`--cache`, `--cache-dir`, `--cache-repo`, ...)
//! against the lab registry: which steps hit and miss, that a hit really skips the step
//! (a loopback HTTP server counts the requests a RUN makes), and that images assembled
//! from cached layers are correct (read back with skopeo and umoci).

use crate::common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A RUN line fetching from the counting server (busybox wget; RUN shares the host network).
trait RunLine {
    fn run_line(&self) -> String;
}

impl RunLine for Counter {
    fn run_line(&self) -> String {
        format!(
            "RUN wget -q -O /fetched http://127.0.0.1:{}/ && cat /fetched\n",
            self.port
        )
    }
}

/// One step of a build log: its instruction and its cache result (`None`: not looked up).
#[derive(Debug, Clone)]
struct Step {
    instruction: String,
    hit: Option<bool>,
    key: Option<String>,
}

/// The steps of a build log: `[N/M] (stage s) INSTRUCTION` lines, each followed by at most
/// one `CACHE HIT <key>` / `CACHE MISS <key>` line before the next step.
fn steps(stderr: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for line in stderr.lines() {
        if line.starts_with('[') && line.contains("] (stage ") {
            let instruction = line.split_once(") ").unwrap().1.to_string();
            steps.push(Step {
                instruction,
                hit: None,
                key: None,
            });
            continue;
        }
        let trimmed = line.trim_start();
        let result = if let Some(key) = trimmed.strip_prefix("CACHE HIT ") {
            Some((true, key))
        } else {
            trimmed.strip_prefix("CACHE MISS ").map(|key| (false, key))
        };
        if let Some((hit, key)) = result {
            let step = steps
                .last_mut()
                .unwrap_or_else(|| panic!("a CACHE line before any step:\n{stderr}"));
            assert!(
                step.hit.is_none(),
                "two CACHE lines for {:?}:\n{stderr}",
                step.instruction
            );
            assert!(is_key(key), "{key:?} is not a 64-hex key");
            step.hit = Some(hit);
            step.key = Some(key.to_string());
        }
    }
    steps
}

/// The cache result of the one step whose instruction starts with `prefix`.
pub(crate) fn result_of(stderr: &str, prefix: &str) -> Option<bool> {
    let found: Vec<Step> = steps(stderr)
        .into_iter()
        .filter(|s| s.instruction.starts_with(prefix))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one step starting with {prefix:?}:\n{stderr}"
    );
    found[0].hit
}

/// `(hits, misses)` from the `cache: N hits, M misses` summary line.
pub(crate) fn summary(stderr: &str) -> (usize, usize) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("cache: "))
        .unwrap_or_else(|| panic!("no `cache:` summary line:\n{stderr}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        (words[2], words[4]),
        ("hits,", "misses"),
        "summary line {line:?}"
    );
    (words[1].parse().unwrap(), words[3].parse().unwrap())
}

/// Asserts that every step in `prefixes` was looked up and hit, that nothing missed, and
/// that the summary agrees.
pub(crate) fn assert_all_hit(stderr: &str, prefixes: &[&str]) {
    for p in prefixes {
        assert_eq!(
            result_of(stderr, p),
            Some(true),
            "{p:?} should HIT:\n{stderr}"
        );
    }
    let misses = stderr.matches("CACHE MISS ").count();
    assert_eq!(misses, 0, "no step should MISS:\n{stderr}");
    assert_eq!(summary(stderr), (prefixes.len(), 0), "{stderr}");
}

fn is_key(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `ocibuild build --cache --cache-dir DIR` of `ctx` pushed to `dest`; returns stderr.
fn cached_build(ctx: &Path, cache_dir: &Path, dest: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "--context",
        ctx.to_str().unwrap(),
        "--cache",
        "--cache-dir",
        cache_dir.to_str().unwrap(),
        "--destination",
        dest,
    ];
    args.extend_from_slice(extra);
    stderr_of(&build_ok(&args))
}

fn read(root: &Path, path: &str) -> String {
    let file = root.join(path.trim_start_matches('/'));
    fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// Files directly under `<cache-dir>/blobs/sha256`.
fn blob_files(cache_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(cache_dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// The layer digest a local cache entry (`keys/<key>.json`) records.
fn entry_blob(cache_dir: &Path, key: &str) -> PathBuf {
    let entry = cache_dir.join("keys").join(format!("{key}.json"));
    let text = fs::read_to_string(&entry).unwrap_or_else(|e| panic!("{}: {e}", entry.display()));
    let layer: serde_json::Value = serde_json::from_str(&text).unwrap();
    let digest = layer["digest"].as_str().unwrap();
    cache_dir
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

pub(crate) fn key_of(stderr: &str, prefix: &str) -> String {
    steps(stderr)
        .into_iter()
        .find(|s| s.instruction.starts_with(prefix))
        .and_then(|s| s.key)
        .unwrap_or_else(|| panic!("no key for {prefix:?}:\n{stderr}"))
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn unchanged_rebuild_hits_every_step_and_runs_nothing() {
    let server = Counter::start("ok\n");
    let reg = registry();
    let dockerfile = format!(
        "FROM {reg}/busybox:latest\n\
         {}\
         RUN date +%s%N > /stamp && echo built > /built.txt\n\
         COPY app.txt /app/app.txt\n\
         WORKDIR /app\n\
         ENV MODE=cached\n\
         RUN cat app.txt > copied.txt\n",
        server.run_line()
    );
    let ctx = context_with(&dockerfile, &[("app.txt", "application\n")]);
    let cache = tempfile::tempdir().unwrap();
    let repo = unique_repo("cache-all-hit");
    let digests = tempfile::tempdir().unwrap();
    let (d1, d2) = (digests.path().join("1"), digests.path().join("2"));
    let cacheable = [
        "RUN wget",
        "RUN date",
        "COPY app.txt",
        "WORKDIR /app",
        "RUN cat",
    ];

    let first = cached_build(
        ctx.path(),
        cache.path(),
        &format!("{repo}:1"),
        &["--reproducible", "--digest-file", d1.to_str().unwrap()],
    );
    assert_eq!(server.count(), 1, "the first build runs the wget once");
    assert_eq!(summary(&first), (0, cacheable.len()), "{first}");
    for p in cacheable {
        assert_eq!(result_of(&first, p), Some(false), "{p} MISSes cold");
    }
    assert_eq!(result_of(&first, "ENV"), None, "metadata is not looked up");

    let second = cached_build(
        ctx.path(),
        cache.path(),
        &format!("{repo}:2"),
        &["--reproducible", "--digest-file", d2.to_str().unwrap()],
    );
    assert_all_hit(&second, &cacheable);
    assert_eq!(server.count(), 1, "no RUN ran in the all-hit build");
    assert!(
        !second.contains("\nok\n"),
        "no RUN output in the all-hit build:\n{second}"
    );
    // Keys are the same in both builds.
    for p in cacheable {
        assert_eq!(key_of(&first, p), key_of(&second, p));
    }

    let digest1 = fs::read_to_string(&d1).unwrap();
    let digest2 = fs::read_to_string(&d2).unwrap();
    assert!(digest1.trim().starts_with("sha256:"), "{digest1}");
    assert_eq!(digest1.trim(), digest2.trim(), "same manifest digest");
    assert_eq!(
        skopeo_inspect(&format!("{repo}:1"))["Digest"],
        skopeo_inspect(&format!("{repo}:2"))["Digest"]
    );

    let one = unpack(&format!("docker://{repo}:1"));
    let two = unpack(&format!("docker://{repo}:2"));
    assert_eq!(read(&two.rootfs, "/built.txt"), "built\n");
    assert_eq!(read(&two.rootfs, "/fetched"), "ok\n");
    assert_eq!(read(&two.rootfs, "/app/app.txt"), "application\n");
    assert_eq!(read(&two.rootfs, "/app/copied.txt"), "application\n");
    assert_eq!(
        read(&two.rootfs, "/stamp"),
        read(&one.rootfs, "/stamp"),
        "the RUN writing a timestamp did not run again"
    );
    assert!(two.rootfs.join("bin/busybox").exists(), "base layers kept");
    let config = skopeo_config(&format!("{repo}:2"));
    assert_eq!(config["config"]["WorkingDir"], "/app");
    assert!(config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "MODE=cached"));
    let history = config["history"].as_array().unwrap();
    let layers = config["rootfs"]["diff_ids"].as_array().unwrap().len();
    let non_empty = history
        .iter()
        .filter(|h| h["empty_layer"] != serde_json::Value::Bool(true))
        .count();
    assert_eq!(non_empty, layers, "history matches the layers: {config}");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn changed_source_file_reruns_its_copy_and_later_steps_only() {
    let reg = registry();
    let ctx = context_with(
        &format!(
            "FROM {reg}/busybox:latest\n\
             RUN echo one > /one\n\
             COPY a.txt /a.txt\n\
             RUN echo two > /two\n\
             COPY b.txt /b.txt\n\
             RUN cat /a.txt /b.txt > /ab\n\
             COPY c.txt /c.txt\n"
        ),
        &[("a.txt", "A\n"), ("b.txt", "B1\n"), ("c.txt", "C\n")],
    );
    let cache = tempfile::tempdir().unwrap();
    let repo = unique_repo("cache-source");
    cached_build(ctx.path(), cache.path(), &format!("{repo}:1"), &[]);

    // mtimes are not part of the key.
    run(
        "touch",
        &[
            "-d",
            "2001-01-01",
            ctx.path().join("b.txt").to_str().unwrap(),
        ],
    );
    let touched = cached_build(ctx.path(), cache.path(), &format!("{repo}:2"), &[]);
    assert_all_hit(
        &touched,
        &[
            "RUN echo one",
            "COPY a.txt",
            "RUN echo two",
            "COPY b.txt",
            "RUN cat",
            "COPY c.txt",
        ],
    );

    fs::write(ctx.path().join("b.txt"), "B2\n").unwrap();
    let changed = cached_build(ctx.path(), cache.path(), &format!("{repo}:3"), &[]);
    let expected = [
        ("FROM", None),
        ("RUN echo one", Some(true)),
        ("COPY a.txt", Some(true)),
        ("RUN echo two", Some(true)),
        ("COPY b.txt", Some(false)),
        ("RUN cat", Some(false)),
        ("COPY c.txt", Some(false)),
    ];
    let got: Vec<(String, Option<bool>)> = steps(&changed)
        .into_iter()
        .map(|s| (s.instruction, s.hit))
        .collect();
    assert_eq!(got.len(), expected.len(), "{changed}");
    for ((instruction, hit), (prefix, want)) in got.iter().zip(expected) {
        assert!(instruction.starts_with(prefix), "{got:?}");
        assert_eq!(*hit, want, "{instruction}:\n{changed}");
    }
    assert_eq!(summary(&changed), (3, 3));

    let img = unpack(&format!("docker://{repo}:3"));
    assert_eq!(read(&img.rootfs, "/one"), "one\n");
    assert_eq!(read(&img.rootfs, "/two"), "two\n");
    assert_eq!(read(&img.rootfs, "/b.txt"), "B2\n");
    assert_eq!(
        read(&img.rootfs, "/ab"),
        "A\nB2\n",
        "the rerun RUN saw the cached layers and the new file"
    );
    assert_eq!(read(&img.rootfs, "/c.txt"), "C\n");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn changed_build_arg_reruns_from_the_first_step_that_sees_it() {
    let reg = registry();
    let ctx = context_with(
        &format!(
            "FROM {reg}/busybox:latest\n\
             RUN echo before > /before\n\
             ARG V\n\
             RUN echo \"v=$V\" > /v\n\
             RUN echo after > /after\n"
        ),
        &[],
    );
    let cache = tempfile::tempdir().unwrap();
    let repo = unique_repo("cache-arg");
    let all = ["RUN echo before", "RUN echo \"v=", "RUN echo after"];
    cached_build(
        ctx.path(),
        cache.path(),
        &format!("{repo}:1"),
        &["--build-arg", "V=1"],
    );
    let same = cached_build(
        ctx.path(),
        cache.path(),
        &format!("{repo}:2"),
        &["--build-arg", "V=1"],
    );
    assert_all_hit(&same, &all);

    let changed = cached_build(
        ctx.path(),
        cache.path(),
        &format!("{repo}:3"),
        &["--build-arg", "V=2"],
    );
    assert_eq!(
        result_of(&changed, "RUN echo before"),
        Some(true),
        "{changed}"
    );
    assert_eq!(
        result_of(&changed, "RUN echo \"v="),
        Some(false),
        "{changed}"
    );
    assert_eq!(
        result_of(&changed, "RUN echo after"),
        Some(false),
        "{changed}"
    );
    assert_eq!(summary(&changed), (1, 2));
    let img = unpack(&format!("docker://{repo}:3"));
    assert_eq!(read(&img.rootfs, "/v"), "v=2\n");
    assert_eq!(read(&img.rootfs, "/before"), "before\n");
    assert_eq!(read(&img.rootfs, "/after"), "after\n");

    let unused = cached_build(
        ctx.path(),
        cache.path(),
        &format!("{repo}:4"),
        &["--build-arg", "V=2", "--build-arg", "NOBODY_USES_ME=x"],
    );
    assert_all_hit(&unused, &all);
    assert!(
        unused
            .lines()
            .any(|l| l.starts_with("warning:") && l.contains("NOBODY_USES_ME")),
        "a warning names the unused build arg:\n{unused}"
    );
    assert_eq!(
        skopeo_inspect(&format!("{repo}:4"))["Layers"],
        skopeo_inspect(&format!("{repo}:3"))["Layers"]
    );
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn retagged_base_image_reruns_every_step() {
    let reg = registry();
    let base = format!("{}:base", unique_repo("cache-base"));
    let copy_to_base = |source: &str| {
        run(
            "skopeo",
            &[
                "copy",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                &format!("docker://{reg}/{source}"),
                &format!("docker://{base}"),
            ],
        );
    };
    copy_to_base("busybox:latest");
    let ctx = context_with(
        &format!(
            "FROM {base}\n\
             RUN echo x > /x\n\
             COPY f.txt /f.txt\n\
             WORKDIR /w\n\
             RUN ls /data > /w/listing 2>/dev/null || echo none > /w/listing\n"
        ),
        &[("f.txt", "F\n")],
    );
    let all = ["RUN echo x", "COPY f.txt", "WORKDIR /w", "RUN ls"];
    let cache = tempfile::tempdir().unwrap();
    let repo = unique_repo("cache-retag");
    cached_build(ctx.path(), cache.path(), &format!("{repo}:1"), &[]);
    let second = cached_build(ctx.path(), cache.path(), &format!("{repo}:2"), &[]);
    assert_all_hit(&second, &all);
    assert_eq!(
        read(&unpack(&format!("docker://{repo}:2")).rootfs, "/w/listing"),
        "none\n"
    );

    copy_to_base("layered:latest");
    let third = cached_build(ctx.path(), cache.path(), &format!("{repo}:3"), &[]);
    for p in all {
        assert_eq!(result_of(&third, p), Some(false), "{p} MISSes:\n{third}");
    }
    assert_eq!(summary(&third), (0, all.len()));
    let img = unpack(&format!("docker://{repo}:3"));
    assert_eq!(read(&img.rootfs, "/data/a"), "a\n", "built on the new base");
    assert_eq!(read(&img.rootfs, "/w/listing"), "a\nb\nkeep\nlink\n");
    assert_eq!(read(&img.rootfs, "/f.txt"), "F\n");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn corrupt_or_missing_cached_blob_is_a_miss_with_a_warning() {
    let reg = registry();
    let ctx = context_with(
        &format!(
            "FROM {reg}/busybox:latest\n\
             RUN echo a > /a\n\
             RUN cat /a > /b && echo b >> /b\n\
             COPY c.txt /c.txt\n\
             RUN cat /b /c.txt > /d\n"
        ),
        &[("c.txt", "c\n")],
    );
    let cache = tempfile::tempdir().unwrap();
    let repo = unique_repo("cache-corrupt");
    let opts = ["--reproducible"];
    let first = cached_build(ctx.path(), cache.path(), &format!("{repo}:1"), &opts);

    // Truncate the blob of the first RUN and delete the one of the COPY.
    let run_blob = entry_blob(cache.path(), &key_of(&first, "RUN echo a"));
    let copy_blob = entry_blob(cache.path(), &key_of(&first, "COPY c.txt"));
    let len = fs::metadata(&run_blob).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&run_blob)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    fs::remove_file(&copy_blob).unwrap();

    let second = cached_build(ctx.path(), cache.path(), &format!("{repo}:2"), &opts);
    for step in ["`RUN echo a > /a`", "`COPY c.txt /c.txt`"] {
        assert!(
            second
                .lines()
                .any(|l| l.starts_with("warning:") && l.contains(step)),
            "a warning naming {step}, whose entry is broken:\n{second}"
        );
    }
    assert_eq!(result_of(&second, "RUN echo a"), Some(false), "{second}");
    assert_eq!(result_of(&second, "RUN cat /a"), Some(true), "{second}");
    assert_eq!(result_of(&second, "COPY c.txt"), Some(false), "{second}");
    assert_eq!(result_of(&second, "RUN cat /b"), Some(true), "{second}");
    let img = unpack(&format!("docker://{repo}:2"));
    assert_eq!(read(&img.rootfs, "/a"), "a\n");
    assert_eq!(read(&img.rootfs, "/b"), "a\nb\n");
    assert_eq!(read(&img.rootfs, "/c.txt"), "c\n");
    assert_eq!(read(&img.rootfs, "/d"), "a\nb\nc\n");
    assert_eq!(
        skopeo_inspect(&format!("{repo}:2"))["Digest"],
        skopeo_inspect(&format!("{repo}:1"))["Digest"],
        "reproducible: the repaired build gives the same image"
    );

    // The rerun steps stored good blobs again (same digests, since --reproducible).
    let third = cached_build(ctx.path(), cache.path(), &format!("{repo}:3"), &opts);
    assert_all_hit(
        &third,
        &["RUN echo a", "RUN cat /a", "COPY c.txt", "RUN cat /b"],
    );
    assert_eq!(fs::metadata(&run_blob).unwrap().len(), len, "blob repaired");
    assert!(copy_blob.exists(), "blob restored");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn corrupt_base_layer_blob_in_cache_dir_is_fetched_again() {
    let reg = registry();
    let ctx = context_with(
        &format!("FROM {reg}/busybox:latest\nCOPY f.txt /f.txt\nRUN cat /f.txt > /g\n"),
        &[("f.txt", "one\n")],
    );
    let cache = tempfile::tempdir().unwrap();
    let repo = unique_repo("cache-base-blob");
    // Each build with a fresh layer store: the second must extract the base layers again,
    // from the blobs of the cache directory.
    let stores = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let store = |i: usize| ["--layer-store", stores[i].path().to_str().unwrap()];
    cached_build(ctx.path(), cache.path(), &format!("{repo}:1"), &store(0));
    let layers = skopeo_inspect(&format!("{reg}/busybox:latest"))["Layers"].clone();
    let mut corrupted = 0;
    for layer in layers.as_array().unwrap() {
        let hex = layer.as_str().unwrap().strip_prefix("sha256:").unwrap();
        let blob = cache.path().join("blobs/sha256").join(hex);
        assert!(blob.exists(), "base layer {hex} kept in the cache dir");
        fs::write(&blob, b"garbage").unwrap();
        corrupted += 1;
    }
    assert!(corrupted > 0);
    // A changed file makes the RUN need the base layers.
    fs::write(ctx.path().join("f.txt"), "two\n").unwrap();
    let out = cached_build(ctx.path(), cache.path(), &format!("{repo}:2"), &store(1));
    assert_eq!(result_of(&out, "COPY f.txt"), Some(false));
    let img = unpack(&format!("docker://{repo}:2"));
    assert_eq!(read(&img.rootfs, "/g"), "two\n");
    assert!(img.rootfs.join("bin/busybox").exists());
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn registry_cache_repo_serves_hits_and_is_tagged_by_key() {
    let server = Counter::start("ok\n");
    let reg = registry();
    let ctx = context_with(
        &format!(
            "FROM {reg}/busybox:latest\n\
             {}\
             COPY src/ /src/\n\
             WORKDIR /src\n\
             RUN cat main.txt > /out && echo done >> /out\n\
             LABEL stage=final\n",
            server.run_line()
        ),
        &[("src/main.txt", "main\n"), ("src/lib/util.txt", "util\n")],
    );
    let all = ["RUN wget", "COPY src/", "WORKDIR /src", "RUN cat main.txt"];
    let cache_repo = format!("{}-cache", unique_repo("cache-registry"));
    let repo = unique_repo("cache-registry-img");
    let registry_build = |dest: &str, extra: &[&str]| {
        let mut args = vec![
            "--context",
            ctx.path().to_str().unwrap(),
            "--cache",
            "--cache-repo",
            &cache_repo,
            "--destination",
            dest,
        ];
        args.extend_from_slice(extra);
        stderr_of(&build_ok(&args))
    };

    let first = registry_build(&format!("{repo}:1"), &[]);
    assert_eq!(summary(&first), (0, all.len()), "{first}");
    assert_eq!(server.count(), 1);
    let second = registry_build(&format!("{repo}:2"), &[]);
    assert_all_hit(&second, &all);
    assert_eq!(server.count(), 1, "no RUN ran with registry hits");

    let tags_json = run(
        "skopeo",
        &[
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{cache_repo}"),
        ],
    );
    let tags: serde_json::Value = serde_json::from_str(&tags_json).unwrap();
    let tags: Vec<&str> = tags["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(tags.iter().all(|t| is_key(t)), "64-hex tags: {tags:?}");
    for p in all {
        let key = key_of(&first, p);
        assert!(tags.contains(&key.as_str()), "{p}: tag {key} in {tags:?}");
    }

    // Both stores: an empty local dir first, then the registry.
    let empty = tempfile::tempdir().unwrap();
    let other = unique_repo("cache-registry-other");
    let both = registry_build(
        &format!("{other}:1"),
        &["--cache-dir", empty.path().to_str().unwrap()],
    );
    assert_all_hit(&both, &all);
    assert_eq!(server.count(), 1);
    // A repository that never saw the layers: they came over from the cache repo.
    let img = unpack(&format!("docker://{other}:1"));
    assert_eq!(read(&img.rootfs, "/fetched"), "ok\n");
    assert_eq!(read(&img.rootfs, "/src/main.txt"), "main\n");
    assert_eq!(read(&img.rootfs, "/src/lib/util.txt"), "util\n");
    assert_eq!(read(&img.rootfs, "/out"), "main\ndone\n");
    let config = skopeo_config(&format!("{other}:1"));
    assert_eq!(config["config"]["Labels"]["stage"], "final");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn registry_cache_entries_older_than_the_ttl_are_ignored() {
    let server = Counter::start("ok\n");
    let reg = registry();
    let ctx = context_with(
        &format!("FROM {reg}/busybox:latest\n{}", server.run_line()),
        &[],
    );
    let cache_repo = format!("{}-cache", unique_repo("cache-ttl"));
    let repo = unique_repo("cache-ttl-img");
    let build = |tag: &str, ttl: &str| {
        stderr_of(&build_ok(&[
            "--context",
            ctx.path().to_str().unwrap(),
            "--cache",
            "--cache-repo",
            &cache_repo,
            "--cache-ttl",
            ttl,
            "--destination",
            &format!("{repo}:{tag}"),
        ]))
    };
    build("1", "1h");
    assert_eq!(result_of(&build("2", "1h"), "RUN wget"), Some(true));
    assert_eq!(server.count(), 1);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let expired = build("3", "1s");
    assert_eq!(result_of(&expired, "RUN wget"), Some(false), "{expired}");
    assert_eq!(server.count(), 2, "the expired entry's RUN ran again");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn run_layers_not_cached_when_disabled_but_copies_are() {
    let server = Counter::start("ok\n");
    let reg = registry();
    let ctx = context_with(
        &format!(
            "FROM {reg}/busybox:latest\n\
             COPY a.txt /a.txt\n\
             {}\
             COPY b.txt /b.txt\n",
            server.run_line()
        ),
        &[("a.txt", "a\n"), ("b.txt", "b\n")],
    );
    let cache = tempfile::tempdir().unwrap();
    let repo = unique_repo("cache-no-run");
    let opts = ["--cache-run-layers=false"];
    cached_build(ctx.path(), cache.path(), &format!("{repo}:1"), &opts);
    assert_eq!(server.count(), 1);
    let second = cached_build(ctx.path(), cache.path(), &format!("{repo}:2"), &opts);
    assert_eq!(server.count(), 2, "the RUN ran again:\n{second}");
    assert_eq!(result_of(&second, "COPY a.txt"), Some(true), "{second}");
    assert_eq!(result_of(&second, "COPY b.txt"), Some(true), "{second}");
    assert_ne!(result_of(&second, "RUN wget"), Some(true), "{second}");
    let img = unpack(&format!("docker://{repo}:2"));
    assert_eq!(read(&img.rootfs, "/a.txt"), "a\n");
    assert_eq!(read(&img.rootfs, "/fetched"), "ok\n");
    assert_eq!(read(&img.rootfs, "/b.txt"), "b\n");

    // The default caches RUN: a build with it on only reruns RUN once more, then hits.
    cached_build(ctx.path(), cache.path(), &format!("{repo}:3"), &[]);
    let cached = cached_build(ctx.path(), cache.path(), &format!("{repo}:4"), &[]);
    assert_eq!(result_of(&cached, "RUN wget"), Some(true), "{cached}");
    assert_eq!(server.count(), 3);
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn two_concurrent_builds_share_one_cache_dir() {
    let reg = registry();
    // A few MB of deterministic content, so the two processes overlap while storing.
    let big: String = (0..60_000)
        .map(|i| format!("line {i:08} of the big file\n"))
        .collect();
    let ctx = context_with(
        &format!(
            "FROM {reg}/busybox:latest\n\
             COPY big.txt /big.txt\n\
             RUN dd if=/dev/urandom of=/rand bs=1M count=3 2>/dev/null && sha256sum /rand > /rand.sum\n\
             RUN sha256sum /big.txt > /big.sum\n\
             COPY small.txt /small.txt\n"
        ),
        &[("big.txt", &big), ("small.txt", "small\n")],
    );
    let cache = tempfile::tempdir().unwrap();
    let repo = unique_repo("cache-concurrent");
    let spawn = |tag: &str| {
        Command::new(env!("CARGO_BIN_EXE_ocibuild"))
            .args([
                "build",
                "--context",
                ctx.path().to_str().unwrap(),
                "--cache",
                "--cache-dir",
                cache.path().to_str().unwrap(),
                "--destination",
                &format!("{repo}:{tag}"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("a"), spawn("b"));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    for (name, out) in [("a", &a), ("b", &b)] {
        assert!(out.status.success(), "build {name}:\n{}", stderr_of(out));
    }
    let big_sum = format!("{}  /big.txt\n", sha256_hex(big.as_bytes()));
    let check = |tag: &str| {
        let img = unpack(&format!("docker://{repo}:{tag}"));
        assert_eq!(read(&img.rootfs, "/big.txt"), big, "{tag}");
        assert_eq!(read(&img.rootfs, "/big.sum"), big_sum, "{tag}");
        assert_eq!(read(&img.rootfs, "/small.txt"), "small\n", "{tag}");
        let rand = fs::read(img.rootfs.join("rand")).unwrap();
        assert_eq!(rand.len(), 3 << 20, "{tag}");
        assert_eq!(
            read(&img.rootfs, "/rand.sum"),
            format!("{}  /rand\n", sha256_hex(&rand)),
            "{tag}: /rand and /rand.sum come from the same layer"
        );
    };
    check("a");
    check("b");

    let third = cached_build(ctx.path(), cache.path(), &format!("{repo}:c"), &[]);
    assert_all_hit(
        &third,
        &["COPY big.txt", "RUN dd", "RUN sha256sum", "COPY small.txt"],
    );
    check("c");
    assert!(
        fs::read_dir(cache.path().join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "no temporary files left in the cache dir"
    );
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn warm_fills_the_cache_dir_with_the_base_image() {
    let reg = registry();
    let cache = tempfile::tempdir().unwrap();
    let image = format!("{reg}/busybox:latest");
    let out = ocibuild(&[
        "warm",
        "--cache-dir",
        cache.path().to_str().unwrap(),
        &image,
    ]);
    assert!(out.status.success(), "warm failed:\n{}", stderr_of(&out));
    let layers = skopeo_inspect(&image)["Layers"].clone();
    let layers = layers.as_array().unwrap();
    let blobs = blob_files(cache.path());
    assert!(
        blobs.len() >= layers.len(),
        "{} blobs for {} layers",
        blobs.len(),
        layers.len()
    );
    for layer in layers {
        let hex = layer.as_str().unwrap().strip_prefix("sha256:").unwrap();
        let blob = cache.path().join("blobs/sha256").join(hex);
        let bytes = fs::read(&blob).unwrap_or_else(|e| panic!("{}: {e}", blob.display()));
        assert_eq!(sha256_hex(&bytes), hex, "warmed blob is the layer");
    }
    assert!(
        fs::read_dir(cache.path().join("images"))
            .unwrap()
            .next()
            .is_some(),
        "manifest and config cached"
    );

    let ctx = context_with(&format!("FROM {image}\nRUN echo warm > /warm\n"), &[]);
    let repo = unique_repo("cache-warm");
    cached_build(ctx.path(), cache.path(), &format!("{repo}:1"), &[]);
    let img = unpack(&format!("docker://{repo}:1"));
    assert_eq!(read(&img.rootfs, "/warm"), "warm\n");
    assert!(img.rootfs.join("bin/busybox").exists());
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn tiny_cache_dir_max_size_evicts_but_builds_still_work() {
    let reg = registry();
    let ctx = context_with(
        &format!(
            "FROM {reg}/busybox:latest\n\
             COPY a.txt /a.txt\n\
             RUN cat /a.txt > /b.txt\n\
             RUN echo c > /c.txt\n"
        ),
        &[("a.txt", "a\n")],
    );
    let cache = tempfile::tempdir().unwrap();
    let repo = unique_repo("cache-max-size");
    let base_layers: Vec<String> = skopeo_inspect(&format!("{reg}/busybox:latest"))["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            l.as_str()
                .unwrap()
                .trim_start_matches("sha256:")
                .to_string()
        })
        .collect();
    for tag in ["1", "2"] {
        let out = cached_build(
            ctx.path(),
            cache.path(),
            &format!("{repo}:{tag}"),
            &["--cache-dir-max-size", "1KB"],
        );
        assert!(out.contains("cache: "), "{out}");
        let img = unpack(&format!("docker://{repo}:{tag}"));
        assert_eq!(read(&img.rootfs, "/a.txt"), "a\n");
        assert_eq!(read(&img.rootfs, "/b.txt"), "a\n");
        assert_eq!(read(&img.rootfs, "/c.txt"), "c\n");
        assert!(img.rootfs.join("bin/busybox").exists());
        let blobs = blob_files(cache.path());
        let total: u64 = blobs.iter().map(|b| fs::metadata(b).unwrap().len()).sum();
        assert!(
            total <= 1000 || blobs.len() == 1,
            "the cache dir is evicted down to 1KB (or the one newest blob): {blobs:?}"
        );
        for hex in &base_layers {
            assert!(
                !cache.path().join("blobs/sha256").join(hex).exists(),
                "the base layer (over 1KB, least recently used) was evicted"
            );
        }
        if tag == "2" {
            // The step layers (a few hundred bytes) fit and were used most recently.
            assert_eq!(summary(&out), (3, 0), "{out}");
        }
    }
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn dockerignored_files_do_not_invalidate_copy() {
    let reg = registry();
    let ctx = context_with(
        &format!("FROM {reg}/busybox:latest\nCOPY . /app/\nRUN ls /app > /listing\n"),
        &[
            (".dockerignore", "*.log\nDockerfile\n"),
            ("main.txt", "main\n"),
            ("debug.log", "one\n"),
        ],
    );
    let cache = tempfile::tempdir().unwrap();
    let repo = unique_repo("cache-ignore");
    cached_build(ctx.path(), cache.path(), &format!("{repo}:1"), &[]);
    fs::write(ctx.path().join("debug.log"), "two\n").unwrap();
    fs::write(ctx.path().join("other.log"), "new\n").unwrap();
    let ignored = cached_build(ctx.path(), cache.path(), &format!("{repo}:2"), &[]);
    assert_all_hit(&ignored, &["COPY . /app/", "RUN ls"]);
    fs::write(ctx.path().join("extra.txt"), "x\n").unwrap();
    let added = cached_build(ctx.path(), cache.path(), &format!("{repo}:3"), &[]);
    assert_eq!(result_of(&added, "COPY . /app/"), Some(false), "{added}");
    assert_eq!(result_of(&added, "RUN ls"), Some(false), "{added}");
    let img = unpack(&format!("docker://{repo}:3"));
    assert_eq!(read(&img.rootfs, "/listing"), "extra.txt\nmain.txt\n");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn multi_stage_hits_and_copy_from_a_fully_cached_stage() {
    let reg = registry();
    let ctx = context_with(
        &format!(
            "FROM {reg}/busybox:latest AS builder\n\
             COPY src.txt /src.txt\n\
             RUN tr a-z A-Z < /src.txt > /out.txt\n\
             FROM {reg}/busybox:latest\n\
             COPY final.txt /final.txt\n\
             COPY --from=builder /out.txt /out.txt\n\
             RUN cat /final.txt /out.txt > /both\n"
        ),
        &[("src.txt", "hello\n"), ("final.txt", "final1\n")],
    );
    let cache = tempfile::tempdir().unwrap();
    let repo = unique_repo("cache-multi");
    let all = [
        "COPY src.txt",
        "RUN tr",
        "COPY final.txt",
        "COPY --from=builder",
        "RUN cat",
    ];
    cached_build(ctx.path(), cache.path(), &format!("{repo}:1"), &[]);
    let same = cached_build(ctx.path(), cache.path(), &format!("{repo}:2"), &[]);
    assert_all_hit(&same, &all);

    // Only the final stage changes before its COPY --from: the builder stage is all hits
    // (never unpacked), yet the COPY --from that misses must read its files.
    fs::write(ctx.path().join("final.txt"), "final2\n").unwrap();
    let out = cached_build(ctx.path(), cache.path(), &format!("{repo}:3"), &[]);
    assert_eq!(result_of(&out, "COPY src.txt"), Some(true), "{out}");
    assert_eq!(result_of(&out, "RUN tr"), Some(true), "{out}");
    assert_eq!(result_of(&out, "COPY final.txt"), Some(false), "{out}");
    assert_eq!(result_of(&out, "COPY --from=builder"), Some(false), "{out}");
    let img = unpack(&format!("docker://{repo}:3"));
    assert_eq!(read(&img.rootfs, "/both"), "final2\nHELLO\n");

    // A change in the builder stage reaches the final stage's COPY --from.
    fs::write(ctx.path().join("src.txt"), "world\n").unwrap();
    let out = cached_build(ctx.path(), cache.path(), &format!("{repo}:4"), &[]);
    assert_eq!(result_of(&out, "COPY final.txt"), Some(true), "{out}");
    assert_eq!(result_of(&out, "COPY --from=builder"), Some(false), "{out}");
    assert_eq!(result_of(&out, "RUN cat"), Some(false), "{out}");
    let img = unpack(&format!("docker://{repo}:4"));
    assert_eq!(read(&img.rootfs, "/both"), "final2\nWORLD\n");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn cached_deletion_applied_after_a_miss_reaches_later_steps() {
    let reg = registry();
    let ctx = context_with(
        &format!(
            "FROM {reg}/busybox:latest\n\
             COPY x.txt /x.txt\n\
             RUN rm -rf /home /etc/group && mkdir /made\n\
             COPY y.txt /y.txt\n\
             RUN ls / > /listing && ls /etc > /etc-listing\n"
        ),
        &[("x.txt", "x\n"), ("y.txt", "y\n")],
    );
    let cache = tempfile::tempdir().unwrap();
    let repo = unique_repo("cache-whiteout");
    let first = cached_build(ctx.path(), cache.path(), &format!("{repo}:1"), &[]);
    // Drop the entries' blobs of the first COPY and the last RUN: those two rerun, the
    // RUN with the deletions in between is a hit applied onto the unpacked rootfs.
    fs::remove_file(entry_blob(cache.path(), &key_of(&first, "COPY x.txt"))).unwrap();
    fs::remove_file(entry_blob(cache.path(), &key_of(&first, "RUN ls"))).unwrap();
    let out = cached_build(ctx.path(), cache.path(), &format!("{repo}:2"), &[]);
    assert_eq!(result_of(&out, "COPY x.txt"), Some(false), "{out}");
    assert_eq!(result_of(&out, "RUN rm"), Some(true), "{out}");
    assert_eq!(result_of(&out, "COPY y.txt"), Some(true), "{out}");
    assert_eq!(result_of(&out, "RUN ls"), Some(false), "{out}");
    let one = unpack(&format!("docker://{repo}:1"));
    let two = unpack(&format!("docker://{repo}:2"));
    for img in [&one, &two] {
        assert!(!img.rootfs.join("home").exists());
        assert!(!img.rootfs.join("etc/group").exists());
        assert!(img.rootfs.join("made").is_dir());
    }
    let listing = read(&two.rootfs, "/listing");
    assert!(!listing.lines().any(|l| l == "home"), "{listing}");
    assert!(listing.lines().any(|l| l == "made"), "{listing}");
    assert_eq!(read(&two.rootfs, "/listing"), read(&one.rootfs, "/listing"));
    assert_eq!(
        read(&two.rootfs, "/etc-listing"),
        read(&one.rootfs, "/etc-listing")
    );
    assert_eq!(read(&two.rootfs, "/y.txt"), "y\n");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn registry_hits_are_unpacked_when_a_later_step_misses() {
    let reg = registry();
    let ctx = context_with(
        &format!(
            "FROM {reg}/busybox:latest\n\
             RUN echo first > /first\n\
             COPY f.txt /f.txt\n\
             RUN cat /first /f.txt > /both\n"
        ),
        &[("f.txt", "one\n")],
    );
    // No --cache-repo and no --cache-dir: the default is <first destination>/cache.
    let repo = unique_repo("cache-default-repo");
    let build = |tag: &str| {
        stderr_of(&build_ok(&[
            "--context",
            ctx.path().to_str().unwrap(),
            "--cache",
            "--destination",
            &format!("{repo}:{tag}"),
        ]))
    };
    let first = build("1");
    let tags = run(
        "skopeo",
        &[
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{repo}/cache"),
        ],
    );
    assert!(tags.contains(&key_of(&first, "RUN echo first")), "{tags}");
    fs::write(ctx.path().join("f.txt"), "two\n").unwrap();
    let out = build("2");
    assert_eq!(result_of(&out, "RUN echo first"), Some(true), "{out}");
    assert_eq!(result_of(&out, "COPY f.txt"), Some(false), "{out}");
    let img = unpack(&format!("docker://{repo}:2"));
    assert_eq!(read(&img.rootfs, "/both"), "first\ntwo\n");
}
