//! RUN in an overlay rootfs: the sandbox mounts the step's layers itself, inside its own
//! mount namespace; the command's changes land in the upper directory only, the lower
//! directories are never written, no mount point the sandbox needs reaches the upper
//! directory, and no mount outlives the run or shows in the host's mount table.
//! Needs root (as the build machine has) and /bin/busybox.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use ocibuild_isolation::{
    run_on, Isolation, IsolationError, RunOutcome, RunRoot, RunSpec, TmpfsMount,
};
use ocibuild_snapshot::{Overlay, OverlayLayers, Snapshotter, StepRoot};

const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "ls", "id", "mkdir", "rm", "touch", "sleep", "test", "readlink", "mount",
];

/// A busybox base layer; `etc`: with /etc/passwd and /etc/group (else no /etc at all).
/// No /proc, /dev, /sys: the sandbox has to make those mount points.
fn base_layer(dir: &Path, etc: bool) {
    fs::create_dir_all(dir.join("bin")).unwrap();
    // Through `cp`, so this process never holds a writable descriptor of a file that is
    // executed later (a concurrent fork would make that exec fail with ETXTBSY).
    let copied = Command::new("cp")
        .arg("/bin/busybox")
        .arg(dir.join("bin/busybox"))
        .status()
        .unwrap();
    assert!(copied.success());
    fs::set_permissions(dir.join("bin/busybox"), fs::Permissions::from_mode(0o755)).unwrap();
    for applet in APPLETS {
        symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    fs::create_dir_all(dir.join("data/dir")).unwrap();
    fs::write(dir.join("data/keep"), "lower").unwrap();
    fs::write(dir.join("data/dir/f"), "lower").unwrap();
    fs::create_dir_all(dir.join("tmp")).unwrap();
    if etc {
        fs::create_dir_all(dir.join("etc")).unwrap();
        fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        )
        .unwrap();
        fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    }
}

/// Every path below `root` with type, mode, owner, size, content and mtime.
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        let content = if meta.is_file() {
            fs::read_to_string(&path).unwrap_or_default()
        } else {
            String::new()
        };
        out.insert(
            path.strip_prefix(root).unwrap().to_path_buf(),
            format!(
                "mode={:o} owner={}:{} size={} mtime={}.{} content={content}",
                meta.mode(),
                meta.uid(),
                meta.gid(),
                if meta.is_dir() { 0 } else { meta.len() },
                meta.mtime(),
                meta.mtime_nsec()
            ),
        );
        if meta.is_dir() {
            stack.extend(fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    out
}

struct Fixture {
    tmp: tempfile::TempDir,
    lower: PathBuf,
    overlay: Overlay,
    step: StepRoot,
}

fn fixture(etc: bool) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let lower = tmp.path().join("lower");
    base_layer(&lower, etc);
    let mut overlay = Overlay::new(&tmp.path().join("state")).unwrap();
    let step = overlay.prepare(std::slice::from_ref(&lower)).unwrap();
    Fixture {
        tmp,
        lower,
        overlay,
        step,
    }
}

impl Fixture {
    fn spec(&self, script: &str) -> RunSpec {
        let argv = vec!["/bin/sh".into(), "-c".into(), script.into()];
        let unused = PathBuf::from("/nonexistent-the-root-comes-from-run-on");
        RunSpec::new(unused, argv, self.tmp.path().join("scratch"))
    }

    fn layers(&self) -> &OverlayLayers {
        self.step.overlay_layers().unwrap()
    }

    /// Runs `spec` in the step's overlay, calling `during` with each output line.
    fn run_with(
        &mut self,
        spec: &RunSpec,
        during: &mut dyn FnMut(&str),
    ) -> Result<(RunOutcome, String), IsolationError> {
        let root = self.step.run_root();
        assert!(matches!(root, RunRoot::Overlay(_)));
        let mut out = String::new();
        let outcome = run_on(
            &root,
            spec,
            &mut |line| {
                let line = String::from_utf8_lossy(line);
                during(&line);
                out.push_str(&line);
            },
            &|| false,
        )?;
        Ok((outcome, out))
    }

    fn run_ok(&mut self, script: &str) -> String {
        let spec = self.spec(script);
        let (outcome, out) = self.run_with(&spec, &mut |_| {}).unwrap();
        assert_eq!(outcome.status, 0, "{out}");
        out
    }

