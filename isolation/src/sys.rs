//! The only unsafe code of ocibuild: fork, namespaces, mounts, the root switch, the
//! capability bound, the seccomp filter, the identity switch and exec, behind a narrow
//! crate-private API.
//!
//! Everything that allocates (C strings, pointer arrays, the BPF program) is prepared by
//! the parent in a [`ChildPlan`] before `fork`. After `fork` (the parent may be
//! multi-threaded) the child only performs raw system calls through `libc` —
//! async-signal-safe functions — and reports a failure as a fixed-size [`ErrorRecord`]
//! written to a close-on-exec pipe before `_exit`.
//!
//! Process layout in namespace mode (`P` = caller, `A` = first child, `B`, `C`):
//! `P` forks `A`; `A` unshares the namespaces, makes mount propagation private, and forks
//! `B`, which is pid 1 of the new pid namespace. `B` bind-mounts the rootfs onto itself
//! (`nodev`), mounts /proc, /dev, ... inside it — every target opened with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` on the rootfs and mounted through its
//! fd, so no symlink in the rootfs leads a mount outside it — then enters the rootfs with
//! `pivot_root` and detaches the old root, so no path leads back to the host. `B` forks `C`
//! (pid 2), which bounds its capabilities, installs the seccomp filter (while it still
//! holds CAP_SYS_ADMIN, so `no_new_privs` is not needed and setuid programs keep working),
//! switches user and execs the command; `B` drops every capability of its own, reaps every
//! zombie and exits with `C`'s status (128+signal when killed); `A` exits with `B`'s. When
//! `B` exits the kernel kills whatever is left in the namespace, and the mount namespace
//! with all mounts disappears with its last process.
//!
//! Chroot and none modes: `A` becomes a child subreaper and forks `C`, which chroots (chroot
//! mode), bounds its capabilities (without CAP_SYS_CHROOT in chroot mode), installs the
//! filter, switches user and execs. When `C` exits, `A` kills every process left below it
//! (orphans are re-parented to `A`) before it exits with `C`'s status.

use std::ffi::{c_int, c_ulong, CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Exit status of a child that failed before exec (the error record carries the details).
const SETUP_FAILED: c_int = 125;

/// Which step of the child failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Stage {
    Stdio = 1,
    Unshare,
    UserMap,
    MakePrivate,
    Fork,
    Hostname,
    Op,
    RootBind,
    Overlay,
    PivotRoot,
    Chroot,
    Chdir,
    Groups,
    Gid,
    Uid,
    Capabilities,
    Seccomp,
    Exec,
}

impl Stage {
    /// Every stage, in discriminant order (1, 2, ...): the one list `from_u32` reads.
    const ALL: [Stage; 18] = [
        Stage::Stdio,
        Stage::Unshare,
        Stage::UserMap,
        Stage::MakePrivate,
        Stage::Fork,
        Stage::Hostname,
        Stage::Op,
        Stage::RootBind,
        Stage::Overlay,
        Stage::PivotRoot,
        Stage::Chroot,
        Stage::Chdir,
        Stage::Groups,
        Stage::Gid,
        Stage::Uid,
        Stage::Capabilities,
        Stage::Seccomp,
        Stage::Exec,
    ];

    fn from_u32(v: u32) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| *s as u32 == v)
    }
}

/// A failure reported by a child process: stage, index of the failing [`Op`], errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ErrorRecord {
    pub stage: Stage,
    pub index: usize,
    pub errno: i32,
}

const RECORD_LEN: usize = 12;

/// The fd number of the error pipe in the children.
const ERR_FD: RawFd = 3;

/// Where a mount's source comes from.
#[derive(Debug)]
pub(crate) enum Source {
    /// No source (remounts).
    None,
    /// A filesystem name or host path, passed to mount(2) as it is.
    Path(CString),
    /// The target itself (a bind of a path inside the rootfs onto itself).
    Target,
}

/// One filesystem step performed inside the new mount namespace, before the root switch.
/// Paths are relative to the rootfs and resolved inside it (`RESOLVE_IN_ROOT`).
#[derive(Debug)]
pub(crate) enum Op {
    /// `mount(2)` onto the resolved `target`; failures of `optional` mounts are ignored,
    /// and a missing target is skipped when `if_exists`.
    Mount {
        source: Source,
        target: CString,
        fstype: Option<CString>,
        flags: c_ulong,
        data: Option<CString>,
        optional: bool,
        if_exists: bool,
    },
    /// Creates directory `name` in the resolved directory `dir` (inside a fresh tmpfs).
    Mkdir {
        dir: CString,
        name: CString,
        mode: libc::mode_t,
    },
    /// Creates an empty file to bind-mount on (inside a fresh tmpfs).
    Touch { dir: CString, name: CString },
    /// Creates a symlink `name` → `target` in the resolved directory `dir` (inside a fresh
    /// tmpfs).
    Symlink {
        target: CString,
        dir: CString,
        name: CString,
    },
}

/// The rootfs of namespace mode: bound onto itself (or an overlay mounted on it), then
/// entered with `pivot_root`.
#[derive(Debug)]
pub(crate) struct RootPlan {
    /// Host path of the rootfs directory (for an overlay, the empty mount point).
    pub path: CString,
    /// Flags for the remount of the rootfs bind: `MS_NODEV` plus the locked flags of the
    /// filesystem holding it (which a remount must repeat).
    pub remount_flags: c_ulong,
    /// Mount this overlay on `path` instead of binding `path` onto itself.
    pub overlay: Option<OverlayPlan>,
}

/// An overlay the child mounts as its rootfs, inside its own mount namespace, with the
/// new mount API (`nodev`); each directory is named to the kernel as `/proc/self/fd/<n>`
/// of a descriptor the child opens.
#[derive(Debug)]
pub(crate) struct OverlayPlan {
    /// The lower directories, top-most first.
    pub lowers: Vec<CString>,
    /// The upper directory.
    pub upper: CString,
    /// The work directory.
    pub work: CString,
    /// The other options, e.g. `redirect_dir` = `off`; an empty value is a flag.
    pub options: Vec<(CString, CString)>,
    /// Pass the lowers as one `lowerdir=` list (kernels before 6.8) instead of one
    /// `lowerdir+` each.
    pub list: bool,
}

/// What each step of the child's overlay mount does, by the index of a
/// [`Stage::Overlay`] error record.
pub(crate) const OVERLAY_STEPS: [&str; 9] = [
    "fsopen",
    "open a layer directory",
    "set the lower directories",
    "set the upper directory",
    "set the work directory",
    "set an option",
    "create the filesystem",
    "fsmount",
    "attach it at the rootfs mount point",
];

