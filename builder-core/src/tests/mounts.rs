//! Tests of the `mounts` module: `--secret` parsing, cache directories (including
//! locking between holders that share nothing but the directory) and secrets. `--mount` parsing is tested in
//! `ocibuild-dockerfile`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Barrier};
use std::time::Duration;

use crate::mounts::{
    missing_secret, parse_secret_flag, CacheMounts, MountError, SecretSource, Secrets, Sharing,
};

// ---------------------------------------------------------------------------------------
// parse_secret_flag

#[test]
fn secret_flags() {
    assert_eq!(
        parse_secret_flag("id=npmrc,src=/home/me/.npmrc").unwrap(),
        ("npmrc".into(), SecretSource::File("/home/me/.npmrc".into()))
    );
    assert_eq!(
        parse_secret_flag("id=npmrc,source=/f").unwrap().1,
        SecretSource::File("/f".into())
    );
    assert_eq!(
        parse_secret_flag("id=tok,env=GITHUB_TOKEN").unwrap(),
        ("tok".into(), SecretSource::Env("GITHUB_TOKEN".into()))
    );
    assert_eq!(
        parse_secret_flag("id=GITHUB_TOKEN").unwrap(),
        (
            "GITHUB_TOKEN".into(),
            SecretSource::Env("GITHUB_TOKEN".into())
        )
    );
    assert_eq!(
        parse_secret_flag("type=file,id=a,src=/f").unwrap().1,
        SecretSource::File("/f".into())
    );
    assert_eq!(
        parse_secret_flag("type=env,id=a,src=VAR").unwrap().1,
        SecretSource::Env("VAR".into())
    );
    assert_eq!(
        parse_secret_flag("TYPE=ENV,ID=a,ENV=VAR").unwrap(),
        ("a".into(), SecretSource::Env("VAR".into()))
    );
    assert_eq!(
        parse_secret_flag("type=env,id=A").unwrap().1,
        SecretSource::Env("A".into())
    );
    assert_eq!(
        parse_secret_flag(r#"id=a,"src=/x,y""#).unwrap().1,
        SecretSource::File("/x,y".into())
    );
    for (bad, needle) in [
        ("src=/f", "id="),
        ("id=", "id="),
        ("", "id="),
        ("id=a,src=/f,env=V", "both"),
        ("id=a,type=ssh", "ssh"),
        ("id=a,type=file", "src="),
        ("id=a,type=file,env=V", "type=file"),
        ("id=a,colour=1", "colour"),
        ("id=a,required", "key=value"),
        ("id=a,src=", "src"),
        ("id=a,env=", "env"),
    ] {
        match parse_secret_flag(bad) {
            Ok(v) => panic!("{bad:?} parsed as {v:?}"),
            Err(e) => assert!(e.to_string().contains(needle), "{bad}: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// CacheMounts

#[test]
fn shared_cache_same_dir_fresh_once() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("caches");
    let caches = CacheMounts::open(&root).unwrap();
    assert!(root.is_dir());
    let a = caches
        .acquire("gradle", Sharing::Shared, 0o750, 1000, 1001)
        .unwrap();
    assert!(a.fresh);
    assert!(a.path.starts_with(&root) && a.path.is_dir());
    let meta = fs::metadata(&a.path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o750);
    if nix::unistd::geteuid().is_root() {
        assert_eq!((meta.uid(), meta.gid()), (1000, 1001));
    }
    fs::write(a.path.join("kept"), "x").unwrap();
    let b = caches
        .acquire("gradle", Sharing::Shared, 0o700, 0, 0)
        .unwrap();
    assert_eq!(a.path, b.path);
    assert!(!b.fresh);
    // An existing directory keeps its mode and content.
    assert_eq!(
        fs::metadata(&b.path).unwrap().permissions().mode() & 0o7777,
        0o750
    );
    assert!(b.path.join("kept").exists());
    // Another CacheMounts on the same directory (another build) sees the same cache.
    let c = CacheMounts::open(&root)
        .unwrap()
        .acquire("gradle", Sharing::Locked, 0o755, 0, 0)
        .unwrap();
    assert_eq!(c.path, a.path);
    assert!(!c.fresh);
    // A different id is a different directory.
    let d = caches
        .acquire("maven", Sharing::Shared, 0o755, 0, 0)
        .unwrap();
    assert_ne!(d.path, a.path);
    assert!(d.fresh);
}

#[test]
fn cache_ids_stay_inside() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("caches");
    let caches = CacheMounts::open(&root).unwrap();
    let mut seen = Vec::new();
    for id in [
        "/root/.cache",
        "../escape",
        "../../../../etc",
        "..",
        ".",
        "a/../../b",
        "/",
        "",
        "x\0y",
        &"long".repeat(200),
    ] {
        for sharing in [Sharing::Shared, Sharing::Locked, Sharing::Private] {
            let lease = caches.acquire(id, sharing, 0o755, 0, 0).unwrap();
            assert_eq!(lease.path.parent(), Some(root.as_path()), "{id:?}");
            let name = lease.path.file_name().unwrap().to_str().unwrap();
            assert!(!name.starts_with('.') && !name.contains('/'), "{name}");
            seen.push(lease.path.clone());
        }
    }
    // Nothing was created outside the cache directory.
    let outside: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(outside, vec![std::ffi::OsString::from("caches")]);
    // Distinct ids got distinct directories ("../escape" and "/escape" too).
    let a = caches.acquire("a/b", Sharing::Shared, 0o755, 0, 0).unwrap();
    let b = caches.acquire("a_b", Sharing::Shared, 0o755, 0, 0).unwrap();
    assert_ne!(a.path, b.path);
}

#[test]
fn private_cache_gives_concurrent_holders_own_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let caches = CacheMounts::open(tmp.path()).unwrap();
    let a = caches
        .acquire("npm", Sharing::Private, 0o755, 0, 0)
        .unwrap();
    let b = caches
        .acquire("npm", Sharing::Private, 0o755, 0, 0)
        .unwrap();
    assert!(a.fresh && b.fresh);
    assert_ne!(a.path, b.path);
    let a_path = a.path.clone();
    drop(a);
    // Released: the next user gets the first directory back, no longer fresh.
    let c = caches
        .acquire("npm", Sharing::Private, 0o755, 0, 0)
        .unwrap();
    assert_eq!(c.path, a_path);
    assert!(!c.fresh);
    // From another thread at the same time as b and c: a third directory.
    let caches2 = caches.clone();
    let d = std::thread::spawn(move || {
        caches2
            .acquire("npm", Sharing::Private, 0o755, 0, 0)
            .unwrap()
            .path
    })
    .join()
    .unwrap();
    assert!(d != b.path && d != c.path);
}

#[test]
fn locked_cache_blocks_other_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let caches = CacheMounts::open(tmp.path()).unwrap();
    let first = caches.acquire("m2", Sharing::Locked, 0o755, 0, 0).unwrap();
    let (tx, rx) = mpsc::channel();
    let caches2 = caches.clone();
    let waiter = std::thread::spawn(move || {
        let lease = caches2.acquire("m2", Sharing::Locked, 0o755, 0, 0).unwrap();
        tx.send(lease.path.clone()).unwrap();
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "a second Locked lease was granted while the first was held"
    );
    let first_path = first.path.clone();
    drop(first);
    let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(got, first_path);
    waiter.join().unwrap();
    // A Shared user is not held up by a Locked holder.
    let _held = caches.acquire("m2", Sharing::Locked, 0o755, 0, 0).unwrap();
    let shared = caches.acquire("m2", Sharing::Shared, 0o755, 0, 0).unwrap();
    assert_eq!(shared.path, first_path);
}

/// A holder of [`locked_cache_serialises_holders_that_share_only_the_directory`]: opens
/// the cache directory `dir` itself (as another process would), waits for the other holder
/// at `barrier`, then holds the Locked cache for 300 ms, logging `start WHO` and `end WHO`
/// to `dir/log` and leaving a file `by-WHO` in the cache. The 300 ms are the window in which
/// a lock that failed to exclude would let the other holder log its start. Returns the
/// cache's path.
fn locked_holder(dir: &Path, who: &str, barrier: &Barrier) -> PathBuf {
    let caches = CacheMounts::open(dir).unwrap();
    barrier.wait();
    let lease = caches
        .acquire("shared-build-cache", Sharing::Locked, 0o755, 0, 0)
        .unwrap();
    let log = dir.join("log");
    let append = |line: String| {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        f.write_all(line.as_bytes()).unwrap();
    };
    append(format!("start {who}\n"));
    fs::write(lease.path.join(format!("by-{who}")), "").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    append(format!("end {who}\n"));
    lease.path.clone()
}

/// Two holders that share nothing but the cache directory take turns with a Locked cache.
/// The lock is an `flock`, which belongs to an open file description: two threads that
/// each open the directory contend exactly as two processes do (the e2e test
/// `mounts::sharing_locked_serialises_two_concurrent_builds_on_one_cache_id` runs two
/// `ocibuild` processes).
#[test]
fn locked_cache_serialises_holders_that_share_only_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("caches");
    let barrier = Arc::new(Barrier::new(2));
    let holders: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|who| {
            let (dir, barrier) = (dir.clone(), barrier.clone());
            std::thread::spawn(move || locked_holder(&dir, who, &barrier))
        })
        .collect();
    let paths: Vec<PathBuf> = holders.into_iter().map(|h| h.join().unwrap()).collect();
    let log = fs::read_to_string(dir.join("log")).unwrap();
    let lines: Vec<(&str, &str)> = log.lines().map(|l| l.split_once(' ').unwrap()).collect();
    // start X, end X, start Y, end Y: one holder at a time.
    assert_eq!(lines.len(), 4, "{log}");
    assert_eq!((lines[0].0, lines[1].0), ("start", "end"), "{log}");
    assert_eq!((lines[2].0, lines[3].0), ("start", "end"), "{log}");
    assert_eq!(lines[0].1, lines[1].1, "the two holders overlapped:\n{log}");
    assert_eq!(lines[2].1, lines[3].1, "the two holders overlapped:\n{log}");
    assert_ne!(lines[0].1, lines[2].1, "{log}");
    // Both used the same directory, one after the other.
    assert_eq!(paths[0], paths[1]);
    let mut left: Vec<String> = fs::read_dir(&paths[0])
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["by-a", "by-b"]);
}

