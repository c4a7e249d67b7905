//! Integration tests of `ocibuild_isolation` against a busybox rootfs.
//! They need root (as the build machine has) and /bin/busybox (the lab's busybox-static):
//! those that do are marked as lab tests, run by scripts/test.sh.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ocibuild_isolation::{
    probe, resolve_user, run, Isolation, IsolationError, Mount, Network, RunOutcome, RunSpec,
    Security, TmpfsMount,
};

const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "ls", "id", "mkdir", "touch", "sleep", "readlink", "pwd", "env", "ps",
    "mount", "hostname", "true", "test", "kill", "grep", "wc", "mknod", "cut",
];

struct Fixture {
    _tmp: tempfile::TempDir,
    rootfs: PathBuf,
    scratch: PathBuf,
    host: PathBuf,
}

/// Copies `src` to `dest` (mode 0755) through a `cp` child process, so that this test
/// process never holds a writable descriptor of a file that is executed later: a
/// concurrent test's `fork` would copy that descriptor into its child until the child
/// `exec`s, and executing the file meanwhile fails with ETXTBSY ("Text file busy").
fn install_executable(src: &Path, dest: &Path) {
    let status = std::process::Command::new("cp")
        .arg(src)
        .arg(dest)
        .status()
        .expect("running cp");
    assert!(status.success(), "cp {src:?} {dest:?}");
    fs::set_permissions(dest, fs::Permissions::from_mode(0o755)).unwrap();
}

/// [`install_executable`] of a script with the text `text`, staged in `stage` (a
/// directory outside any rootfs under test).
fn install_script(stage: &Path, text: &str, dest: &Path) {
    let src = stage.join(".script-source");
    fs::write(&src, text).unwrap();
    install_executable(&src, dest);
    fs::remove_file(&src).unwrap();
}

/// A busybox rootfs. `etc`: write /etc/passwd and /etc/group; `dirs`: create /proc and /dev.
fn fixture(etc: bool, dirs: bool) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    install_executable(Path::new("/bin/busybox"), &rootfs.join("bin/busybox"));
    for applet in APPLETS {
        symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    fs::create_dir_all(rootfs.join("work/sub")).unwrap();
    fs::create_dir_all(rootfs.join("tmp")).unwrap();
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    if etc {
        fs::create_dir_all(rootfs.join("etc")).unwrap();
        fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        )
        .unwrap();
        fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    }
    if dirs {
        fs::create_dir_all(rootfs.join("proc")).unwrap();
        fs::create_dir_all(rootfs.join("dev")).unwrap();
    }
    let scratch = tmp.path().join("scratch");
    let host = tmp.path().join("host");
    fs::create_dir_all(&host).unwrap();
    Fixture {
        rootfs,
        scratch,
        host,
        _tmp: tmp,
    }
}

impl Fixture {
    fn spec(&self, script: &str) -> RunSpec {
        let argv = vec!["/bin/sh".into(), "-c".into(), script.into()];
        RunSpec::new(self.rootfs.clone(), argv, self.scratch.clone())
    }
}

fn run_capture(spec: &RunSpec) -> Result<(RunOutcome, String), IsolationError> {
    let mut out = Vec::new();
    let outcome = run(spec, &mut |line: &[u8]| out.extend_from_slice(line))?;
    Ok((outcome, String::from_utf8_lossy(&out).into_owned()))
}

fn ok_output(spec: &RunSpec) -> String {
    let (outcome, out) = run_capture(spec).unwrap();
    assert_eq!(outcome.status, 0, "output: {out}");
    out
}

/// Every path of a tree with type, mode, owner, size, link target and mtime (lstat).
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, map: &mut BTreeMap<PathBuf, String>) {
        let meta = fs::symlink_metadata(dir).unwrap();
        map.insert(
            dir.strip_prefix(root).unwrap().to_path_buf(),
            describe(dir, &meta),
        );
        if meta.is_dir() {
            for entry in fs::read_dir(dir).unwrap() {
                walk(root, &entry.unwrap().path(), map);
            }
        }
    }
    fn describe(path: &Path, m: &fs::Metadata) -> String {
        let link = if m.file_type().is_symlink() {
            fs::read_link(path).unwrap().display().to_string()
        } else {
            String::new()
        };
        format!(
            "mode={:o} uid={} gid={} size={} mtime={}.{} link={link}",
            m.mode(),
            m.uid(),
            m.gid(),
            if m.is_dir() { 0 } else { m.size() },
            m.mtime(),
            m.mtime_nsec()
        )
    }
    let mut map = BTreeMap::new();
    walk(root, root, &mut map);
    map
}

