//! `ocibuild executor`: kaniko's executor, with its `login` and `push` subcommands. Without
//! a subcommand it builds, with kaniko's defaults (see [`Mode::Executor`]).

use crate::flags::{BuildFlags, Mode};
use crate::{build, login, push};
use anyhow::Result;
use clap::{Args, Subcommand};

/// The `executor` command line: a subcommand, or the build flags.
#[derive(Args, Debug)]
pub struct ExecutorArgs {
    #[command(subcommand)]
    command: Option<ExecutorCommand>,
    #[command(flatten)]
    build: BuildFlags,
}

#[derive(Subcommand, Debug)]
enum ExecutorCommand {
    /// Store registry credentials in $DOCKER_CONFIG/config.json (default /kaniko/.docker).
    Login(login::LoginArgs),
    /// Push an image already on disk (a `docker save`/`--tar-path` tarball or an OCI image
    /// layout directory, `DIR[:NAME]`) to registries.
    Push(push::PushArgs),
}

/// Runs `executor login`, `executor push`, or a build in executor mode.
pub fn run(args: ExecutorArgs) -> Result<()> {
    match args.command {
        Some(ExecutorCommand::Login(login)) => login::run(login),
        Some(ExecutorCommand::Push(push)) => push::run(push),
        None => build::run(args.build, Mode::Executor),
    }
}
