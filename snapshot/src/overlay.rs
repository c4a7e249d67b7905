//! The overlayfs snapshotter: a step's rootfs is an overlay of the stage's lower
//! directories and a fresh upper directory, and the step's layer is read from the upper
//! directory alone.
//!
//! - Mounting: [`OverlayLayers`] names the directories of one overlay; it is mounted with
//!   [`options`] (`redirect_dir=off,metacopy=off,index=off,xino=off`; `userxattr` in a
//!   user namespace, see [`XattrNamespace`]), so the upper
//!   directory stays plain: no redirects, no metadata-only copies, no index, and it can
//!   itself be a lower directory of the next step. The host side only ever uses a
//!   detached mount ([`OverlayLayers::open`], see the `mount` module): nothing is mounted
//!   in the host's mount namespace, and closing the descriptors frees the mount, also on
//!   errors and `kill -9`. The RUN sandbox mounts the same layers inside its own mount
//!   namespace (`ocibuild_isolation::run_on`).
//! - Limits: at most [`MAX_LOWERS`] lower directories per mount (the kernel's stack
//!   depth); [`Overlay::prepare`] keeps one free for the sandbox (see [`MAX_STEP_LOWERS`],
//!   and [`MAX_LIST_STEP_LOWERS`] on kernels that take one `lowerdir=` list)
//!   and returns [`crate::Error::TooManyLowers`] beyond that: the engine squashes or falls
//!   back, this crate does not squash on its own. Lower directories are passed one
//!   `lowerdir+` each (Linux 6.8+, no length limit); older kernels get one `lowerdir=` list
//!   of short names, which fits about a dozen (see [`LowerOption`]).
//! - Changes: see the `upper` module for how the upper directory becomes the same
//!   [`crate::Changes`] as [`crate::StatWalk`] finds.
//! - Fallback: [`Overlay::available`] tries a tiny detached overlay in the state
//!   directory and says why it cannot be used ([`Unavailable`]).
//! - After the build: a committed upper directory becomes a layer of the store
//!   ([`settle_upper`], [`set_mtimes`], then [`crate::LayerStore::adopt`]); a finished
//!   stage is read through [`read_only_view`].

pub(crate) mod format;
mod lowers;
mod mount;
mod settle;
mod upper;

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::mount::MountAttrFlags;

use crate::error::{io_err, Error, Result};
use crate::rootfd::RootDir;
use crate::snapshotter::{Diff, Snapshotter, StepRoot};
use lowers::LowerStack;

pub use mount::{lower_option, MAX_OPTION_VALUE};
pub use settle::{set_mtimes, settle_upper};

/// The most lower directories one overlay mount stacks (the kernel's `OVL_MAX_STACK`).
pub const MAX_LOWERS: usize = 500;

/// The most lower directories [`Overlay::prepare`] takes: one less than [`MAX_LOWERS`], so
/// that the RUN sandbox can put its mount points on top in a layer of their own.
pub const MAX_STEP_LOWERS: usize = MAX_LOWERS - 1;

/// The most lower directories [`Overlay::prepare`] takes where the kernel only takes one
/// `lowerdir=` list ([`LowerOption::List`], before Linux 6.8): as many short names of
/// descriptors (`/proc/self/fd/99999:`) as fit in [`MAX_OPTION_VALUE`] bytes, less one for
/// the RUN sandbox's own layer.
pub const MAX_LIST_STEP_LOWERS: usize = MAX_OPTION_VALUE / "/proc/self/fd/99999:".len() - 1;

/// The most lower directories [`Overlay::prepare`] takes on this kernel.
pub fn max_step_lowers() -> usize {
    match lower_option() {
        LowerOption::Append => MAX_STEP_LOWERS,
        LowerOption::List => MAX_LIST_STEP_LOWERS,
    }
}

