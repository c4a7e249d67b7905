//! Tests of `ocibuild_cache` on the real filesystem, with real processes (including
//! ones killed with SIGKILL mid-write) and against the lab registry
//! (`eval "$(scripts/lab.sh env)"` provides `OCIBUILD_TEST_REGISTRY`).

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, SystemTime};

use ocibuild_cache::{
    parse_size, parse_ttl, CacheError, CacheHit, CachedLayer, LayerCache, LayoutCache, LocalCache,
    ReadOnly, RegistryCache,
};
use ocibuild_registry::{Client, ClientOptions};

#[path = "helpers/common.rs"]
mod common;
#[allow(dead_code)]
#[path = "helpers/local.rs"]
mod local;

use common::{content, key, layer_file, sha256};
use local::{
    assert_hit, blob_file, entry_file, other_fs_dir, spawn_writer, temp_files, wait_success,
};

#[test]
fn put_then_get_returns_the_entry_and_an_intact_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let cache = LocalCache::open(&dir, None).unwrap();
    let mut warnings = Vec::new();
    assert!(cache.get(&key("a"), &mut warnings).unwrap().is_none());
    assert!(warnings.is_empty());

    // Same filesystem (hard link) and another filesystem (copy).
    let (a, a_file) = layer_file(tmp.path(), 1, 100_000);
    let shm = other_fs_dir();
    let (b, b_file) = layer_file(shm.path(), 2, 300_000);
    cache.put(&key("a"), &a, &a_file).unwrap();
    cache.put(&key("b"), &b, &b_file).unwrap();
    let path = assert_hit(&cache, &key("a"), &a);
    assert_eq!(path, blob_file(&dir, &a.digest));
    assert_hit(&cache, &key("b"), &b);
    // The source files are left in place.
    assert!(a_file.exists() && b_file.exists());

    // A second key with the same layer shares the blob; putting again is a no-op.
    cache.put(&key("a2"), &a, &a_file).unwrap();
    cache.put(&key("a"), &a, &a_file).unwrap();
    let usage = cache.usage().unwrap();
    assert_eq!(usage.entries, 3);
    assert_eq!(usage.blobs, 2);
    assert_eq!(usage.blob_bytes, 400_000);

    // A second instance on the same directory sees everything.
    let again = LocalCache::open(&dir, None).unwrap();
    assert_hit(&again, &key("a2"), &a);
    assert!(again.get(&key("zzz"), &mut warnings).unwrap().is_none());
    assert!(warnings.is_empty());
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = LocalCache::open(&tmp.path().join("c"), None).unwrap();
    let mut warnings = Vec::new();
    for bad in [
        "",
        "../etc/passwd",
        ".hidden",
        "a/b",
        &"x".repeat(200),
        "ключ",
    ] {
        let err = cache.get(bad, &mut warnings).unwrap_err();
        assert!(
            matches!(err, CacheError::InvalidKey { .. }),
            "{bad:?}: {err}"
        );
    }
    let (layer, file) = layer_file(tmp.path(), 3, 1000);
    let wrong_size = CachedLayer {
        size: 999,
        ..layer.clone()
    };
    let err = cache.put(&key("s"), &wrong_size, &file).unwrap_err();
    assert!(matches!(err, CacheError::SizeMismatch { .. }), "{err}");
    let wrong_digest = CachedLayer {
        digest: sha256(b"something else"),
        ..layer.clone()
    };
    let err = cache.put(&key("d"), &wrong_digest, &file).unwrap_err();
    assert!(matches!(err, CacheError::DigestMismatch { .. }), "{err}");
    assert!(
        err.to_string().contains("does not match its digest"),
        "{err}"
    );
    let bad_digest = CachedLayer {
        digest: "md5:abc".into(),
        ..layer.clone()
    };
    let err = cache.put(&key("d"), &bad_digest, &file).unwrap_err();
    assert!(matches!(err, CacheError::InvalidDigest { .. }), "{err}");
    let bad_time = CachedLayer {
        created: "yesterday".into(),
        ..layer.clone()
    };
    let err = cache.put(&key("t"), &bad_time, &file).unwrap_err();
    assert!(matches!(err, CacheError::InvalidEntry { .. }), "{err}");
    let err = cache
        .put(&key("m"), &layer, &tmp.path().join("missing"))
        .unwrap_err();
    assert!(matches!(err, CacheError::Io { .. }), "{err}");
    // Nothing was stored by the failed puts; the temp directory is clean.
    let usage = cache.usage().unwrap();
    assert_eq!((usage.entries, usage.blobs), (0, 0));
    assert_eq!(temp_files(&tmp.path().join("c")), Vec::<String>::new());
    assert!(cache.blob("sha256:nothex").is_none());
}

