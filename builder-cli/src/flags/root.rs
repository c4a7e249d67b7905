//! Flags of building in `/` (kaniko mode, `--isolation none`).

use clap::{ArgAction, Args};
use ocibuild_core::BuildOptions;
use std::path::PathBuf;

/// What of `/` is left alone, and whether `/` is cleaned before or after the build.
#[derive(Args, Debug)]
#[command(next_help_heading = "Building in / (kaniko mode, --isolation none)")]
pub struct RootFlags {
    /// With --isolation none: the builder's own directory, left alone (and holding the
    /// work directory).
    #[arg(long, value_name = "DIR", default_value = "/kaniko")]
    kaniko_dir: PathBuf,
    /// With --isolation none: a path of / to leave alone; repeatable.
    #[arg(long = "ignore-path", value_name = "PATH")]
    ignore_paths: Vec<PathBuf>,
    /// With --isolation none: leave /var/run alone.
    #[arg(long, alias = "whitelist-var-run", num_args = 0..=1, default_missing_value = "true", default_value = "true", action = ArgAction::Set)]
    ignore_var_run: bool,
    /// With --isolation none (the executor's default): build in / even outside a
    /// container, as kaniko's --force (overwrites this machine's files; the log warns).
    #[arg(long)]
    force: bool,
    /// With --isolation none: delete the built filesystem from / at the end.
    #[arg(long)]
    pub cleanup: bool,
    /// With --isolation none: delete the filesystem of / (but the ignored paths) before
    /// building.
    #[arg(long)]
    pub pre_cleanup: bool,
}

impl RootFlags {
    /// Sets the builder's directory, the ignored paths and `--force`.
    pub fn apply(&self, opts: &mut BuildOptions) {
        opts.kaniko_dir = self.kaniko_dir.clone();
        opts.ignore_paths = self.ignore_paths.clone();
        opts.ignore_var_run = self.ignore_var_run;
        opts.force = self.force;
    }
}
