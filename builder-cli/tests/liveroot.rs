//! `--isolation none` (kaniko mode): the build happens in `/` of a container. These tests
//! never touch the test machine's `/`: they run ocibuild inside a throwaway root made for
//! the test (`unshare --mount --pid --fork` + `chroot`, with /proc and /dev mounted and the
//! context at /workspace), as a Kubernetes pod would run it.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

/// A root filesystem holding only ocibuild (at /kaniko/executor) and the libraries it
/// needs, plus the demo context at /workspace; `container` adds `/.dockerenv`.
fn throwaway_root(container: bool) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for dir in ["kaniko", "proc", "dev", "tmp", "workspace", "etc"] {
        fs::create_dir_all(r.join(dir)).unwrap();
    }
    let exe = env!("CARGO_BIN_EXE_ocibuild");
    fs::copy(exe, r.join("kaniko/executor")).unwrap();
    for lib in run("ldd", &[exe])
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let dest = r.join(lib.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(lib, &dest).unwrap();
    }
    run(
        "cp",
        &[
            "-a",
            &format!("{}/.", testdata("demo").display()),
            r.join("workspace").to_str().unwrap(),
        ],
    );
    if container {
        fs::write(r.join(".dockerenv"), "").unwrap();
    }
    root
}

/// Runs `/kaniko/executor ARGS` chrooted into `root` in new mount, pid and cgroup
/// namespaces, without the container hints of this process's environment.
fn in_root(root: &Path, args: &[&str]) -> Output {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let r = root.display();
    let script = format!(
        "mount -t proc proc {r}/proc && mount --rbind /dev {r}/dev && \
         exec chroot {r} /kaniko/executor {}",
        quoted.join(" ")
    );
    Command::new("unshare")
        .args([
            "--mount", "--pid", "--cgroup", "--fork", "sh", "-c", &script,
        ])
        .env_remove("container")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("running unshare")
}

#[test]
fn builds_in_the_containers_root_and_leaves_the_ignored_paths_alone() {
    let reg = registry();
    let root = throwaway_root(true);
    let r = root.path();
    let dest = format!("{}:1", unique_repo("liveroot"));
    let base_arg = format!("BASE_REGISTRY={reg}");
    let out = in_root(
        r,
        &[
            "build",
            "--isolation",
            "none",
            "--context",
            "/workspace",
            "--dockerfile",
            "/workspace/Dockerfile",
            "--build-arg",
            &base_arg,
            "--destination",
            &dest,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The build really happened in the throwaway root's `/`.
    assert_eq!(
        fs::read_to_string(r.join("var/lib/app/greeting")).unwrap(),
        "hello\n"
    );
    assert!(
        r.join("bin/busybox").is_file(),
        "the base image was unpacked into /"
    );
    // The ignored paths survived: the executor, the context, /proc and /dev mount points.
    assert!(r.join("kaniko/executor").is_file());
    assert!(r.join("workspace/Dockerfile").is_file());
    assert!(r.join("proc").is_dir() && r.join("dev").is_dir());
    assert!(
        !Path::new("/var/lib/app/greeting").exists(),
        "the test machine is untouched"
    );

    // The image is the same as with namespace isolation: files, whiteout, no leaks.
    let img = unpack(&format!("docker://{dest}"));
    let start = img.rootfs.join("app/bin/start");
    assert_eq!(
        fs::read(&start).unwrap(),
        fs::read(testdata("demo/bin/start")).unwrap()
    );
    assert_eq!(fs::metadata(&start).unwrap().mode() & 0o7777, 0o755);
    assert!(!img.rootfs.join("etc/app/config.txt").exists());
    assert!(
        !img.rootfs.join("kaniko").exists(),
        "the builder is not in the image"
    );
    assert!(
        !img.rootfs.join("workspace").exists(),
        "the context is not in the image"
    );
    for layer in img.layer_files().iter().skip(1) {
        for name in tar_names(layer) {
            for ignored in [
                "kaniko",
                "workspace",
                "proc",
                "dev",
                "lib/x86_64-linux-gnu",
                ".dockerenv",
            ] {
                assert!(!name.starts_with(ignored), "{name} leaked into a layer");
            }
        }
    }
}

#[test]
fn refuses_to_build_in_root_outside_a_container_unless_forced() {
    let root = throwaway_root(false);
    let out = in_root(
        root.path(),
        &[
            "build",
            "--isolation",
            "none",
            "--context",
            "/workspace",
            "--no-push",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("overwrites"), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert!(!root.path().join("bin").exists(), "nothing was unpacked");

    let reg = registry();
    let base_arg = format!("BASE_REGISTRY={reg}");
    let out = in_root(
        root.path(),
        &[
            "build",
            "--isolation",
            "none",
            "--force",
            "--context",
            "/workspace",
            "--build-arg",
            &base_arg,
            "--no-push",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(root.path().join("var/lib/app/greeting").exists());
}