#[test]
fn corrupt_or_missing_blobs_drop_the_entry_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let cache = LocalCache::open(&dir, None).unwrap();
    let src = other_fs_dir();

    // Truncated blob.
    let (a, a_file) = layer_file(src.path(), 10, 50_000);
    cache.put(&key("trunc"), &a, &a_file).unwrap();
    let blob = blob_file(&dir, &a.digest);
    fs::OpenOptions::new()
        .write(true)
        .open(&blob)
        .unwrap()
        .set_len(20_000)
        .unwrap();
    let mut warnings = Vec::new();
    assert!(cache.get(&key("trunc"), &mut warnings).unwrap().is_none());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains(&key("trunc")), "{warnings:?}");
    assert!(warnings[0].contains("corrupt"), "{warnings:?}");
    assert!(!entry_file(&dir, &key("trunc")).exists());
    assert!(!blob.exists(), "the corrupt blob is removed");

    // Same size, one byte flipped: only the sha256 check notices.
    let (b, b_file) = layer_file(src.path(), 11, 50_000);
    cache.put(&key("flip"), &b, &b_file).unwrap();
    let blob = blob_file(&dir, &b.digest);
    let mut bytes = fs::read(&blob).unwrap();
    bytes[25_000] ^= 0xff;
    fs::write(&blob, &bytes).unwrap();
    warnings.clear();
    assert!(cache.get(&key("flip"), &mut warnings).unwrap().is_none());
    assert!(warnings[0].contains(&key("flip")) && warnings[0].contains("hashes to"));
    assert!(!entry_file(&dir, &key("flip")).exists());

    // Deleted blob.
    let (c, c_file) = layer_file(src.path(), 12, 50_000);
    cache.put(&key("gone"), &c, &c_file).unwrap();
    fs::remove_file(blob_file(&dir, &c.digest)).unwrap();
    warnings.clear();
    assert!(cache.get(&key("gone"), &mut warnings).unwrap().is_none());
    assert!(warnings[0].contains(&key("gone")) && warnings[0].contains("missing"));
    assert!(!entry_file(&dir, &key("gone")).exists());

    // Unreadable entry JSON.
    fs::write(entry_file(&dir, &key("junk")), b"{\"digest\": 12").unwrap();
    warnings.clear();
    assert!(cache.get(&key("junk"), &mut warnings).unwrap().is_none());
    assert!(warnings[0].contains(&key("junk")) && warnings[0].contains("unreadable"));
    assert!(!entry_file(&dir, &key("junk")).exists());

    // After the warnings, a new put of the same key works again.
    cache.put(&key("trunc"), &a, &a_file).unwrap();
    assert_hit(&cache, &key("trunc"), &a);
}

