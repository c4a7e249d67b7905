//! Context & Dockerfile flags.

use super::Mode;
use anyhow::{bail, Context, Result};
use clap::Args;
use ocibuild_core::{BuildOptions, GitOptions};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where the build context and Dockerfile are, and what the Dockerfile is given.
#[derive(Args, Debug)]
#[command(next_help_heading = "Context & Dockerfile")]
pub struct SourceFlags {
    /// Build context: a directory (`dir://` optional), `tar://PATH.tar[.gz]`, `tar://stdin`,
    /// `git://host/repo.git#REF#COMMIT`, `s3://bucket/key.tar.gz`, `gs://bucket/key.tar.gz`,
    /// `https://ACCOUNT.blob.core.windows.net/CONTAINER/key.tar.gz` (Azure) or
    /// `https://…/ctx.tar.gz` (default: `.`; `/workspace/` for `executor`).
    #[arg(short = 'c', long, value_name = "CONTEXT")]
    context: Option<String>,
    /// Sub-directory of the context to build from.
    #[arg(long, value_name = "PATH")]
    context_sub_path: Option<String>,
    /// Git context options: `branch=..,single-branch=..,recurse-submodules=..,insecure-skip-tls=..`.
    #[arg(long, value_name = "OPTIONS")]
    git: Option<String>,
    /// Dockerfile path (looked up in the context when relative and not found).
    #[arg(
        short = 'f',
        long,
        visible_alias = "file",
        default_value = "Dockerfile"
    )]
    dockerfile: PathBuf,
    /// Build argument `KEY=VALUE` (or `KEY` to take it from the environment); repeatable.
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    build_args: Vec<String>,
    /// Label `KEY=VALUE` added to the image; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Stage to build (default: the last).
    #[arg(long)]
    target: Option<String>,
    /// Target platform `os/arch[/variant]` (default: the host's).
    #[arg(long = "custom-platform", alias = "platform", value_name = "OS/ARCH")]
    platform: Option<String>,
}

/// `--build-arg` values as build args: `KEY=VALUE`, or `KEY` alone taking the value of the
/// environment variable, if set.
pub fn parse_build_args(args: &[String]) -> BTreeMap<String, Option<String>> {
    let mut build_args = BTreeMap::new();
    for arg in args {
        match arg.split_once('=') {
            Some((k, v)) => build_args.insert(k.to_string(), Some(v.to_string())),
            None => build_args.insert(arg.clone(), std::env::var(arg).ok()),
        };
    }
    build_args
}

impl SourceFlags {
    /// Sets the Dockerfile, build arguments, labels, target and platform (the context is
    /// `.` until [`SourceFlags::context`] has been prepared).
    pub fn apply(&self, opts: &mut BuildOptions) -> Result<()> {
        opts.context = PathBuf::from(".");
        opts.dockerfile = self.dockerfile.clone();
        opts.build_args = self.build_args();
        opts.labels = self.labels()?;
        opts.target = self.target.clone();
        opts.platform = self.platform.clone();
        Ok(())
    }

    /// Sets the context given as `build`'s positional argument (clap refuses it together
    /// with `--context`).
    pub fn set_context(&mut self, context: Option<String>) {
        if context.is_some() {
            self.context = context;
        }
    }

    /// The context to prepare: `--context` (or the default of `mode`) with
    /// `--context-sub-path` and `--git`.
    pub fn context(&self, mode: Mode) -> Result<ocibuild_core::Context> {
        let default = match mode {
            Mode::Executor => "/workspace/",
            Mode::Build => ".",
        };
        let text = self.context.as_deref().unwrap_or(default);
        let mut context = ocibuild_core::Context::url(text).git_options(self.git_options()?);
        if let Some(sub_path) = &self.context_sub_path {
            context = context.sub_path(sub_path);
        }
        Ok(context)
    }

    /// The `--git` options.
    fn git_options(&self) -> Result<GitOptions> {
        match &self.git {
            Some(text) => text.parse().context("--git"),
            None => Ok(GitOptions::default()),
        }
    }

    /// `--build-arg`s: `KEY` alone takes the value of the environment variable, if set.
    fn build_args(&self) -> BTreeMap<String, Option<String>> {
        parse_build_args(&self.build_args)
    }

    /// `--label`s as pairs.
    fn labels(&self) -> Result<Vec<(String, String)>> {
        self.labels
            .iter()
            .map(|l| match l.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                _ => bail!("--label {l:?}: expected KEY=VALUE"),
            })
            .collect()
    }
}