// ---------------------------------------------------------------------------------------
// Secrets

const VALUE: &str = "s3cr3t-Value-9f8e7d";

#[test]
fn secret_values_from_file_and_env() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("npmrc");
    fs::write(&file, VALUE).unwrap();
    let var = "OCIBUILD_MOUNTS_TEST_SECRET_SET";
    std::env::set_var(var, VALUE);
    let secrets = Secrets::new(vec![
        ("npmrc".into(), SecretSource::File(file.clone())),
        ("token".into(), SecretSource::Env(var.into())),
        ("dup".into(), SecretSource::Env("NOPE".into())),
        ("dup".into(), SecretSource::File(file.clone())),
    ]);
    assert_eq!(secrets.ids(), vec!["npmrc", "token", "dup"]);
    assert_eq!(
        secrets.value("npmrc").unwrap().as_deref(),
        Some(VALUE.as_bytes())
    );
    assert_eq!(
        secrets.value("token").unwrap().as_deref(),
        Some(VALUE.as_bytes())
    );
    // Later duplicate wins.
    assert_eq!(
        secrets.value("dup").unwrap().as_deref(),
        Some(VALUE.as_bytes())
    );
    assert_eq!(secrets.value("other").unwrap(), None);
    assert!(Secrets::default().ids().is_empty());
    // Read when asked: a changed file is seen.
    fs::write(&file, "v2").unwrap();
    assert_eq!(secrets.value("npmrc").unwrap().as_deref(), Some(&b"v2"[..]));

    // Debug never shows values.
    let debug = format!("{secrets:?} {:?}", SecretSource::Env(var.into()));
    assert!(!debug.contains(VALUE), "{debug}");
    assert!(debug.contains("npmrc") && debug.contains(var), "{debug}");
}

