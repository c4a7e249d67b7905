//! Rootless builds: a user who is not root re-enters `ocibuild` in a user namespace with
//! the subordinate ids of `/etc/subuid` and `/etc/subgid` (see
//! `ocibuild_isolation::rootless`), and `ocibuild unshare` runs a command there.

use anyhow::{bail, Context, Result};
use clap::Args;
use ocibuild_isolation::rootless::{self, Entry, Mode};
use std::ffi::OsString;
use std::process::Command;
use std::sync::OnceLock;

/// How this process builds, once [`enter`] has run.
static MODE: OnceLock<Mode> = OnceLock::new();

/// Enters the rootless user namespace when not root: `Some(code)` in the parent, which
/// then exits with the child's code; `None` to go on in this process.
pub fn enter() -> Result<Option<i32>> {
    match rootless::enter().context("entering the rootless user namespace")? {
        Entry::Exit(code) => Ok(Some(code)),
        Entry::Continue(mode) => {
            let _ = MODE.set(mode);
            Ok(None)
        }
    }
}

/// The warning a build without the full mapping starts with: why, what will fail, the
/// fix. `None` when the ids are all mapped (or this is root).
pub fn single_id_warning() -> Option<String> {
    match MODE.get()? {
        Mode::SingleId(why) => Some(format!(
            "building without root and without subordinate ids: {why}. Only root is mapped \
             (to you): RUN steps as another user (USER nobody), chown to another id, COPY \
             --chown and base-image files owned by other ids fail, and the images may differ \
             from a root build's"
        )),
        Mode::NoNamespace(why) => Some(format!(
            "building without root and without a user namespace: {why}. Nothing can be \
             owned by root here: steps that write files and RUN steps fail; only steps taken \
             from the layer cache work"
        )),
        Mode::Root | Mode::Namespace { .. } => None,
    }
}

/// The hint a failed command ends with without the full mapping: a step may have failed
/// for want of another id, and how to fix that. `None` otherwise.
pub fn failure_hint() -> Option<String> {
    match MODE.get()? {
        Mode::SingleId(why) => Some(format!(
            "if a step failed on a user or group id other than root (EPERM, EINVAL), that is \
             because only your own id is mapped: {why}"
        )),
        Mode::NoNamespace(why) => Some(format!(
            "steps that write files or run commands need root or a user namespace: {why}"
        )),
        Mode::Root | Mode::Namespace { .. } => None,
    }
}

/// `ocibuild unshare [COMMAND...]`.
#[derive(Args, Debug)]
pub struct UnshareArgs {
    /// The command to run as root of the rootless user namespace (`$SHELL` or /bin/sh
    /// when none), e.g. to inspect or remove files of the layer store owned by mapped ids.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    command: Vec<OsString>,
}

/// Runs `ocibuild unshare`: the command in the namespace [`enter`] entered; its exit code.
/// SIGINT, SIGTERM and SIGHUP sent to ocibuild are passed on to the command, which decides
/// how to end.
pub fn unshare(args: UnshareArgs) -> Result<i32> {
    if let Some(Mode::SingleId(why) | Mode::NoNamespace(why)) = MODE.get() {
        bail!("cannot enter the rootless user namespace: {why}");
    }
    let mut argv = args.command;
    if argv.is_empty() {
        argv.push(std::env::var_os("SHELL").unwrap_or_else(|| "/bin/sh".into()));
    }
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    rootless::run_forwarding(&mut command).with_context(|| format!("running {:?}", argv[0]))
}
