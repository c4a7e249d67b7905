//! The RUN sandbox, attacked the way a hostile Dockerfile would: every test runs a real
//! `ocibuild build` FROM the lab's busybox image, lets a RUN try an escape (with busybox or
//! with the multi-call C tool `testdata/sandbox/attack.c`, compiled once per test process
//! with `cc -static`), and then asserts on the HOST: marker files absent, hostname, host
//! processes and mounts unchanged, context and secret sources untouched.
//!
//! The target sandbox, under `--isolation namespaces` (the default) as root: pivot_root
//! into the rootfs with the old root detached; own mount, pid, UTS and IPC namespaces (the
//! network shared unless `--network=none`); Docker's default capability set
//! (`00000000a80425fb`) as bounding, permitted and effective set; Docker's default seccomp
//! profile; /proc and /sys masked and read-only; the rootfs mounted nodev; host-side file
//! work never following a link out of the rootfs; `--security=insecure` only with
//! `--allow security.insecure`. Under `--isolation chroot`: the same capabilities without
//! CAP_SYS_CHROOT, seccomp, and no process left behind.
//!
//! Builds that may change a hostname run in a private UTS namespace of their own (see
//! [`build_in_own_uts`]), so that a sandbox that fails the test cannot rename the (shared)
//! machine; the hostname ocibuild runs under is what the sandbox must protect.

use crate::common::*;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Docker's default capability set: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID,
/// SETUID, SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP.
const DEFAULT_CAPS: u64 = 0x0000_0000_a804_25fb;
/// CAP_SYS_CHROOT, absent from the set of `--isolation chroot`.
const CAP_SYS_CHROOT: u64 = 1 << 18;
/// How long one build may take before the test kills it and fails.
const BUILD_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// The attack tool (`testdata/sandbox/attack.c`), compiled once per test process, to
/// `$CARGO_TARGET_TMPDIR/sandbox-attack-<source hash>` (reused while the source is
/// unchanged). The compiler, a child process, writes the executable under a name of its
/// own that is then renamed into place: this (multi-threaded) process never holds a
/// writable descriptor of it (see `throwaway_root` in common/mod.rs: ETXTBSY), and
/// concurrent test processes never see a half-written tool.
fn attack_tool() -> &'static Path {
    static TOOL: OnceLock<PathBuf> = OnceLock::new();
    TOOL.get_or_init(|| {
        let source = testdata("sandbox").join("attack.c");
        let hash = sha256_hex(&fs::read(&source).unwrap());
        let exe =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sandbox-attack-{}", &hash[..16]));
        if exe.exists() {
            return exe;
        }
        let partial = exe.with_extension(format!("partial-{}", std::process::id()));
        let out = Command::new("cc")
            .args(["-static", "-O1", "-Wall", "-o"])
            .arg(&partial)
            .arg(&source)
            .output()
            .expect("running cc (scripts/lab.sh up installs gcc and libc6-dev)");
        assert!(
            out.status.success(),
            "cc -static {}:\n{}",
            source.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        fs::rename(&partial, &exe).unwrap();
        exe
    })
}

/// A build context with `Dockerfile` (`text`), the attack tool as `attack` (copied by a
/// `cp` child) and the given extra files.
fn attack_context(text: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let ctx = context_with(text, files);
    run(
        "cp",
        &[
            attack_tool().to_str().unwrap(),
            ctx.path().join("attack").to_str().unwrap(),
        ],
    );
    ctx
}

/// `FROM <lab busybox>` plus `COPY attack /attack`, the start of every attack Dockerfile.
fn from_busybox_with_attack() -> String {
    format!("FROM {}/busybox:latest\nCOPY attack /attack\n", registry())
}

/// A finished `ocibuild build`.
struct Built {
    success: bool,
    /// ocibuild's stderr: the progress log with every RUN's output.
    log: String,
    /// Host mounts that were left under the build's work dir or context after the build;
    /// they have been detached (`umount -l`) already, so no test leaves any behind.
    leftover_mounts: Vec<String>,
    _work: tempfile::TempDir,
}

impl Built {
    /// Panics with the log unless the build succeeded.
    fn ok(self) -> Built {
        assert!(self.success, "the build failed (its log is above)");
        self
    }

    /// Every `attack: NAME VALUE...` line the RUNs printed, in order, as (NAME, VALUE).
    fn results(&self) -> Vec<(String, String)> {
        self.log
            .lines()
            .filter_map(|l| l.strip_prefix("attack: "))
            .map(|rest| match rest.split_once(char::is_whitespace) {
                Some((name, value)) => (name.to_string(), value.trim().to_string()),
                None => (rest.to_string(), String::new()),
            })
            .collect()
    }

    /// The value of the one `attack: NAME ...` line.
    fn result(&self, name: &str) -> String {
        let found: Vec<String> = self
            .results()
            .into_iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "exactly one `attack: {name}` line in the log (above)"
        );
        found.into_iter().next().unwrap()
    }
}