#[test]
fn secret_errors_name_the_source_not_the_value() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("absent");
    // Unreadable: a directory whose name is... not the value, while the value is in env.
    let unset = "OCIBUILD_MOUNTS_TEST_SECRET_UNSET";
    std::env::remove_var(unset);
    let secrets = Secrets::new(vec![
        ("f".into(), SecretSource::File(missing.clone())),
        ("d".into(), SecretSource::File(tmp.path().to_path_buf())),
        ("e".into(), SecretSource::Env(unset.into())),
    ]);
    let e = secrets.value("f").unwrap_err().to_string();
    assert!(e.contains("\"f\"") && e.contains("absent"), "{e}");
    let e = secrets.value("d").unwrap_err().to_string();
    assert!(e.contains("\"d\""), "{e}");
    let e = secrets.value("e").unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(text.contains(unset) && text.contains("\"e\""), "{text}");
    assert!(!text.contains(VALUE));
    // An unreadable file that exists with a value (permission denied needs non-root).
    let locked = tmp.path().join("locked");
    fs::write(&locked, VALUE).unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    let s = Secrets::new(vec![("l".into(), SecretSource::File(locked.clone()))]);
    match s.value("l") {
        Ok(v) => assert_eq!(v.as_deref(), Some(VALUE.as_bytes())), // root reads anyway
        Err(e) => {
            let text = format!("{e} {e:?}");
            assert!(!text.contains(VALUE), "{text}");
        }
    }
    // write_to reports the same errors.
    let e = secrets
        .write_to("e", &tmp.path().join("out"), 0o400, 0, 0)
        .unwrap_err();
    assert!(matches!(e, MountError::SecretEnvUnset { .. }));

    let e = missing_secret("npmrc").to_string();
    assert!(
        e.contains("npmrc")
            && e.contains("--secret id=npmrc,src=<file>")
            && e.contains("--secret id=npmrc,env=<VAR>"),
        "{e}"
    );
}