#[test]
fn torn_writes_are_invisible_and_stale_temp_files_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let cache = LocalCache::open(&dir, None).unwrap();
    let (a, a_file) = layer_file(tmp.path(), 20, 40_000);

    // What a process killed mid-put leaves: a partial blob and a partial entry in tmp/.
    let partial_blob = dir.join("tmp/blob-999999-0-0.tmp");
    fs::write(&partial_blob, &fs::read(&a_file).unwrap()[..1000]).unwrap();
    let partial_entry = dir.join("tmp/write-999999-1-0.tmp");
    fs::write(&partial_entry, br#"{"digest":"sha256:"#).unwrap();
    let mut warnings = Vec::new();
    assert!(cache.get(&key("torn"), &mut warnings).unwrap().is_none());
    assert!(warnings.is_empty());
    assert!(cache.blob(&a.digest).is_none());
    assert_eq!(cache.usage().unwrap().entries, 0);

    // Killed between blob and entry: the blob is there, the key is still a miss.
    cache
        .put_blob(&a.digest, &{
            let copy = tmp.path().join("copy");
            fs::copy(&a_file, &copy).unwrap();
            copy
        })
        .unwrap();
    assert!(cache.get(&key("torn"), &mut warnings).unwrap().is_none());
    assert!(warnings.is_empty());
    // And completing the put works (the blob is reused).
    cache.put(&key("torn"), &a, &a_file).unwrap();
    assert_hit(&cache, &key("torn"), &a);

    // open() removes temp files older than an hour, and only those.
    let fresh = dir.join("tmp/blob-999999-2-0.tmp");
    fs::write(&fresh, b"in progress").unwrap();
    let old = filetime::FileTime::from_system_time(SystemTime::now() - Duration::from_secs(7200));
    filetime::set_file_mtime(&partial_blob, old).unwrap();
    filetime::set_file_mtime(&partial_entry, old).unwrap();
    LocalCache::open(&dir, None).unwrap();
    assert!(!partial_blob.exists());
    assert!(!partial_entry.exists());
    assert!(fresh.exists());
    assert_hit(&cache, &key("torn"), &a);
}

#[test]
fn concurrent_processes_share_one_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let scratch = other_fs_dir();
    let cache = LocalCache::open(&tmp.path().join("cache"), None).unwrap();
    let children: Vec<Child> = (1..=3)
        .map(|id| spawn_writer("worker", &[&tmp.path(), &scratch.path(), &id.to_string()]))
        .collect();
    // Meanwhile this process reads the shared keys.
    let mut warnings = Vec::new();
    for _ in 0..50 {
        for shared in 0..8u64 {
            if let Some((layer, path)) = cache
                .get(&key(&format!("shared-{shared}")), &mut warnings)
                .unwrap()
            {
                assert_eq!(sha256(&fs::read(path).unwrap()), layer.digest);
            }
        }
    }
    assert!(warnings.is_empty(), "{warnings:?}");
    for child in children {
        wait_success(child);
    }
    let usage = cache.usage().unwrap();
    assert_eq!(usage.entries, 8 + 3 * 6);
    assert_eq!(usage.blobs, 8 + 3 * 6);
    for shared in 0..8u64 {
        let k = key(&format!("shared-{shared}"));
        let (layer, path) = cache.get(&k, &mut warnings).unwrap().unwrap();
        assert_eq!(layer.digest, sha256(&content(100 + shared, 30_000)));
        assert_eq!(sha256(&fs::read(path).unwrap()), layer.digest);
    }
    assert!(warnings.is_empty(), "{warnings:?}");
    // Nothing is left behind in tmp/.
    assert_eq!(
        fs::read_dir(tmp.path().join("cache/tmp")).unwrap().count(),
        0
    );
}

#[test]
fn sigkill_mid_write_leaves_only_complete_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let scratch = other_fs_dir();
    let mut total_hits = 0;
    for (round, delay_ms) in [300u64, 650, 1000].into_iter().enumerate() {
        let mut child = spawn_writer("forever", &[&tmp.path(), &scratch.path(), &"1000000"]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: the child should have been killed"
        );

        let cache = LocalCache::open(&dir, None).unwrap();
        let mut warnings = Vec::new();
        let mut hits = 0;
        for entry in fs::read_dir(dir.join("keys")).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let k = name
                .strip_suffix(".json")
                .expect("only complete entries in keys/");
            let (layer, path) = cache
                .get(k, &mut warnings)
                .unwrap()
                .unwrap_or_else(|| panic!("entry {k} is not intact: {warnings:?}"));
            assert_eq!(sha256(&fs::read(path).unwrap()), layer.digest);
            hits += 1;
        }
        assert!(warnings.is_empty(), "{warnings:?}");
        eprintln!("round {round}: killed after {delay_ms} ms: {hits} entries");
        // The open removed at once what the killed writer left in tmp/, its writer file
        // included.
        assert_eq!(local::names(&dir, "tmp"), Vec::<String>::new());
        assert!(hits >= total_hits, "round {round}: entries were lost");
        total_hits = hits;
        // Blobs in blobs/ are all complete, even those without an entry yet.
        for blob in fs::read_dir(dir.join("blobs/sha256")).unwrap() {
            let blob = blob.unwrap();
            let hex = blob.file_name().into_string().unwrap();
            assert_eq!(
                sha256(&fs::read(blob.path()).unwrap()),
                format!("sha256:{hex}")
            );
        }
    }
    assert!(
        total_hits > 0,
        "the children stored nothing before being killed"
    );
}

