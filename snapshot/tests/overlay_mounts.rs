//! The overlay snapshotter's mounts: detached, invisible in every mount table, gone when
//! their descriptors are closed, also when the process is killed; and many lower
//! directories stack fine.
//!
//! Whether a mount is still alive is asked of the kernel itself: overlayfs marks an upper
//! directory "in use" while a mount has it, and refuses a second mount with `index=on` on
//! it (`EBUSY`). Needs root, as the build machine has.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ocibuild_snapshot::overlay::{LowerOption, MAX_LOWERS};
use ocibuild_snapshot::{Error, Overlay, OverlayLayers, Snapshotter};
use rustix::mount::{fsconfig_create, fsconfig_set_string, fsopen, FsOpenFlags};

#[path = "helpers/overlay.rs"]
mod overlay;

use overlay::{layer_paths, layers};

/// True while some mount has `layers.upper` as its upper directory: the kernel then
/// refuses another overlay with `index=on` on it.
fn upper_in_use(layers: &OverlayLayers) -> bool {
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).unwrap();
    let set = |key: &str, value: &Path| fsconfig_set_string(&fs, key, value).unwrap();
    set("lowerdir", &layers.lowers[0]);
    set("upperdir", &layers.upper);
    set("workdir", &layers.work);
    fsconfig_set_string(&fs, "index", "on").unwrap();
    match fsconfig_create(&fs) {
        Ok(()) => false,
        Err(rustix::io::Errno::BUSY) => true,
        Err(e) => panic!("probing {}: {e}", layers.upper.display()),
    }
}

/// The overlay lines of a mount table.
fn overlay_mounts(table: &str) -> Vec<String> {
    fs::read_to_string(table)
        .unwrap()
        .lines()
        .filter(|line| line.contains(" - overlay ocibuild "))
        .map(String::from)
        .collect()
}

/// A detached mount is seen by no mount table, the host's (pid 1) or this process', and
/// is alive exactly as long as a descriptor of it is open.
#[test]
fn a_detached_mount_is_in_no_mount_table_and_lives_while_its_descriptors_do() {
    let tmp = tempfile::tempdir().unwrap();
    let layers = layers(tmp.path());
    let (host, own) = (
        overlay_mounts("/proc/1/mountinfo"),
        overlay_mounts("/proc/self/mountinfo"),
    );
    let root = layers.open().unwrap();
    let dir = root.as_dir().try_clone().unwrap();
    assert_eq!(overlay_mounts("/proc/1/mountinfo"), host);
    assert_eq!(overlay_mounts("/proc/self/mountinfo"), own);
    assert!(upper_in_use(&layers));
    drop(root);
    assert!(
        upper_in_use(&layers),
        "a Dir opened from the mount keeps it"
    );
    drop(dir);
    assert!(
        !upper_in_use(&layers),
        "the last descriptor freed the mount"
    );
}

