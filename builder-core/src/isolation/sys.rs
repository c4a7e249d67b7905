//! The only unsafe code of ocibuild: fork, namespaces, mounts, chroot, identity switch and
//! exec, behind a narrow crate-private API.
//!
//! Everything that allocates (C strings, pointer arrays, file contents) is prepared by the
//! parent in a [`ChildPlan`] before `fork`. After `fork` (the parent may be multi-threaded)
//! the child only performs raw system calls through `libc` — async-signal-safe functions —
//! and reports a failure as a fixed-size [`ErrorRecord`] written to a close-on-exec pipe
//! before `_exit`.
//!
//! Process layout in namespace mode (`P` = caller, `A` = first child, `B`, `C`):
//! `P` forks `A`; `A` unshares the namespaces, makes mount propagation private, and forks
//! `B`, which is pid 1 of the new pid namespace. `B` mounts /proc, /dev, ... inside the
//! rootfs, chroots, then forks `C` (pid 2), which switches user and execs the command. `B`
//! reaps every zombie and exits with `C`'s status (128+signal when killed); `A` exits with
//! `B`'s. When `B` exits the kernel kills whatever is left in the namespace, and the mount
//! namespace with all mounts disappears with its last process.

use std::ffi::{c_int, c_ulong, CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

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
    Chroot,
    Chdir,
    Groups,
    Gid,
    Uid,
    Exec,
}

impl Stage {
    fn from_u32(v: u32) -> Option<Stage> {
        use Stage::*;
        [
            Stdio,
            Unshare,
            UserMap,
            MakePrivate,
            Fork,
            Hostname,
            Op,
            Chroot,
            Chdir,
            Groups,
            Gid,
            Uid,
            Exec,
        ]
        .into_iter()
        .find(|s| *s as u32 == v)
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

/// One filesystem step performed inside the new mount namespace, before chroot.
#[derive(Debug)]
pub(crate) enum Op {
    /// `mount(2)`; failures of `optional` mounts are ignored.
    Mount {
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: c_ulong,
        data: Option<CString>,
        optional: bool,
    },
    /// Creates a directory (inside a fresh tmpfs).
    Mkdir { path: CString, mode: libc::mode_t },
    /// Creates an empty file to bind-mount on (inside a fresh tmpfs).
    Touch { path: CString },
    /// Creates a symlink `link` → `target` (inside a fresh tmpfs).
    Symlink { target: CString, link: CString },
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
    /// Mount steps, in order.
    pub ops: Vec<Op>,
    /// Index of the first op serving a caller-requested mount (failures there are not
    /// reported as a refusal of namespaces).
    pub first_user_op: usize,
}

/// Everything the child needs, prepared before fork.
#[derive(Debug)]
pub(crate) struct ChildPlan {
    /// `None` for chroot/none modes.
    pub ns: Option<NsPlan>,
    /// Directory to chroot into (`None`: no chroot).
    pub root: Option<CString>,
    /// Working directory inside the root.
    pub cwd: CString,
    /// Identity switch: (uid, gid, supplementary groups or `None` to leave them alone);
    /// `None` keeps the current identity.
    pub identity: Option<(libc::uid_t, libc::gid_t, Option<Vec<libc::gid_t>>)>,
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

/// Waits for `pid` and exits with its status; as pid 1 (`reap_all`), reaps every other
/// zombie meanwhile.
///
/// # Safety
/// Only to be called in a forked child.
unsafe fn wait_and_exit(pid: libc::pid_t, reap_all: bool) -> ! {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(if reap_all { -1 } else { pid }, &mut status, 0) };
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
            enter_and_exec(plan, err);
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
        let pid = libc::fork();
        if pid < 0 {
            fail(err, Stage::Fork, 0, last_errno());
        }
        if pid == 0 {
            child_init(plan, err);
        }
        libc::close(err);
        wait_and_exit(pid, false)
    }
}

/// Pid 1 of the new pid namespace: mounts, chroot, then forks the command and reaps.
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
        for (index, op) in ns.ops.iter().enumerate() {
            let (ret, optional) = match op {
                Op::Mount {
                    source,
                    target,
                    fstype,
                    flags,
                    data,
                    optional,
                } => (
                    libc::mount(
                        opt_ptr(source),
                        target.as_ptr(),
                        opt_ptr(fstype),
                        *flags,
                        opt_ptr(data).cast(),
                    ),
                    *optional,
                ),
                Op::Mkdir { path, mode } => (libc::mkdir(path.as_ptr(), *mode), false),
                Op::Touch { path } => {
                    let fd = libc::open(
                        path.as_ptr(),
                        libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC,
                        0o666,
                    );
                    if fd >= 0 {
                        libc::close(fd);
                    }
                    (fd, false)
                }
                Op::Symlink { target, link } => {
                    (libc::symlink(target.as_ptr(), link.as_ptr()), false)
                }
            };
            if ret < 0 && !optional {
                fail(err, Stage::Op, index, last_errno());
            }
        }
        if plan.probe_only && plan.root.is_none() {
            libc::_exit(0);
        }
        enter_root(plan, err);
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
        wait_and_exit(pid, true)
    }
}

/// chroot (when configured) and chdir to the working directory.
///
/// # Safety
/// Only to be called in a forked child.
unsafe fn enter_root(plan: &ChildPlan, err: RawFd) {
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

/// Chroot/none modes: enter the root, switch user, exec.
///
/// # Safety
/// Only to be called in a forked child.
unsafe fn enter_and_exec(plan: &mut ChildPlan, err: RawFd) -> ! {
    // SAFETY: see the callees.
    unsafe {
        enter_root(plan, err);
        if plan.probe_only {
            libc::_exit(0);
        }
        become_user_and_exec(plan, err)
    }
}

/// Sets groups, gid, uid, closes stray fds on exec, and execs with execvp semantics.
///
/// # Safety
/// Only to be called in a forked child.
unsafe fn become_user_and_exec(plan: &mut ChildPlan, err: RawFd) -> ! {
    // SAFETY (whole block): raw syscalls with pointer arrays prepared before fork, each
    // NULL-terminated; `sh_argv[1]` is only overwritten in this (forked) copy.
    unsafe {
        if let Some((uid, gid, groups)) = &plan.identity {
            if let Some(groups) = groups {
                if libc::setgroups(groups.len(), groups.as_ptr()) < 0 {
                    fail(err, Stage::Groups, 0, last_errno());
                }
            }
            if libc::setgid(*gid) < 0 {
                fail(err, Stage::Gid, 0, last_errno());
            }
            if libc::setuid(*uid) < 0 {
                fail(err, Stage::Uid, 0, last_errno());
            }
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
