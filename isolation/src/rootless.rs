//! Rootless builds: a user who is not root re-enters ocibuild in a new user namespace (and
//! mount namespace) where uid 0 is the user and 1..N are the user's subordinate ids from
//! `/etc/subuid` (the same for gids from `/etc/subgid`), mapped by the setuid helpers
//! `newuidmap` and `newgidmap` (Debian package `uidmap`), as buildah and podman do.
//!
//! [`enter`] is called first thing in `main`, while the process has one thread:
//! - as root, or in a re-entered child: [`Entry::Continue`];
//! - otherwise the process (the parent) starts `/proc/self/exe` again with the same
//!   arguments and environment and a socket in `_OCIBUILD_USERNS_SYNC`. The child unshares
//!   its user and mount namespaces and says so; the parent maps the child's ids with
//!   `newuidmap`/`newgidmap` and answers; the child becomes root of its namespace and goes
//!   on with the normal (root) code path. The parent forwards SIGINT, SIGTERM and SIGHUP
//!   sent to it with `kill` (a terminal sends its own to both) and returns
//!   [`Entry::Exit`] with the child's exit code (128 + the signal's number when killed).
//! - when that cannot work (no subordinate ranges, no helpers, or the helpers failed):
//!   [`Entry::Continue`] with [`Mode::SingleId`] and why; the process makes a user
//!   namespace of its own where only root is mapped, to the user, and goes on there as
//!   root. Where user namespaces are disabled (or that fails too): [`Mode::NoNamespace`],
//!   and the process goes on as the user.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;

/// The environment variable that tells the re-executed child which descriptor talks to
/// its parent.
const SYNC_ENV: &str = "_OCIBUILD_USERNS_SYNC";

/// The environment variable a re-entered child (and everything it runs, e.g. the shell of
/// `ocibuild unshare`) finds set to `1`.
pub const ROOTLESS_ENV: &str = "OCIBUILD_ROOTLESS";

/// The signals the parent forwards to the child.
const FORWARDED: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// One line of `/etc/subuid` or `/etc/subgid`: `count` ids from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// The first subordinate id.
    pub start: u32,
    /// How many.
    pub count: u32,
}

/// How this process builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Root of the initial user namespace (or of one this process did not make).
    Root,
    /// Root of the user namespace this process re-entered: ids 0..=`uids` and 0..=`gids`
    /// are mapped (0 to the user, the rest to the subordinate ranges).
    Namespace {
        /// The highest mapped uid inside.
        uids: u32,
        /// The highest mapped gid inside.
        gids: u32,
    },
    /// Not root and no full mapping (why): root of a user and mount namespace this
    /// process made itself, where root is the user and no other id is mapped (what an
    /// unprivileged process may map without the helpers). Files owned by root are the
    /// user's outside; other owners cannot be set.
    SingleId(Unavailable),
    /// Not root and no user namespace at all (why): the process goes on as the user, so
    /// no file it writes can be owned by root, and RUN cannot be isolated.
    NoNamespace(Unavailable),
}

/// What `main` does after [`enter`].
#[derive(Debug)]
pub enum Entry {
    /// Go on building in this process.
    Continue(Mode),
    /// This process was the parent of the re-entered child, which ended: exit with this
    /// code.
    Exit(i32),
}

/// Why a non-root user builds with a single-id mapping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// No line for the user in `/etc/subuid` or `/etc/subgid`.
    #[error(
        "user {user} has no subordinate ids in {file}: ask an administrator to run `usermod \
         --add-subuids 100000-165535 --add-subgids 100000-165535 {user}`"
    )]
    NoRanges {
        /// The user's name.
        user: String,
        /// `/etc/subuid` or `/etc/subgid`.
        file: PathBuf,
    },
    /// `newuidmap` or `newgidmap` is not installed.
    #[error("{helper} is not installed: install it with `apt install uidmap` (Debian, Ubuntu) or `dnf install shadow-utils` (Fedora)")]
    NoHelper {
        /// The missing program.
        helper: &'static str,
    },
    /// Unprivileged user namespaces are switched off.
    #[error(
        "unprivileged user namespaces are disabled ({setting} is {value}): enable them with \
         `sysctl -w {sysctl}={wanted}`"
    )]
    Disabled {
        /// The file under /proc/sys.
        setting: String,
        /// Its value.
        value: String,
        /// The sysctl's name.
        sysctl: String,
        /// The value that enables them.
        wanted: &'static str,
    },
    /// Creating the namespace or mapping the ids failed.
    #[error("entering a user namespace with the subordinate ids failed: {0}")]
    Failed(String),
}