#[test]
fn lru_eviction_keeps_recently_used_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    // Room for three 10 kB layers.
    let cache = LocalCache::open(&dir, Some(35_000)).unwrap();
    let layers: Vec<(CachedLayer, PathBuf)> = (0..6)
        .map(|i| layer_file(tmp.path(), 200 + i, 10_000))
        .collect();
    let pause = || std::thread::sleep(Duration::from_millis(30));
    for (i, (layer, file)) in layers.iter().take(3).enumerate() {
        cache.put(&key(&format!("lru{i}")), layer, file).unwrap();
        pause();
    }
    assert_eq!(cache.usage().unwrap().entries, 3);
    // Use 0, so 1 is now the least recently used.
    assert_hit(&cache, &key("lru0"), &layers[0].0);
    pause();
    cache.put(&key("lru3"), &layers[3].0, &layers[3].1).unwrap();
    let mut warnings = Vec::new();
    assert!(cache.get(&key("lru1"), &mut warnings).unwrap().is_none());
    assert!(
        warnings.is_empty(),
        "an evicted entry is a plain miss: {warnings:?}"
    );
    assert!(!blob_file(&dir, &layers[1].0.digest).exists());
    pause();
    assert_hit(&cache, &key("lru0"), &layers[0].0);
    pause();
    // Next out: 2 (then 3); 0 was used again.
    cache.put(&key("lru4"), &layers[4].0, &layers[4].1).unwrap();
    assert!(cache.get(&key("lru2"), &mut warnings).unwrap().is_none());
    for (k, i) in [("lru0", 0), ("lru3", 3), ("lru4", 4)] {
        assert_hit(&cache, &key(k), &layers[i].0);
    }
    let usage = cache.usage().unwrap();
    assert!(usage.blob_bytes <= 35_000, "{usage:?}");
    assert_eq!(usage.entries, 3);

    // A layer larger than the limit is not stored, rather than evicting everything for it.
    let big = other_fs_dir();
    let (huge, huge_file) = layer_file(big.path(), 300, 50_000);
    let err = cache.put(&key("huge"), &huge, &huge_file).unwrap_err();
    assert!(err.is_not_stored(), "{err}");
    assert!(err.to_string().contains("size limit"), "{err}");
    assert!(cache.get(&key("huge"), &mut warnings).unwrap().is_none());
    assert_eq!(cache.usage().unwrap().entries, 3);
    // A base-image blob over the limit is kept for the caller who needs it, without
    // evicting anything for it; the next store evicts it first.
    let download = big.path().join("download");
    fs::copy(&huge_file, &download).unwrap();
    let huge_blob = cache.put_blob(&huge.digest, &download).unwrap();
    assert_eq!(cache.usage().unwrap().entries, 3);
    pause();
    cache.put(&key("lru5"), &layers[5].0, &layers[5].1).unwrap();
    assert!(!huge_blob.exists());
    assert_hit(&cache, &key("lru5"), &layers[5].0);
    let usage = cache.usage().unwrap();
    assert!(usage.blob_bytes <= 35_000, "{usage:?}");
    assert_eq!(usage.entries, 3);

    // Without a limit nothing is evicted.
    let unlimited = LocalCache::open(&dir, None).unwrap();
    for (i, (layer, file)) in layers.iter().enumerate() {
        unlimited.put(&key(&format!("u{i}")), layer, file).unwrap();
    }
    assert_eq!(unlimited.usage().unwrap().entries, 9);
}