/// A process holding a mount (`snapshot-test-helper hold-mount`) and killed with SIGKILL
/// leaves no mount behind.
#[test]
fn killing_the_holder_frees_its_mount() {
    let tmp = tempfile::tempdir().unwrap();
    let mut holder = Command::new(env!("CARGO_BIN_EXE_snapshot-test-helper"))
        .arg("hold-mount")
        .arg(tmp.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(holder.stdout.take().unwrap());
    let held = stdout.lines().any(|line| line.unwrap() == "holding");
    assert!(held, "the holder mounted");
    let layers = layer_paths(tmp.path());
    assert!(upper_in_use(&layers));
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(!upper_in_use(&layers), "SIGKILL freed the mount");
    // The upper directory is reusable: a step mounts over it again.
    let root = layers.open().unwrap();
    assert!(root.as_dir().lstat("file".as_ref()).unwrap().is_some());
}

#[test]
fn an_error_while_mounting_leaves_no_mount() {
    let tmp = tempfile::tempdir().unwrap();
    let mut layers = layers(tmp.path());
    layers.lowers.push(tmp.path().join("missing"));
    let err = layers.open().unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    layers.lowers.pop();
    assert!(!upper_in_use(&layers));
}

#[test]
fn a_step_and_its_commit_leave_no_mount() {
    let tmp = tempfile::tempdir().unwrap();
    let lower = layers(tmp.path()).lowers[0].clone();
    let mut overlay = Overlay::new(&tmp.path().join("state")).unwrap();
    let mut step = overlay.prepare(std::slice::from_ref(&lower)).unwrap();
    step.root_dir()
        .unwrap()
        .as_dir()
        .create_file("made".as_ref(), 0o644)
        .unwrap();
    let in_use_during = upper_in_use(step.overlay_layers().unwrap());
    overlay.diff(&mut step).unwrap();
    let upper = overlay.commit(step).unwrap().unwrap();
    assert!(in_use_during);
    let after = OverlayLayers {
        lowers: vec![lower],
        upper,
        work: tmp.path().join("work-after"),
    };
    fs::create_dir(&after.work).unwrap();
    assert!(!upper_in_use(&after));
}

/// `count` lower directories in `tmp`, bottom-most first: each holds its own file
/// `only-<n>` and a file `shared` saying `<n>`.
fn many_lowers(tmp: &Path, count: usize) -> Vec<PathBuf> {
    (0..count)
        .map(|n| {
            let dir = tmp.join(format!(
                "layer-with-a-long-name-to-show-names-do-not-matter-{n}"
            ));
            fs::create_dir(&dir).unwrap();
            fs::write(dir.join(format!("only-{n}")), n.to_string()).unwrap();
            fs::write(dir.join("shared"), n.to_string()).unwrap();
            dir
        })
        .collect()
}

#[test]
fn two_hundred_lowers_mount_and_the_last_is_on_top() {
    let tmp = tempfile::tempdir().unwrap();
    let lowers = many_lowers(tmp.path(), 200);
    let mut overlay = Overlay::new(&tmp.path().join("state")).unwrap();
    let mut step = overlay.prepare(&lowers).unwrap();
    let root = step.root_dir().unwrap();
    let fd = root.as_dir().as_fd().as_raw_fd();
    let merged = PathBuf::from(format!("/proc/self/fd/{fd}"));
    assert_eq!(fs::read_to_string(merged.join("shared")).unwrap(), "199");
    for n in 0..200 {
        assert_eq!(
            fs::read_to_string(merged.join(format!("only-{n}"))).unwrap(),
            n.to_string()
        );
    }
    fs::write(merged.join("shared"), "changed").unwrap();
    let diff = overlay.diff(&mut step).unwrap();
    assert_eq!(
        diff.changes.upserts.into_iter().collect::<Vec<_>>(),
        [PathBuf::from("shared")]
    );
}

#[test]
fn the_kernels_stack_limit_is_a_typed_error() {
    let tmp = tempfile::tempdir().unwrap();
    let lowers = many_lowers(tmp.path(), MAX_LOWERS + 1);
    let layers = OverlayLayers {
        lowers,
        upper: tmp.path().join("upper"),
        work: tmp.path().join("work"),
    };
    fs::create_dir(&layers.upper).unwrap();
    fs::create_dir(&layers.work).unwrap();
    let err = layers.mount_detached().unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooManyLowers {
                count: 501,
                limit: 500
            }
        ),
        "{err}"
    );
    let mut top_500 = layers.clone();
    top_500.lowers.remove(0);
    top_500.mount_detached().unwrap();
}

/// Kernels before 6.8 take one `lowerdir=` list of at most 255 bytes: the short
/// `/proc/self/fd/<n>` names fit about a dozen, and more give the typed error.
#[test]
fn the_lower_list_of_older_kernels_takes_what_fits_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let lowers = many_lowers(tmp.path(), 40);
    let mut layers = OverlayLayers {
        lowers,
        upper: tmp.path().join("upper"),
        work: tmp.path().join("work"),
    };
    fs::create_dir(&layers.upper).unwrap();
    fs::create_dir(&layers.work).unwrap();
    let err = layers.mount_detached_with(LowerOption::List).unwrap_err();
    let Error::TooManyLowers { count: 40, limit } = err else {
        panic!("{err}")
    };
    assert!(limit >= 10, "{limit}");
    layers.lowers.drain(..40 - limit);
    let fd = layers.mount_detached_with(LowerOption::List).unwrap();
    let shared = format!("/proc/self/fd/{}/shared", fd.as_raw_fd());
    assert_eq!(fs::read_to_string(shared).unwrap(), "39");
}

/// The probe says why overlays cannot be used: a state directory that cannot be made, or
/// one on a filesystem overlayfs refuses as upper (here: inside another overlay).
#[test]
fn the_probe_says_why_overlays_cannot_be_used() {
    use ocibuild_snapshot::Unavailable;
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("file"), b"").unwrap();
    let reason = Overlay::available(&tmp.path().join("file/state")).unwrap_err();
    assert!(matches!(reason, Unavailable::StateDir(_)), "{reason}");
    let outer = layers(&tmp.path().join("outer"));
    let root = outer.open().unwrap();
    let inside = PathBuf::from(format!(
        "/proc/self/fd/{}",
        root.as_dir().as_fd().as_raw_fd()
    ));
    let reason = Overlay::available(&inside.join("state")).unwrap_err();
    assert!(matches!(reason, Unavailable::Refused(_)), "{reason}");
    assert!(reason.to_string().contains("upper"), "{reason}");
}

/// In a user namespace of its own (no mount rights over the host's filesystems) the probe
/// (`snapshot-test-helper probe`) says "not permitted".
#[test]
fn without_mount_rights_the_probe_says_not_permitted() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new("unshare")
        .arg("--user")
        .arg(env!("CARGO_BIN_EXE_snapshot-test-helper"))
        .arg("probe")
        .arg(tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("not-permitted: "), "{stdout}");
}