/// What the command may do: applied by the command's process just before exec.
#[derive(Debug)]
pub(crate) struct Privileges {
    /// Capabilities to drop from the bounding set (bit n = capability n).
    pub drop_bounding: u64,
    /// Effective, permitted and inheritable set of a command running as uid 0 (`None`:
    /// the caller's); any other uid gets none.
    pub root_caps: Option<u64>,
    /// The highest capability number of the kernel.
    pub last_cap: u32,
    /// The seccomp program, if any.
    pub seccomp: Option<Vec<libc::sock_filter>>,
    /// Set `no_new_privs` before installing the filter: needed when the caller lacks
    /// CAP_SYS_ADMIN (setuid programs then gain nothing).
    pub no_new_privs: bool,
}

/// Namespace setup for [`ChildPlan`].
#[derive(Debug)]
pub(crate) struct NsPlan {
    /// `CLONE_NEW*` flags for `unshare(2)`.
    pub flags: c_int,
    /// Contents of uid_map and gid_map when a user namespace is created.
    pub user_maps: Option<(Vec<u8>, Vec<u8>)>,
    /// Hostname to set in the new UTS namespace.
    pub hostname: Option<Vec<u8>>,
    /// The rootfs to switch to (`None`: stay, as `probe` does).
    pub root: Option<RootPlan>,
    /// Mount steps, in order.
    pub ops: Vec<Op>,
    /// Index of the first op serving a caller-requested mount (failures there are not
    /// reported as a refusal of namespaces).
    pub first_user_op: usize,
}

/// An identity to switch to: uid, gid, and the supplementary groups (`None`: leave them).
pub(crate) type Identity = (libc::uid_t, libc::gid_t, Option<Vec<libc::gid_t>>);

/// Everything the child needs, prepared before fork.
#[derive(Debug)]
pub(crate) struct ChildPlan {
    /// `None` for chroot/none modes.
    pub ns: Option<NsPlan>,
    /// Chroot mode: the directory to chroot into (`None`: no chroot).
    pub root: Option<CString>,
    /// Working directory inside the root.
    pub cwd: CString,
    /// Identity switch: (uid, gid, supplementary groups or `None` to leave them alone);
    /// `None` keeps the current identity.
    pub identity: Option<Identity>,
    /// Capability bound, capabilities and seccomp filter (`None`: unchanged).
    pub privileges: Option<Privileges>,
    /// Stop after the namespace/mount/chroot steps and exit 0 (used by `probe`).
    pub probe_only: bool,
    /// The command.
    pub exec: ExecPlan,
}

/// argv/envp and the PATH candidates for argv[0], as C pointer arrays.
#[derive(Debug)]
pub(crate) struct ExecPlan {
    _strings: Vec<CString>,
    candidates: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// `["/bin/sh", <candidate>, argv[1..]..., NULL]` for scripts without a shebang (ENOEXEC).
    sh_argv: Vec<*const libc::c_char>,
    sh: CString,
}

impl ExecPlan {
    /// Builds the pointer arrays. `candidates` are the paths execve is tried on, in order.
    pub(crate) fn new(argv: Vec<CString>, envp: Vec<CString>, candidates: Vec<CString>) -> Self {
        let mut argv_ptrs: Vec<_> = argv.iter().map(|s| s.as_ptr()).collect();
        argv_ptrs.push(ptr::null());
        let mut envp_ptrs: Vec<_> = envp.iter().map(|s| s.as_ptr()).collect();
        envp_ptrs.push(ptr::null());
        let sh = c"/bin/sh".to_owned();
        let mut sh_argv = vec![sh.as_ptr(), ptr::null()];
        sh_argv.extend(argv.iter().skip(1).map(|s| s.as_ptr()));
        sh_argv.push(ptr::null());
        let mut strings = argv;
        strings.extend(envp);
        // The CStrings' heap buffers do not move when the vectors holding them move, so the
        // pointers stay valid as long as `_strings` lives.
        ExecPlan {
            _strings: strings,
            candidates,
            argv: argv_ptrs,
            envp: envp_ptrs,
            sh_argv,
            sh,
        }
    }
}

/// A started child: its pid and the read ends of the output and error pipes.
#[derive(Debug)]
pub(crate) struct Child {
    pid: libc::pid_t,
    pub output: File,
    errors: File,
    reaped: bool,
}

fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn cvt(ret: c_int) -> io::Result<c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` is a valid, writable array of two ints as pipe2 requires.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Forks the child described by `plan`; its stdout+stderr go to `Child::output`.
pub(crate) fn spawn(plan: &mut ChildPlan) -> io::Result<Child> {
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the child branch only runs `child_a`, which performs async-signal-safe system
    // calls on memory prepared before the fork (no allocation, no locks) and never returns.
    let pid = cvt(unsafe { libc::fork() })?;
    if pid == 0 {
        // SAFETY: we are the freshly forked child; see `child_a`.
        unsafe { child_a(plan, parent, out_w.as_raw_fd(), err_w.as_raw_fd()) }
    }
    drop(out_w);
    drop(err_w);
    Ok(Child {
        pid,
        output: File::from(out_r),
        errors: File::from(err_r),
        reaped: false,
    })
}

impl Child {
    /// Reaps the child if it exited: `Some(status)` as exit code or 128+signal.
    pub(crate) fn try_wait(&mut self) -> io::Result<Option<i32>> {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer; `pid` is our own unreaped child.
        let r = cvt(unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) })?;
        self.reaped |= r == self.pid;
        Ok((r == self.pid).then(|| decode_status(status)))
    }

    /// Waits for the child to exit.
    pub(crate) fn wait(&mut self) -> io::Result<i32> {
        loop {
            let mut status = 0;
            // SAFETY: as in `try_wait`.
            match cvt(unsafe { libc::waitpid(self.pid, &mut status, 0) }) {
                Ok(_) => {
                    self.reaped = true;
                    return Ok(decode_status(status));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Stops a running child and everything it started: SIGTERM first, repeated, which in
    /// chroot and none modes makes `A` kill every process below it (see [`run_reaped`])
    /// and in namespace mode makes `A` kill pid 1 and wait until the namespace is empty
    /// (see [`wait_for_namespace`]); SIGKILL when `A` is still there after `grace`. The
    /// child is reaped.
    pub(crate) fn stop(&mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        let mut next_signal = Instant::now();
        while !self.reaped && Instant::now() < deadline {
            if Instant::now() >= next_signal {
                // SAFETY: kill(2) of our own unreaped child, whose pid cannot be recycled yet.
                unsafe { libc::kill(self.pid, libc::SIGTERM) };
                next_signal = Instant::now() + Duration::from_millis(100);
            }
            match self.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        self.kill();
        let _ = self.wait();
    }

    /// Kills the child (best effort; used on error paths before `wait`).
    pub(crate) fn kill(&self) {
        if !self.reaped {
            // SAFETY: kill(2) of our own unreaped child, whose pid cannot be recycled yet.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }

    /// After the child exited: the failure it reported before exec, if any.
    pub(crate) fn error_record(&mut self) -> Option<ErrorRecord> {
        use std::io::Read;
        set_nonblocking(&self.errors);
        let mut buf = [0u8; RECORD_LEN];
        let mut got = 0;
        while got < RECORD_LEN {
            match self.errors.read(&mut buf[got..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        if got < RECORD_LEN {
            return None;
        }
        let word = |i: usize| [buf[i], buf[i + 1], buf[i + 2], buf[i + 3]];
        Some(ErrorRecord {
            stage: Stage::from_u32(u32::from_ne_bytes(word(0)))?,
            index: u32::from_ne_bytes(word(4)) as usize,
            errno: i32::from_ne_bytes(word(8)),
        })
    }
}

impl Drop for Child {
    /// Never leaves a running child or a zombie behind (e.g. when the output callback
    /// panics): kills and reaps it. Its namespaces and mounts die with it.
    fn drop(&mut self) {
        if !self.reaped {
            self.kill();
            let _ = self.wait();
        }
    }
}

fn set_nonblocking(file: &File) {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on an fd we own; F_GETFL/F_SETFL take/return plain ints.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

/// Waits up to `timeout_ms` for `file` to become readable (or hung up).
pub(crate) fn poll_readable(file: &File, timeout_ms: i32) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd and we pass a count of 1.
    match cvt(unsafe { libc::poll(&mut pfd, 1, timeout_ms) }) {
        Ok(n) => Ok(n > 0),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
        Err(e) => Err(e),
    }
}

/// The socket at descriptor `fd`, inherited from the parent that re-executed this
/// process (`rootless`); checked to be a socket before it is owned, and made close-on-exec.
pub(crate) fn stream_from_inherited_fd(fd: RawFd) -> io::Result<std::os::unix::net::UnixStream> {
    // SAFETY: fstat only writes into the zeroed buffer it is given.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on any integer is harmless; an invalid one gives EBADF.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a socket"));
    }
    // SAFETY: the descriptor was handed to this process for exactly this use (its number
    // is in _OCIBUILD_USERNS_SYNC, which is removed before anything else reads it), it is
    // open and a socket, and nothing else in the process owns it.
    let stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    // SAFETY: FD_CLOEXEC on a descriptor this process owns.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stream)
}

/// The effective uid and gid of this process.
pub(crate) fn effective_ids() -> (libc::uid_t, libc::gid_t) {
    // SAFETY: geteuid/getegid have no preconditions and cannot fail.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

fn decode_status(status: c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}

// ---------------------------------------------------------------------------------------
// Child side. Everything below runs after fork: raw syscalls only, no allocation.
// ---------------------------------------------------------------------------------------

/// Writes an error record to `fd` and exits.
///
/// # Safety
/// Only to be called in a forked child.
unsafe fn fail(fd: RawFd, stage: Stage, index: usize, errno: i32) -> ! {
    let mut buf = [0u8; RECORD_LEN];
    buf[0..4].copy_from_slice(&(stage as u32).to_ne_bytes());
    buf[4..8].copy_from_slice(&(index as u32).to_ne_bytes());
    buf[8..12].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: `buf` is valid for RECORD_LEN bytes; a short or failed write only loses the
    // diagnostic, and _exit never returns.
    unsafe {
        libc::write(fd, buf.as_ptr().cast(), RECORD_LEN);
        libc::_exit(SETUP_FAILED)
    }
}

/// Writes all of `data` to a (proc) file.
///
/// # Safety
/// Only to be called in a forked child.
unsafe fn write_file(path: &CStr, data: &[u8]) -> Result<(), i32> {
    // SAFETY: `path` is NUL-terminated; `data` is valid for its length; fd closed below.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(last_errno());
        }
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        let err = last_errno();
        libc::close(fd);
        if n != data.len() as isize {
            return Err(if n < 0 { err } else { libc::EIO });
        }
    }
    Ok(())
}

/// Closes every fd >= `first`.
///
/// # Safety
/// Only to be called in a forked child, where no other code owns those fds.
unsafe fn close_fds_from(first: RawFd) {
    // SAFETY: close_range/close only affect this process' fd table.
    unsafe {
        let r = libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        );
        if r < 0 {
            // Kernels before 5.9: close one by one up to the fd limit.
            let mut limit: libc::rlimit = std::mem::zeroed();
            let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
                limit.rlim_cur.min(65536) as RawFd
            } else {
                1024
            };
            for fd in first..max {
                libc::close(fd);
            }
        }
    }
}

fn opt_ptr(s: &Option<CString>) -> *const libc::c_char {
    s.as_ref().map_or(ptr::null(), |s| s.as_ptr())
}

/// Waits for `pid` and exits with its status, reaping every other zombie meanwhile (the
/// caller is pid 1 of the RUN's pid namespace, and orphans are re-parented to it).
///
/// # Safety
/// Only to be called in a forked child.
unsafe fn wait_and_exit(pid: libc::pid_t) -> ! {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r == pid {
            // SAFETY: _exit is always safe to call.
            unsafe { libc::_exit(decode_status(status)) }
        }
        if r < 0 && last_errno() != libc::EINTR {
            // SAFETY: as above.
            unsafe { libc::_exit(SETUP_FAILED) }
        }
    }
}

/// First child: stdio, signals, namespaces.
///
/// # Safety
/// Only to be called right after fork, in the child.
unsafe fn child_a(plan: &mut ChildPlan, parent: libc::pid_t, out: RawFd, err: RawFd) -> ! {
    // SAFETY (whole block): raw syscalls with valid, pre-built arguments; no allocation.
    unsafe {
        // Die with the caller; if it is already gone, stop here.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as c_ulong, 0, 0, 0);
        if libc::getppid() != parent {
            libc::_exit(SETUP_FAILED);
        }
        // Default signal dispositions (Rust ignores SIGPIPE) and an empty signal mask.
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, ptr::null_mut());
        libc::umask(0o022);

        // stdin = /dev/null, stdout+stderr = output pipe, fd 3 = error pipe, and nothing
        // else: every other inherited fd (even close-on-exec ones, since A and B never exec)
        // is closed, so concurrent runs or file writes in other threads are not held open.
        let out_high = libc::fcntl(out, libc::F_DUPFD_CLOEXEC, 10);
        let err_high = libc::fcntl(err, libc::F_DUPFD_CLOEXEC, 10);
        if err_high < 0 {
            fail(err, Stage::Stdio, 0, last_errno());
        }
        if out_high < 0 {
            fail(err_high, Stage::Stdio, 0, last_errno());
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if null < 0 {
            fail(err_high, Stage::Stdio, 0, last_errno());
        }
        if libc::dup2(null, 0) < 0
            || libc::dup2(out_high, 1) < 0
            || libc::dup2(out_high, 2) < 0
            || libc::dup2(err_high, ERR_FD) < 0
            || libc::fcntl(ERR_FD, libc::F_SETFD, libc::FD_CLOEXEC) < 0
        {
            fail(err_high, Stage::Stdio, 0, last_errno());
        }
        let err = ERR_FD;
        close_fds_from(ERR_FD + 1);

        let Some(ns) = &plan.ns else {
            run_reaped(plan, err);
        };
        if libc::unshare(ns.flags) < 0 {
            fail(err, Stage::Unshare, 0, last_errno());
        }
        if let Some((uid_map, gid_map)) = &ns.user_maps {
            if let Err(e) = write_file(c"/proc/self/setgroups", b"deny") {
                fail(err, Stage::UserMap, 0, e);
            }
            if let Err(e) = write_file(c"/proc/self/uid_map", uid_map) {
                fail(err, Stage::UserMap, 1, e);
            }
            if let Err(e) = write_file(c"/proc/self/gid_map", gid_map) {
                fail(err, Stage::UserMap, 2, e);
            }
        }
        // Nothing mounted from now on may propagate back to the host.
        let flags = libc::MS_REC | libc::MS_PRIVATE;
        if libc::mount(ptr::null(), c"/".as_ptr(), ptr::null(), flags, ptr::null()) < 0 {
            fail(err, Stage::MakePrivate, 0, last_errno());
        }
        // SIGTERM (from `Child::stop`) makes `A` SIGKILL pid 1 and wait for it: pid 1 is
        // reaped only after every other process of its namespace is gone, so once `A` has
        // exited nothing the command started is left running.
        catch_sigterm();
        let pid = libc::fork();
        if pid < 0 {
            fail(err, Stage::Fork, 0, last_errno());
        }
        if pid == 0 {
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            child_init(plan, err);
        }
        libc::close(err);
        wait_for_namespace(pid)
    }
}

/// Namespace mode's `A`: waits for pid 1 of the new pid namespace and exits with its status.
/// After a SIGTERM, SIGKILLs it first and still waits: the kernel reaps pid 1 only once
/// every other process of the namespace has died.
///
/// # Safety
/// Only to be called in a forked child, after [`catch_sigterm`].
unsafe fn wait_for_namespace(pid: libc::pid_t) -> ! {
    let mut killed = false;
    loop {
        if !killed && STOP_REQUESTED.load(Ordering::SeqCst) {
            // SAFETY: kill(2) of our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        }
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            let code = if killed {
                128 + libc::SIGTERM
            } else {
                decode_status(status)
            };
            // SAFETY: _exit is always safe to call.
            unsafe { libc::_exit(code) }
        }
        if r < 0 && last_errno() != libc::EINTR {
            // SAFETY: as above.
            unsafe { libc::_exit(SETUP_FAILED) }
        }
    }
}

/// Installs [`request_stop`] for SIGTERM, without `SA_RESTART` so that a blocking
/// `waitpid` returns `EINTR` and the flag is looked at.
///
/// # Safety
/// Only to be called in a forked child.
unsafe fn catch_sigterm() {
    // SAFETY: a zeroed sigaction with a valid handler and an empty mask.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = request_stop as extern "C" fn(c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGTERM, &action, ptr::null_mut());
    }
}

/// Pid 1 of the new pid namespace: mounts, root switch, then forks the command and reaps.
///
/// # Safety
/// Only to be called in a forked child.
unsafe fn child_init(plan: &mut ChildPlan, err: RawFd) -> ! {
    // SAFETY (whole block): raw syscalls with valid, pre-built arguments; no allocation.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as c_ulong, 0, 0, 0);
        libc::prctl(libc::PR_SET_NAME, c"ocibuild-init".as_ptr(), 0, 0, 0);
        let Some(ns) = &plan.ns else {
            libc::_exit(SETUP_FAILED);
        };
        if let Some(name) = &ns.hostname {
            if libc::sethostname(name.as_ptr().cast(), name.len()) < 0 {
                fail(err, Stage::Hostname, 0, last_errno());
            }
        }
        let Some(root) = &ns.root else {
            // probe: the ops' paths are relative to the current root.
            let fd = libc::open(c"/".as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
            run_ops(&ns.ops, fd, err);
            libc::_exit(0);
        };
        let rootfd = match &root.overlay {
            Some(overlay) => mount_overlay(root, overlay, err),
            None => bind_root(root, err),
        };
        run_ops(&ns.ops, rootfd, err);
        libc::close(rootfd);
        if !switch_root(root, err) {
            // Without pivot_root the old root stays reachable through a chroot escape, so
            // the command may not chroot.
            if let Some(p) = &mut plan.privileges {
                p.drop_bounding |= 1 << super::caps::SYS_CHROOT;
                p.root_caps = p.root_caps.map(|c| c & !(1 << super::caps::SYS_CHROOT));
            }
        }
        if libc::chdir(plan.cwd.as_ptr()) < 0 {
            fail(err, Stage::Chdir, 0, last_errno());
        }
        if plan.probe_only {
            libc::_exit(0);
        }
        let pid = libc::fork();
        if pid < 0 {
            fail(err, Stage::Fork, 0, last_errno());
        }
        if pid == 0 {
            become_user_and_exec(plan, err);
        }
        libc::close(err);
        // This process is the command's init: it only waits, and needs no capability.
        set_capabilities(0);
        wait_and_exit(pid)
    }
}

/// Binds the rootfs onto itself (so that it is a mount point `pivot_root` accepts),
/// remounts the bind `nodev`, and returns an `O_PATH` fd of it.
///
/// # Safety
/// Only to be called in a forked child.
unsafe fn bind_root(root: &RootPlan, err: RawFd) -> RawFd {
    // SAFETY: NUL-terminated paths prepared before fork.
    unsafe {
        let path = root.path.as_ptr();
        let bind = libc::MS_BIND | libc::MS_REC;
        if libc::mount(path, path, ptr::null(), bind, ptr::null()) < 0 {
            fail(err, Stage::RootBind, 0, last_errno());
        }
        let remount = libc::MS_BIND | libc::MS_REMOUNT | root.remount_flags;
        if libc::mount(ptr::null(), path, ptr::null(), remount, ptr::null()) < 0 {
            fail(err, Stage::RootBind, 1, last_errno());
        }
        let fd = libc::open(path, libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC);
        if fd < 0 {
            fail(err, Stage::RootBind, 2, last_errno());
        }
        fd
    }
}

/// `fsopen` flag: the context descriptor is close-on-exec.
const FSOPEN_CLOEXEC: libc::c_uint = 1;
/// `fsconfig` command: set a flag option.
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
/// `fsconfig` command: set a string option.
const FSCONFIG_SET_STRING: libc::c_uint = 1;
/// `fsconfig` command: create the filesystem.
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
/// `fsmount` flag: the mount descriptor is close-on-exec.
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
/// `fsmount` attribute: no device nodes.
const MOUNT_ATTR_NODEV: libc::c_uint = 4;
/// `move_mount` flag: the source is the descriptor itself.
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
/// The most lower directories one `lowerdir=` list can name (`fsconfig` takes 255 bytes).
const MAX_LISTED_LOWERS: usize = 32;

/// `fsconfig(fs, FSCONFIG_SET_STRING, key, value)`; 0 or -1.
///
/// # Safety
/// `value` is a NUL-terminated string.
unsafe fn set_string(fs: RawFd, key: &CStr, value: *const libc::c_char) -> c_int {
    // SAFETY: NUL-terminated key and value, no aux argument.
    unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs,
            FSCONFIG_SET_STRING,
            key.as_ptr(),
            value,
            0 as c_int,
        ) as c_int
    }
}

/// `fsconfig(fs, FSCONFIG_SET_FLAG, key)` (e.g. `userxattr`); 0 or -1.
///
/// # Safety
/// Async-signal-safe: callable in a forked child.
unsafe fn set_flag(fs: RawFd, key: &CStr) -> c_int {
    let null = ptr::null::<libc::c_char>();
    // SAFETY: NUL-terminated key, no value or aux argument.
    unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs,
            FSCONFIG_SET_FLAG,
            key.as_ptr(),
            null,
            0 as c_int,
        ) as c_int
    }
}

/// Opens the directory `path` (`O_PATH`); fails the child at overlay step 1.
///
/// # Safety
/// Only to be called in a forked child.
unsafe fn open_layer(path: &CStr, err: RawFd) -> RawFd {
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
    // SAFETY: a NUL-terminated path prepared before fork.
    let fd = unsafe { libc::open(path.as_ptr(), flags) };
    if fd < 0 {
        // SAFETY: in the forked child.
        unsafe { fail(err, Stage::Overlay, 1, last_errno()) };
    }
    fd
}

/// Sets option `key` to the directory `path`, named by `/proc/self/fd/<n>`; fails the
/// child at overlay step `step`. Returns the descriptor, to be closed once the filesystem
/// is created (kernels before 6.5 look the names up only then).
///
/// # Safety
/// Only to be called in a forked child.
unsafe fn set_dir(fs: RawFd, key: &CStr, path: &CStr, step: usize, err: RawFd) -> RawFd {
    // SAFETY (whole block): descriptors opened here, stack buffers.
    unsafe {
        let fd = open_layer(path, err);
        let mut buf = [0u8; 32];
        if set_string(fs, key, fd_path(fd, &mut buf)) < 0 {
            fail(err, Stage::Overlay, step, last_errno());
        }
        fd
    }
}

/// Sets `lowerdir` to the `:`-separated `/proc/self/fd/<n>` names of the lowers (kernels
/// before 6.8); a list longer than `fsconfig` takes fails with `E2BIG`. The descriptors go
/// into `fds`, to be closed once the filesystem is created.
///
/// # Safety
/// Only to be called in a forked child.
unsafe fn set_lower_list(
    fs: RawFd,
    lowers: &[CString],
    fds: &mut [RawFd; MAX_LISTED_LOWERS],
    err: RawFd,
) {
    // SAFETY (whole block): descriptors opened here, stack buffers.
    unsafe {
        if lowers.len() > MAX_LISTED_LOWERS {
            fail(err, Stage::Overlay, 2, libc::E2BIG);
        }
        let mut list = [0u8; 256];
        let mut len = 0;
        for (i, lower) in lowers.iter().enumerate() {
            fds[i] = open_layer(lower, err);
            let mut buf = [0u8; 32];
            fd_path(fds[i], &mut buf);
            let name_len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            let sep = usize::from(i > 0);
            if len + sep + name_len >= list.len() {
                fail(err, Stage::Overlay, 2, libc::E2BIG);
            }
            if sep == 1 {
                list[len] = b':';
            }
            list[len + sep..len + sep + name_len].copy_from_slice(&buf[..name_len]);
            len += sep + name_len;
        }
        if set_string(fs, c"lowerdir", list.as_ptr().cast()) < 0 {
            fail(err, Stage::Overlay, 2, last_errno());
        }
    }
}

/// Mounts the overlay `overlay` on the rootfs mount point (inside the child's own mount
/// namespace, `nodev`) and returns an `O_PATH` fd of it.
///
/// # Safety
/// Only to be called in a forked child.
unsafe fn mount_overlay(root: &RootPlan, overlay: &OverlayPlan, err: RawFd) -> RawFd {
    // SAFETY (whole block): raw syscalls with NUL-terminated strings prepared before fork
    // and descriptors opened here.
    unsafe {
        let fs = libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) as c_int;
        if fs < 0 {
            fail(err, Stage::Overlay, 0, last_errno());
        }
        // Names are looked up when set (or, before Linux 6.5, when the filesystem is
        // created): every descriptor stays open until then, but `lowerdir+` (Linux 6.8+)
        // needs none kept, so any number of lowers takes no more descriptors than one.
        let mut listed = [-1; MAX_LISTED_LOWERS];
        if overlay.list {
            set_lower_list(fs, &overlay.lowers, &mut listed, err);
        } else {
            for lower in &overlay.lowers {
                libc::close(set_dir(fs, c"lowerdir+", lower, 2, err));
            }
        }
        let upper = set_dir(fs, c"upperdir", &overlay.upper, 3, err);
        let work = set_dir(fs, c"workdir", &overlay.work, 4, err);
        for (key, value) in &overlay.options {
            let set = if value.is_empty() {
                set_flag(fs, key)
            } else {
                set_string(fs, key, value.as_ptr())
            };
            if set < 0 {
                fail(err, Stage::Overlay, 5, last_errno());
            }
        }
        let null = ptr::null::<libc::c_char>();
        let create = libc::syscall(libc::SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, null, null, 0);
        if create < 0 {
            fail(err, Stage::Overlay, 6, last_errno());
        }
        for fd in listed
            .into_iter()
            .filter(|fd| *fd >= 0)
            .chain([upper, work])
        {
            libc::close(fd);
        }
        let mnt = libc::syscall(libc::SYS_fsmount, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV) as c_int;
        if mnt < 0 {
            fail(err, Stage::Overlay, 7, last_errno());
        }
        let flags = MOVE_MOUNT_F_EMPTY_PATH;
        let target = root.path.as_ptr();
        if libc::syscall(
            libc::SYS_move_mount,
            mnt,
            c"".as_ptr(),
            libc::AT_FDCWD,
            target,
            flags,
        ) < 0
        {
            fail(err, Stage::Overlay, 8, last_errno());
        }
        libc::close(mnt);
        libc::close(fs);
        let fd = libc::open(target, libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC);
        if fd < 0 {
            fail(err, Stage::RootBind, 2, last_errno());
        }
        fd
    }
}

/// Enters the rootfs: `pivot_root` with the old root detached, or — where `pivot_root` is
/// refused (a rootfs on the initramfs) — moving the rootfs onto `/` and chrooting.
/// Returns false in the latter case.
///
/// # Safety
/// Only to be called in a forked child.
unsafe fn switch_root(root: &RootPlan, err: RawFd) -> bool {
    // SAFETY: NUL-terminated paths prepared before fork.
    unsafe {
        if libc::chdir(root.path.as_ptr()) < 0 {
            fail(err, Stage::PivotRoot, 0, last_errno());
        }
        let dot = c".".as_ptr();
        if libc::syscall(libc::SYS_pivot_root, dot, dot) == 0 {
            // The old root is now stacked on top of the new one: detach it.
            if libc::umount2(dot, libc::MNT_DETACH) < 0 {
                fail(err, Stage::PivotRoot, 1, last_errno());
            }
            if libc::chdir(c"/".as_ptr()) < 0 {
                fail(err, Stage::PivotRoot, 2, last_errno());
            }
            return true;
        }
        if last_errno() != libc::EINVAL {
            fail(err, Stage::PivotRoot, 0, last_errno());
        }
        if libc::mount(dot, c"/".as_ptr(), ptr::null(), libc::MS_MOVE, ptr::null()) < 0 {
            fail(err, Stage::PivotRoot, 3, last_errno());
        }
        if libc::chroot(dot) < 0 || libc::chdir(c"/".as_ptr()) < 0 {
            fail(err, Stage::Chroot, 0, last_errno());
        }
        false
    }
}

/// Opens `path` relative to `dirfd` with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`:
/// `..` and symlinks (absolute ones too) never leave `dirfd`, and no /proc magic link is
/// followed. On kernels without openat2 (before 5.6), `openat` with `O_NOFOLLOW`: the paths
/// were resolved inside the rootfs by the parent, and no process of the build runs
/// meanwhile. Returns the fd or -errno.
///
/// # Safety
/// Only to be called in a forked child; `path` is NUL-terminated.
unsafe fn open_in_root(dirfd: RawFd, path: &CStr, flags: c_int) -> RawFd {
    /// `struct open_how` (linux/openat2.h).
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `how` is a valid open_how of the size passed; `path` is NUL-terminated.
    unsafe {
        let size = std::mem::size_of::<OpenHow>();
        let fd = libc::syscall(libc::SYS_openat2, dirfd, path.as_ptr(), &how, size) as RawFd;
        if fd >= 0 {
            return fd;
        }
        if last_errno() != libc::ENOSYS {
            return -last_errno();
        }
        let fd = libc::openat(
            dirfd,
            path.as_ptr(),
            flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        );
        if fd < 0 {
            -last_errno()
        } else {
            fd
        }
    }
}

