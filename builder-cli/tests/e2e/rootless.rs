//! Rootless builds: `ocibuild` run as an unprivileged user (the lab's
//! `OCIBUILD_TEST_ROOTLESS_USER`, with subordinate ids) re-enters itself in a user
//! namespace with the user's full ranges, builds any Dockerfile (`USER nobody`, `chown`,
//! `COPY --chown`, a base with many owners) with the overlay snapshotter, gives the image a
//! root build gives, keeps its files in the user's own directories and leaves nothing
//! running or mounted. A user without subordinate ids (`OCIBUILD_TEST_NOSUBID_USER`) is
//! told at the start what will fail and the fix.

use crate::common::*;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The lab user with subordinate ids.
fn rootless_user() -> String {
    lab_user("OCIBUILD_TEST_ROOTLESS_USER")
}

/// The lab user without subordinate ids.
fn nosubid_user() -> String {
    lab_user("OCIBUILD_TEST_NOSUBID_USER")
}

fn lab_user(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: start the test lab with `eval \"$(scripts/lab.sh env)\"`")
    })
}

/// A temporary directory for one rootless run: searchable by everyone, with `home/`
/// owned by `user` (its `HOME`; the XDG variables are unset, so their defaults are under
/// it) and a context `ctx/` with `Dockerfile` readable by everyone.
struct UserDir {
    dir: tempfile::TempDir,
    user: String,
}

impl UserDir {
    fn new(user: &str, dockerfile: &str, files: &[(&str, &str)]) -> UserDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let (uid, gid) = ids_of(user);
        std::os::unix::fs::chown(&home, Some(uid), Some(gid)).unwrap();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        for (name, content) in files {
            std::fs::write(ctx.join(name), content).unwrap();
        }
        run("chmod", &["-R", "a+rX", ctx.to_str().unwrap()]);
        UserDir {
            dir,
            user: user.to_string(),
        }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn ctx(&self) -> String {
        self.dir.path().join("ctx").to_string_lossy().into_owned()
    }

    /// `ocibuild ARGS` as the user, with a clean environment (`HOME`, `PATH`).
    fn command(&self, args: &[&str]) -> Command {
        self.wrapped(&[], args)
    }

    /// `ocibuild ARGS` as the user, started by `wrapper` (a command line that ends by
    /// running its arguments, which are setpriv's: see [`wrapped_in_shell`]).
    fn wrapped(&self, wrapper: &[&str], args: &[&str]) -> Command {
        let setpriv = [
            "setpriv",
            "--reuid",
            &self.user,
            "--regid",
            &self.user,
            "--init-groups",
        ];
        let mut argv: Vec<std::ffi::OsString> = wrapper.iter().map(Into::into).collect();
        argv.extend(setpriv.iter().map(Into::into));
        argv.push(binary_for_users().into());
        argv.extend(args.iter().map(Into::into));
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env_clear()
            .env("HOME", self.home())
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .current_dir(self.dir.path());
        cmd
    }

    fn ocibuild(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running setpriv")
    }

    /// `ocibuild build` of the context as the user, with `extra` flags.
    fn build(&self, extra: &[&str]) -> Output {
        let ctx = self.ctx();
        let mut args = vec!["build", "--no-push", "--insecure", ctx.as_str()];
        args.extend_from_slice(extra);
        self.ocibuild(&args)
    }
}