/// Errors of [`enter`] that leave no way to build.
#[derive(Debug, thiserror::Error)]
pub enum RootlessError {
    /// A system call of the parent or the child failed.
    #[error("rootless setup: {step} failed: {source}")]
    Sys {
        /// What was being done.
        step: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn sys(step: &'static str) -> impl FnOnce(io::Error) -> RootlessError {
    move |source| RootlessError::Sys { step, source }
}

fn errno(step: &'static str) -> impl FnOnce(nix::errno::Errno) -> RootlessError {
    move |e| RootlessError::Sys {
        step,
        source: io::Error::from(e),
    }
}

/// Enters the rootless user namespace when not root; see the module documentation. Call it
/// before any thread is started.
pub fn enter() -> Result<Entry, RootlessError> {
    if let Some(fd) = std::env::var_os(SYNC_ENV) {
        return child(&fd).map(Entry::Continue);
    }
    if nix::unistd::geteuid().is_root() {
        return Ok(Entry::Continue(Mode::Root));
    }
    let plan = match Plan::find() {
        Ok(plan) => plan,
        Err(why) => return Ok(Entry::Continue(single_id(why))),
    };
    parent(&plan)
}

/// The mode without a full mapping (`why`): a user namespace of this process' own where
/// only root is mapped, or none when that cannot be made either.
fn single_id(why: Unavailable) -> Mode {
    if matches!(why, Unavailable::Disabled { .. }) {
        return Mode::NoNamespace(why);
    }
    match enter_single_id() {
        Ok(()) => Mode::SingleId(why),
        Err(e) => Mode::NoNamespace(Unavailable::Failed(format!("{why}; and {e}"))),
    }
}

/// Makes this process root of a new user namespace (and mount namespace) that maps root
/// to the user and nothing else, as any unprivileged process may (`setgroups` denied, so
/// the supplementary groups stay, unmapped). Only while the process has one thread.
fn enter_single_id() -> Result<(), RootlessError> {
    use nix::unistd::{getegid, geteuid, setresgid, setresuid, Gid, Uid};
    let (uid, gid) = (geteuid().as_raw(), getegid().as_raw());
    nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS).map_err(errno(
        "unshare(CLONE_NEWUSER|CLONE_NEWNS) with only root mapped",
    ))?;
    fs::write("/proc/self/setgroups", "deny").map_err(sys("writing /proc/self/setgroups"))?;
    fs::write("/proc/self/uid_map", format!("0 {uid} 1\n"))
        .map_err(sys("writing /proc/self/uid_map"))?;
    fs::write("/proc/self/gid_map", format!("0 {gid} 1\n"))
        .map_err(sys("writing /proc/self/gid_map"))?;
    let (root, root_gid) = (Uid::from_raw(0), Gid::from_raw(0));
    setresgid(root_gid, root_gid, root_gid).map_err(errno("setresgid(0) in the namespace"))?;
    setresuid(root, root, root).map_err(errno("setresuid(0) in the namespace"))
}

/// What the parent needs to map the child's ids.
struct Plan {
    uid: u32,
    gid: u32,
    uid_ranges: Vec<IdRange>,
    gid_ranges: Vec<IdRange>,
    newuidmap: PathBuf,
    newgidmap: PathBuf,
}

impl Plan {
    /// The user's ranges and helpers, or why a full mapping is not possible.
    fn find() -> Result<Plan, Unavailable> {
        userns_enabled()?;
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let user = nix::unistd::User::from_uid(uid.into())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| uid.to_string());
        let ranges = |file: &str| {
            let content = fs::read_to_string(file).unwrap_or_default();
            let found = subordinate_ranges(&content, &user, uid);
            if found.is_empty() {
                Err(Unavailable::NoRanges {
                    user: user.clone(),
                    file: file.into(),
                })
            } else {
                Ok(found)
            }
        };
        let uid_ranges = ranges("/etc/subuid")?;
        let gid_ranges = ranges("/etc/subgid")?;
        Ok(Plan {
            uid,
            gid,
            uid_ranges,
            gid_ranges,
            newuidmap: helper("newuidmap")?,
            newgidmap: helper("newgidmap")?,
        })
    }
}

