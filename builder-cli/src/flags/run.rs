//! Isolation & RUN flags: how RUN steps are isolated and what they are given.

use super::Mode;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use ocibuild_core::{BuildOptions, Isolation, SnapshotterChoice};
use std::path::PathBuf;

/// The sandbox of RUN steps, their entitlements and secrets, and the work directory.
#[derive(Args, Debug)]
#[command(next_help_heading = "Isolation & RUN")]
pub struct RunFlags {
    /// How RUN steps are isolated (default: namespaces; for `executor`: none, building in
    /// `/` like kaniko, which outside a container needs --force).
    #[arg(long, value_enum)]
    isolation: Option<IsolationArg>,
    /// Grant an entitlement to the Dockerfile: `security.insecure` lets
    /// `RUN --security=insecure` run with every capability and no seccomp filter.
    #[arg(long, value_enum, value_name = "ENTITLEMENT")]
    allow: Vec<EntitlementArg>,
    /// A secret for `RUN --mount=type=secret`: `id=NAME,src=FILE` or `id=NAME,env=VAR`;
    /// repeatable.
    #[arg(long = "secret", value_name = "id=NAME,src=FILE|env=VAR")]
    secrets: Vec<String>,
    /// Directory for root filesystems and layers (default: a temporary one, removed after).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// How each step's root filesystem is made and its changes found: `overlay` stacks
    /// the layer store's extracted layers under an overlayfs upper directory per step
    /// (a step costs what it changed); `walk` extracts them into a directory and compares
    /// lstat walks; `auto` takes overlay wherever it can be mounted and says in the log
    /// why when it falls back to walk. Building in / always walks /.
    #[arg(long, value_enum, value_name = "MODE", default_value = "auto")]
    snapshotter: SnapshotterArg,
}

/// `--snapshotter`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum SnapshotterArg {
    Auto,
    Overlay,
    Walk,
}

/// `--isolation`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum IsolationArg {
    Namespaces,
    Chroot,
    None,
}

/// `--allow`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum EntitlementArg {
    #[value(name = "security.insecure")]
    SecurityInsecure,
}

impl RunFlags {
    /// Sets the isolation (for `executor`: none), entitlements, secrets, work directory
    /// and snapshotter.
    pub fn apply(&self, opts: &mut BuildOptions, mode: Mode) -> Result<()> {
        opts.isolation = self.isolation(mode);
        opts.allow_insecure = self.allow.contains(&EntitlementArg::SecurityInsecure);
        opts.secrets = self
            .secrets
            .iter()
            .map(|s| ocibuild_core::parse_secret_flag(s).context("--secret"))
            .collect::<Result<Vec<_>>>()?;
        opts.work_dir = self.work_dir.clone();
        opts.snapshotter = match self.snapshotter {
            SnapshotterArg::Auto => SnapshotterChoice::Auto,
            SnapshotterArg::Overlay => SnapshotterChoice::Overlay,
            SnapshotterArg::Walk => SnapshotterChoice::Walk,
        };
        Ok(())
    }

    /// `--isolation`, or the default of `mode`: for `executor` building in `/` as kaniko
    /// does, also outside a container (where the build refuses it unless `--force`, as
    /// kaniko's "should only be run inside of a container").
    fn isolation(&self, mode: Mode) -> Isolation {
        let default = match mode {
            Mode::Executor => IsolationArg::None,
            Mode::Build => IsolationArg::Namespaces,
        };
        match self.isolation.unwrap_or(default) {
            IsolationArg::Namespaces => Isolation::Namespaces,
            IsolationArg::Chroot => Isolation::Chroot,
            IsolationArg::None => Isolation::None,
        }
    }
}