/// `/proc/self/fd/<fd>` in `buf`, NUL-terminated: mounting onto (or from) it acts on the
/// file the fd refers to.
fn fd_path(fd: RawFd, buf: &mut [u8; 32]) -> *const libc::c_char {
    let prefix = b"/proc/self/fd/";
    buf[..prefix.len()].copy_from_slice(prefix);
    let mut digits = [0u8; 10];
    let (mut n, mut len) = (fd.unsigned_abs(), 0);
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[prefix.len() + i] = digits[len - 1 - i];
    }
    buf[prefix.len() + len] = 0;
    buf.as_ptr().cast()
}

/// Performs the namespace ops relative to `rootfd`; an `index`ed error record on failure.
///
/// # Safety
/// Only to be called in a forked child.
unsafe fn run_ops(ops: &[Op], rootfd: RawFd, err: RawFd) {
    for (index, op) in ops.iter().enumerate() {
        // SAFETY: see `run_op`.
        let (ret, optional) = unsafe { run_op(op, rootfd) };
        if ret < 0 && !optional {
            // SAFETY: in the forked child.
            unsafe { fail(err, Stage::Op, index, -ret) };
        }
    }
}

/// One op; returns (0 or -errno, whether a failure is ignored).
///
/// # Safety
/// Only to be called in a forked child.
unsafe fn run_op(op: &Op, rootfd: RawFd) -> (c_int, bool) {
    // SAFETY (whole block): raw syscalls on fds opened here and NUL-terminated strings
    // prepared before fork.
    unsafe {
        let (dir, name) = match op {
            Op::Mount {
                source,
                target,
                fstype,
                flags,
                data,
                optional,
                if_exists,
            } => {
                let fd = open_in_root(rootfd, target, libc::O_PATH);
                if fd < 0 {
                    return (
                        if *if_exists && fd == -libc::ENOENT {
                            0
                        } else {
                            fd
                        },
                        *optional,
                    );
                }
                let mut buf = [0u8; 32];
                let target = fd_path(fd, &mut buf);
                let source = match source {
                    Source::None => ptr::null(),
                    Source::Path(p) => p.as_ptr(),
                    Source::Target => target,
                };
                let ret = libc::mount(
                    source,
                    target,
                    opt_ptr(fstype),
                    *flags,
                    opt_ptr(data).cast(),
                );
                let ret = if ret < 0 { -last_errno() } else { 0 };
                libc::close(fd);
                return (ret, *optional);
            }
            Op::Mkdir { dir, name, .. }
            | Op::Touch { dir, name }
            | Op::Symlink { dir, name, .. } => (dir, name),
        };
        let dirfd = open_in_root(rootfd, dir, libc::O_PATH | libc::O_DIRECTORY);
        if dirfd < 0 {
            return (dirfd, false);
        }
        let ret = match op {
            Op::Mkdir { mode, .. } => libc::mkdirat(dirfd, name.as_ptr(), *mode),
            Op::Touch { .. } => {
                let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC;
                let fd = libc::openat(dirfd, name.as_ptr(), flags, 0o666);
                if fd >= 0 {
                    libc::close(fd);
                }
                fd
            }
            Op::Symlink { target, .. } => libc::symlinkat(target.as_ptr(), dirfd, name.as_ptr()),
            Op::Mount { .. } => 0,
        };
        let ret = if ret < 0 { -last_errno() } else { 0 };
        libc::close(dirfd);
        (ret, false)
    }
}