/// The ranges of `user` (by name or uid) in the content of `/etc/subuid` or `/etc/subgid`.
pub fn subordinate_ranges(content: &str, user: &str, uid: u32) -> Vec<IdRange> {
    let uid = uid.to_string();
    content
        .lines()
        .filter_map(|line| {
            let mut fields = line.trim().split(':');
            let (name, start, count) = (fields.next()?, fields.next()?, fields.next()?);
            if name != user && name != uid {
                return None;
            }
            let range = IdRange {
                start: start.trim().parse().ok()?,
                count: count.trim().parse().ok()?,
            };
            (range.count > 0).then_some(range)
        })
        .collect()
}

/// The arguments of `newuidmap PID ...` mapping 0 to `own` and 1.. to `ranges` in turn.
pub fn map_arguments(own: u32, ranges: &[IdRange]) -> Vec<String> {
    let mut args = vec!["0".to_string(), own.to_string(), "1".to_string()];
    let mut inside = 1u64;
    for range in ranges {
        args.extend([
            inside.to_string(),
            range.start.to_string(),
            range.count.to_string(),
        ]);
        inside += u64::from(range.count);
    }
    args
}

/// The highest id inside a namespace mapped by [`map_arguments`] of `ranges`.
fn highest_id(ranges: &[IdRange]) -> u32 {
    let total: u64 = ranges.iter().map(|r| u64::from(r.count)).sum();
    u32::try_from(total).unwrap_or(u32::MAX)
}

/// The sysctls that switch unprivileged user namespaces off, when one does.
fn userns_enabled() -> Result<(), Unavailable> {
    let checks = [
        ("/proc/sys/kernel/unprivileged_userns_clone", "0", "1"),
        ("/proc/sys/user/max_user_namespaces", "0", "15000"),
        (
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            "1",
            "0",
        ),
    ];
    for (file, off, wanted) in checks {
        let value = fs::read_to_string(file).unwrap_or_default();
        if value.trim() == off {
            return Err(Unavailable::Disabled {
                setting: file.into(),
                value: off.into(),
                sysctl: file["/proc/sys/".len()..].replace('/', "."),
                wanted,
            });
        }
    }
    Ok(())
}

/// The path of the setuid helper `name`, looked up in `PATH` and the usual directories.
fn helper(name: &'static str) -> Result<PathBuf, Unavailable> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/sbin", "/bin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or(Unavailable::NoHelper { helper: name })
}

/// The parent: starts the child, maps its ids, forwards signals and waits for it.
fn parent(plan: &Plan) -> Result<Entry, RootlessError> {
    let mask = forwarded_mask();
    // Blocked before the child exists, so that none is lost; the child unblocks them.
    mask.thread_block()
        .map_err(errno("blocking signals (sigprocmask)"))?;
    let signals = SignalFd::new(&mask).map_err(errno("signalfd"))?;
    let (mut ours, theirs) = UnixStream::pair().map_err(sys("socketpair"))?;
    let mut child = spawn_child(&theirs)?;
    drop(theirs);
    match map_child(plan, &mut ours, child.id()) {
        Ok(()) => {}
        Err(why) => {
            // The child exits on the refusal (or has exited already).
            let _ = ours.write_all(b"x");
            let _ = child.wait();
            mask.thread_unblock()
                .map_err(errno("unblocking signals (sigprocmask)"))?;
            return Ok(Entry::Continue(single_id(why)));
        }
    }
    drop(ours);
    wait_forwarding(&mut child, &signals).map(Entry::Exit)
}