    /// The names in the upper directory, recursively.
    fn upper(&self) -> Vec<PathBuf> {
        tree(&self.layers().upper)
            .into_keys()
            .filter(|p| !p.as_os_str().is_empty())
            .collect()
    }
}

fn is_whiteout(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

/// True while some overlay mount has `layers.upper` as its upper directory: `mount`
/// refuses another one with `index=on` on it then (run in a mount namespace of its own).
fn upper_in_use(layers: &OverlayLayers, scratch: &Path) -> bool {
    let target = scratch.join("probe-target");
    fs::create_dir_all(&target).unwrap();
    let options = format!(
        "lowerdir={},upperdir={},workdir={},index=on",
        layers.lowers[0].display(),
        layers.upper.display(),
        layers.work.display()
    );
    let status = Command::new("unshare")
        .args(["-m", "mount", "-t", "overlay", "overlay", "-o", &options])
        .arg(&target)
        .status()
        .unwrap();
    !status.success()
}

fn overlay_lines(table: &str) -> Vec<String> {
    fs::read_to_string(table)
        .unwrap()
        .lines()
        .filter(|l| l.contains(" overlay "))
        .map(String::from)
        .collect()
}

#[test]
fn a_run_changes_only_the_upper_directory() {
    let mut f = fixture(true);
    let lower_before = tree(&f.lower);
    let host_before = overlay_lines("/proc/1/mountinfo");
    let mut host_during = None;
    let spec = f.spec(
        "echo new > /data/new && echo changed > /data/keep && rm -r /data/dir \
         && rm /etc/group && mkdir /made && echo ready && sleep 0.2",
    );
    let (outcome, out) = f
        .run_with(&spec, &mut |line| {
            if line == "ready\n" {
                host_during = Some(overlay_lines("/proc/1/mountinfo"));
            }
        })
        .unwrap();
    assert_eq!(outcome.status, 0, "{out}");
    assert_eq!(
        host_during,
        Some(host_before),
        "no mount in the host's table"
    );
    assert_eq!(
        tree(&f.lower),
        lower_before,
        "the lower directory is untouched"
    );
    let upper = &f.layers().upper.clone();
    assert_eq!(fs::read_to_string(upper.join("data/new")).unwrap(), "new\n");
    assert_eq!(
        fs::read_to_string(upper.join("data/keep")).unwrap(),
        "changed\n"
    );
    assert!(is_whiteout(&upper.join("data/dir")));
    assert!(is_whiteout(&upper.join("etc/group")));
    assert!(upper.join("made").is_dir());
    // The host side sees the command's changes.
    let view = f.step.root_dir().unwrap();
    assert!(view.lstat(Path::new("data/dir")).unwrap().is_none());
    let diff = f.overlay.diff(&mut f.step).unwrap();
    let upserts: Vec<_> = diff
        .changes
        .upserts
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(upserts, ["data", "data/keep", "data/new", "etc", "made"]);
    let deletions: Vec<_> = diff
        .changes
        .deletions
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(deletions, ["data/dir", "etc/group"]);
}

#[test]
fn mount_points_the_image_lacks_never_reach_the_upper_directory() {
    let mut f = fixture(false);
    let mut spec = f.spec(
        "test -d /proc/self && test -c /dev/null && test -e /etc/resolv.conf \
         && test -e /etc/hosts && test -d /cache/tmp && echo ok",
    );
    spec.tmpfs_mounts = vec![TmpfsMount {
        target: "/cache/tmp".into(),
        size: None,
    }];
    let (outcome, out) = f.run_with(&spec, &mut |_| {}).unwrap();
    assert_eq!((outcome.status, out.as_str()), (0, "ok\n"));
    assert_eq!(
        f.upper(),
        Vec::<PathBuf>::new(),
        "nothing in the upper directory"
    );
    assert!(f.overlay.diff(&mut f.step).unwrap().changes.is_empty());
    let scratch = f.tmp.path().join("scratch");
    let left: Vec<_> = fs::read_dir(&scratch)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with("overlay-"))
        .collect();
    assert!(
        left.is_empty(),
        "the run's directories are removed: {left:?}"
    );
}