/// Set by SIGTERM in `A`: stop waiting for the command and kill everything below (see
/// [`Child::stop`]).
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_signal: c_int) {
    // An atomic store is async-signal-safe.
    STOP_REQUESTED.store(true, Ordering::SeqCst);
}

/// Chroot and none modes: become a child subreaper, fork the command, wait for it, then
/// kill everything it left behind, and exit with its status. SIGTERM ends the wait early
/// (the command and all its descendants are then killed).
///
/// # Safety
/// Only to be called in a forked child.
unsafe fn run_reaped(plan: &mut ChildPlan, err: RawFd) -> ! {
    // SAFETY (whole block): raw syscalls; see the callees.
    unsafe {
        if plan.probe_only {
            enter_chroot(plan, err);
            libc::_exit(0);
        }
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as c_ulong, 0, 0, 0);
        // A SIGTERM interrupts the waitpid of `wait_for`. The command gets the default
        // disposition back when it execs.
        catch_sigterm();
        let pid = libc::fork();
        if pid < 0 {
            fail(err, Stage::Fork, 0, last_errno());
        }
        if pid == 0 {
            enter_chroot(plan, err);
            become_user_and_exec(plan, err);
        }
        libc::close(err);
        let status = wait_for(pid);
        kill_descendants();
        libc::_exit(status)
    }
}