/// Starts `/proc/self/exe` with this process' arguments, its end of the socket `theirs`
/// inherited.
fn spawn_child(theirs: &UnixStream) -> Result<Child, RootlessError> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let fd = theirs.as_raw_fd();
    // Only this thread exists and it starts nothing else meanwhile, so no other program
    // inherits the descriptor.
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty())).map_err(errno("fcntl(F_SETFD)"))?;
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| OsString::from("ocibuild"));
    let child = Command::new("/proc/self/exe")
        .arg0(argv0)
        .args(args)
        .env(SYNC_ENV, fd.to_string())
        .spawn()
        .map_err(sys("starting /proc/self/exe in a user namespace"));
    let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    child
}

/// Waits for the child to have unshared, maps its ids and tells it to go on.
fn map_child(plan: &Plan, sock: &mut UnixStream, pid: u32) -> Result<(), Unavailable> {
    let mut byte = [0u8];
    match sock.read(&mut byte) {
        Ok(1) if byte[0] == b'u' => {}
        Ok(1) => {
            let mut why = String::new();
            let _ = sock.read_to_string(&mut why);
            return Err(Unavailable::Failed(why));
        }
        Ok(_) => {
            return Err(Unavailable::Failed(
                "the child ended before unsharing".into(),
            ))
        }
        Err(e) => return Err(Unavailable::Failed(format!("reading from the child: {e}"))),
    }
    run_helper(&plan.newuidmap, pid, plan.uid, &plan.uid_ranges)?;
    run_helper(&plan.newgidmap, pid, plan.gid, &plan.gid_ranges)?;
    sock.write_all(b"g")
        .map_err(|e| Unavailable::Failed(format!("writing to the child: {e}")))
}

/// Runs `newuidmap`/`newgidmap` for `pid`; its error output explains a failure.
fn run_helper(helper: &Path, pid: u32, own: u32, ranges: &[IdRange]) -> Result<(), Unavailable> {
    let output = Command::new(helper)
        .arg(pid.to_string())
        .args(map_arguments(own, ranges))
        .output()
        .map_err(|e| Unavailable::Failed(format!("running {}: {e}", helper.display())))?;
    if output.status.success() {
        return Ok(());
    }
    Err(Unavailable::Failed(format!(
        "{} {}: {}",
        helper.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}

/// Runs `command` and waits for it (as `ocibuild unshare` does in the namespace), passing
/// on to it the SIGINT, SIGTERM and SIGHUP sent to this process with `kill` (a terminal's
/// reach it directly); its exit code, 128 + the signal's number when a signal ended it.
/// Call it while the process has one thread: the signals are blocked in this one only.
pub fn run_forwarding(command: &mut Command) -> Result<i32, RootlessError> {
    let mask = forwarded_mask();
    // Blocked before the command starts, so that none is lost (the command itself starts
    // with none blocked: `Command` clears the mask).
    let old = mask
        .thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)
        .map_err(errno("blocking signals (sigprocmask)"))?;
    let waited = SignalFd::new(&mask)
        .map_err(errno("signalfd"))
        .and_then(|signals| {
            let mut child = command.spawn().map_err(sys("starting the command"))?;
            wait_forwarding(&mut child, &signals)
        });
    old.thread_set_mask()
        .map_err(errno("restoring the signal mask (sigprocmask)"))?;
    waited
}

/// The signals a waiting process blocks and reads from a signalfd: those it forwards, and
/// SIGCHLD, which wakes it when the child ends.
fn forwarded_mask() -> SigSet {
    let mut mask = SigSet::empty();
    for signal in FORWARDED.into_iter().chain([Signal::SIGCHLD]) {
        mask.add(signal);
    }
    mask
}

/// Forwards the signals sent to this process with `kill` to `child` until it ends; its
/// exit code, 128 + the signal's number when a signal ended it.
fn wait_forwarding(child: &mut Child, signals: &SignalFd) -> Result<i32, RootlessError> {
    loop {
        if let Some(status) = child.try_wait().map_err(sys("waitpid"))? {
            return Ok(status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)));
        }
        let Some(info) = signals.read_signal().map_err(errno("reading signalfd"))? else {
            continue;
        };
        let Ok(signal) = Signal::try_from(info.ssi_signo as i32) else {
            continue;
        };
        // A terminal's ^C reaches the child itself (same process group): SI_KERNEL.
        let from_kill = info.ssi_code == libc::SI_USER || info.ssi_code == libc::SI_QUEUE;
        if FORWARDED.contains(&signal) && from_kill {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, signal);
        }
    }
}