#[test]
fn a_file_written_next_to_a_made_mount_point_comes_with_its_directory_only() {
    let mut f = fixture(false);
    f.run_ok("echo x > /etc/mine");
    assert_eq!(
        f.upper(),
        [PathBuf::from("etc"), PathBuf::from("etc/mine")],
        "no resolv.conf or hosts placeholder"
    );
    let etc = fs::metadata(f.layers().upper.join("etc")).unwrap();
    assert_eq!((etc.mode() & 0o7777, etc.uid()), (0o755, 0));
}

#[test]
fn the_user_comes_from_the_overlays_passwd() {
    let mut f = fixture(true);
    let mut spec = f.spec("id -u; id -g; echo $HOME");
    spec.user = Some("nobody".into());
    let (outcome, out) = f.run_with(&spec, &mut |_| {}).unwrap();
    assert_eq!(
        (outcome.status, out.as_str()),
        (0, "65534\n65534\n/nonexistent\n")
    );
    spec.user = Some("ghost".into());
    let err = f.run_with(&spec, &mut |_| {}).unwrap_err();
    assert!(matches!(err, IsolationError::UnknownUser { .. }), "{err}");
}

#[test]
fn the_sandbox_mount_is_gone_after_the_run() {
    let mut f = fixture(true);
    let scratch = f.tmp.path().join("scratch");
    f.step.root_dir().unwrap();
    assert!(
        upper_in_use(f.layers(), &scratch),
        "the host-side view holds it"
    );
    f.run_ok("echo x > /x");
    assert!(
        !upper_in_use(f.layers(), &scratch),
        "nothing holds it after the run"
    );
}

/// A hostile command looks for a way to the layer directories: none of its processes
/// holds a descriptor outside the rootfs, and it cannot mount.
#[test]
fn the_command_holds_no_way_to_the_layer_directories() {
    let mut f = fixture(true);
    let lower = f.lower.display().to_string();
    let state = f.tmp.path().join("state").display().to_string();
    let out = f.run_ok(
        "for fd in /proc/[0-9]*/fd/*; do readlink \"$fd\"; done 2>/dev/null; \
         mount -t tmpfs none /tmp 2>/dev/null && echo mounted; \
         mount -o remount,rw / 2>/dev/null && echo remounted; echo done",
    );
    assert!(out.ends_with("done\n"), "{out}");
    assert!(!out.contains("mounted"), "{out}");
    assert!(!out.contains(&lower) && !out.contains(&state), "{out}");
}

#[test]
fn an_overlay_needs_namespace_isolation() {
    let mut f = fixture(true);
    let mut spec = f.spec("true");
    spec.isolation = Isolation::Chroot;
    let err = f.run_with(&spec, &mut |_| {}).unwrap_err();
    assert!(matches!(err, IsolationError::InvalidSpec(_)), "{err}");
}

/// The image has /etc (with its own mode, owner, xattr and times) but no resolv.conf:
/// the sandbox's layer of mount points holds a copy of /etc with the same attributes,
/// so the command sees /etc as it is, and what it changes in /etc is copied up with the
/// real attributes.
#[test]
fn a_directory_holding_a_made_mount_point_keeps_its_attributes() {
    let mut f = fixture(true);
    let etc = f.lower.join("etc");
    fs::set_permissions(&etc, fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::chown(&etc, Some(5), Some(6)).unwrap();
    xattr::set(&etc, "user.origin", b"image").unwrap();
    let mtime = filetime::FileTime::from_unix_time(1_500_000_000, 123_456_789);
    filetime::set_file_times(&etc, mtime, mtime).unwrap();
    let out = f.run_ok("ls -ld /etc; echo changed > /etc/passwd");
    assert!(out.starts_with("drwxr-x---"), "{out}");
    let upper_etc = f.layers().upper.join("etc");
    let meta = fs::metadata(&upper_etc).unwrap();
    assert_eq!(
        (
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid(),
            meta.mtime(),
            meta.mtime_nsec()
        ),
        (0o750, 5, 6, 1_500_000_000, 123_456_789)
    );
    assert_eq!(
        xattr::get(&upper_etc, "user.origin").unwrap().as_deref(),
        Some(&b"image"[..])
    );
    let diff = f.overlay.diff(&mut f.step).unwrap();
    let upserts: Vec<_> = diff.changes.upserts.into_iter().collect();
    assert_eq!(
        upserts,
        [PathBuf::from("etc/passwd")],
        "/etc itself is unchanged"
    );
}