/// The uid and gid of `user`.
fn ids_of(user: &str) -> (u32, u32) {
    let id = |flag: &str| run("id", &[flag, user]).trim().parse::<u32>().unwrap();
    (id("-u"), id("-g"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(out: &Output) -> String {
    let log = stderr(out);
    assert!(out.status.success(), "ocibuild failed:\n{log}");
    log
}

/// The manifest digest an `--oci-layout-path` build wrote into `layout`.
fn layout_digest(layout: &Path) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The relative paths of everything under `dir`, two levels deep.
fn two_levels(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path
            .strip_prefix(dir)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if path.is_dir() && !path.is_symlink() {
            for inner in std::fs::read_dir(&path).unwrap() {
                let inner = inner.unwrap().file_name().to_string_lossy().into_owned();
                found.push(format!("{name}/{inner}"));
            }
        } else {
            found.push(name);
        }
    }
    found.sort();
    found
}

/// The exit status of `child`, which must end within `limit` (else it is killed and the
/// test fails).
fn wait_at_most(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("ocibuild did not stop within {limit:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

/// The host's mounts whose mount point or source mention `needle`.
fn mounts_with(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .map(String::from)
        .collect()
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_rootless_user_runs_as_nobody_chowns_and_copies_with_owners_on_overlay() {
    let dockerfile = format!(
        "FROM {}/busybox:latest\n\
         COPY --chown=1234:4321 f /owned\n\
         RUN test \"$(stat -c %u:%g /owned)\" = 1234:4321\n\
         RUN chown 1000:1000 /tmp && test \"$(stat -c %u:%g /tmp)\" = 1000:1000\n\
         USER nobody\n\
         RUN test \"$(id -u):$(id -g)\" = 65534:65534 && touch /tmp/by-nobody && \
             test \"$(stat -c %u /tmp/by-nobody)\" = 65534\n",
        registry()
    );
    let user = UserDir::new(&rootless_user(), &dockerfile, &[("f", "content\n")]);
    let log = assert_ok(&user.build(&["--insecure-pull"]));
    let snapshotter = log
        .lines()
        .find(|l| l.starts_with("snapshotter: "))
        .unwrap_or_else(|| panic!("no snapshotter line in:\n{log}"));
    assert!(
        snapshotter.starts_with("snapshotter: overlay") && snapshotter.contains("userxattr"),
        "overlay (userxattr) in the user namespace: {snapshotter}"
    );
    assert!(!log.contains("warning: building without root"), "{log}");
    // Everything the build kept is in the documented directories of the user's home.
    assert_eq!(
        two_levels(&user.home()),
        [".cache/ocibuild", ".local/share"],
        "{log}"
    );
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_rootless_build_of_a_base_with_many_owners_is_the_image_root_builds() {
    let dockerfile = format!(
        "FROM {}/layered:latest\n\
         COPY --chown=1234:4321 f /owned\n\
         RUN chown 1000:1000 /tmp\n\
         RUN mkdir -p /d/a /d/b && echo 1 > /d/a/f && chown -R 7:8 /d\n\
         RUN rm -rf /d && mkdir -p /d/c && ln /bin/busybox /d/c/bb && chmod u+s /d/c/bb\n\
         USER nobody\n\
         RUN id\n",
        registry()
    );
    let user = UserDir::new(&rootless_user(), &dockerfile, &[("f", "content\n")]);
    let out = user.dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let (uid, gid) = ids_of(&user.user);
    std::os::unix::fs::chown(&out, Some(uid), Some(gid)).unwrap();
    let layout = |name: &str| out.join(name).to_string_lossy().into_owned();
    let common = ["--insecure-pull", "--reproducible", "--oci-layout-path"];
    let overlay_log = assert_ok(&user.build(&[&common[..], &[&layout("overlay")]].concat()));
    assert!(
        overlay_log.contains("snapshotter: overlay"),
        "{overlay_log}"
    );
    let walk_log = assert_ok(
        &user.build(&[&common[..], &[&layout("walk"), "--snapshotter", "walk"]].concat()),
    );
    assert!(walk_log.contains("snapshotter: walk"), "{walk_log}");

    let root_store = tempfile::tempdir().unwrap();
    let ctx = user.ctx();
    let root_layout = layout("root");
    build_ok(&[
        "--no-push",
        "--insecure",
        ctx.as_str(),
        "--insecure-pull",
        "--reproducible",
        "--oci-layout-path",
        root_layout.as_str(),
        "--layer-store",
        root_store.path().to_str().unwrap(),
    ]);
    let root = layout_digest(Path::new(&root_layout));
    assert_eq!(
        layout_digest(&out.join("overlay")),
        root,
        "rootless overlay vs root"
    );
    assert_eq!(
        layout_digest(&out.join("walk")),
        root,
        "rootless walk vs root"
    );
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn ocibuild_unshare_runs_a_command_as_root_of_the_namespace_with_the_subordinate_ids() {
    let user = UserDir::new(&rootless_user(), "", &[]);
    let out = user.ocibuild(&[
        "unshare",
        "sh",
        "-c",
        "id -u; id -g; cat /proc/self/uid_map; echo $OCIBUILD_ROOTLESS; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let (uid, _) = ids_of(&user.user);
    let uid = uid.to_string();
    assert_eq!(lines[0], ["0"], "{stdout}");
    assert_eq!(lines[1], ["0"], "{stdout}");
    assert_eq!(
        lines[2],
        ["0", uid.as_str(), "1"],
        "root is the user: {stdout}"
    );
    assert_eq!(lines[3][0], "1", "then the subordinate ids: {stdout}");
    assert_eq!(lines[3][2], "65536", "{stdout}");
    assert_eq!(lines[4], ["1"], "{stdout}");

    // Root of the namespace is no host root: the host's files stay out of reach.
    let out = user.ocibuild(&["unshare", "sh", "-c", "cat /etc/shadow || touch /etc/x"]);
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(!Path::new("/etc/x").exists());
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn ocibuild_unshare_passes_a_terminating_signal_on_to_its_command() {
    let user = UserDir::new(&rootless_user(), "", &[]);
    let marker = unique_string("unshare-term");
    let script = format!(
        "trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.1; done # {marker}"
    );
    let mut child = user
        .command(&["unshare", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    // To the outer ocibuild (setpriv execs it), as a CI runner's timeout would send it.
    run("kill", &["-TERM", &child.id().to_string()]);
    let status = wait_at_most(&mut child, Duration::from_secs(10));
    let left = processes_with(&marker);
    if !left.is_empty() {
        // Orphaned by ocibuild: they would keep running (and hold stdout open).
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &marker])
            .status();
    }
    assert!(left.is_empty(), "the command outlived ocibuild: {left:?}");
    assert_eq!(status.code(), Some(7), "the command's own exit code");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(rest, "got TERM\n");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn without_subordinate_ids_the_build_says_once_what_fails_and_the_fix() {
    let dockerfile = format!(
        "FROM {}/busybox:latest\nRUN test \"$(id -u):$(stat -c %u /bin)\" = 0:0\nCOPY f /plain\n\
         COPY --chown=1234:4321 f /owned\n",
        registry()
    );
    let user = UserDir::new(&nosubid_user(), &dockerfile, &[("f", "x")]);
    let out = user.build(&["--insecure-pull"]);
    let log = stderr(&out);
    assert!(!out.status.success(), "{log}");
    let fix = format!(
        "usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {}",
        user.user
    );
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("warning: building without root"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning at the start:\n{log}");
    assert!(warnings[0].contains(&fix), "{log}");
    assert!(
        warnings[0].contains("USER nobody"),
        "says what fails: {log}"
    );
    // Root is mapped (to the user): RUN as root and a plain COPY work, on overlay.
    assert!(log.contains("snapshotter: overlay"), "{log}");
    assert!(
        log.contains("Dockerfile:4: COPY --chown=1234:4321"),
        "the failing step is named:\n{log}"
    );
    assert!(
        log.lines().last().unwrap().contains(&fix),
        "the error ends with the fix:\n{log}"
    );
}

/// A wrapper for [`UserDir::wrapped`]: `sh -c SCRIPT`, where the script ends with
/// `exec "$@"`.
fn wrapped_in_shell(script: &str) -> Vec<&str> {
    vec!["sh", "-c", script, "sh"]
}

/// The single warning a build without the full mapping starts with.
fn single_id_warning(log: &str) -> &str {
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("warning: building without root"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning at the start:\n{log}");
    warnings[0]
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn without_newuidmap_the_build_goes_on_as_root_mapped_alone_and_says_how_to_install_it() {
    let dockerfile = format!(
        "FROM {}/busybox:latest\nRUN test \"$(id -u)\" = 0\nCOPY f /f\n",
        registry()
    );
    let user = UserDir::new(&rootless_user(), &dockerfile, &[("f", "x")]);
    // /usr/bin (also /bin here) without the helpers, in a mount namespace of its own.
    let hide = user.dir.path().join("hide");
    for dir in ["upper", "work"] {
        std::fs::create_dir_all(hide.join(dir)).unwrap();
    }
    for helper in ["newuidmap", "newgidmap"] {
        let whiteout = hide.join("upper").join(helper);
        run("mknod", &[whiteout.to_str().unwrap(), "c", "0", "0"]);
    }
    let script = format!(
        "mount -t overlay overlay -o lowerdir=/usr/bin,upperdir={0}/upper,workdir={0}/work \
         /usr/bin && ! test -e /usr/bin/newuidmap && exec \"$@\"",
        hide.display()
    );
    let wrapper = [
        &["unshare", "--mount", "--propagation", "private", "--"][..],
        &wrapped_in_shell(&script),
    ]
    .concat();
    let ctx = user.ctx();
    let out = user
        .wrapped(
            &wrapper,
            &["build", "--no-push", "--insecure", "--insecure-pull", &ctx],
        )
        .output()
        .unwrap();
    let log = assert_ok(&out);
    let warning = single_id_warning(&log);
    assert!(
        warning.contains("newuidmap is not installed: install it with `apt install uidmap`"),
        "{log}"
    );
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn with_user_namespaces_switched_off_a_build_that_writes_files_fails_saying_why_and_the_fix() {
    let dockerfile = format!("FROM {}/busybox:latest\nCOPY f /f\n", registry());
    let user = UserDir::new(&rootless_user(), &dockerfile, &[("f", "x")]);
    // As root of a user namespace that maps every id to itself, whose own limit on
    // user namespaces is set to 0 before the build starts. The first shell waits for the
    // test to write the maps, the second one starts with root's capabilities there.
    let wrapper = [
        &[
            "unshare",
            "--user",
            "--",
            "sh",
            "-c",
            "read go && exec \"$@\"",
            "sh",
        ][..],
        &wrapped_in_shell("echo 0 > /proc/sys/user/max_user_namespaces && exec \"$@\""),
    ]
    .concat();
    let ctx = user.ctx();
    let mut child = user
        .wrapped(
            &wrapper,
            &["build", "--no-push", "--insecure", "--insecure-pull", &ctx],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap();
    let pid = child.id().to_string();
    let start = std::time::Instant::now();
    while ns(&pid) == ns("self") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "unshare never unshared"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for map in ["uid_map", "gid_map"] {
        std::fs::write(format!("/proc/{pid}/{map}"), "0 0 4294967295\n").unwrap();
    }
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"go\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let log = stderr(&out);
    assert!(!out.status.success(), "{log}");
    let fix = "unprivileged user namespaces are disabled (/proc/sys/user/max_user_namespaces \
               is 0): enable them with `sysctl -w user.max_user_namespaces=15000`";
    let warning = single_id_warning(&log);
    assert!(warning.contains(fix), "{log}");
    assert!(
        warning.contains("steps that write files and RUN steps fail"),
        "says what fails: {log}"
    );
    // Overlay needs a user namespace too: the walk takes over and says why.
    assert!(log.contains("snapshotter: walk"), "{log}");
    assert!(log.contains("Dockerfile:2: COPY f /f"), "{log}");
    assert!(
        log.lines().last().unwrap().contains(fix),
        "the error ends with the fix:\n{log}"
    );
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn sigterm_to_the_parent_stops_the_build_and_leaves_no_process_or_mount() {
    let marker = unique_string("sleep");
    let seconds = 1000 + marker.bytes().map(u32::from).sum::<u32>() % 1000;
    let dockerfile = format!(
        "FROM {}/busybox:latest\nRUN echo started && sleep {seconds}\n",
        registry()
    );
    let user = UserDir::new(&rootless_user(), &dockerfile, &[]);
    let ctx = user.ctx();
    let mut child = user
        .command(&["build", "--no-push", "--insecure", "--insecure-pull", &ctx])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = String::new();
    while !log.lines().any(|l| l == "started") {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("the RUN did not start:\n{log}"));
        log.push_str(&line);
        log.push('\n');
    }
    run("kill", &["-TERM", &child.id().to_string()]);
    let status = wait_at_most(&mut child, Duration::from_secs(120));
    assert_eq!(status.code(), Some(143), "the child's exit code:\n{log}");
    let sleep = format!("sleep {seconds}");
    let dir = user.dir.path().to_string_lossy().into_owned();
    assert_eq!(processes_with(&sleep), Vec::<String>::new());
    assert_eq!(processes_with(&dir), Vec::<String>::new());
    assert_eq!(mounts_with(&dir), Vec::<String>::new());
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_base_file_owned_by_an_id_beyond_the_ranges_fails_naming_it_and_the_fix() {
    let base = unique_repo("rootless-unmapped");
    let root_ctx = context_with(
        &format!(
            "FROM {}/busybox:latest\nRUN touch /far && chown 70000:70001 /far\n",
            registry()
        ),
        &[],
    );
    build_ok(&[
        root_ctx.path().to_str().unwrap(),
        "--insecure",
        "--insecure-pull",
        "--destination",
        &base,
    ]);
    let user = UserDir::new(&rootless_user(), &format!("FROM {base}\nRUN true\n"), &[]);
    let out = user.build(&["--insecure-pull"]);
    let log = stderr(&out);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("far: owner 70000:70001 is not mapped in this user namespace"),
        "{log}"
    );
    assert!(log.contains("usermod --add-subuids"), "{log}");
}