#[test]
fn blobs_and_images_of_base_images() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let cache = LocalCache::open(&dir, None).unwrap();
    let bytes = content(400, 70_000);
    let digest = sha256(&bytes);
    assert!(cache.blob(&digest).is_none());

    // A download in the cache's tmp/ is moved in.
    let download = cache.temp_path("download");
    fs::write(&download, &bytes).unwrap();
    let wrong = sha256(b"other");
    let err = cache.put_blob(&wrong, &download).unwrap_err();
    assert!(matches!(err, CacheError::DigestMismatch { .. }), "{err}");
    assert!(download.exists(), "a rejected file is left alone");
    let path = cache.put_blob(&digest, &download).unwrap();
    assert!(!download.exists(), "the file is consumed");
    assert_eq!(cache.blob(&digest), Some(path.clone()));
    // From another filesystem it is copied; adding it again is a no-op.
    let shm = other_fs_dir();
    let elsewhere = shm.path().join("blob");
    fs::write(&elsewhere, &bytes).unwrap();
    assert_eq!(cache.put_blob(&digest, &elsewhere).unwrap(), path);
    assert_eq!(fs::read(&path).unwrap(), bytes);
    // A corrupt blob is not handed out.
    fs::write(&path, b"garbage").unwrap();
    assert!(cache.blob(&digest).is_none());
    assert!(!path.exists());

    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[]}}"#,
        sha256(config),
        config.len()
    );
    let manifest_digest = sha256(manifest.as_bytes());
    assert!(cache.image(&manifest_digest).is_none());
    let err = cache
        .put_image(&wrong, manifest.as_bytes(), config)
        .unwrap_err();
    assert!(matches!(err, CacheError::DigestMismatch { .. }), "{err}");
    let err = cache
        .put_image(&manifest_digest, manifest.as_bytes(), b"{}")
        .unwrap_err();
    assert!(err.to_string().contains("config"), "{err}");
    cache
        .put_image(&manifest_digest, manifest.as_bytes(), config)
        .unwrap();
    assert_eq!(
        cache.image(&manifest_digest),
        Some((manifest.clone().into_bytes(), config.to_vec()))
    );
    assert_eq!(cache.usage().unwrap().images, 1);
    // Its age is that of its file (what the warmer's --cache-ttl compares).
    let hex = manifest_digest.strip_prefix("sha256:").unwrap();
    let image_file = dir.join(format!("images/{hex}.json"));
    assert!(cache.image_age(&manifest_digest).unwrap() < Duration::from_secs(3600));
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    filetime::set_file_mtime(
        &image_file,
        filetime::FileTime::from_system_time(two_hours_ago),
    )
    .unwrap();
    assert!(cache.image_age(&manifest_digest).unwrap() >= Duration::from_secs(7200));
    assert_eq!(cache.image_age(&wrong), None, "no entry, no age");
    // A damaged image file is dropped.
    fs::write(dir.join(format!("images/{hex}.json")), b"{}").unwrap();
    assert!(cache.image(&manifest_digest).is_none());
    assert_eq!(cache.usage().unwrap().images, 0);
}

#[test]
fn sizes_parse() {
    for (text, want) in [
        ("1024", 1024),
        ("0", 0),
        ("10GB", 10_000_000_000),
        ("10gb", 10_000_000_000),
        ("500MiB", 500 << 20),
        ("2Gi", 2 << 30),
        ("1.5G", 1_500_000_000),
        ("1.5 KiB", 1536),
        (" 7 B ", 7),
        ("3k", 3000),
        ("1TiB", 1 << 40),
    ] {
        assert_eq!(parse_size(text).unwrap(), want, "{text}");
    }
    for bad in [
        "",
        "GB",
        "-1",
        "10XB",
        "1.2.3",
        "ten",
        "99999999999999999999999",
        "20000PB",
        ".",
        "5 G B",
    ] {
        let err = parse_size(bad).unwrap_err();
        assert!(matches!(err, CacheError::InvalidSize { .. }), "{bad:?}");
        assert!(err.to_string().contains("invalid size"), "{err}");
    }
}

#[test]
fn ttls_parse() {
    let h = |n: u64| Duration::from_secs(n * 3600);
    for (text, want) in [
        ("336h", h(336)),
        ("2h30m", h(2) + Duration::from_secs(1800)),
        ("14d", h(336)),
        ("2w", h(336)),
        ("1.5h", Duration::from_secs(5400)),
        ("90s", Duration::from_secs(90)),
        ("1m30s500ms", Duration::from_millis(90_500)),
        ("250us", Duration::from_micros(250)),
        ("10ns", Duration::from_nanos(10)),
        ("0", Duration::ZERO),
        ("0s", Duration::ZERO),
    ] {
        assert_eq!(parse_ttl(text).unwrap(), want, "{text}");
    }
    for bad in [
        "",
        "336",
        "h",
        "-1h",
        "1x",
        "1h-",
        "1..5h",
        "99999999999999999999999d",
        "2 h",
    ] {
        let err = parse_ttl(bad).unwrap_err();
        assert!(matches!(err, CacheError::InvalidDuration { .. }), "{bad:?}");
    }
}