/// The child: unshares the user and mount namespaces, lets the parent map its ids and
/// becomes root of the new namespace.
fn child(fd: &std::ffi::OsStr) -> Result<Mode, RootlessError> {
    let fd: i32 = fd
        .to_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| RootlessError::Sys {
            step: "reading _OCIBUILD_USERNS_SYNC",
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
    std::env::remove_var(SYNC_ENV);
    // The parent blocked the signals it forwards before starting this process, and the
    // mask is inherited.
    SigSet::empty()
        .thread_set_mask()
        .map_err(errno("unblocking signals (sigprocmask)"))?;
    let mut sock = crate::sys::stream_from_inherited_fd(fd).map_err(sys("the parent's socket"))?;
    if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS) {
        let _ = sock.write_all(format!("-unshare(CLONE_NEWUSER|CLONE_NEWNS): {e}").as_bytes());
        return Err(RootlessError::Sys {
            step: "unshare(CLONE_NEWUSER|CLONE_NEWNS) in the re-entered child",
            source: e.into(),
        });
    }
    sock.write_all(b"u")
        .map_err(sys("telling the parent the namespace exists"))?;
    let mut answer = [0u8];
    sock.read_exact(&mut answer)
        .map_err(sys("waiting for the parent to map the ids"))?;
    if answer[0] != b'g' {
        // The parent goes on with a single-id mapping itself.
        std::process::exit(0);
    }
    become_root()?;
    std::env::set_var(ROOTLESS_ENV, "1");
    let (uids, gids) = (mapped_highest("uid_map")?, mapped_highest("gid_map")?);
    Ok(Mode::Namespace { uids, gids })
}

/// Switches to uid and gid 0 of the new namespace (the user's own ids, mapped) and
/// drops the supplementary groups, which are not mapped.
fn become_root() -> Result<(), RootlessError> {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    let root_gid = Gid::from_raw(0);
    setresgid(root_gid, root_gid, root_gid).map_err(errno("setresgid(0) in the namespace"))?;
    setgroups(&[]).map_err(errno("setgroups([]) in the namespace"))?;
    let root = Uid::from_raw(0);
    setresuid(root, root, root).map_err(errno("setresuid(0) in the namespace"))
}

/// The highest id inside that `/proc/self/{file}` maps.
fn mapped_highest(file: &str) -> Result<u32, RootlessError> {
    let content = fs::read_to_string(format!("/proc/self/{file}"))
        .map_err(sys("reading /proc/self/uid_map or gid_map"))?;
    let ranges: Vec<IdRange> = content
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace().map(|f| f.parse::<u32>().ok());
            let (_inside, start, count) = (fields.next()??, fields.next()??, fields.next()??);
            Some(IdRange { start, count })
        })
        .collect();
    Ok(highest_id(&ranges).saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_found_by_name_or_uid() {
        let content = "alice:100000:65536\n# x\nbob:200000:1000\n1001:300000:10\nalice:400000:5\n";
        assert_eq!(
            subordinate_ranges(content, "alice", 1000),
            vec![
                IdRange {
                    start: 100000,
                    count: 65536
                },
                IdRange {
                    start: 400000,
                    count: 5
                }
            ]
        );
        assert_eq!(subordinate_ranges(content, "carol", 1001).len(), 1);
        assert!(subordinate_ranges(content, "dave", 1002).is_empty());
    }

    #[test]
    fn root_maps_to_the_user_and_the_ranges_follow_in_turn() {
        let ranges = [
            IdRange {
                start: 100000,
                count: 65536,
            },
            IdRange {
                start: 400000,
                count: 5,
            },
        ];
        assert_eq!(
            map_arguments(1000, &ranges).join(" "),
            "0 1000 1 1 100000 65536 65537 400000 5"
        );
        assert_eq!(highest_id(&ranges), 65541);
    }
}