/// Waits for `pid`, reaping any other child meanwhile; its exit code or 128+signal.
///
/// # Safety
/// Only to be called in a forked child.
unsafe fn wait_for(pid: libc::pid_t) -> c_int {
    loop {
        if STOP_REQUESTED.load(Ordering::SeqCst) {
            return 128 + libc::SIGTERM;
        }
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r == pid {
            return decode_status(status);
        }
        if r < 0 && last_errno() != libc::EINTR {
            return SETUP_FAILED;
        }
    }
}

/// As a child subreaper: SIGKILLs every child (orphaned descendants are re-parented to
/// us) and reaps, until no child is left.
///
/// # Safety
/// Only to be called in a forked child.
unsafe fn kill_descendants() {
    // SAFETY (whole block): raw syscalls with stack buffers.
    unsafe {
        let me = libc::getpid();
        loop {
            kill_children_of(me);
            let r = libc::waitpid(-1, ptr::null_mut(), libc::WNOHANG);
            if r < 0 && last_errno() == libc::ECHILD {
                return;
            }
            if r == 0 {
                // Children left that are not dead yet: give them a moment.
                let pause = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 1_000_000,
                };
                libc::nanosleep(&pause, ptr::null_mut());
            }
        }
    }
}

/// SIGKILLs every process whose parent is `parent`, found by reading `/proc/<pid>/stat`.
///
/// # Safety
/// Only to be called in a forked child.
unsafe fn kill_children_of(parent: libc::pid_t) {
    // SAFETY (whole block): getdents64 into a stack buffer whose records the kernel
    // writes with their lengths; reads into stack buffers of the sizes passed.
    unsafe {
        let dir = libc::open(
            c"/proc".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if dir < 0 {
            return;
        }
        let mut buf = [0u8; 4096];
        loop {
            let n = libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len());
            if n <= 0 {
                break;
            }
            let mut off = 0usize;
            while off < n as usize {
                // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name.
                let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
                let name = &buf[off + 19..off + reclen];
                if let Some(pid) = parse_pid(name) {
                    if parent_of(dir, name) == Some(parent) {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
                off += reclen;
            }
        }
        libc::close(dir);
    }
}

/// The pid a `/proc` entry name stands for (NUL-terminated digits).
fn parse_pid(name: &[u8]) -> Option<libc::pid_t> {
    let mut pid: libc::pid_t = 0;
    for &b in name.iter().take_while(|&&b| b != 0) {
        if !b.is_ascii_digit() || pid > libc::pid_t::MAX / 10 - 1 {
            return None;
        }
        pid = pid * 10 + libc::pid_t::from(b - b'0');
    }
    (pid > 0).then_some(pid)
}

/// The parent pid in `/proc/<name>/stat` (`name` NUL-terminated), read relative to the
/// open `/proc` directory `proc`.
///
/// # Safety
/// Only to be called in a forked child.
unsafe fn parent_of(proc: RawFd, name: &[u8]) -> Option<libc::pid_t> {
    let mut path = [0u8; 32];
    let len = name.iter().position(|&b| b == 0)?;
    if len + 6 > path.len() {
        return None;
    }
    path[..len].copy_from_slice(&name[..len]);
    path[len..len + 5].copy_from_slice(b"/stat");
    let mut stat = [0u8; 512];
    // SAFETY: `path` is NUL-terminated (zero-filled past the copy); `stat` is writable.
    let n = unsafe {
        let fd = libc::openat(proc, path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return None;
        }
        let n = libc::read(fd, stat.as_mut_ptr().cast(), stat.len());
        libc::close(fd);
        n
    };
    let stat = &stat[..usize::try_from(n).ok()?];
    // "pid (comm) state ppid ...": comm may hold anything, so look after the last ')'.
    let close = stat.iter().rposition(|&b| b == b')')?;
    let mut fields = stat[close + 1..]
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty());
    fields.next()?; // state
    let ppid = fields.next()?;
    let mut value: libc::pid_t = 0;
    for &b in ppid {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value
            .checked_mul(10)?
            .checked_add(libc::pid_t::from(b - b'0'))?;
    }
    Some(value)
}

/// Chroot mode: chroot into the root; every mode: chdir to the working directory.
///
/// # Safety
/// Only to be called in a forked child.
unsafe fn enter_chroot(plan: &ChildPlan, err: RawFd) {
    // SAFETY: NUL-terminated paths prepared before fork.
    unsafe {
        if let Some(root) = &plan.root {
            if libc::chroot(root.as_ptr()) < 0 {
                fail(err, Stage::Chroot, 0, last_errno());
            }
            if libc::chdir(c"/".as_ptr()) < 0 {
                fail(err, Stage::Chroot, 0, last_errno());
            }
        }
        if libc::chdir(plan.cwd.as_ptr()) < 0 {
            fail(err, Stage::Chdir, 0, last_errno());
        }
    }
}

/// Sets the effective, permitted and inheritable capability sets to `mask` (which must be
/// a subset of the permitted set). Returns 0 or -1.
///
/// # Safety
/// Only to be called in a forked child.
unsafe fn set_capabilities(mask: u64) -> c_int {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let word = |w: u64| Data {
        effective: w as u32,
        permitted: w as u32,
        inheritable: w as u32,
    };
    let data = [word(mask), word(mask >> 32)];
    // SAFETY: capset(2) with a version-3 header and its two data words.
    unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) as c_int }
}