fn registry() -> String {
    std::env::var("OCIBUILD_TEST_REGISTRY").expect(
        "OCIBUILD_TEST_REGISTRY is not set: run `eval \"$(scripts/lab.sh env)\"` (after `scripts/lab.sh up`)",
    )
}

/// A fresh repository name on the lab registry.
fn fresh_repo(reg: &str, what: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{reg}/cache-test/{what}-{}-{nanos}", std::process::id())
}

fn client() -> Client {
    Client::new(ClientOptions::default()).unwrap()
}

#[tokio::test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
async fn registry_cache_round_trip_ttl_and_missing_blob() {
    let reg = registry();
    let repo = fresh_repo(&reg, "roundtrip");
    let ttl = parse_ttl("336h").unwrap();
    let cache = RegistryCache::new(client(), &repo, ttl).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (layer, file) = layer_file(tmp.path(), 500, 120_000);
    let k = key("registry step");

    let mut warnings = Vec::new();
    assert!(cache.get(&k, &mut warnings).await.unwrap().is_none());
    assert!(warnings.is_empty(), "{warnings:?}");

    cache.put(&k, &layer, &file).await.unwrap();
    // Putting again (blob and config present) is fine.
    cache.put(&k, &layer, &file).await.unwrap();
    let got = cache.get(&k, &mut warnings).await.unwrap();
    assert_eq!(got.as_ref(), Some(&layer));
    assert!(warnings.is_empty(), "{warnings:?}");

    // The entry is an ordinary image tagged with the key.
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{repo}:{k}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inspected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(inspected["Layers"], serde_json::json!([layer.digest]));
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--config"])
        .arg(format!("docker://{repo}:{k}"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::json!([layer.diff_id])
    );
    assert_eq!(
        config["history"][0]["created_by"],
        layer.created_by.as_str()
    );

    // TTL 0: every entry is expired.
    let expired = RegistryCache::new(client(), &repo, parse_ttl("0").unwrap()).unwrap();
    assert!(expired.get(&k, &mut warnings).await.unwrap().is_none());
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("expired") && warnings[0].contains(&k),
        "{warnings:?}"
    );
    warnings.clear();

    // The layer blob deleted from the repository: a miss with a warning.
    let hex_url = format!(
        "http://{}/v2/{}/blobs/{}",
        reg,
        repo.strip_prefix(&format!("{reg}/")).unwrap(),
        layer.digest
    );
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "DELETE",
        ])
        .arg(&hex_url)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "202",
        "DELETE {hex_url}"
    );
    assert!(cache.get(&k, &mut warnings).await.unwrap().is_none());
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains(&k) && warnings[0].contains(&layer.digest),
        "{warnings:?}"
    );
    // Putting again restores it.
    warnings.clear();
    cache.put(&k, &layer, &file).await.unwrap();
    assert_eq!(cache.get(&k, &mut warnings).await.unwrap(), Some(layer));
}

#[tokio::test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
async fn registry_cache_rejects_bad_repositories_and_keys() {
    let reg = registry();
    for bad in [
        format!("{reg}/cache:tag"),
        format!("{reg}/cache@sha256:{}", "a".repeat(64)),
        "UPPER/case".to_string(),
        String::new(),
    ] {
        let err = RegistryCache::new(client(), &bad, Duration::from_secs(60)).unwrap_err();
        assert!(
            matches!(err, CacheError::InvalidRepository { .. }),
            "{bad:?}: {err}"
        );
    }
    let cache = RegistryCache::new(client(), &fresh_repo(&reg, "keys"), Duration::MAX).unwrap();
    let mut warnings = Vec::new();
    let err = cache.get("bad/key", &mut warnings).await.unwrap_err();
    assert!(matches!(err, CacheError::InvalidKey { .. }), "{err}");
}