/// The options of every overlay ocibuild mounts as host root (host view, RUN sandbox,
/// probe): no redirect xattrs (renaming a lower directory gives `EXDEV`), no metadata-only
/// copy-up (every copied-up file has its data), no index (hard links are broken on
/// copy-up), and plain inode numbers. The upper directory then holds only plain entries,
/// whiteouts and opaque marks (plus overlayfs' `origin` and `impure` xattrs, which never
/// reach a layer: so `uuid` keeps its default, it only changes what `origin` records).
pub const OPTIONS: [(&str, &str); 5] = [
    ("source", SOURCE),
    ("redirect_dir", "off"),
    ("metacopy", "off"),
    ("index", "off"),
    ("xino", "off"),
];

/// The source of every overlay ocibuild mounts, as mount tables show it (`overlay ocibuild
/// ...` in `/proc/PID/mountinfo`): ocibuild's mounts are told apart from other tools'.
pub const SOURCE: &str = "ocibuild";

/// [`OPTIONS`] in a user namespace (a rootless build, Linux 5.11+): the flag `userxattr`
/// (overlayfs keeps its marks in `user.overlay.*`, see [`XattrNamespace`]), and
/// `redirect_dir=nofollow`, the only value `userxattr` takes that creates no redirects
/// (nor follows any). An empty value is a flag.
pub const USER_NAMESPACE_OPTIONS: [(&str, &str); 6] = [
    ("source", SOURCE),
    ("userxattr", ""),
    ("redirect_dir", "nofollow"),
    ("metacopy", "off"),
    ("index", "off"),
    ("xino", "off"),
];

/// The options of every overlay this process mounts: [`OPTIONS`] as host root, else
/// [`USER_NAMESPACE_OPTIONS`]. An empty value is a flag (`FSCONFIG_SET_FLAG`).
pub fn options() -> &'static [(&'static str, &'static str)] {
    match XattrNamespace::current() {
        XattrNamespace::Trusted => &OPTIONS,
        XattrNamespace::User => &USER_NAMESPACE_OPTIONS,
    }
}

/// Where overlayfs keeps its marks (opaque directories, xwhiteouts): `trusted.overlay.*`,
/// which only host root may write, or `user.overlay.*` with the mount option `userxattr`,
/// as in a user namespace. One process uses one: the layer store records it (see
/// [`crate::LayerStore::open`]), since a mount reads only its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XattrNamespace {
    /// `trusted.overlay.*`: host root.
    Trusted,
    /// `user.overlay.*`: anyone else (root of a rootless build's user namespace).
    User,
}

impl XattrNamespace {
    /// The namespace of this process: [`XattrNamespace::Trusted`] when it is host root
    /// ([`crate::is_host_root`]), else [`XattrNamespace::User`].
    pub fn current() -> XattrNamespace {
        static CURRENT: std::sync::OnceLock<XattrNamespace> = std::sync::OnceLock::new();
        *CURRENT.get_or_init(|| {
            if crate::is_host_root() {
                XattrNamespace::Trusted
            } else {
                XattrNamespace::User
            }
        })
    }

    /// Its name as the store records it: `trusted` or `user`.
    pub fn name(self) -> &'static str {
        match self {
            XattrNamespace::Trusted => "trusted",
            XattrNamespace::User => "user",
        }
    }

    /// The xattr marking an opaque directory (`y`) or one holding xwhiteouts (`x`).
    pub fn opaque(self) -> &'static str {
        match self {
            XattrNamespace::Trusted => "trusted.overlay.opaque",
            XattrNamespace::User => "user.overlay.opaque",
        }
    }

    /// The xattr marking a zero-size regular file as a whiteout (an xwhiteout).
    pub fn whiteout(self) -> &'static str {
        match self {
            XattrNamespace::Trusted => "trusted.overlay.whiteout",
            XattrNamespace::User => "user.overlay.whiteout",
        }
    }
}

/// How lower directories are passed to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LowerOption {
    /// One `lowerdir+` option per lower directory (Linux 6.8 and later), top-most first.
    Append,
    /// One `lowerdir=` option, a `:`-separated list (older kernels). `fsconfig` takes at
    /// most [`MAX_OPTION_VALUE`] bytes, so only as many as fit (short names are used).
    List,
}