/// Bounds the capabilities of this process (before the identity switch, while it still
/// holds CAP_SETPCAP and CAP_SYS_ADMIN), and installs the seccomp filter.
///
/// # Safety
/// Only to be called in a forked child.
unsafe fn restrict(p: &Privileges, err: RawFd) {
    // SAFETY (whole block): prctl with plain integers; the filter program outlives the
    // call (it lives in the plan).
    unsafe {
        for cap in 0..=p.last_cap.min(63) {
            if p.drop_bounding & (1 << cap) != 0
                && libc::prctl(libc::PR_CAPBSET_DROP, cap as c_ulong, 0, 0, 0) < 0
                && last_errno() != libc::EINVAL
            {
                fail(err, Stage::Capabilities, cap as usize, last_errno());
            }
        }
        if let Some(program) = &p.seccomp {
            if p.no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as c_ulong, 0, 0, 0) < 0 {
                fail(err, Stage::Seccomp, 1, last_errno());
            }
            let prog = libc::sock_fprog {
                len: program.len() as libc::c_ushort,
                filter: program.as_ptr() as *mut libc::sock_filter,
            };
            let mode = libc::SECCOMP_MODE_FILTER as c_ulong;
            if libc::prctl(
                libc::PR_SET_SECCOMP,
                mode,
                &prog as *const _ as c_ulong,
                0,
                0,
            ) < 0
            {
                fail(err, Stage::Seccomp, 0, last_errno());
            }
        }
    }
}