fn mountinfo() -> String {
    fs::read_to_string("/proc/self/mountinfo").unwrap()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn exit_code_is_propagated() {
    let f = fixture(true, true);
    let (outcome, _) = run_capture(&f.spec("exit 3")).unwrap();
    assert_eq!(outcome.status, 3);
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn output_is_captured_line_by_line() {
    let f = fixture(true, true);
    let mut lines = Vec::new();
    let outcome = run(
        &f.spec("echo hello; echo oops >&2; printf 'no newline'"),
        &mut |l| lines.push(String::from_utf8_lossy(l).into_owned()),
    )
    .unwrap();
    assert_eq!(outcome.status, 0);
    assert_eq!(lines, vec!["hello\n", "oops\n", "no newline"]);
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn env_and_cwd_are_applied_with_docker_defaults() {
    let f = fixture(true, true);
    let mut spec = f.spec("echo \"$FOO|$PWD|$HOME|$PATH\"; pwd");
    spec.env = vec![("FOO".into(), "first".into()), ("FOO".into(), "bar".into())];
    spec.cwd = "/work/sub".into();
    let out = ok_output(&spec);
    assert_eq!(
        out,
        "bar|/work/sub|/root|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n/work/sub\n"
    );
    // argv[0] is looked up in PATH inside the rootfs.
    spec.argv = vec!["echo".into(), "via-path".into()];
    spec.env = vec![("PATH".into(), "/nowhere:/bin".into())];
    assert_eq!(ok_output(&spec), "via-path\n");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn user_is_resolved_and_applied() {
    let f = fixture(true, true);
    let mut spec = f.spec("id -u; id -g; echo $HOME");
    spec.user = Some("nobody".into());
    if !is_root() {
        // Rootless: the user namespace maps only root.
        assert!(matches!(
            run_capture(&spec),
            Err(IsolationError::RootlessUser { uid: 65534, .. })
        ));
        spec.user = None;
        assert_eq!(ok_output(&spec), "0\n0\n/root\n");
        return;
    }
    assert_eq!(ok_output(&spec), "65534\n65534\n/nonexistent\n");
    spec.user = Some("1000:1000".into());
    assert_eq!(ok_output(&spec), "1000\n1000\n/\n");
    spec.user = Some("1000".into());
    assert_eq!(ok_output(&spec), "1000\n0\n/\n");
    spec.user = Some("nobody:root".into());
    assert_eq!(ok_output(&spec), "65534\n0\n/nonexistent\n");
    spec.user = None;
    assert_eq!(ok_output(&spec), "0\n0\n/root\n");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn unknown_user_is_an_error() {
    let f = fixture(true, true);
    let before = tree(&f.rootfs);
    let mut spec = f.spec("true");
    spec.user = Some("ghost".into());
    match run_capture(&spec) {
        Err(IsolationError::UnknownUser { user, file }) => {
            assert_eq!(user, "ghost");
            assert!(file.ends_with("etc/passwd"), "{}", file.display());
        }
        other => panic!("unexpected {other:?}"),
    }
    spec.user = Some("nobody:ghosts".into());
    assert!(matches!(
        run_capture(&spec),
        Err(IsolationError::UnknownGroup { .. })
    ));
    assert_eq!(before, tree(&f.rootfs));
    let u = resolve_user(&f.rootfs, Some("nobody")).unwrap();
    assert_eq!((u.uid, u.gid), (65534, 65534));
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn pid_namespace_proc_and_dev() {
    let f = fixture(true, true);
    let out = ok_output(&f.spec(
        "echo $$; read -r a b c d rest < /proc/self/stat; echo \"ppid=$d\"; \
         echo x > /dev/null && echo devnull-ok; test -L /dev/fd && echo fd-ok; \
         test -d /proc/1 && echo proc-ok; head -c 4 /dev/zero | wc -c",
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0] == "1" || lines[0] == "2", "{out}");
    assert!(lines.contains(&"devnull-ok"), "{out}");
    assert!(lines.contains(&"fd-ok"), "{out}");
    assert!(lines.contains(&"proc-ok"), "{out}");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn resolv_conf_writes_do_not_reach_the_host() {
    let f = fixture(true, true);
    let host_before = fs::read("/etc/resolv.conf").ok();
    let before = tree(&f.rootfs);
    let out = ok_output(&f.spec(
        "echo 'nameserver 6.6.6.6' > /etc/resolv.conf; cat /etc/resolv.conf; \
         echo '10.0.0.1 evil' >> /etc/hosts; cat /etc/hosts",
    ));
    assert!(out.starts_with("nameserver 6.6.6.6\n"), "{out}");
    assert!(out.contains("127.0.0.1\tlocalhost"), "{out}");
    assert_eq!(host_before, fs::read("/etc/resolv.conf").ok());
    assert_eq!(before, tree(&f.rootfs));
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn rootfs_is_unchanged_when_the_command_changes_nothing() {
    // Missing /proc, /dev, /sys, /etc/resolv.conf, /etc/hosts; then missing /etc as well;
    // then with existing (empty) /proc and /dev.
    for (etc, dirs) in [(true, false), (false, false), (true, true)] {
        let f = fixture(etc, dirs);
        let before = tree(&f.rootfs);
        std::thread::sleep(Duration::from_millis(20));
        let mut spec = f.spec("ls / /etc /proc/self > /dev/null; cat /etc/hosts > /dev/null");
        spec.hostname = Some("builder".into());
        ok_output(&spec);
        assert_eq!(before, tree(&f.rootfs), "etc={etc} dirs={dirs}");
    }
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn files_created_by_the_command_remain() {
    let f = fixture(true, false);
    let etc_before = fs::metadata(f.rootfs.join("etc")).unwrap().mtime_nsec();
    std::thread::sleep(Duration::from_millis(20));
    ok_output(&f.spec("echo data > /newfile; mkdir /etc/newdir; mkdir -p /proc/../dev/../sys"));
    assert_eq!(
        fs::read_to_string(f.rootfs.join("newfile")).unwrap(),
        "data\n"
    );
    assert!(f.rootfs.join("etc/newdir").is_dir());
    assert!(!f.rootfs.join("proc").exists());
    assert!(!f.rootfs.join("dev").exists());
    assert!(!f.rootfs.join("etc/resolv.conf").exists());
    assert!(!f.rootfs.join("etc/hosts").exists());
    // The command's change of /etc stays visible to the snapshotter.
    assert_ne!(
        fs::metadata(f.rootfs.join("etc")).unwrap().mtime_nsec(),
        etc_before
    );
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn killed_by_signal_gives_128_plus_signal() {
    let f = fixture(true, true);
    let (outcome, _) = run_capture(&f.spec("kill -9 $$")).unwrap();
    assert_eq!(outcome.status, 137);
    let (outcome, _) = run_capture(&f.spec("kill -15 $$")).unwrap();
    assert_eq!(outcome.status, 143);
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn background_processes_do_not_block_and_zombies_are_reaped() {
    let f = fixture(true, true);
    let start = Instant::now();
    let out = ok_output(&f.spec(
        "sleep 100 & (sleep 0 &); (sleep 0 &); sleep 0.5; ps -o pid,ppid,stat,comm; echo done",
    ));
    assert!(out.ends_with("done\n"), "{out}");
    // Orphans are re-parented to pid 1, which reaps them: no zombie is listed.
    assert!(
        !out.lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(2) == Some("Z")),
        "{out}"
    );
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn scripts_without_shebang_run_with_sh() {
    let f = fixture(true, true);
    install_script(
        f.host.parent().unwrap(),
        "echo from-script \"$1\"\n",
        &f.rootfs.join("work/script"),
    );
    let mut spec = f.spec("");
    spec.argv = vec!["script".into(), "arg1".into()];
    spec.env = vec![("PATH".into(), "/work".into())];
    assert_eq!(ok_output(&spec), "from-script arg1\n");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn symlinks_in_the_rootfs_are_resolved_inside_it() {
    let f = fixture(true, false);
    // A dangling resolv.conf link (as with systemd-resolved) and a hosts link to an absolute
    // path that exists only on the host: nothing may be created through them.
    let host_only = f.host.join("not-created/hosts");
    symlink(
        "/run/systemd/resolve/stub-resolv.conf",
        f.rootfs.join("etc/resolv.conf"),
    )
    .unwrap();
    symlink(&host_only, f.rootfs.join("etc/hosts")).unwrap();
    // A /proc link to a real directory inside the rootfs is followed.
    fs::create_dir(f.rootfs.join("realproc")).unwrap();
    symlink("realproc", f.rootfs.join("proc")).unwrap();
    let before = tree(&f.rootfs);
    let out = ok_output(&f.spec("test -d /proc/self && echo proc-ok; readlink /etc/resolv.conf"));
    assert_eq!(out, "proc-ok\n/run/systemd/resolve/stub-resolv.conf\n");
    assert!(!f.host.join("not-created").exists());
    assert!(!f.rootfs.join("run").exists());
    assert_eq!(before, tree(&f.rootfs));
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn output_callback_panic_leaves_no_child_behind() {
    let f = fixture(true, true);
    let before = tree(&f.rootfs);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run(
            &f.spec("echo first; sleep 1; touch /work/marker"),
            &mut |_| panic!("consumer failed"),
        )
    }));
    assert!(result.is_err());
    // The child was killed (and reaped) before the placeholders were removed.
    assert_eq!(before, tree(&f.rootfs));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!f.rootfs.join("work/marker").exists());
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn network_none_has_only_loopback() {
    let f = fixture(true, true);
    let mut spec = f.spec("cat /proc/net/dev");
    spec.network = Network::None;
    let out = ok_output(&spec);
    let ifaces: Vec<&str> = out
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, vec!["lo"], "{out}");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn hostname_is_set() {
    let f = fixture(true, true);
    let mut spec = f.spec("hostname; cat /etc/hostname; grep -c builder /etc/hosts");
    spec.hostname = Some("builder".into());
    assert_eq!(ok_output(&spec), "builder\nbuilder\n2\n");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn bind_mounts_are_readable_and_leave_no_trace() {
    let f = fixture(true, true);
    fs::write(f.host.join("data.txt"), "from host\n").unwrap();
    fs::write(f.host.parent().unwrap().join("single"), "one file\n").unwrap();
    let before = tree(&f.rootfs);
    let mut spec = f.spec(
        "cat /mnt/cache/data.txt; cat /opt/single; touch /mnt/cache/x 2>/dev/null && echo rw; \
         echo w > /mnt/rw/written",
    );
    spec.extra_mounts = vec![
        Mount {
            source: f.host.clone(),
            target: "/mnt/cache".into(),
            readonly: true,
        },
        Mount {
            source: f.host.parent().unwrap().join("single"),
            target: "/opt/single".into(),
            readonly: false,
        },
        Mount {
            source: f.host.clone(),
            target: "/mnt/rw".into(),
            readonly: false,
        },
    ];
    assert_eq!(ok_output(&spec), "from host\none file\n");
    assert!(!f.host.join("x").exists());
    assert_eq!(fs::read_to_string(f.host.join("written")).unwrap(), "w\n");
    assert_eq!(before, tree(&f.rootfs));
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_command_cannot_mount_and_the_host_mount_table_is_unchanged() {
    let f = fixture(true, false);
    let before = mountinfo();
    let mut spec = f.spec("mount -t tmpfs none /tmp && echo mounted || echo refused");
    spec.network = Network::None;
    spec.hostname = Some("h".into());
    assert!(ok_output(&spec).ends_with("refused\n"));
    assert_eq!(before, mountinfo());
    // The insecure escape hatch may mount, still only in its own mount namespace.
    spec.security = Security::Insecure;
    assert_eq!(ok_output(&spec), "mounted\n");
    assert_eq!(before, mountinfo());
}

/// `CapEff`, `CapPrm`, `CapInh`, `CapBnd`, `CapAmb` and `Seccomp` of the command.
fn status_fields(spec: &mut RunSpec) -> BTreeMap<String, String> {
    spec.argv = vec!["/bin/cat".into(), "/proc/self/status".into()];
    ok_output(spec)
        .lines()
        .filter_map(|l| l.split_once(":\t"))
        .filter(|(k, _)| k.starts_with("Cap") || *k == "Seccomp")
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

const DOCKER_CAPS: &str = "00000000a80425fb";

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_root_command_holds_dockers_default_capabilities_under_seccomp() {
    let f = fixture(true, true);
    let status = status_fields(&mut f.spec(""));
    for set in ["CapEff", "CapPrm", "CapInh", "CapBnd"] {
        assert_eq!(status[set], DOCKER_CAPS, "{set}: {status:?}");
    }
    assert_eq!(status["CapAmb"], "0000000000000000");
    assert_eq!(status["Seccomp"], "2", "filter mode");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_non_root_command_holds_no_capability() {
    let f = fixture(true, true);
    let mut spec = f.spec("");
    spec.user = Some("nobody".into());
    let status = status_fields(&mut spec);
    for set in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
        assert_eq!(status[set], "0000000000000000", "{set}: {status:?}");
    }
    assert_eq!(status["CapBnd"], DOCKER_CAPS);
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn the_insecure_escape_hatch_holds_every_capability_without_a_filter() {
    let f = fixture(true, true);
    let mut spec = f.spec("");
    spec.security = Security::Insecure;
    let status = status_fields(&mut spec);
    let host: String = fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:\t").map(str::to_string))
        .unwrap();
    assert_eq!(status["CapEff"], host);
    assert_eq!(status["Seccomp"], "0");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn the_root_is_switched_with_pivot_root_and_no_host_mount_is_left_inside() {
    let f = fixture(true, true);
    fs::write(f.rootfs.join("marker-inside"), "").unwrap();
    let out = ok_output(
        &f.spec("ls /../../.. && ls /proc/1/root/../.. && cut -d' ' -f5 /proc/self/mountinfo"),
    );
    assert_eq!(out.matches("marker-inside").count(), 2, "{out}");
    // Only the rootfs and what the sandbox mounted inside it: the old root is detached.
    let mount_points: Vec<&str> = out.lines().skip_while(|l| *l != "/").collect();
    assert_eq!(mount_points.first(), Some(&"/"), "{out}");
    for point in &mount_points {
        assert!(
            *point == "/"
                || ["/proc", "/dev", "/sys", "/etc/"]
                    .iter()
                    .any(|p| point.starts_with(p)),
            "unexpected mount point {point} in {out}"
        );
    }
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn proc_is_masked_and_kernel_settings_are_read_only() {
    let f = fixture(true, true);
    // Each masked path that this kernel has reads empty inside.
    let masked: Vec<&str> = ["kcore", "keys", "timer_list", "sched_debug"]
        .into_iter()
        .filter(|p| Path::new("/proc").join(p).exists())
        .collect();
    assert!(!masked.is_empty(), "the host has none of the masked files");
    let reads: Vec<String> = masked
        .iter()
        .map(|p| format!("wc -c < /proc/{p};"))
        .collect();
    let out = ok_output(&f.spec(&format!(
        "{} (echo x > /proc/sys/kernel/hostname) 2>/dev/null && echo wrote-sys || echo ro-sys; \
         ls -A /proc/acpi 2>/dev/null | wc -l",
        reads.join(" ")
    )));
    let expected = format!("{}ro-sys\n0\n", "0\n".repeat(masked.len()));
    assert_eq!(out, expected);
    assert_ne!(
        fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        "x\n"
    );
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn device_nodes_can_be_made_but_not_opened() {
    let f = fixture(true, true);
    let out = ok_output(&f.spec(
        "mknod /work/mem c 1 1 && echo made; cat /work/mem >/dev/null 2>&1 && echo opened || echo refused; \
         mknod /dev/mem2 c 1 1 && cat /dev/mem2 > /dev/null 2>&1 && echo opened-dev || echo refused-dev",
    ));
    assert_eq!(out, "made\nrefused\nrefused-dev\n");
    let node = fs::symlink_metadata(f.rootfs.join("work/mem")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &node.file_type()
    ));
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn chroot_mode_leaves_no_process_behind() {
    let f = fixture(true, true);
    // The shell reads /dev/null for background jobs; chroot mode mounts no /dev.
    fs::write(f.rootfs.join("dev/null"), "").unwrap();
    let mut spec = f.spec("(sleep 876543 &) ; sleep 876542 & echo started");
    spec.isolation = Isolation::Chroot;
    assert_eq!(ok_output(&spec), "started\n");
    let left: Vec<String> = fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("87654"))
        .collect();
    assert!(left.is_empty(), "left running: {left:?}");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn exec_failures_are_errors() {
    let f = fixture(true, true);
    let before = tree(&f.rootfs);
    let mut spec = f.spec("true");
    spec.argv = vec!["no-such-program".into()];
    match run_capture(&spec) {
        Err(IsolationError::Exec { program, source }) => {
            assert_eq!(program, "no-such-program");
            assert_eq!(source.raw_os_error(), Some(libc_enoent()));
        }
        other => panic!("unexpected {other:?}"),
    }
    spec.argv = vec!["/bin/sh".into()];
    spec.cwd = "/missing".into();
    assert!(matches!(
        run_capture(&spec),
        Err(IsolationError::Chdir { .. })
    ));
    assert_eq!(before, tree(&f.rootfs));
}

fn libc_enoent() -> i32 {
    std::io::Error::from(std::io::ErrorKind::NotFound)
        .raw_os_error()
        .unwrap_or(2)
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn chroot_mode_runs_without_namespaces_and_cleans_up() {
    if !is_root() {
        return; // chroot needs CAP_SYS_CHROOT
    }
    let f = fixture(true, false);
    let before = tree(&f.rootfs);
    let host_resolv = fs::read("/etc/resolv.conf").ok();
    std::thread::sleep(Duration::from_millis(20));
    let mut spec = f.spec("echo $$; test -e /proc/self && echo proc; cat /etc/resolv.conf; id -u");
    spec.isolation = Isolation::Chroot;
    spec.user = Some("nobody".into());
    let out = ok_output(&spec);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].parse::<u32>().unwrap() > 2, "{out}");
    assert!(!lines.contains(&"proc"), "{out}");
    assert_eq!(lines.last(), Some(&"65534"));
    if let Some(resolv) = &host_resolv {
        assert!(
            out.contains(String::from_utf8_lossy(resolv).trim_end()),
            "{out}"
        );
    }
    assert_eq!(before, tree(&f.rootfs));
    let (outcome, _) = run_capture(&{
        let mut s = spec.clone();
        s.argv = vec!["/bin/sh".into(), "-c".into(), "exit 7".into()];
        s
    })
    .unwrap();
    assert_eq!(outcome.status, 7);
    spec.network = Network::None;
    assert!(matches!(
        run_capture(&spec),
        Err(IsolationError::InvalidSpec(_))
    ));
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn none_mode_requires_host_root() {
    let f = fixture(true, true);
    let mut spec = f.spec("true");
    spec.isolation = Isolation::None;
    if !is_root() {
        spec.user = Some(nix::unistd::geteuid().to_string());
    }
    assert!(matches!(
        run_capture(&spec),
        Err(IsolationError::InvalidSpec(_))
    ));
    spec.rootfs = PathBuf::from("/");
    spec.argv = vec!["sh".into(), "-c".into(), "pwd; exit 4".into()];
    spec.cwd = "/tmp".into();
    let (outcome, out) = run_capture(&spec).unwrap();
    assert_eq!((outcome.status, out.as_str()), (4, "/tmp\n"));
}

#[test]
fn probe_reports_support() {
    probe(Isolation::None).unwrap();
    if is_root() {
        probe(Isolation::Chroot).unwrap();
    }
    probe(Isolation::Namespaces).unwrap();
}

#[test]
fn namespaces_denied_message_names_the_way_out() {
    let err = IsolationError::NamespacesDenied {
        source: std::io::Error::from_raw_os_error(1),
    };
    let msg = err.to_string();
    assert!(msg.contains("refused"), "{msg}");
    assert!(msg.contains("--isolation chroot"), "{msg}");
    assert!(msg.contains("--isolation none"), "{msg}");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn mounts_under_dev_are_made_inside_the_fresh_dev() {
    let f = fixture(true, true);
    let script = f.host.parent().unwrap().join("script");
    install_script(
        f.host.parent().unwrap(),
        "#!/bin/sh\necho from pipe $0\n",
        &script,
    );
    let before = tree(&f.rootfs);
    let mut spec = f.spec("/dev/pipes/EOF; test -e /dev/null && echo dev-intact");
    spec.extra_mounts = vec![Mount {
        source: script,
        target: "/dev/pipes/EOF".into(),
        readonly: true,
    }];
    assert_eq!(ok_output(&spec), "from pipe /dev/pipes/EOF\ndev-intact\n");
    assert_eq!(tree(&f.rootfs), before, "nothing of the mount remains");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn tmpfs_mounts_are_fresh_writable_and_leave_no_trace() {
    let f = fixture(true, true);
    let before = tree(&f.rootfs);
    let mut spec = f.spec(
        "echo x > /scratch/space/file && cat /scratch/space/file && grep -c ' /scratch/space tmpfs ' /proc/mounts",
    );
    spec.tmpfs_mounts = vec![TmpfsMount {
        target: "/scratch/space".into(),
        size: Some(1 << 20),
    }];
    assert_eq!(ok_output(&spec), "x\n1\n");
    assert_eq!(
        tree(&f.rootfs),
        before,
        "nothing written to the tmpfs remains"
    );
}
