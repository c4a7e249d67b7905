//! The RUN sandbox of ocibuild: running one command inside a root filesystem directory,
//! isolated from the host. This crate holds the project's only `unsafe` code (in the
//! private `sys` module: fork, namespaces, mounts, `pivot_root`, capabilities, seccomp,
//! exec); every other crate of the workspace is `#![forbid(unsafe_code)]`.
//!
//! Three modes ([`Isolation`]):
//! - [`Isolation::Namespaces`] (default): new mount, pid, UTS, IPC and cgroup namespaces
//!   (plus a user namespace mapping root to the caller when not run as root, a network
//!   namespace for [`Network::None`]). The rootfs is bound onto itself `nodev`, a fresh
//!   `/proc` (masked and partly read-only as runc does), a minimal `nodev` `/dev`, a
//!   read-only `/sys` and per-run copies of `/etc/resolv.conf`, `/etc/hosts` (and
//!   `/etc/hostname`) are mounted inside it, then it is entered with `pivot_root` and the old
//!   root detached. The command runs as pid 2 under a small init (pid 1) that reaps zombies,
//!   with Docker's default capability bound and a seccomp filter ([`Security::Sandbox`]).
//! - [`Isolation::Chroot`]: chroot without CAP_SYS_CHROOT, the same capability bound and
//!   filter, under a subreaper that kills what the command leaves behind — for pods where
//!   namespaces are forbidden but chroot is allowed.
//! - [`Isolation::None`]: run directly on `/` (kaniko mode, inside a throwaway container).
//!
//! [`rootless`] is the other use of namespaces: a user who is not root re-enters the whole
//! builder in a user namespace with the subordinate ids of `/etc/subuid` and `/etc/subgid`
//! (`newuidmap`/`newgidmap`), where it is root and the sandbox above nests unchanged.
//!
//! The rootfs is a directory ([`run`], [`run_until`]) or an overlay ([`run_on`] with
//! [`RunRoot::Overlay`]): then the child mounts the layers itself with the new mount API,
//! inside its new mount namespace and before `pivot_root`, so the lower directories stay
//! read-only and every change lands in the upper directory. Its missing mount points are
//! made in a layer of their own stacked on top, never in the upper directory.
//!
//! The rootfs is left exactly as the command left it: mount points that had to be created
//! (and missing parents such as `/etc`) are removed afterwards and the timestamps of the
//! directories that contained them are restored, so the snapshotter sees only the command's
//! own changes. Every such host-side operation goes through directory descriptors
//! (`ocibuild_snapshot::RootDir`), and every mount target is opened with
//! `openat2(RESOLVE_IN_ROOT)` on the rootfs, so no symlink a RUN left in the rootfs leads
//! outside it. No mount is ever made in the caller's mount namespace.

mod caps;
mod rootfs;
pub mod rootless;
mod seccomp;
mod sys;
mod user;

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use ocibuild_snapshot::RunRoot;
pub use user::{resolve_user, resolve_user_in_root, ExecUser};

use ocibuild_snapshot::{overlay, OverlayLayers, RootDir};
use rootfs::{Kind, Placeholders};
use sys::{
    ChildPlan, ErrorRecord, ExecPlan, NsPlan, Op, OverlayPlan, Privileges, RootPlan, Source, Stage,
};

/// How RUN steps are isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Mount + pid namespaces (+ user namespace when not root), chroot into the rootfs.
    #[default]
    Namespaces,
    /// Only chroot, no namespaces: for pods where `unshare` is forbidden.
    Chroot,
    /// Run directly; the rootfs must be `/` (kaniko mode).
    None,
}

/// The network a RUN command sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// The host's network.
    #[default]
    Host,
    /// A new, empty network namespace (only a loopback device, down).
    /// Requires [`Isolation::Namespaces`].
    None,
}

/// What a RUN command may do (`RUN --security`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Security {
    /// The sandbox: Docker's default capability bound, the seccomp filter, masked and
    /// read-only parts of /proc and /sys.
    #[default]
    Sandbox,
    /// `RUN --security=insecure`: every capability, no seccomp filter, /proc and /sys
    /// unmasked. Still in its own namespaces and root.
    Insecure,
}

/// A bind mount into the rootfs for the duration of one run (`RUN --mount`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Host path (file or directory) to bind.
    pub source: PathBuf,
    /// Absolute path inside the rootfs; created for the run and removed afterwards if missing.
    pub target: String,
    /// Make the bind mount read-only.
    pub readonly: bool,
}

/// A fresh tmpfs mounted for one RUN (`RUN --mount=type=tmpfs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmpfsMount {
    /// Absolute path inside the rootfs; created for the run and removed afterwards if missing.
    pub target: String,
    /// Size limit in bytes (the kernel's default when `None`).
    pub size: Option<u64>,
}

/// What to run and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// Root filesystem directory on the host, for [`run`] and [`run_until`]; [`run_on`]
    /// takes the rootfs from its [`RunRoot`] instead.
    pub rootfs: PathBuf,
    /// The full argv, e.g. `["/bin/sh", "-c", "echo hi"]`; argv\[0\] is looked up in the
    /// command's `PATH` inside the rootfs when it has no `/`.
    pub argv: Vec<String>,
    /// Environment; `HOME` and `PATH` get Docker's defaults when absent. Later duplicates win.
    pub env: Vec<(String, String)>,
    /// Working directory inside the rootfs (must exist).
    pub cwd: String,
    /// `name`, `uid`, `uid:gid`, `name:group`, resolved against the rootfs' `/etc/passwd` and
    /// `/etc/group`; `None` is root.
    pub user: Option<String>,
    /// Hostname (namespace mode only; ignored otherwise).
    pub hostname: Option<String>,
    /// Network access.
    pub network: Network,
    /// Isolation mode.
    pub isolation: Isolation,
    /// The sandbox, or its insecure escape hatch.
    pub security: Security,
    /// Bind mounts (namespace mode only).
    pub extra_mounts: Vec<Mount>,
    /// Tmpfs mounts (namespace mode only); with the bind mounts, mounted parents first.
    pub tmpfs_mounts: Vec<TmpfsMount>,
    /// A host directory outside the rootfs for per-run files (copies of resolv.conf, hosts).
    pub scratch_dir: PathBuf,
}

