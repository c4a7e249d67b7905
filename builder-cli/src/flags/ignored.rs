//! kaniko flags that ocibuild accepts but that change nothing in its builds. Each given one
//! is reported as a warning; `--help` lists them under `executor` only.

use clap::{ArgAction, Args, Command};

/// The accepted no-op flags (hidden outside `executor`, see [`show`]).
#[derive(Args, Debug)]
#[command(next_help_heading = "Accepted kaniko flags that change nothing")]
pub struct IgnoredFlags {
    /// kaniko: snapshot mode (full, redo, time). ocibuild always compares inode, mode,
    /// owner, size, mtime and ctime, which is as exact as `full`; accepted for compatibility.
    #[arg(long, alias = "snapshotMode", value_name = "MODE", hide = true)]
    snapshot_mode: Option<String>,
    /// kaniko flags ocibuild accepts but that change nothing in its builds (each is
    /// reported as a warning when given; see docs/executor.md).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set, hide = true)]
    compressed_caching: Option<bool>,
    /// See `--compressed-caching`.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set, hide = true)]
    single_snapshot: Option<bool>,
    /// See `--compressed-caching` (ocibuild always skips stages the target does not need).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set, hide = true)]
    skip_unused_stages: Option<bool>,
    /// See `--compressed-caching`.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set, hide = true)]
    use_new_run: Option<bool>,
    /// See `--compressed-caching`.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set, hide = true)]
    push_ignore_immutable_tag_errors: Option<bool>,
    /// See `--compressed-caching`.
    #[arg(long, value_name = "N", hide = true)]
    image_fs_extract_retry: Option<u32>,
    /// See `--compressed-caching`.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set, hide = true)]
    force_build_metadata: Option<bool>,
    /// See `--compressed-caching`.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set, hide = true)]
    materialize: Option<bool>,
    /// See `--compressed-caching` (ocibuild never deletes the context).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set, hide = true)]
    preserve_context: Option<bool>,
    /// See `--compressed-caching` (ocibuild uses the docker-credential-* helpers named in
    /// config.json).
    #[arg(long = "credential-helpers", value_name = "NAMES", hide = true)]
    credential_helpers: Vec<String>,
}

/// Each flag, with why it changes nothing, in the order of [`IgnoredFlags::given`].
const REASONS: [(&str, &str); 11] = [
    (
        "--compressed-caching",
        "layers are always streamed from disk, never held in memory",
    ),
    (
        "--single-snapshot",
        "every filesystem step is snapshotted into its own layer",
    ),
    (
        "--skip-unused-stages",
        "stages the target does not need are always skipped, as in BuildKit",
    ),
    (
        "--use-new-run",
        "RUN is always snapshotted by comparing the filesystem",
    ),
    (
        "--push-ignore-immutable-tag-errors",
        "a rejected tag push is reported as an error",
    ),
    (
        "--image-fs-extract-retry",
        "layers are verified by digest when downloaded and unpacked once",
    ),
    (
        "--force-build-metadata",
        "metadata-only instructions always get history entries",
    ),
    (
        "--materialize",
        "the root filesystem is unpacked whenever a step needs it",
    ),
    (
        "--preserve-context",
        "ocibuild never deletes the build context",
    ),
    (
        "--credential-helpers",
        "use docker-credential-* helpers through credHelpers/credsStore in config.json",
    ),
    (
        "--snapshot-mode",
        "snapshots always compare inode, mode, owner, size, mtime and ctime (as exact as kaniko's full mode)",
    ),
];

/// Lists the no-op flags in the `--help` of `command` (`executor`).
pub fn show(command: Command) -> Command {
    REASONS.iter().fold(command, |command, (flag, _)| {
        let id = flag.trim_start_matches("--").replace('-', "_");
        command.mut_arg(id, |arg| arg.hide(false))
    })
}

impl IgnoredFlags {
    /// One warning per given flag, so none is ignored silently.
    pub fn warnings(&self) -> Vec<String> {
        REASONS
            .iter()
            .zip(self.given())
            .filter(|(_, given)| *given)
            .map(|((flag, why), _)| format!("{flag} changes nothing in ocibuild: {why}"))
            .collect()
    }

    /// Whether each flag of [`REASONS`] was given.
    fn given(&self) -> [bool; 11] {
        [
            self.compressed_caching.is_some(),
            self.single_snapshot.is_some(),
            self.skip_unused_stages.is_some(),
            self.use_new_run.is_some(),
            self.push_ignore_immutable_tag_errors.is_some(),
            self.image_fs_extract_retry.is_some(),
            self.force_build_metadata.is_some(),
            self.materialize.is_some(),
            self.preserve_context.is_some(),
            !self.credential_helpers.is_empty(),
            self.snapshot_mode.is_some(),
        ]
    }
}