/// Sets groups and gid, bounds capabilities and installs the filter, sets uid, sets the
/// final capability sets, closes stray fds on exec, and execs with execvp semantics.
///
/// # Safety
/// Only to be called in a forked child.
unsafe fn become_user_and_exec(plan: &mut ChildPlan, err: RawFd) -> ! {
    // SAFETY (whole block): raw syscalls with pointer arrays prepared before fork, each
    // NULL-terminated; `sh_argv[1]` is only overwritten in this (forked) copy.
    unsafe {
        if let Some((_, gid, groups)) = &plan.identity {
            if let Some(groups) = groups {
                if libc::setgroups(groups.len(), groups.as_ptr()) < 0 {
                    fail(err, Stage::Groups, 0, last_errno());
                }
            }
            if libc::setgid(*gid) < 0 {
                fail(err, Stage::Gid, 0, last_errno());
            }
        }
        if let Some(p) = &plan.privileges {
            restrict(p, err);
        }
        if let Some((uid, _, _)) = &plan.identity {
            if libc::setuid(*uid) < 0 {
                fail(err, Stage::Uid, 0, last_errno());
            }
        }
        if let Some(p) = &plan.privileges {
            // uid 0 keeps the bounded set; any other uid lost its permitted and effective
            // sets in setuid and now loses the inheritable one too.
            let caps = if libc::geteuid() == 0 {
                p.root_caps
            } else {
                Some(0)
            };
            if let Some(caps) = caps {
                if set_capabilities(caps) < 0 {
                    fail(err, Stage::Capabilities, 64, last_errno());
                }
            }
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as c_ulong,
                0,
                0,
                0,
            );
        }
        // Mark every inherited fd above stderr close-on-exec (our error pipe already is).
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
        );
        let exec = &mut plan.exec;
        let mut errno = libc::ENOENT;
        let mut seen_eacces = false;
        for cand in &exec.candidates {
            libc::execve(cand.as_ptr(), exec.argv.as_ptr(), exec.envp.as_ptr());
            let mut e = last_errno();
            if e == libc::ENOEXEC {
                // Like execvp: a file without a recognised format is a shell script.
                exec.sh_argv[1] = cand.as_ptr();
                libc::execve(exec.sh.as_ptr(), exec.sh_argv.as_ptr(), exec.envp.as_ptr());
                e = last_errno();
            }
            match e {
                libc::EACCES => seen_eacces = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                other => fail(err, Stage::Exec, 0, other),
            }
            errno = e;
        }
        fail(
            err,
            Stage::Exec,
            0,
            if seen_eacces { libc::EACCES } else { errno },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::Stage;

    #[test]
    fn every_stage_round_trips_through_its_record_number() {
        for (i, stage) in Stage::ALL.into_iter().enumerate() {
            assert_eq!(stage as u32, i as u32 + 1, "{stage:?} out of order");
            assert_eq!(Stage::from_u32(stage as u32), Some(stage));
        }
        // The last variant is in the list, so a new one cannot be forgotten silently.
        assert_eq!(Stage::ALL.last(), Some(&Stage::Exec));
        assert_eq!(Stage::from_u32(0), None);
    }
}