/// The isolation modes.
#[derive(Clone, Copy, Debug)]
enum Iso {
    Namespaces,
    Chroot,
}

impl Iso {
    fn arg(self) -> &'static str {
        match self {
            Iso::Namespaces => "namespaces",
            Iso::Chroot => "chroot",
        }
    }
}

/// `ocibuild build -c CTX -f CTX/Dockerfile --isolation ISO --work-dir <fresh> EXTRA...`
/// (`--no-push` unless `extra` has a `--destination`), not asserted.
fn build(ctx: &Path, iso: Iso, extra: &[&str]) -> Built {
    build_wrapped(&[], ctx, iso, extra)
}

/// [`build`] with the command prefixed by `wrapper` (a program and its arguments that
/// end by running the rest of the command line). The progress log with the RUN output
/// (ocibuild's stderr) and stdout go to files, not pipes,
/// so a process a RUN leaves behind holding them cannot stall the test; a build that
/// takes longer than [`BUILD_TIMEOUT`] is killed and fails the test.
fn build_wrapped(wrapper: &[&str], ctx: &Path, iso: Iso, extra: &[&str]) -> Built {
    let work = tempfile::tempdir().unwrap();
    let work_dir = work.path().join("work");
    let logs = tempfile::tempdir().unwrap();
    let dockerfile = ctx.join("Dockerfile");
    let mut args: Vec<&str> = wrapper.to_vec();
    args.extend([
        env!("CARGO_BIN_EXE_ocibuild"),
        "build",
        "-c",
        ctx.to_str().unwrap(),
        "-f",
        dockerfile.to_str().unwrap(),
        "--isolation",
        iso.arg(),
        "--work-dir",
        work_dir.to_str().unwrap(),
    ]);
    if !extra.contains(&"--destination") {
        args.push("--no-push");
    }
    args.extend_from_slice(extra);
    let stdout_path = logs.path().join("stdout");
    let stderr_path = logs.path().join("stderr");
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&stdout_path).unwrap())
        .stderr(fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", args[0]));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > BUILD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            detach_mounts_under(&[work.path(), ctx]);
            panic!(
                "the build did not finish within {BUILD_TIMEOUT:?}:\n{}",
                fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let leftover_mounts = detach_mounts_under(&[work.path(), ctx]);
    let log = fs::read_to_string(&stderr_path).unwrap();
    // Captured by the test harness: shown for failing tests and with --nocapture.
    eprintln!("--- ocibuild {}\n{log}", args.join(" "));
    Built {
        success: status.success(),
        log,
        leftover_mounts,
        _work: work,
    }
}

/// [`build`] inside a new UTS namespace whose hostname is set to `hostname` first; returns
/// the build and the hostname of that namespace after the build (read by `hostname`, a
/// host program, outside ocibuild).
fn build_in_own_uts(ctx: &Path, iso: Iso, hostname: &str, extra: &[&str]) -> (Built, String) {
    let hostfile = tempfile::NamedTempFile::new().unwrap();
    let script =
        "hostname \"$1\" || exit 99; h=$2; shift 2; \"$@\"; s=$?; hostname > \"$h\"; exit $s";
    let built = build_wrapped(
        &[
            "unshare",
            "--uts",
            "sh",
            "-c",
            script,
            "sh",
            hostname,
            hostfile.path().to_str().unwrap(),
        ],
        ctx,
        iso,
        extra,
    );
    let after = fs::read_to_string(hostfile.path()).unwrap();
    (built, after.trim().to_string())
}

/// The host's mount table lines (`/proc/self/mountinfo`) that mention one of `dirs`.
fn host_mounts_under(dirs: &[&Path]) -> Vec<String> {
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap();
    table
        .lines()
        .filter(|line| {
            dirs.iter().any(|d| {
                line.split_whitespace()
                    .any(|field| field.starts_with(d.to_str().unwrap()))
            })
        })
        .map(str::to_string)
        .collect()
}

/// Detaches (`umount -l`) every host mount under `dirs`, deepest first, and returns the
/// mountinfo lines found: a failing sandbox must not leave mounts on the shared machine.
fn detach_mounts_under(dirs: &[&Path]) -> Vec<String> {
    let found = host_mounts_under(dirs);
    let mut points: Vec<&str> = found
        .iter()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|p| dirs.iter().any(|d| p.starts_with(d.to_str().unwrap())))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = Command::new("umount").args(["-l", point]).status();
    }
    found
}

/// A host path (file or directory) that a failing sandbox may create: removed on drop.
struct HostPath(PathBuf);

impl Drop for HostPath {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
        let _ = fs::remove_file(&self.0);
    }
}

/// A host process started by a test, killed and reaped on drop (even when the test fails).
struct HostProcess(Child);