#[test]
fn write_to_makes_a_private_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("src");
    fs::write(&file, VALUE).unwrap();
    let secrets = Secrets::new(vec![
        ("npmrc".into(), SecretSource::File(file)),
        ("../../evil".into(), SecretSource::Env("PATH".into())),
    ]);
    let dir = tmp.path().join("run-1/secrets");
    let path = secrets
        .write_to("npmrc", &dir, 0o400, 0, 0)
        .unwrap()
        .unwrap();
    assert!(path.starts_with(&dir));
    assert_eq!(fs::read_to_string(&path).unwrap(), VALUE);
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o400);
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // A second write of the same id gets another file; other modes and owners.
    let again = secrets
        .write_to("npmrc", &dir, 0o440, 1000, 1000)
        .unwrap()
        .unwrap();
    assert_ne!(again, path);
    let meta = fs::metadata(&again).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o440);
    if nix::unistd::geteuid().is_root() {
        assert_eq!((meta.uid(), meta.gid()), (1000, 1000));
    }
    // Ids cannot escape the directory.
    let evil = secrets
        .write_to("../../evil", &dir, 0o400, 0, 0)
        .unwrap()
        .unwrap();
    assert_eq!(evil.parent(), Some(dir.as_path()));
    // Unknown id: nothing written.
    assert_eq!(secrets.write_to("nope", &dir, 0o400, 0, 0).unwrap(), None);
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 3);
}
