//! `--isolation none` (kaniko mode): the build happens in `/` of a container. These tests
//! never touch the test machine's `/`: they run ocibuild inside a throwaway root made for
//! the test (`unshare --mount --pid --fork` + `chroot`, with /proc and /dev mounted and the
//! context at /workspace), as a Kubernetes pod would run it; without container markers, as a
//! plain chroot that kaniko only builds in with `--force`.

use crate::common::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
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
#[ignore = "needs the lab: scripts/test.sh runs it"]
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

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn executor_force_outside_a_container_builds_in_root_like_kaniko() {
    // A plain chroot: no /.dockerenv, no $container, no container cgroup.
    let root = throwaway_root(false);
    let r = root.path();
    let reg = registry();
    let dest = format!("{}:1", unique_repo("liveroot-force"));
    let base_arg = format!("BASE_REGISTRY={reg}");
    let mut args = vec!["--build-arg", &base_arg, "--destination", &dest];

    // kaniko's "should only be run inside of a container": refused, naming --force.
    let out = in_root(r, &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert!(stderr.contains("inside a container"), "{stderr}");
    assert!(!r.join("bin").exists(), "nothing was unpacked");

    // With --force it builds in `/` (no namespaces, which a chroot may not create) and
    // pushes, warning loudly that the host's / is modified.
    args.push("--force");
    let out = in_root(r, &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("BUILDING IN THIS MACHINE'S /") && stderr.contains("is modified"),
        "{stderr}"
    );
    assert_eq!(
        fs::read_to_string(r.join("var/lib/app/greeting")).unwrap(),
        "hello\n",
        "the build happened in the chroot's /"
    );
    assert!(
        r.join("kaniko/executor").is_file(),
        "the ignored paths survived"
    );
    let img = unpack(&format!("docker://{dest}"));
    assert_eq!(
        fs::read_to_string(img.rootfs.join("var/lib/app/greeting")).unwrap(),
        "hello\n"
    );
    assert!(
        !img.rootfs.join("kaniko").exists(),
        "the builder is not in the image"
    );
}