impl HostProcess {
    /// Starts `sleep 1000` on the host.
    fn sleep() -> HostProcess {
        HostProcess(
            Command::new("sleep")
                .arg("1000")
                .stdin(Stdio::null())
                .spawn()
                .expect("running sleep"),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Still running (not exited, not killed): it is our child, so it is ours to reap.
    fn alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Host processes (other than this one) with `token` in an argument of their command line.
pub(crate) fn host_processes(token: &str) -> Vec<u32> {
    let me = std::process::id();
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                c.split(|b| *b == 0)
                    .any(|arg| String::from_utf8_lossy(arg).contains(token))
            })
        })
        .collect()
}

/// A `sleep` duration (seconds, below 2^32) no other process on the machine has in its
/// command line: `prefix` and five digits of this process's id (a concurrent run of this
/// suite gets other digits, so neither finds nor kills the other's processes).
pub(crate) fn sleep_seconds(prefix: &str) -> String {
    format!("{prefix}{:05}", std::process::id() % 100_000)
}

/// Kills, on drop, every host process with the token in its command line (what a RUN
/// may have left behind).
pub(crate) struct KillOnDrop(pub(crate) String);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in host_processes(&self.0) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// The capability and seccomp lines of `/proc/self/status` as a RUN prints them:
/// `RUN grep ... | sed 's/^/attack: TAG-/'` → (`TAG-CapEff:` ...).
fn status_probe(tag: &str) -> String {
    format!(
        "grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|Seccomp):' /proc/self/status | sed 's/^/attack: {tag}-/'"
    )
}

/// A capability set as `/proc/self/status` shows it (hexadecimal), normalised to 16
/// digits so that assertion messages show sets the way the kernel does.
fn caps(value: &str) -> String {
    let set = u64::from_str_radix(value.trim(), 16).unwrap_or_else(|e| panic!("{value:?}: {e}"));
    hex_set(set)
}

fn hex_set(set: u64) -> String {
    format!("{set:016x}")
}

/// This (host) process's `/proc/self/status` field.
fn host_status(field: &str) -> String {
    fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
        .trim()
        .to_string()
}

/// `tar -tvf` of every layer of an image in the lab registry (unpacked by skopeo/umoci).
fn layer_listing(reference: &str) -> String {
    let img = unpack(&format!("docker://{reference}"));
    img.layer_files()
        .iter()
        .map(|layer| run("tar", &["-tvf", layer.to_str().unwrap()]))
        .collect()
}

/// The line of a `tar -tv` listing for the entry `name` (`./name` or `name`).
fn listing_line<'a>(listing: &'a str, name: &str) -> &'a str {
    listing
        .lines()
        .find(|l| {
            l.split_whitespace()
                .any(|w| w.trim_start_matches("./").trim_end_matches('/') == name)
        })
        .unwrap_or_else(|| panic!("no {name} in the layers:\n{listing}"))
}

/// A host directory a RUN will point a symlink at, holding `resolv.conf`, `hosts` and
/// `hostname` with unique contents; [`HostDir::assert_untouched`] checks that nothing was
/// added, removed or changed there, the directory's mtime included.
struct HostDir {
    dir: tempfile::TempDir,
    files: Vec<(String, String)>,
    mtime: (i64, i64),
}