/// The directories of one overlay mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayLayers {
    /// The lower directories, bottom-most first (the image's order); overlayfs gets them
    /// top-most first (see [`OverlayLayers::top_first`]).
    pub lowers: Vec<PathBuf>,
    /// The upper directory: every change lands here.
    pub upper: PathBuf,
    /// The work directory overlayfs needs, on the same filesystem as `upper`.
    pub work: PathBuf,
}

impl OverlayLayers {
    /// The lower directories in the order overlayfs takes them: top-most first.
    pub fn top_first(&self) -> impl Iterator<Item = &Path> {
        self.lowers.iter().rev().map(PathBuf::as_path)
    }

    /// Mounts the overlay detached (never attached to any mount namespace) with the
    /// attributes `nodev,nosuid,noexec`, and returns the descriptor of its root. The
    /// mount is freed when that descriptor and everything opened through it are closed.
    pub fn mount_detached(&self) -> Result<OwnedFd> {
        self.mount_detached_with(lower_option())
    }

    /// [`OverlayLayers::mount_detached`], passing the lower directories as `option` says.
    pub fn mount_detached_with(&self, option: LowerOption) -> Result<OwnedFd> {
        let attrs = MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NOEXEC;
        mount::mount_detached(self, option, attrs)
    }

    /// The merged tree as a [`RootDir`] on a detached mount (see
    /// [`OverlayLayers::mount_detached`]).
    pub fn open(&self) -> Result<RootDir> {
        let fd = self.mount_detached()?;
        let shown = PathBuf::from(format!("overlay:{}", self.upper.display()));
        Ok(RootDir::from_fd(fd, &shown))
    }
}

/// A read-only view of the tree of `lowers` (bottom-most first): a detached overlay of the
/// lower directories alone, mounted read-only (`nodev,nosuid,noexec` too), for reading a
/// finished stage's rootfs. `empty` is an empty directory (created when missing): overlayfs
/// needs two lower directories without an upper one, so a single lower gets it below, and
/// no lowers at all give `empty` itself.
pub fn read_only_view(lowers: &[PathBuf], empty: &Path) -> Result<RootDir> {
    fs::create_dir_all(empty).map_err(io_err(empty, "create directory"))?;
    let mut stack: Vec<&Path> = lowers.iter().rev().map(PathBuf::as_path).collect();
    match stack.len() {
        0 => return RootDir::open(empty),
        1 => stack.push(empty),
        _ => {}
    }
    let attrs = MountAttrFlags::MOUNT_ATTR_RDONLY
        | MountAttrFlags::MOUNT_ATTR_NODEV
        | MountAttrFlags::MOUNT_ATTR_NOSUID
        | MountAttrFlags::MOUNT_ATTR_NOEXEC;
    let fd = mount::mount_stack(&stack, None, lower_option(), attrs)?;
    let shown = PathBuf::from(format!("overlay:{}", lowers[lowers.len() - 1].display()));
    Ok(RootDir::from_fd(fd, &shown))
}

/// The overlay snapshotter (see the module documentation). Steps get their upper and work
/// directories in the state directory given to [`Overlay::new`]; a committed step's upper
/// directory belongs to the caller, the state directory too.
#[derive(Debug)]
pub struct Overlay {
    state: PathBuf,
}

/// Numbers the step directories of this process.
static NEXT_STEP: AtomicU64 = AtomicU64::new(0);

impl Overlay {
    /// An overlay snapshotter keeping its step directories in `state` (created if
    /// missing). `state` must be on a filesystem overlayfs takes as upper (check with
    /// [`Overlay::available`]).
    pub fn new(state: &Path) -> Result<Overlay> {
        fs::create_dir_all(state).map_err(io_err(state, "create state directory"))?;
        Ok(Overlay {
            state: state.to_path_buf(),
        })
    }