#[tokio::test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
async fn layer_cache_tries_local_then_registry() {
    let reg = registry();
    let tmp = tempfile::tempdir().unwrap();
    let repo = fresh_repo(&reg, "combined");
    let both = LayerCache::new(vec![
        Box::new(LocalCache::open(&tmp.path().join("cache"), None).unwrap()),
        Box::new(RegistryCache::new(client(), &repo, Duration::from_secs(3600)).unwrap()),
    ]);
    let (layer, file) = layer_file(tmp.path(), 600, 20_000);
    let k = key("combined step");
    let mut warnings = Vec::new();
    assert!(both.get(&k, &mut warnings).await.unwrap().is_none());
    assert!(both.put(&k, &layer, &file).await.is_empty());
    match both.get(&k, &mut warnings).await.unwrap() {
        Some(CacheHit::Local { layer: got, path }) => {
            assert_eq!(got, layer);
            assert_eq!(sha256(&fs::read(path).unwrap()), layer.digest);
        }
        other => panic!("expected a local hit, got {other:?}"),
    }
    // Another agent with an empty local cache finds it in the registry.
    let registry_only = LayerCache::new(vec![
        Box::new(LocalCache::open(&tmp.path().join("other"), None).unwrap()),
        Box::new(RegistryCache::new(client(), &repo, Duration::from_secs(3600)).unwrap()),
    ]);
    match registry_only.get(&k, &mut warnings).await.unwrap() {
        Some(CacheHit::Registry {
            layer: got,
            repository,
        }) => {
            assert_eq!(got, layer);
            assert_eq!(repository.tag.as_deref(), Some(k.as_str()));
        }
        other => panic!("expected a registry hit, got {other:?}"),
    }
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[tokio::test]
async fn a_read_only_store_is_looked_up_but_never_written() {
    let tmp = tempfile::tempdir().unwrap();
    let layout_dir = tmp.path().join("layout");
    let cache = LayerCache::new(vec![
        Box::new(LocalCache::open(&tmp.path().join("cache"), None).unwrap()),
        Box::new(ReadOnly(
            LayoutCache::open(&layout_dir, Duration::MAX).unwrap(),
        )),
    ]);
    let (layer, file) = layer_file(tmp.path(), 700, 5_000);
    let k = key("read-only step");
    assert!(cache.put(&k, &layer, &file).await.is_empty());
    let layout = LayoutCache::open(&layout_dir, Duration::MAX).unwrap();
    let mut warnings = Vec::new();
    assert!(layout.get(&k, &mut warnings).unwrap().is_none());
    let writable = LayerCache::new(vec![Box::new(layout)]);
    assert!(writable.put(&k, &layer, &file).await.is_empty());
    let from_layout = LayerCache::new(vec![
        Box::new(LocalCache::open(&tmp.path().join("empty"), None).unwrap()),
        Box::new(ReadOnly(
            LayoutCache::open(&layout_dir, Duration::MAX).unwrap(),
        )),
    ]);
    match from_layout.get(&k, &mut warnings).await.unwrap() {
        Some(CacheHit::Local { layer: got, path }) => {
            assert_eq!(got, layer);
            assert!(path.starts_with(&layout_dir), "{path:?}");
        }
        other => panic!("expected a layout hit, got {other:?}"),
    }
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn diff_id_records_round_trip_and_refuse_bad_digests() {
    let dir = tempfile::tempdir().unwrap();
    let cache = LocalCache::open(dir.path(), None).unwrap();
    let blob = sha256(b"blob");
    let diff_id = sha256(b"tar");
    assert_eq!(cache.diff_id(&blob), None);
    cache.put_diff_id(&blob, &diff_id).unwrap();
    assert_eq!(cache.diff_id(&blob), Some(diff_id.clone()));
    assert!(cache.put_diff_id("sha256:zz", &diff_id).is_err());
    assert!(cache.put_diff_id(&blob, "not a digest").is_err());
    let hex = blob.strip_prefix("sha256:").unwrap();
    fs::write(dir.path().join("diffids").join(hex), "garbage").unwrap();
    assert_eq!(
        cache.diff_id(&blob),
        None,
        "a damaged record is not trusted"
    );
}