impl RunSpec {
    /// Runs `argv` in `rootfs` with per-run files in `scratch_dir`, and everything else as
    /// Docker would by default: as root in `/`, no extra environment, the host's network,
    /// namespace isolation with the sandbox, no extra mounts.
    pub fn new(rootfs: PathBuf, argv: Vec<String>, scratch_dir: PathBuf) -> RunSpec {
        RunSpec {
            rootfs,
            argv,
            env: Vec::new(),
            cwd: "/".into(),
            user: None,
            hostname: None,
            network: Network::Host,
            isolation: Isolation::Namespaces,
            security: Security::Sandbox,
            extra_mounts: Vec::new(),
            tmpfs_mounts: Vec::new(),
            scratch_dir,
        }
    }
}

/// The result of a finished command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOutcome {
    /// Exit code, or 128+signal when the command was killed by a signal.
    pub status: i32,
}

/// Errors of [`run`] and [`probe`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IsolationError {
    /// The kernel refused to create namespaces or to mount.
    #[error(
        "creating namespaces or mounting was refused ({source}); this happens e.g. in a \
         Kubernetes pod's default seccomp/AppArmor profile or in an unprivileged container: \
         use --isolation chroot where only chroot is allowed, or --isolation none inside a \
         throwaway container (kaniko mode)"
    )]
    NamespacesDenied {
        /// The refused system call's error.
        #[source]
        source: io::Error,
    },
    /// The command could not be executed.
    #[error("cannot execute {program:?} inside the rootfs: {source}")]
    Exec {
        /// argv\[0\].
        program: String,
        /// Why execve failed (ENOENT: not found in PATH).
        #[source]
        source: io::Error,
    },
    /// A user name that is not in the rootfs' passwd file.
    #[error("unknown user {user:?}: no such entry in {}", file.display())]
    UnknownUser {
        /// The requested user.
        user: String,
        /// The passwd file looked at.
        file: PathBuf,
    },
    /// A group name that is not in the rootfs' group file.
    #[error("unknown group {group:?}: no such entry in {}", file.display())]
    UnknownGroup {
        /// The requested group.
        group: String,
        /// The group file looked at.
        file: PathBuf,
    },
    /// A file operation on the host failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A mount inside the rootfs failed for another reason than a refusal.
    #[error("mounting {target} inside the rootfs failed: {source}")]
    Mount {
        /// The mount target inside the rootfs.
        target: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// chroot into the rootfs failed.
    #[error("chroot into {} failed: {source}", rootfs.display())]
    Chroot {
        /// The rootfs.
        rootfs: PathBuf,
        /// The underlying error (EPERM: chroot needs CAP_SYS_CHROOT).
        #[source]
        source: io::Error,
    },
    /// The working directory could not be entered.
    #[error("cannot change to working directory {cwd:?} inside the rootfs: {source}")]
    Chdir {
        /// The working directory.
        cwd: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// setgroups/setgid/setuid failed.
    #[error("cannot switch to uid {uid} gid {gid}: {source}")]
    SwitchUser {
        /// Target uid.
        uid: u32,
        /// Target gid.
        gid: u32,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Without root privileges, no other user can be switched to (the rootless user
    /// namespace maps only root; chroot/none modes keep the caller's identity).
    #[error(
        "user {user:?} (uid {uid}, gid {gid}) is not available without root privileges: \
         the user namespace of rootless namespace isolation maps only root, and chroot/none \
         isolation cannot switch users"
    )]
    RootlessUser {
        /// The requested user.
        user: String,
        /// Resolved uid.
        uid: u32,
        /// Resolved gid.
        gid: u32,
    },
    /// The spec is inconsistent (empty argv, NUL bytes, unsupported combination, ...).
    #[error("invalid run spec: {0}")]
    InvalidSpec(String),
    /// The overlay rootfs cannot be used: the host-side view of it (to resolve paths and
    /// users) could not be mounted, or it has more lower directories than one mount takes
    /// ([`ocibuild_snapshot::Error::TooManyLowers`]).
    #[error("overlay rootfs: {0}")]
    OverlayLayers(#[source] ocibuild_snapshot::Error),
    /// The sandbox could not mount the overlay rootfs.
    #[error("mounting the overlay rootfs in the sandbox failed ({step}): {source}")]
    OverlayMount {
        /// The step that failed, e.g. "create the filesystem".
        step: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// [`run_until`] was asked to stop: the command was killed.
    #[error("the command was stopped before it finished")]
    Stopped,
    /// Another setup step failed (fork, pipes, sethostname, waiting).
    #[error("{step} failed: {source}")]
    Setup {
        /// The step.
        step: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// Docker's default `PATH`.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Host device nodes bind-mounted into the minimal `/dev` (name, optional).
const DEV_NODES: &[(&str, bool)] = &[
    ("null", false),
    ("zero", false),
    ("full", false),
    ("random", false),
    ("urandom", false),
    ("tty", true),
];

/// Longest partial line buffered before it is passed on without a newline.
const MAX_LINE: usize = 64 * 1024;

fn cstring(what: &str, bytes: impl Into<Vec<u8>>) -> Result<CString, IsolationError> {
    CString::new(bytes)
        .map_err(|_| IsolationError::InvalidSpec(format!("{what} contains a NUL byte")))
}

fn path_cstring(path: &Path) -> Result<CString, IsolationError> {
    cstring(&path.display().to_string(), path.as_os_str().as_bytes())
}

fn io_error(path: &Path, source: io::Error) -> IsolationError {
    IsolationError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Checks whether `isolation` works on this machine, for a clear early error:
/// for [`Isolation::Namespaces`] a throwaway child creates the namespaces and mounts a `proc`;
/// for [`Isolation::Chroot`] it chroots to `/`. [`Isolation::None`] always works.
pub fn probe(isolation: Isolation) -> Result<(), IsolationError> {
    let (ns, root) = match isolation {
        Isolation::None => return Ok(()),
        Isolation::Chroot => (None, Some(c"/".to_owned())),
        Isolation::Namespaces => {
            let ns = NsPlan {
                flags: namespace_flags(Network::Host),
                user_maps: user_maps(),
                hostname: None,
                root: None,
                ops: vec![Op::Mount {
                    source: Source::Path(c"proc".to_owned()),
                    target: c"proc".to_owned(),
                    fstype: Some(c"proc".to_owned()),
                    flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    data: None,
                    optional: false,
                    if_exists: false,
                }],
                first_user_op: 1,
            };
            (Some(ns), None)
        }
    };
    let mut plan = ChildPlan {
        ns,
        root,
        cwd: c"/".to_owned(),
        identity: None,
        privileges: None,
        probe_only: true,
        exec: ExecPlan::new(vec![c"true".to_owned()], Vec::new(), Vec::new()),
    };
    let mut child = sys::spawn(&mut plan).map_err(|source| IsolationError::Setup {
        step: "fork",
        source,
    })?;
    child.wait().map_err(|source| IsolationError::Setup {
        step: "waitpid",
        source,
    })?;
    match child.error_record() {
        None => Ok(()),
        Some(rec) => Err(match rec.stage {
            Stage::Chroot => IsolationError::Chroot {
                rootfs: PathBuf::from("/"),
                source: io::Error::from_raw_os_error(rec.errno),
            },
            _ => IsolationError::NamespacesDenied {
                source: io::Error::from_raw_os_error(rec.errno),
            },
        }),
    }
}

/// Mount, pid, UTS, IPC and cgroup namespaces (the cgroup one where the kernel has it),
/// a user namespace when not root, a network namespace for [`Network::None`].
fn namespace_flags(network: Network) -> libc::c_int {
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if Path::new("/proc/self/ns/cgroup").exists() {
        flags |= libc::CLONE_NEWCGROUP;
    }
    if sys::effective_ids().0 != 0 {
        flags |= libc::CLONE_NEWUSER;
    }
    if network == Network::None {
        flags |= libc::CLONE_NEWNET;
    }
    flags
}

/// The capability bound, capabilities and seccomp filter of the command; `None` in
/// [`Isolation::None`] (kaniko mode runs the command as it is) and for a caller without
/// root privileges outside a user namespace (which holds nothing to give up).
///
/// The command keeps Docker's default set, less what the caller itself lacks (a pod may
/// have dropped e.g. CAP_NET_RAW), less CAP_SYS_CHROOT in chroot mode. The filter is
/// installed with the caller's CAP_SYS_ADMIN where it has it; without it (a pod's default
/// profile), under `no_new_privs` — unless a filter already applies to the caller (the
/// container runtime's), which the command inherits anyway.
fn privileges(spec: &RunSpec) -> Option<Privileges> {
    let root = sys::effective_ids().0 == 0;
    let last_cap = caps::last_cap();
    let held = match spec.isolation {
        Isolation::None => return None,
        Isolation::Chroot if !root => return None,
        // Root of a new user namespace: everything, inside it.
        Isolation::Namespaces if !root => caps::Held::all(last_cap),
        _ => caps::Held::current().unwrap_or_else(|| caps::Held::all(last_cap)),
    };
    if spec.security == Security::Insecure {
        return Some(Privileges {
            drop_bounding: 0,
            root_caps: None,
            last_cap,
            seccomp: None,
            no_new_privs: false,
        });
    }
    let mut keep = caps::default_mask();
    if spec.isolation == Isolation::Chroot {
        // A chrooted command that may chroot again can climb out of the root.
        keep &= !(1 << caps::SYS_CHROOT);
    }
    let may_filter = held.effective & (1 << caps::SYS_ADMIN) != 0;
    Some(Privileges {
        drop_bounding: held.bounding & !keep,
        root_caps: Some(keep & held.permitted),
        last_cap,
        seccomp: (may_filter || !held.filtered)
            .then(seccomp::program)
            .flatten(),
        no_new_privs: !may_filter,
    })
}

/// One-id maps root → our euid/egid when not running as root.
fn user_maps() -> Option<(Vec<u8>, Vec<u8>)> {
    let (uid, gid) = sys::effective_ids();
    (uid != 0).then(|| {
        (
            format!("0 {uid} 1\n").into_bytes(),
            format!("0 {gid} 1\n").into_bytes(),
        )
    })
}

/// Runs the command, streaming the child's stdout and stderr (merged) line by line to
/// `output`. Returns the command's exit status; errors are setup failures (including a
/// command that cannot be executed), never a non-zero exit of the command.
pub fn run(spec: &RunSpec, output: &mut dyn FnMut(&[u8])) -> Result<RunOutcome, IsolationError> {
    run_until(spec, output, &|| false)
}

/// [`run`], stopped early when `stop` returns true (it is asked about every 100 ms while
/// the command runs): the command's process tree is killed and reaped, and the result is
/// [`IsolationError::Stopped`].
pub fn run_until(
    spec: &RunSpec,
    output: &mut dyn FnMut(&[u8]),
    stop: &dyn Fn() -> bool,
) -> Result<RunOutcome, IsolationError> {
    run_on(&RunRoot::Dir(spec.rootfs.clone()), spec, output, stop)
}

/// [`run_until`] in the rootfs `root` instead of `spec.rootfs`: a plain directory, or an
/// overlay (from `ocibuild_snapshot::StepRoot::run_root`) that the sandbox mounts itself,
/// inside its own mount namespace, with the options of [`ocibuild_snapshot::overlay::options`].
/// The command sees the merged tree; its changes land in the upper directory, and the
/// lower directories are never written. Missing mount points (`/proc`, `/dev`,
/// `/etc/resolv.conf`, `RUN --mount` targets) are made in a layer of their own on top of
/// the lowers, in the scratch directory, never in the upper directory. An overlay needs
/// [`Isolation::Namespaces`] and mount rights.
pub fn run_on(
    root: &RunRoot,
    spec: &RunSpec,
    output: &mut dyn FnMut(&[u8]),
    stop: &dyn Fn() -> bool,
) -> Result<RunOutcome, IsolationError> {
    check_spec(spec)?;
    match root {
        RunRoot::Dir(dir) => run_in_dir(dir, spec, output, stop),
        RunRoot::Overlay(layers) => {
            run_in_overlay(layers, overlay::lower_option(), spec, output, stop)
        }
    }
}

/// Refuses specs that cannot run whatever the rootfs.
fn check_spec(spec: &RunSpec) -> Result<(), IsolationError> {
    if spec.argv.is_empty() || spec.argv[0].is_empty() {
        return Err(IsolationError::InvalidSpec("empty argv".into()));
    }
    if !spec.cwd.starts_with('/') {
        return Err(IsolationError::InvalidSpec(format!(
            "working directory {:?} is not absolute",
            spec.cwd
        )));
    }
    if spec.isolation != Isolation::Namespaces {
        if spec.network == Network::None {
            return Err(IsolationError::InvalidSpec(
                "network none requires namespace isolation".into(),
            ));
        }
        if !spec.extra_mounts.is_empty() || !spec.tmpfs_mounts.is_empty() {
            return Err(IsolationError::InvalidSpec(
                "mounts require namespace isolation".into(),
            ));
        }
    }
    Ok(())
}

/// Runs in the plain directory `dir`.
fn run_in_dir(
    dir: &Path,
    spec: &RunSpec,
    output: &mut dyn FnMut(&[u8]),
    stop: &dyn Fn() -> bool,
) -> Result<RunOutcome, IsolationError> {
    let rootfs = fs::canonicalize(dir).map_err(|e| io_error(dir, e))?;
    if spec.isolation == Isolation::None && rootfs != Path::new("/") {
        return Err(IsolationError::InvalidSpec(format!(
            "isolation none runs on the host root: rootfs must be \"/\", not {}",
            dir.display()
        )));
    }
    let user = resolve_user(&rootfs, spec.user.as_deref())?;
    let mut placeholders = Placeholders::default();
    let (ns, root) = match spec.isolation {
        Isolation::Namespaces => (
            Some(namespace_plan(spec, &rootfs, &mut placeholders)?),
            None,
        ),
        Isolation::Chroot => {
            chroot_files(spec, &rootfs, &mut placeholders)?;
            (None, Some(path_cstring(&rootfs)?))
        }
        Isolation::None => (None, None),
    };
    placeholders.seal();
    let result = launch(spec, dir, &user, ns, root, output, stop);
    let cleaned = placeholders.remove();
    let outcome = result?;
    cleaned?;
    Ok(outcome)
}

/// Numbers the per-run directories of overlay runs in this process.
static NEXT_RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Runs in an overlay of `layers`, mounted by the sandbox on a mount point in the scratch
/// directory, with the missing mount points in a skeleton layer next to it; both are
/// removed afterwards. `option` says how the kernel takes the lower directories.
fn run_in_overlay(
    layers: &OverlayLayers,
    option: overlay::LowerOption,
    spec: &RunSpec,
    output: &mut dyn FnMut(&[u8]),
    stop: &dyn Fn() -> bool,
) -> Result<RunOutcome, IsolationError> {
    if spec.isolation != Isolation::Namespaces {
        return Err(IsolationError::InvalidSpec(
            "an overlay rootfs requires namespace isolation".into(),
        ));
    }
    let n = NEXT_RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let run_dir = spec
        .scratch_dir
        .join(format!("overlay-{}-{n}", std::process::id()));
    let (mount_point, top) = (run_dir.join("root"), run_dir.join("top"));
    let made = [&mount_point, &top]
        .into_iter()
        .try_for_each(|dir| fs::create_dir_all(dir).map_err(|e| io_error(dir, e)));
    let result = made.and_then(|()| {
        let (user, ns) = overlay_plan(layers, option, spec, &mount_point, &top)?;
        launch(spec, &mount_point, &user, Some(ns), None, output, stop)
    });
    let _ = fs::remove_dir_all(&run_dir);
    result
}

/// The user and namespace plan of an overlay run: paths are resolved in a host-side view
/// of the merged tree (a detached mount, closed before returning), missing mount points
/// are made in `top`, which goes on top of the lowers when it holds anything.
fn overlay_plan(
    layers: &OverlayLayers,
    option: overlay::LowerOption,
    spec: &RunSpec,
    mount_point: &Path,
    top: &Path,
) -> Result<(ExecUser, NsPlan), IsolationError> {
    let view = layers
        .mount_detached()
        .map_err(IsolationError::OverlayLayers)?;
    let view = RootDir::from_fd(view, mount_point);
    let skeleton = RootDir::open(top).map_err(rootfs::fd_err)?;
    let mut ph = Placeholders::over(view, skeleton);
    let user = user::resolve_user_in(&mut ph, mount_point, spec.user.as_deref())?;
    let mut ns = namespace_plan(spec, mount_point, &mut ph)?;
    let mut lowers: Vec<&Path> = Vec::new();
    if ph.finish_skeleton()? {
        lowers.push(top);
    }
    lowers.extend(layers.top_first());
    if lowers.len() > overlay::MAX_LOWERS {
        return Err(IsolationError::OverlayLayers(
            ocibuild_snapshot::Error::TooManyLowers {
                count: lowers.len(),
                limit: overlay::MAX_LOWERS,
            },
        ));
    }
    let list = option == overlay::LowerOption::List;
    let plan = OverlayPlan {
        lowers: lowers
            .into_iter()
            .map(path_cstring)
            .collect::<Result<_, _>>()?,
        upper: path_cstring(&layers.upper)?,
        work: path_cstring(&layers.work)?,
        options: overlay::options()
            .iter()
            .map(|(k, v)| Ok((cstring("option", *k)?, cstring("option", *v)?)))
            .collect::<Result<_, IsolationError>>()?,
        list,
    };
    if let Some(root) = &mut ns.root {
        root.overlay = Some(plan);
    }
    Ok((user, ns))
}

/// The identity the command runs as: `user` when root; inside a user namespace root, and
/// elsewhere the caller's own identity, when not.
fn identity(spec: &RunSpec, user: &ExecUser) -> Result<Option<sys::Identity>, IsolationError> {
    let (euid, egid) = sys::effective_ids();
    if euid == 0 {
        // Root of a user namespace made without the helpers (only root mapped, see
        // `rootless::Mode::SingleId`) may not call setgroups: the groups stay as they are.
        let groups = (!setgroups_denied()).then(|| user.additional_gids.clone());
        Ok(Some((user.uid, user.gid, groups)))
    } else if spec.isolation == Isolation::Namespaces {
        if user.uid != 0 || user.gid != 0 {
            return Err(rootless_user(spec, user));
        }
        // Inside the user namespace we are root; setgroups is denied there.
        Ok(Some((0, 0, None)))
    } else if user.uid == euid && user.gid == egid {
        Ok(None)
    } else {
        Err(rootless_user(spec, user))
    }
}

/// True when this process' user namespace denies setgroups (`/proc/self/setgroups`).
fn setgroups_denied() -> bool {
    std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny")
}

/// Forks the child of `ns` (namespace mode) or `root` (chroot mode) or neither (none
/// mode), runs the command as `user` and returns its outcome; `rootfs` names the root in
/// errors.
fn launch(
    spec: &RunSpec,
    rootfs: &Path,
    user: &ExecUser,
    ns: Option<NsPlan>,
    root: Option<CString>,
    output: &mut dyn FnMut(&[u8]),
    stop: &dyn Fn() -> bool,
) -> Result<RunOutcome, IsolationError> {
    let mut plan = ChildPlan {
        ns,
        root,
        cwd: cstring("working directory", spec.cwd.as_bytes())?,
        identity: identity(spec, user)?,
        privileges: privileges(spec),
        probe_only: false,
        exec: exec_plan(spec, user)?,
    };
    let (status, record) = execute(&mut plan, output, stop)?;
    match record {
        Some(rec) => Err(map_record(spec, rootfs, &plan, user, rec)),
        None => Ok(RunOutcome { status }),
    }
}

fn rootless_user(spec: &RunSpec, user: &ExecUser) -> IsolationError {
    IsolationError::RootlessUser {
        user: spec.user.clone().unwrap_or_else(|| "root".into()),
        uid: user.uid,
        gid: user.gid,
    }
}

/// argv, envp (with HOME/PATH defaults) and the execvp candidates for argv[0].
fn exec_plan(spec: &RunSpec, user: &ExecUser) -> Result<ExecPlan, IsolationError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (k, v) in &spec.env {
        if k.is_empty() || k.contains('=') {
            return Err(IsolationError::InvalidSpec(format!(
                "invalid environment variable name {k:?}"
            )));
        }
        match index.get(k) {
            Some(&i) => env[i].1 = v.clone(),
            None => {
                index.insert(k.clone(), env.len());
                env.push((k.clone(), v.clone()));
            }
        }
    }
    if !index.contains_key("PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    if !index.contains_key("HOME") {
        env.push(("HOME".into(), user.home.clone()));
    }
    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let program = &spec.argv[0];
    let candidates = if program.contains('/') {
        vec![cstring("argv[0]", program.as_bytes())?]
    } else {
        path_var
            .split(':')
            .map(|dir| {
                let full = if dir.is_empty() {
                    program.clone()
                } else {
                    format!("{}/{program}", dir.trim_end_matches('/'))
                };
                cstring("PATH", full)
            })
            .collect::<Result<_, _>>()?
    };
    let argv = spec
        .argv
        .iter()
        .map(|a| cstring("argv", a.as_bytes()))
        .collect::<Result<_, _>>()?;
    let envp = env
        .iter()
        .map(|(k, v)| cstring("environment", format!("{k}={v}")))
        .collect::<Result<_, _>>()?;
    Ok(ExecPlan::new(argv, envp, candidates))
}

/// Descriptions of the namespace ops, for error messages (index-aligned with `NsPlan::ops`).
fn op_target(op: &Op) -> String {
    let (dir, name) = match op {
        Op::Mount { target, .. } => return format!("/{}", target.to_string_lossy()),
        Op::Mkdir { dir, name, .. } | Op::Touch { dir, name } | Op::Symlink { dir, name, .. } => {
            (dir, name)
        }
    };
    let dir = dir.to_string_lossy();
    let dir = dir.trim_start_matches('.');
    format!("{dir}/{}", name.to_string_lossy())
}

/// `host` (a path under `rootfs`, as the placeholders resolved it) relative to `rootfs`,
/// for resolution inside the rootfs in the child.
fn inner(rootfs: &Path, host: &Path) -> Result<CString, IsolationError> {
    let rel = host.strip_prefix(rootfs).map_err(|_| {
        IsolationError::InvalidSpec(format!("{} is not inside the rootfs", host.display()))
    })?;
    if rel.as_os_str().is_empty() {
        return Ok(c".".to_owned());
    }
    path_cstring(rel)
}

/// `host`'s parent and name, relative to `rootfs`.
fn inner_split(rootfs: &Path, host: &Path) -> Result<(CString, CString), IsolationError> {
    let parent = host.parent().unwrap_or(rootfs);
    let name = host.file_name().unwrap_or_default();
    Ok((inner(rootfs, parent)?, cstring("path", name.as_bytes())?))
}

/// A mount op onto `target` (a rootfs-relative path).
fn mount_op(source: Source, target: CString, flags: libc::c_ulong) -> Op {
    Op::Mount {
        source,
        target,
        fstype: None,
        flags,
        data: None,
        optional: false,
        if_exists: false,
    }
}

fn bind(source: &Path, target: CString, flags: libc::c_ulong) -> Result<Op, IsolationError> {
    Ok(mount_op(
        Source::Path(path_cstring(source)?),
        target,
        libc::MS_BIND | flags,
    ))
}

fn fresh(
    fstype: &std::ffi::CStr,
    target: CString,
    flags: libc::c_ulong,
    data: Option<&str>,
    optional: bool,
) -> Result<Op, IsolationError> {
    Ok(Op::Mount {
        source: Source::Path(fstype.to_owned()),
        target,
        fstype: Some(fstype.to_owned()),
        flags,
        data: data.map(|d| cstring("mount data", d)).transpose()?,
        optional,
        if_exists: false,
    })
}

/// Files of /proc that tell about the host or its hardware, hidden behind /dev/null.
const PROC_MASKED_FILES: &[&str] = &[
    "kcore",
    "keys",
    "timer_list",
    "sched_debug",
    "latency_stats",
    "timer_stats",
];
/// Directories of /proc and /sys hidden behind an empty read-only tmpfs.
const MASKED_DIRS: &[&str] = &["proc/acpi", "proc/scsi", "sys/firmware"];
/// Parts of /proc that configure the kernel: read-only.
const PROC_READ_ONLY: &[&str] = &["sys", "sysrq-trigger", "irq", "bus"];

/// The ops that mask and write-protect /proc (`proc` = its rootfs-relative path) and
/// /sys, as runc does for every container. Paths missing on this kernel are skipped.
fn mask_ops(proc: &str, sys: Option<&str>) -> Result<Vec<Op>, IsolationError> {
    let hidden = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let mut ops = Vec::new();
    for name in PROC_MASKED_FILES {
        let target = cstring("path", format!("{proc}/{name}"))?;
        let mut op = bind(Path::new("/dev/null"), target, 0)?;
        if let Op::Mount { if_exists, .. } = &mut op {
            *if_exists = true;
        }
        ops.push(op);
    }
    for dir in MASKED_DIRS {
        let target = match dir.split_once('/') {
            Some(("proc", rest)) => format!("{proc}/{rest}"),
            Some((_, rest)) => match sys {
                Some(sys) => format!("{sys}/{rest}"),
                None => continue,
            },
            None => continue,
        };
        let mut op = fresh(
            c"tmpfs",
            cstring("path", target)?,
            libc::MS_RDONLY | hidden,
            Some("size=0"),
            // sysfs itself may be refused (rootless without a network namespace).
            dir.starts_with("sys/"),
        )?;
        if let Op::Mount { if_exists, .. } = &mut op {
            *if_exists = true;
        }
        ops.push(op);
    }
    for name in PROC_READ_ONLY {
        let target = cstring("path", format!("{proc}/{name}"))?;
        for (source, flags) in [
            (Source::Target, libc::MS_BIND | libc::MS_REC),
            (
                Source::None,
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | hidden,
            ),
        ] {
            let mut op = mount_op(source, target.clone(), flags);
            if let Op::Mount { if_exists, .. } = &mut op {
                *if_exists = true;
            }
            ops.push(op);
        }
    }
    Ok(ops)
}

/// Writes the per-run copies of resolv.conf, hosts and hostname into the scratch dir.
fn scratch_files(spec: &RunSpec) -> Result<Vec<(&'static str, PathBuf)>, IsolationError> {
    let dir = &spec.scratch_dir;
    fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let resolv = match fs::read("/etc/resolv.conf") {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_error(Path::new("/etc/resolv.conf"), e)),
    };
    let name = spec.hostname.as_deref().unwrap_or("");
    let hosts = if name.is_empty() {
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".to_string()
    } else {
        format!("127.0.0.1\tlocalhost {name}\n::1\tlocalhost ip6-localhost ip6-loopback {name}\n")
    };
    let mut files = vec![("resolv.conf", resolv), ("hosts", hosts.into_bytes())];
    if !name.is_empty() {
        files.push(("hostname", format!("{name}\n").into_bytes()));
    }
    files
        .into_iter()
        .map(|(name, content)| {
            let path = dir.join(name);
            // Replace rather than truncate: a previous run's copy may still be bind-mounted
            // in a namespace that is just going away.
            let _ = fs::remove_file(&path);
            fs::write(&path, content).map_err(|e| io_error(&path, e))?;
            Ok((name, path))
        })
        .collect()
}

fn namespace_plan(
    spec: &RunSpec,
    rootfs: &Path,
    ph: &mut Placeholders,
) -> Result<NsPlan, IsolationError> {
    let hostname = spec.hostname.as_ref().filter(|h| !h.is_empty());
    if let Some(h) = hostname {
        if h.len() > 64 || h.contains('\0') {
            return Err(IsolationError::InvalidSpec(format!(
                "invalid hostname {h:?}"
            )));
        }
    }
    let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let mut ops = Vec::new();

    let proc_dir = ph.ensure(rootfs, "/proc", Kind::Dir, true)?;
    if let Some(proc_dir) = &proc_dir {
        let target = inner(rootfs, proc_dir)?;
        ops.push(fresh(c"proc", target, nosuid_nodev_noexec, None, false)?);
    }
    let dev_tmpfs = ph.ensure(rootfs, "/dev", Kind::Dir, true)?;
    if let Some(dev) = &dev_tmpfs {
        dev_ops(rootfs, dev, &mut ops)?;
    }
    let sys_dir = ph.ensure(rootfs, "/sys", Kind::Dir, true)?;
    if let Some(sys_dir) = &sys_dir {
        // Optional: refused in a user namespace without its own network namespace.
        let target = inner(rootfs, sys_dir)?;
        ops.push(fresh(
            c"sysfs",
            target,
            libc::MS_RDONLY | nosuid_nodev_noexec,
            None,
            true,
        )?);
    }
    if spec.security == Security::Sandbox {
        if let Some(proc_dir) = &proc_dir {
            let proc = inner(rootfs, proc_dir)?.to_string_lossy().into_owned();
            let sys = sys_dir
                .as_ref()
                .map(|d| inner(rootfs, d).map(|c| c.to_string_lossy().into_owned()))
                .transpose()?;
            ops.extend(mask_ops(&proc, sys.as_deref())?);
        }
    }
    for (name, copy) in scratch_files(spec)? {
        if let Some(target) = ph.ensure(rootfs, &format!("/etc/{name}"), Kind::File, true)? {
            ops.push(bind(&copy, inner(rootfs, &target)?, 0)?);
        }
    }
    let first_user_op = ops.len();
    user_mount_ops(spec, rootfs, ph, dev_tmpfs.as_deref(), &mut ops)?;
    Ok(NsPlan {
        flags: namespace_flags(spec.network),
        user_maps: user_maps(),
        hostname: hostname.map(|h| h.clone().into_bytes()),
        root: Some(RootPlan {
            path: path_cstring(rootfs)?,
            remount_flags: libc::MS_NODEV | locked_mount_flags(rootfs)?,
            overlay: None,
        }),
        ops,
        first_user_op,
    })
}

/// The minimal /dev: a fresh `nodev` tmpfs (so a device node a command makes there cannot
/// be opened) holding binds of the host's harmless device nodes, devpts, shm and the
/// usual symlinks.
fn dev_ops(rootfs: &Path, dev: &Path, ops: &mut Vec<Op>) -> Result<(), IsolationError> {
    let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    ops.push(fresh(
        c"tmpfs",
        inner(rootfs, dev)?,
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
        false,
    )?);
    let dev_dir = inner(rootfs, dev)?;
    let entry = |name: &str| cstring("path", name);
    for (name, optional) in DEV_NODES {
        let host = Path::new("/dev").join(name);
        if !host.exists() {
            continue;
        }
        ops.push(Op::Touch {
            dir: dev_dir.clone(),
            name: entry(name)?,
        });
        let mut op = bind(&host, inner(rootfs, &dev.join(name))?, 0)?;
        if let Op::Mount { optional: o, .. } = &mut op {
            *o = *optional;
        }
        ops.push(op);
    }
    ops.push(Op::Mkdir {
        dir: dev_dir.clone(),
        name: entry("pts")?,
        mode: 0o755,
    });
    ops.push(fresh(
        c"devpts",
        inner(rootfs, &dev.join("pts"))?,
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
        true,
    )?);
    ops.push(Op::Mkdir {
        dir: dev_dir.clone(),
        name: entry("shm")?,
        mode: 0o1777,
    });
    ops.push(fresh(
        c"tmpfs",
        inner(rootfs, &dev.join("shm"))?,
        nosuid_nodev_noexec,
        Some("mode=1777,size=65536k"),
        false,
    )?);
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        ops.push(Op::Symlink {
            target: cstring("symlink", target)?,
            dir: dev_dir.clone(),
            name: entry(link)?,
        });
    }
    Ok(())
}

/// The ops of the caller's bind and tmpfs mounts (`RUN --mount`), parents first. Binds
/// are remounted `nodev` (and read-only when asked), keeping the source's locked flags.
fn user_mount_ops(
    spec: &RunSpec,
    rootfs: &Path,
    ph: &mut Placeholders,
    dev_tmpfs: Option<&Path>,
    ops: &mut Vec<Op>,
) -> Result<(), IsolationError> {
    let mut dev_dirs: Vec<PathBuf> = ["pts", "shm"]
        .iter()
        .filter_map(|d| dev_tmpfs.map(|dev| dev.join(d)))
        .collect();
    let mut mounts: Vec<(&str, Option<&Mount>, Option<&TmpfsMount>)> = spec
        .extra_mounts
        .iter()
        .map(|m| (m.target.as_str(), Some(m), None))
        .chain(
            spec.tmpfs_mounts
                .iter()
                .map(|t| (t.target.as_str(), None, Some(t))),
        )
        .collect();
    mounts.sort_by_key(|(target, _, _)| Path::new(target).components().count());
    for (target_path, bind_mount, tmpfs) in mounts {
        if !target_path.starts_with('/') {
            return Err(IsolationError::InvalidSpec(format!(
                "mount target {target_path:?} is not absolute"
            )));
        }
        let kind = match bind_mount {
            Some(m) => {
                let meta = fs::metadata(&m.source).map_err(|e| io_error(&m.source, e))?;
                if meta.is_dir() {
                    Kind::Dir
                } else {
                    Kind::File
                }
            }
            None => Kind::Dir,
        };
        let target = match (dev_tmpfs, target_path.strip_prefix("/dev/")) {
            // Under the fresh /dev tmpfs: the mount point is made inside it, at run time.
            (Some(dev), Some(rel)) => dev_mount_point(rootfs, dev, rel, kind, &mut dev_dirs, ops)?,
            _ => ph.ensure(rootfs, target_path, kind, true)?.ok_or_else(|| {
                IsolationError::InvalidSpec(format!(
                    "mount target {target_path:?} is a dangling symlink in the rootfs"
                ))
            })?,
        };
        let target = inner(rootfs, &target)?;
        if let Some(t) = tmpfs {
            let data = match t.size {
                Some(size) => format!("mode=1777,size={size}"),
                None => "mode=1777".to_string(),
            };
            ops.push(fresh(
                c"tmpfs",
                target,
                libc::MS_NOSUID | libc::MS_NODEV,
                Some(&data),
                false,
            )?);
            continue;
        }
        let Some(m) = bind_mount else { continue };
        ops.push(bind(&m.source, target.clone(), libc::MS_REC)?);
        let readonly = if m.readonly { libc::MS_RDONLY } else { 0 };
        let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NODEV | readonly;
        ops.push(mount_op(
            Source::None,
            target,
            flags | locked_mount_flags(&m.source)?,
        ));
    }
    Ok(())
}

/// Adds the ops that create mount point `rel` (relative to /dev) inside the fresh /dev
/// tmpfs, with its missing parent directories; `made` lists directories already there.
fn dev_mount_point(
    rootfs: &Path,
    dev: &Path,
    rel: &str,
    kind: Kind,
    made: &mut Vec<PathBuf>,
    ops: &mut Vec<Op>,
) -> Result<PathBuf, IsolationError> {
    let rel = Path::new(rel);
    if rel
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(IsolationError::InvalidSpec(format!(
            "mount target /dev/{} must be a plain path",
            rel.display()
        )));
    }
    let target = dev.join(rel);
    let mut dir = dev.to_path_buf();
    for part in rel.parent().into_iter().flat_map(Path::components) {
        dir.push(part);
        if !made.contains(&dir) {
            let (parent, name) = inner_split(rootfs, &dir)?;
            ops.push(Op::Mkdir {
                dir: parent,
                name,
                mode: 0o755,
            });
            made.push(dir.clone());
        }
    }
    let (parent, name) = inner_split(rootfs, &target)?;
    ops.push(match kind {
        Kind::Dir => Op::Mkdir {
            dir: parent,
            name,
            mode: 0o755,
        },
        _ => Op::Touch { dir: parent, name },
    });
    if kind == Kind::Dir {
        made.push(target.clone());
    }
    Ok(target)
}

/// Mount flags of the filesystem holding `path` that a bind remount must repeat.
fn locked_mount_flags(path: &Path) -> Result<libc::c_ulong, IsolationError> {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let st = statvfs(path).map_err(|e| io_error(path, e.into()))?;
    let f = st.flags();
    let mut flags = 0;
    for (st_flag, ms_flag) in [
        (FsFlags::ST_NOSUID, libc::MS_NOSUID),
        (FsFlags::ST_NODEV, libc::MS_NODEV),
        (FsFlags::ST_NOEXEC, libc::MS_NOEXEC),
        (FsFlags::ST_NOATIME, libc::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, libc::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if f.contains(st_flag) {
            flags |= ms_flag;
        }
    }
    Ok(flags)
}

/// Chroot mode cannot mount: provide resolv.conf and hosts as files when the rootfs has none.
fn chroot_files(
    spec: &RunSpec,
    rootfs: &Path,
    ph: &mut Placeholders,
) -> Result<(), IsolationError> {
    for (name, copy) in scratch_files(spec)? {
        if name == "hostname" {
            continue;
        }
        let content = fs::read(&copy).map_err(|e| io_error(&copy, e))?;
        ph.create_file_with(rootfs, &format!("/etc/{name}"), &content)?;
    }
    Ok(())
}

/// How long a stopped command's process tree gets to be killed from inside (chroot and none
/// modes) before the first child is killed outright.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Forks the child, streams its output line by line, waits, and collects any setup failure.
fn execute(
    plan: &mut ChildPlan,
    output: &mut dyn FnMut(&[u8]),
    stop: &dyn Fn() -> bool,
) -> Result<(i32, Option<ErrorRecord>), IsolationError> {
    let mut child = sys::spawn(plan).map_err(|source| IsolationError::Setup {
        step: "fork",
        source,
    })?;
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut status = None;
    let mut eof = false;
    let result = loop {
        if status.is_none() && stop() {
            child.stop(STOP_GRACE);
            return Err(IsolationError::Stopped);
        }
        // Once the child is gone, only drain what is already buffered: background processes
        // (possible in chroot/none mode) may keep the pipe open indefinitely.
        let timeout = if status.is_some() { 0 } else { 100 };
        let readable = if eof {
            false
        } else {
            match sys::poll_readable(&child.output, timeout) {
                Ok(r) => r,
                Err(source) => break Err(("poll", source)),
            }
        };
        if readable {
            match child.output.read(&mut buf) {
                Ok(0) => eof = true,
                Ok(n) => emit_lines(&mut pending, &buf[..n], output),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => break Err(("read", source)),
            }
            continue;
        }
        if status.is_some() {
            break Ok(());
        }
        let waited = if eof {
            child.wait().map(Some)
        } else {
            child.try_wait()
        };
        match waited {
            Ok(s) => status = s,
            Err(source) => break Err(("waitpid", source)),
        }
    };
    if let Err((step, source)) = result {
        if status.is_none() {
            child.kill();
            let _ = child.wait();
        }
        return Err(IsolationError::Setup { step, source });
    }
    if !pending.is_empty() {
        output(&pending);
    }
    let status = status.unwrap_or(255);
    Ok((status, child.error_record()))
}

fn emit_lines(pending: &mut Vec<u8>, data: &[u8], output: &mut dyn FnMut(&[u8])) {
    pending.extend_from_slice(data);
    let mut start = 0;
    while let Some(pos) = pending[start..].iter().position(|&b| b == b'\n') {
        output(&pending[start..start + pos + 1]);
        start += pos + 1;
    }
    if pending.len() - start >= MAX_LINE {
        output(&pending[start..]);
        start = pending.len();
    }
    pending.drain(..start);
}

fn map_record(
    spec: &RunSpec,
    rootfs: &Path,
    plan: &ChildPlan,
    user: &ExecUser,
    rec: ErrorRecord,
) -> IsolationError {
    let source = io::Error::from_raw_os_error(rec.errno);
    let refused = matches!(rec.errno, libc::EPERM | libc::EACCES);
    match rec.stage {
        Stage::Unshare | Stage::UserMap | Stage::MakePrivate => {
            IsolationError::NamespacesDenied { source }
        }
        Stage::Op
            if refused
                && plan
                    .ns
                    .as_ref()
                    .is_some_and(|ns| rec.index < ns.first_user_op) =>
        {
            IsolationError::NamespacesDenied { source }
        }
        Stage::Op => IsolationError::Mount {
            target: plan
                .ns
                .as_ref()
                .and_then(|ns| ns.ops.get(rec.index))
                .map(op_target)
                .unwrap_or_default(),
            source,
        },
        Stage::Overlay => IsolationError::OverlayMount {
            step: sys::OVERLAY_STEPS
                .get(rec.index)
                .copied()
                .unwrap_or("mount"),
            source,
        },
        Stage::RootBind | Stage::PivotRoot => IsolationError::Setup {
            step: "entering the rootfs (bind mount and pivot_root)",
            source,
        },
        Stage::Capabilities => IsolationError::Setup {
            step: "bounding capabilities",
            source,
        },
        Stage::Seccomp => IsolationError::Setup {
            step: "installing the seccomp filter",
            source,
        },
        Stage::Chroot => IsolationError::Chroot {
            rootfs: rootfs.to_path_buf(),
            source,
        },
        Stage::Chdir => IsolationError::Chdir {
            cwd: spec.cwd.clone(),
            source,
        },
        Stage::Groups | Stage::Gid | Stage::Uid => IsolationError::SwitchUser {
            uid: user.uid,
            gid: user.gid,
            source,
        },
        Stage::Exec => IsolationError::Exec {
            program: spec.argv[0].clone(),
            source,
        },
        Stage::Stdio => IsolationError::Setup {
            step: "redirecting stdio",
            source,
        },
        Stage::Fork => IsolationError::Setup {
            step: "fork",
            source,
        },
        Stage::Hostname => IsolationError::Setup {
            step: "sethostname",
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kernels before 6.8 get the lower directories as one `lowerdir=` list of short
    /// names; the child builds it from the descriptors it opens. Tried here with the
    /// list forced (this kernel takes both).
    #[test]
    fn the_sandbox_mounts_an_overlay_from_a_lower_list_too() {
        let tmp = tempfile::tempdir().unwrap();
        let (bottom, top) = (tmp.path().join("bottom"), tmp.path().join("top"));
        fs::create_dir_all(bottom.join("bin")).unwrap();
        let copied = std::process::Command::new("cp")
            .arg("/bin/busybox")
            .arg(bottom.join("bin/sh"))
            .status()
            .unwrap();
        assert!(copied.success());
        fs::create_dir_all(&top).unwrap();
        fs::write(top.join("from-top"), "top\n").unwrap();
        let layers = OverlayLayers {
            lowers: vec![bottom, top],
            upper: tmp.path().join("upper"),
            work: tmp.path().join("work"),
        };
        fs::create_dir(&layers.upper).unwrap();
        fs::create_dir(&layers.work).unwrap();
        let script = "read -r line < /from-top && echo \"$line\" > /copied \
                      && read -r root < /proc/self/mountinfo && echo \"$root\" > /mountinfo";
        let argv = vec!["/bin/sh".into(), "-c".into(), script.into()];
        let spec = RunSpec::new(PathBuf::new(), argv, tmp.path().join("scratch"));
        let list = overlay::LowerOption::List;
        let outcome = run_in_overlay(&layers, list, &spec, &mut |_| {}, &|| false).unwrap();
        assert_eq!(outcome.status, 0);
        assert_eq!(
            fs::read_to_string(layers.upper.join("copied")).unwrap(),
            "top\n"
        );
        let root = fs::read_to_string(layers.upper.join("mountinfo")).unwrap();
        assert!(root.contains(" overlay "), "{root}");
        assert!(root.contains("lowerdir=/proc/self/fd/"), "{root}");
    }
}