    /// A new, empty directory in the state directory named `<what>-<pid>-<n>`.
    fn fresh_dir(&self, what: &str) -> Result<PathBuf> {
        loop {
            let n = NEXT_STEP.fetch_add(1, Ordering::Relaxed);
            let dir = self
                .state
                .join(format!("{what}-{}-{n}", std::process::id()));
            match fs::create_dir(&dir) {
                Ok(()) => return Ok(dir),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&dir, "create step directory", e)),
            }
        }
    }

    /// Checks that overlays can be used with `state` as the place of their upper
    /// directories: mounts a tiny detached overlay there, reads a lower file through it,
    /// writes a file and deletes a lower file through it, and checks that the upper
    /// directory got the file and a whiteout. Fails in pods without mount rights, on
    /// filesystems overlayfs refuses as upper (and so inside kaniko mode's `/`), and where
    /// the kernel has no overlayfs or no new mount API. Leaves nothing behind.
    pub fn available(state: &Path) -> std::result::Result<(), Unavailable> {
        let overlay = Overlay::new(state).map_err(Unavailable::state_dir)?;
        let dir = overlay
            .fresh_dir(".probe")
            .map_err(Unavailable::state_dir)?;
        let result = probe_in(&dir);
        let _ = fs::remove_dir_all(&dir);
        result
    }
}

/// The probe of [`Overlay::available`] in the empty directory `dir`.
fn probe_in(dir: &Path) -> std::result::Result<(), Unavailable> {
    let layers = OverlayLayers {
        lowers: vec![dir.join("lower")],
        upper: dir.join("upper"),
        work: dir.join("work"),
    };
    let setup = || -> io::Result<()> {
        for d in [&layers.lowers[0], &layers.upper, &layers.work] {
            fs::create_dir(d)?;
        }
        fs::write(layers.lowers[0].join("kept"), b"lower")?;
        fs::write(layers.lowers[0].join("gone"), b"lower")
    };
    setup().map_err(|e| Unavailable::state_dir(Error::io(dir, "create probe", e)))?;
    let root = layers.open().map_err(Unavailable::from_mount)?;
    let misbehaves = |what: &str| Unavailable::Misbehaves(what.to_string());
    let mut kept = String::new();
    let read = root.as_dir().open_file(OsStr::new("kept"));
    let read = read.map(|mut f| io::Read::read_to_string(&mut f, &mut kept));
    if !matches!(read, Ok(Ok(_))) || kept != "lower" {
        return Err(misbehaves("a lower file cannot be read through the mount"));
    }
    let written = root.as_dir().create_file(OsStr::new("new"), 0o644);
    let removed = root.as_dir().remove(OsStr::new("gone"));
    if written.is_err() || removed.is_err() {
        return Err(misbehaves("the mount cannot be written"));
    }
    drop(root);
    let whiteout = fs::symlink_metadata(layers.upper.join("gone"));
    let is_whiteout = whiteout.is_ok_and(|m| {
        std::os::unix::fs::FileTypeExt::is_char_device(&m.file_type()) && m.rdev() == 0
    });
    if !layers.upper.join("new").is_file() || !is_whiteout {
        return Err(misbehaves(
            "the upper directory did not get the new file and the whiteout",
        ));
    }
    Ok(())
}