impl HostDir {
    fn new() -> HostDir {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<(String, String)> = ["resolv.conf", "hosts", "hostname"]
            .iter()
            .map(|name| (name.to_string(), unique_string(&format!("host-{name}"))))
            .collect();
        for (name, content) in &files {
            fs::write(dir.path().join(name), content).unwrap();
        }
        let meta = fs::metadata(dir.path()).unwrap();
        HostDir {
            mtime: (meta.mtime(), meta.mtime_nsec()),
            dir,
            files,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `../../../..` up from `/` and then the absolute path: the relative form of a link
    /// at `/NAME` to this directory.
    fn relative_from_root(&self) -> String {
        format!("../../../../../../../..{}", self.path().display())
    }

    fn assert_untouched(&self, what: &str) {
        let names: BTreeSet<String> = fs::read_dir(self.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let expected: BTreeSet<String> = self.files.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(names, expected, "{what}: host dir entries changed");
        for (name, content) in &self.files {
            let now = fs::read_to_string(self.path().join(name)).unwrap();
            assert_eq!(&now, content, "{what}: host {name} changed");
        }
        let meta = fs::metadata(self.path()).unwrap();
        assert_eq!(
            (meta.mtime(), meta.mtime_nsec()),
            self.mtime,
            "{what}: host dir mtime changed"
        );
    }
}

/// A RUN shell fragment that runs `command` and prints `attack: NAME ok` or
/// `attack: NAME refused` (its error messages go to /tmp/.err of the rootfs: no /dev/null
/// is needed, --isolation chroot has none).
fn attempt(name: &str, command: &str) -> String {
    format!(
        "if {command} 2>>/tmp/.err; then echo 'attack: {name} ok'; else echo 'attack: {name} refused'; fi"
    )
}

/// Asserts that a RUN's error result is one of `allowed` (errno names, see attack.c).
fn assert_refused(built: &Built, name: &str, allowed: &[&str]) {
    let value = built.result(name);
    assert!(
        allowed.iter().any(|a| value == *a),
        "{name}: expected one of {allowed:?}, got {value:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 1. The root switch
// ---------------------------------------------------------------------------------------

/// What the chroot escape must (not) show: the marker absent on the host, the listing of
/// "/" the rootfs' (it has /attack, the host has not) and not the host's /etc/hostname.
fn assert_escape_contained(built: &Built, marker: &Path) {
    assert!(
        !marker.exists(),
        "the RUN created {} on the host",
        marker.display()
    );
    let listing: BTreeSet<String> = built
        .result("root-listing")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let host_root: BTreeSet<String> = fs::read_dir("/")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_ne!(listing, host_root, "the RUN listed the host's /");
    assert!(listing.contains("attack"), "the RUN's / is not the rootfs");
    let host_hostname = fs::read_to_string("/etc/hostname").unwrap_or_default();
    let host_hostname = host_hostname.trim();
    if !host_hostname.is_empty() {
        assert_ne!(
            built.result("etc-hostname"),
            format!("[{host_hostname}]"),
            "the RUN read the host's /etc/hostname"
        );
    }
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_chroot_escape_in_a_run_never_reaches_the_host() {
    let name = unique_string("sandbox-escape");
    let marker = HostPath(Path::new("/tmp").join(&name));
    let ctx = attack_context(
        &format!(
            "{}WORKDIR /work\nRUN /attack chroot-escape {name}\n",
            from_busybox_with_attack()
        ),
        &[],
    );
    let built = build(ctx.path(), Iso::Namespaces, &[]).ok();
    assert_escape_contained(&built, &marker.0);
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn proc_root_links_and_dotdot_lead_back_into_the_rootfs() {
    let names: Vec<String> = (0..3).map(|_| unique_string("sandbox-proc-root")).collect();
    let markers: Vec<HostPath> = names
        .iter()
        .map(|n| HostPath(Path::new("/tmp").join(n)))
        .collect();
    let ctx = attack_context(
        &format!(
            "{}RUN touch /proc/1/root/tmp/{} /proc/self/root/../../../tmp/{} \
             /../../../../tmp/{} 2>>/tmp/.err; \
             echo \"attack: proc1-root $(ls /proc/1/root/ | tr '\\n' ' ')\"; \
             echo \"attack: self-root $(ls /proc/self/root/../../.. | tr '\\n' ' ')\"; \
             echo \"attack: dotdot $(cd /../../../.. && ls | tr '\\n' ' ')\"\n",
            from_busybox_with_attack(),
            names[0],
            names[1],
            names[2]
        ),
        &[],
    );
    let built = build(ctx.path(), Iso::Namespaces, &[]).ok();
    for marker in &markers {
        assert!(
            !marker.0.exists(),
            "the RUN created {} on the host",
            marker.0.display()
        );
    }
    for probe in ["proc1-root", "self-root", "dotdot"] {
        let listing: BTreeSet<String> = built
            .result(probe)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        assert!(listing.contains("attack"), "{probe} left the rootfs");
    }
}

// ---------------------------------------------------------------------------------------
// 2. Namespaces
// ---------------------------------------------------------------------------------------

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn hostname_changes_in_a_run_stay_in_its_own_uts_namespace() {
    let host = unique_string("sbhost");
    let evil = unique_string("evil-x");
    let ctx = attack_context(
        &format!(
            "{}RUN hostname {evil} 2>>/tmp/.err; echo \"attack: inside $(hostname)\"\n",
            from_busybox_with_attack()
        ),
        &[],
    );
    let (built, after) = build_in_own_uts(ctx.path(), Iso::Namespaces, &host, &[]);
    built.ok();
    assert_eq!(after, host, "the RUN renamed the host (builder's hostname)");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_run_has_its_own_uts_ipc_and_pid_namespaces_and_the_network_only_without_network_none() {
    let ctx = attack_context(
        &format!(
            "{}RUN for n in uts ipc pid net; do echo \"attack: ns-$n $(readlink /proc/self/ns/$n)\"; done\n\
             RUN --network=none echo \"attack: none-net $(readlink /proc/self/ns/net)\"\n",
            from_busybox_with_attack()
        ),
        &[],
    );
    let built = build(ctx.path(), Iso::Namespaces, &[]).ok();
    let host = |ns: &str| {
        fs::read_link(format!("/proc/self/ns/{ns}"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    for ns in ["uts", "ipc", "pid"] {
        assert_ne!(
            built.result(&format!("ns-{ns}")),
            host(ns),
            "the RUN shares the host's {ns} namespace"
        );
    }
    assert_eq!(
        built.result("ns-net"),
        host("net"),
        "the network is shared by default"
    );
    assert_ne!(
        built.result("none-net"),
        host("net"),
        "--network=none has its own network namespace"
    );
}

// ---------------------------------------------------------------------------------------
// 3. Capabilities, device nodes and mounts
// ---------------------------------------------------------------------------------------

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_root_run_holds_exactly_dockers_default_capabilities() {
    let ctx = attack_context(
        &format!(
            "{}RUN {}\n",
            from_busybox_with_attack(),
            status_probe("root")
        ),
        &[],
    );
    let built = build(ctx.path(), Iso::Namespaces, &[]).ok();
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(
            caps(&built.result(&format!("root-{set}:"))),
            hex_set(DEFAULT_CAPS),
            "{set} of a root RUN"
        );
    }
    assert_eq!(caps(&built.result("root-CapAmb:")), hex_set(0));
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_non_root_run_has_no_capabilities_and_the_default_bounding_set() {
    let ctx = attack_context(
        &format!(
            "{}USER nobody\nRUN {}\n",
            from_busybox_with_attack(),
            status_probe("nobody")
        ),
        &[],
    );
    let built = build(ctx.path(), Iso::Namespaces, &[]).ok();
    for set in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
        assert_eq!(
            caps(&built.result(&format!("nobody-{set}:"))),
            hex_set(0),
            "{set} of a RUN as nobody"
        );
    }
    assert_eq!(
        caps(&built.result("nobody-CapBnd:")),
        hex_set(DEFAULT_CAPS),
        "CapBnd of a RUN as nobody"
    );
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn device_nodes_can_be_made_but_not_opened_and_land_in_the_layer() {
    let dest = format!("{}:1", unique_repo("sandbox-mknod"));
    let ctx = attack_context(
        &format!(
            "{}RUN mknod /tmp/kmsg c 1 11 && /attack open-r /tmp/kmsg\n",
            from_busybox_with_attack()
        ),
        &[],
    );
    let built = build(ctx.path(), Iso::Namespaces, &["--destination", &dest]).ok();
    // nodev: the kernel refuses to open any device node of the rootfs.
    assert_refused(&built, "/tmp/kmsg", &["EACCES", "EPERM"]);
    let listing = layer_listing(&dest);
    let line = listing_line(&listing, "tmp/kmsg");
    assert!(
        line.starts_with('c') && line.contains("1,11"),
        "a character device 1,11: {line}"
    );
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_run_cannot_mount_proc_or_tmpfs() {
    let ctx = attack_context(
        &format!(
            "{}RUN mkdir -p /mnt/p /mnt/t; \
             if mount -t proc proc /mnt/p; then echo 'attack: mount-proc ok'; else echo 'attack: mount-proc refused'; fi; \
             if mount -t tmpfs t /mnt/t; then echo 'attack: mount-tmpfs ok'; else echo 'attack: mount-tmpfs refused'; fi\n",
            from_busybox_with_attack()
        ),
        &[],
    );
    let built = build(ctx.path(), Iso::Namespaces, &[]).ok();
    assert_eq!(built.result("mount-proc"), "refused", "mount -t proc");
    assert_eq!(built.result("mount-tmpfs"), "refused", "mount -t tmpfs");
    assert!(
        built.leftover_mounts.is_empty(),
        "{:?}",
        built.leftover_mounts
    );
}

// ---------------------------------------------------------------------------------------
// 4. seccomp
// ---------------------------------------------------------------------------------------

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn seccomp_refuses_keyrings_user_namespaces_bpf_perf_and_modules() {
    let ctx = attack_context(
        &format!(
            "{}RUN {}; /attack syscalls\n",
            from_busybox_with_attack(),
            status_probe("root")
        ),
        &[],
    );
    let built = build(ctx.path(), Iso::Namespaces, &[]).ok();
    assert_eq!(
        built.result("root-Seccomp:"),
        "2",
        "seccomp mode (2: filter)"
    );
    for call in [
        "keyctl",
        "add_key",
        "unshare",
        "bpf",
        "perf_event_open",
        "init_module",
    ] {
        assert_refused(&built, call, &["EPERM"]);
    }
}

// ---------------------------------------------------------------------------------------
// 5. /proc and /sys
// ---------------------------------------------------------------------------------------

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn proc_and_sys_are_masked_and_read_only() {
    let host = unique_string("sbhost");
    // Opened for writing but never written: no effect on the host even when allowed.
    let writable = [
        "/proc/sys/kernel/hostname",
        "/proc/sysrq-trigger",
        "/sys/kernel/uevent_helper",
        "/sys/kernel/mm/transparent_hugepage/enabled",
        "/sys/class/net/lo/mtu",
    ];
    let masked = [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
    ];
    let ctx = attack_context(
        &format!(
            "{}RUN /attack open-r {}; /attack open-w {}; \
             for d in /proc/scsi /proc/acpi; do [ -d $d ] && echo \"attack: ls-$d $(ls -A $d | tr '\\n' ' ')\"; done; \
             if mkdir /sys/pwned 2>>/tmp/.err; then echo 'attack: mkdir-sys ok'; else echo 'attack: mkdir-sys refused'; fi; true\n",
            from_busybox_with_attack(),
            masked.join(" "),
            writable.join(" ")
        ),
        &[],
    );
    let (built, after) = build_in_own_uts(ctx.path(), Iso::Namespaces, &host, &[]);
    let built = built.ok();
    for path in masked {
        let value = built.result(path);
        assert!(
            value == "ok 0" || value.starts_with('E'),
            "{path} must read empty or be unreadable, got {value:?}"
        );
    }
    for path in writable {
        let value = built.result(path);
        assert!(
            value.starts_with('E'),
            "{path} must not open for writing, got {value:?}"
        );
    }
    for dir in ["/proc/scsi", "/proc/acpi"] {
        if Path::new(dir).is_dir() {
            assert_eq!(
                built.result(&format!("ls-{dir}")),
                "",
                "{dir} must be empty"
            );
        }
    }
    assert_eq!(built.result("mkdir-sys"), "refused");
    assert!(!Path::new("/sys/pwned").exists());
    assert_eq!(after, host, "the host's hostname changed");
}

// ---------------------------------------------------------------------------------------
// 6. Nothing left behind
// ---------------------------------------------------------------------------------------

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn background_processes_of_a_run_do_not_outlive_the_build() {
    let token = sleep_seconds("9876");
    let _cleanup = KillOnDrop(token.clone());
    let ctx = attack_context(
        &format!(
            "{}RUN (sleep {token} &) ; /attack background {token}; echo started\n",
            from_busybox_with_attack()
        ),
        &[],
    );
    let built = build(ctx.path(), Iso::Namespaces, &[]).ok();
    assert_eq!(built.result("background"), "started");
    let left = host_processes(&token);
    assert!(
        left.is_empty(),
        "`sleep {token}` still runs on the host as {left:?}"
    );
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_build_leaves_no_mount_on_the_host() {
    let ctx = attack_context(
        &format!(
            "{}RUN --mount=type=bind,target=/ctx --mount=type=tmpfs,target=/t \
             --mount=type=cache,target=/c ls /ctx /t /c\n\
             RUN --network=none true\n",
            from_busybox_with_attack()
        ),
        &[],
    );
    let mounts = tempfile::tempdir().unwrap();
    assert!(host_mounts_under(&[ctx.path(), mounts.path()]).is_empty());
    let built = build(
        ctx.path(),
        Iso::Namespaces,
        &["--cache-mounts-dir", mounts.path().to_str().unwrap()],
    )
    .ok();
    let left = detach_mounts_under(&[mounts.path()]);
    assert!(
        built.leftover_mounts.is_empty() && left.is_empty(),
        "mounts left on the host: {:?} {left:?}",
        built.leftover_mounts
    );
}

// ---------------------------------------------------------------------------------------
// 7. Host-side file work never follows a link out of the rootfs
// ---------------------------------------------------------------------------------------

/// The link targets of a RUN's symlink to `host`: its absolute path and the relative
/// `../../..` form.
fn link_targets(host: &HostDir) -> [String; 2] {
    [host.path().display().to_string(), host.relative_from_root()]
}

// Each swap also makes the link's target inside the rootfs (`mkdir -p HOSTPATH`), so that
// it resolves there to a real directory: a builder resolving the link in the rootfs works
// on that one, one following it on the host reaches the host's directory.

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn an_etc_symlinked_to_a_host_dir_is_never_written_through() {
    for iso in [Iso::Namespaces, Iso::Chroot] {
        let host = HostDir::new();
        for target in link_targets(&host) {
            // /etc holds the RUN's mount points (hosts, resolv.conf), so a RUN cannot
            // swap it (a rename of a lower directory is EXDEV in an overlay, and `mv`'s
            // copy cannot remove them): the link comes in by COPY from a stage.
            let ctx = attack_context(
                &format!(
                    "FROM {reg}/busybox:latest AS evil\n\
                     RUN mkdir /out && ln -s {target} /out/etc\n\
                     {}RUN mkdir -p {host}\n\
                     COPY --from=evil /out/ /\n\
                     RUN echo \"attack: swapped $(readlink /etc)\"\n\
                     RUN echo 'attack: next-run'\n\
                     COPY Dockerfile /etc/copied\n\
                     WORKDIR /etc/wd\n\
                     RUN true\n",
                    from_busybox_with_attack(),
                    reg = registry(),
                    host = host.path().display(),
                ),
                &[],
            );
            let built = build(ctx.path(), iso, &[]);
            let what = format!("{iso:?}, /etc -> {target}");
            assert_eq!(built.result("swapped"), target, "{what}");
            host.assert_untouched(&what);
            assert!(built.success, "{what}: the build failed");
        }
    }
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_dev_symlinked_to_a_host_dir_is_never_written_through() {
    let host = HostDir::new();
    for target in link_targets(&host) {
        // /dev is a mount point while a RUN runs, so the link comes in by COPY from a stage.
        let ctx = attack_context(
            &format!(
                "FROM {reg}/busybox:latest AS evil\n\
                 RUN mkdir /out && ln -s {target} /out/dev\n\
                 {}RUN mkdir -p {host} && rm -rf /dev 2>>/tmp/.err; true\n\
                 COPY --from=evil /out/ /\n\
                 RUN echo \"attack: dev $(readlink /dev)\"\n\
                 RUN true\n",
                from_busybox_with_attack(),
                reg = registry(),
                host = host.path().display(),
            ),
            &[],
        );
        let built = build(ctx.path(), Iso::Namespaces, &[]);
        let what = format!("/dev -> {target}");
        host.assert_untouched(&what);
        assert!(built.success, "{what}: the build failed");
    }
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_bind_mount_below_a_symlinked_dir_stays_inside_the_rootfs() {
    let host = HostDir::new();
    for target in link_targets(&host) {
        let ctx = attack_context(
            &format!(
                "{}RUN mkdir -p {host} && rm -rf /mnt && ln -s {target} /mnt && echo 'attack: swapped'\n\
                 RUN --mount=type=bind,target=/mnt/x ls /mnt/x >>/tmp/.out\n\
                 RUN --mount=type=tmpfs,target=/mnt/y true\n\
                 COPY Dockerfile /mnt/copied\n\
                 WORKDIR /mnt/wd\n\
                 RUN true\n",
                from_busybox_with_attack(),
                host = host.path().display(),
            ),
            &[],
        );
        let built = build(ctx.path(), Iso::Namespaces, &[]);
        let what = format!("/mnt -> {target}");
        assert_eq!(built.result("swapped"), "", "{what}");
        host.assert_untouched(&what);
        assert!(built.success, "{what}: the build failed");
    }
}

// ---------------------------------------------------------------------------------------
// 8. Read-only stays read-only
// ---------------------------------------------------------------------------------------

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_read_only_context_bind_mount_cannot_be_remounted_writable() {
    let ctx = attack_context(
        &format!(
            "{}RUN --mount=type=bind,target=/ctx {}; {}\n",
            from_busybox_with_attack(),
            attempt("remount", "mount -o remount,rw,bind /ctx"),
            attempt("write", "touch /ctx/pwned"),
        ),
        &[],
    );
    let built = build(ctx.path(), Iso::Namespaces, &[]).ok();
    assert!(
        !ctx.path().join("pwned").exists(),
        "the RUN wrote into the context on the host"
    );
    assert_eq!(built.result("write"), "refused", "the mount is read-only");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_secret_cannot_be_written_or_remounted_writable() {
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("s");
    let value = unique_string("secret");
    fs::write(&secret, &value).unwrap();
    let ctx = attack_context(
        &format!(
            "{}RUN --mount=type=secret,id=s {}; {}; {}\n",
            from_busybox_with_attack(),
            attempt("remount", "mount -o remount,rw,bind /run/secrets/s"),
            attempt("write", "echo pwned > /run/secrets/s"),
            attempt("chmod", "chmod 777 /run/secrets/s"),
        ),
        &[],
    );
    let flag = format!("id=s,src={}", secret.display());
    let built = build(ctx.path(), Iso::Namespaces, &["--secret", &flag]).ok();
    assert_eq!(
        fs::read_to_string(&secret).unwrap(),
        value,
        "the RUN wrote the secret's source"
    );
    let mode = fs::metadata(&secret).unwrap().mode() & 0o7777;
    assert_ne!(mode, 0o777, "the RUN changed the secret's mode");
    assert_eq!(built.result("write"), "refused", "the secret is read-only");
}

// ---------------------------------------------------------------------------------------
// 9. Host processes
// ---------------------------------------------------------------------------------------

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_run_can_neither_trace_nor_kill_a_host_process() {
    let mut victim = HostProcess::sleep();
    let ctx = attack_context(
        &format!(
            "{}RUN /attack ptrace {}\n",
            from_busybox_with_attack(),
            victim.pid()
        ),
        &[],
    );
    let built = build(ctx.path(), Iso::Namespaces, &[]).ok();
    assert_refused(&built, "ptrace-attach", &["ESRCH"]);
    assert_refused(&built, "kill", &["ESRCH"]);
    assert!(victim.alive(), "the host process died");
}

// ---------------------------------------------------------------------------------------
// 10. The escape hatch
// ---------------------------------------------------------------------------------------

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn security_insecure_needs_allow_and_then_runs_with_every_capability_unfiltered() {
    let ctx = attack_context(
        &format!(
            "{}RUN --security=insecure {}\n",
            from_busybox_with_attack(),
            status_probe("insecure")
        ),
        &[],
    );
    let refused = build(ctx.path(), Iso::Namespaces, &[]);
    assert!(
        !refused.success,
        "--security=insecure without --allow must fail the build"
    );
    assert!(
        refused.log.contains("--allow security.insecure"),
        "the error names --allow security.insecure"
    );
    assert!(refused.results().is_empty(), "the RUN ran");

    let allowed = build(
        ctx.path(),
        Iso::Namespaces,
        &["--allow", "security.insecure"],
    )
    .ok();
    let host_bounding = caps(&host_status("CapBnd"));
    assert_eq!(caps(&allowed.result("insecure-CapEff:")), host_bounding);
    assert_eq!(allowed.result("insecure-Seccomp:"), "0");
}

// ---------------------------------------------------------------------------------------
// 11. Real builds still work
// ---------------------------------------------------------------------------------------

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn setuid_bits_owners_device_nodes_and_a_nested_chroot_still_work() {
    let dest = format!("{}:1", unique_repo("sandbox-real"));
    let ctx = attack_context(
        &format!(
            "{}RUN cp /bin/busybox /suid && chmod u+s /suid && \
             touch /owned && chown 1234:5678 /owned && \
             mknod /null2 c 1 3 && \
             mkdir -p /sub/bin && cp /bin/busybox /sub/bin/busybox && ln -s busybox /sub/bin/true && \
             chroot /sub /bin/true && echo 'attack: nested-chroot ok'\n",
            from_busybox_with_attack()
        ),
        &[],
    );
    let built = build(ctx.path(), Iso::Namespaces, &["--destination", &dest]).ok();
    assert_eq!(built.result("nested-chroot"), "ok");
    let listing = layer_listing(&dest);
    let suid = listing_line(&listing, "suid");
    assert!(suid.starts_with("-rws"), "setuid kept: {suid}");
    let owned = listing_line(&listing, "owned");
    assert!(owned.contains("1234/5678"), "owner kept: {owned}");
    let node = listing_line(&listing, "null2");
    assert!(
        node.starts_with('c') && node.contains("1,3"),
        "device node kept: {node}"
    );
}

// ---------------------------------------------------------------------------------------
// --isolation chroot
// ---------------------------------------------------------------------------------------

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn under_chroot_isolation_the_capabilities_lack_sys_chroot_and_seccomp_is_on() {
    // The kernel's answers to capget/prctl: --isolation chroot mounts no /proc.
    let ctx = attack_context(
        &format!("{}RUN /attack status\n", from_busybox_with_attack()),
        &[],
    );
    let built = build(ctx.path(), Iso::Chroot, &[]).ok();
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(
            caps(&built.result(&format!("{set}:"))),
            hex_set(DEFAULT_CAPS & !CAP_SYS_CHROOT),
            "{set} under --isolation chroot"
        );
    }
    assert_eq!(caps(&built.result("CapAmb:")), hex_set(0));
    assert_eq!(built.result("Seccomp:"), "2");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn under_chroot_isolation_the_chroot_escape_is_refused() {
    let name = unique_string("sandbox-escape-chroot");
    let marker = HostPath(Path::new("/tmp").join(&name));
    let ctx = attack_context(
        &format!(
            "{}WORKDIR /work\nRUN /attack chroot-escape {name}\n",
            from_busybox_with_attack()
        ),
        &[],
    );
    let built = build(ctx.path(), Iso::Chroot, &[]).ok();
    assert_refused(&built, "chroot", &["EPERM"]);
    assert_escape_contained(&built, &marker.0);
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn under_chroot_isolation_mount_and_hostname_are_refused() {
    let host = unique_string("sbhost");
    let evil = unique_string("evil-x");
    let ctx = attack_context(
        &format!(
            "{}RUN mkdir -p /mnt/t; \
             if mount -t tmpfs t /mnt/t 2>>/tmp/.err; then echo 'attack: mount ok'; else echo 'attack: mount refused'; fi; \
             if hostname {evil} 2>>/tmp/.err; then echo 'attack: hostname ok'; else echo 'attack: hostname refused'; fi\n",
            from_busybox_with_attack()
        ),
        &[],
    );
    let (built, after) = build_in_own_uts(ctx.path(), Iso::Chroot, &host, &[]);
    let built = built.ok();
    assert_eq!(after, host, "the RUN renamed the host");
    assert_eq!(built.result("mount"), "refused");
    assert_eq!(built.result("hostname"), "refused");
    assert!(
        built.leftover_mounts.is_empty(),
        "mounts left on the host: {:?}",
        built.leftover_mounts
    );
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn under_chroot_isolation_background_processes_do_not_outlive_the_build() {
    let token = sleep_seconds("9875");
    let _cleanup = KillOnDrop(token.clone());
    let ctx = attack_context(
        &format!(
            "{}RUN /attack background {token}; echo started\n",
            from_busybox_with_attack()
        ),
        &[],
    );
    let built = build(ctx.path(), Iso::Chroot, &[]).ok();
    assert_eq!(built.result("background"), "started");
    let left = host_processes(&token);
    assert!(
        left.is_empty(),
        "`sleep {token}` still runs on the host as {left:?}"
    );
    assert!(
        built.leftover_mounts.is_empty(),
        "mounts left on the host: {:?}",
        built.leftover_mounts
    );
}