impl Snapshotter for Overlay {
    fn name(&self) -> &'static str {
        "overlay"
    }

    fn prepare(&mut self, lowers: &[PathBuf]) -> Result<StepRoot> {
        let limit = max_step_lowers();
        if lowers.len() > limit {
            return Err(Error::TooManyLowers {
                count: lowers.len(),
                limit,
            });
        }
        let step_dir = self.fresh_dir("step")?;
        let mut layers = OverlayLayers {
            lowers: lowers.to_vec(),
            upper: step_dir.join("upper"),
            work: step_dir.join("work"),
        };
        let mut new_dirs = vec![layers.upper.clone(), layers.work.clone()];
        if layers.lowers.is_empty() {
            // FROM scratch: overlayfs needs a lower directory, an empty one will do.
            let empty = step_dir.join("empty");
            layers.lowers.push(empty.clone());
            new_dirs.push(empty);
        }
        // Owned by the step from here on: an error drops it, which removes `step_dir`.
        let step = StepRoot::overlay(layers.clone(), step_dir);
        for dir in &new_dirs {
            fs::create_dir(dir).map_err(io_err(dir, "create directory"))?;
        }
        copy_root_attributes(&layers.lowers[layers.lowers.len() - 1], &layers.upper)?;
        Ok(step)
    }

    fn diff(&mut self, step: &mut StepRoot) -> Result<Diff> {
        let layers = overlay_of(step)?;
        let lowers = LowerStack::new(layers.top_first().map(Path::to_path_buf).collect());
        let started = std::time::Instant::now();
        let changes = upper::upper_changes(&layers.upper, &lowers)?;
        crate::walk::log_changes("overlay", None, &changes, started.elapsed());
        Ok(Diff {
            changes,
            source: layers.upper.clone(),
        })
    }

    fn commit(&mut self, mut step: StepRoot) -> Result<Option<PathBuf>> {
        overlay_of(&step)?;
        let Some((layers, _)) = step.keep_upper() else {
            unreachable!("checked above")
        };
        fs::remove_dir_all(&layers.work).map_err(io_err(&layers.work, "remove work directory"))?;
        Ok(Some(layers.upper))
    }
}

/// The overlay layers of `step`, or an error for a step another snapshotter made.
fn overlay_of(step: &StepRoot) -> Result<&OverlayLayers> {
    step.overlay_layers().ok_or_else(|| {
        Error::InvalidOption("the overlay snapshotter was given a plain-directory step".into())
    })
}

/// Gives the upper directory the mode and owner of the top-most lower's root: the merged
/// root takes its attributes from the upper directory.
fn copy_root_attributes(lower: &Path, upper: &Path) -> Result<()> {
    let meta = fs::metadata(lower).map_err(io_err(lower, "stat"))?;
    chown(upper, Some(meta.uid()), Some(meta.gid())).map_err(io_err(upper, "chown"))?;
    let mode = fs::Permissions::from_mode(meta.mode() & 0o7777);
    fs::set_permissions(upper, mode).map_err(io_err(upper, "chmod"))
}

/// Why overlays cannot be used (from [`Overlay::available`]): the engine logs it and falls
/// back to the walk snapshotter.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// The probe's directories could not be made in the state directory.
    #[error("the state directory cannot hold the probe: {0}")]
    StateDir(#[source] Error),
    /// The kernel has no new mount API (`fsopen`, Linux 5.2).
    #[error("the kernel has no new mount API (fsopen): {0}")]
    NoMountApi(#[source] io::Error),
    /// The kernel has no overlay filesystem.
    #[error("the kernel has no overlay filesystem: {0}")]
    NoOverlay(#[source] io::Error),
    /// Mounting is not permitted (an unprivileged container, a pod's default profile).
    #[error("mounting is not permitted here: {0}")]
    NotPermitted(#[source] Error),
    /// The kernel refused these directories, e.g. a filesystem it does not take as upper.
    #[error("the kernel refused the overlay: {0}")]
    Refused(#[source] Error),
    /// The overlay mounted but did not behave as expected.
    #[error("the overlay does not behave as expected: {0}")]
    Misbehaves(String),
}

impl Unavailable {
    /// A failure to set up the probe's directories.
    fn state_dir(e: Error) -> Unavailable {
        Unavailable::StateDir(e)
    }

    /// Sorts a mount failure.
    fn from_mount(e: Error) -> Unavailable {
        let errno = match &e {
            Error::Overlay { source, .. } => source.raw_os_error(),
            _ => None,
        };
        let first_step = matches!(&e, Error::Overlay { step: "fsopen", .. });
        match (errno, first_step, e) {
            (Some(libc::ENOSYS), true, Error::Overlay { source, .. }) => {
                Unavailable::NoMountApi(source)
            }
            (Some(libc::ENODEV), true, Error::Overlay { source, .. }) => {
                Unavailable::NoOverlay(source)
            }
            (Some(libc::EPERM | libc::EACCES), _, e) => Unavailable::NotPermitted(e),
            (_, _, e) => Unavailable::Refused(e),
        }
    }
}

#[cfg(test)]
mod tests;
