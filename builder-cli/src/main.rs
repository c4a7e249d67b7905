//! `ocibuild`: build OCI images from Dockerfiles without a daemon.
//!
//! One module per subcommand (`build`, `executor` with its `login` and `push`, `warm`,
//! `prune`, and `docs` for `completions` and `man`); the build flags, shared by `build` and
//! `executor`, are in `flags`, the checks before a build in `preflight`. This file only
//! parses the command line and dispatches.

#![forbid(unsafe_code)]

mod build;
mod diskfull;
mod docs;
mod executor;
mod flags;
mod interrupt;
mod log;
mod login;
mod preflight;
mod progress;
mod prune;
mod push;
mod rootless;
mod suggest;
mod warm;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::ffi::OsString;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ocibuild",
    version,
    about = "Build OCI images from Dockerfiles, without a daemon"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Build an image from a Dockerfile and push it; prints the image digest.
    Build(Box<build::BuildArgs>),
    /// Pre-fetch base images into a cache directory: kaniko's warmer (also when this
    /// binary is invoked under the name `warmer`).
    Warm(Box<warm::WarmArgs>),
    /// kaniko's executor: the same flags and defaults (also when this binary is invoked
    /// under the name `executor`), building in `/` when inside a container.
    #[command(args_conflicts_with_subcommands = true)]
    Executor(Box<executor::ExecutorArgs>),
    /// Free space in the layer store: remove extracted layers, least recently used first,
    /// never one a build is using.
    Prune(prune::PruneArgs),
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    Completions(docs::CompletionsArgs),
    /// Print the man page ocibuild(1), or write it and one page per subcommand into a
    /// directory.
    Man(docs::ManArgs),
    /// Run a command (a shell by default) as root of the user namespace a rootless build
    /// runs in, with your subordinate ids mapped, like `buildah unshare`: e.g. to inspect or
    /// remove files of your layer store owned by other ids.
    Unshare(rootless::UnshareArgs),
}

impl Commands {
    /// True for the commands that build or touch the layer store, which a user who is not
    /// root runs in the rootless user namespace.
    fn needs_namespace(&self) -> bool {
        !matches!(self, Commands::Completions(_) | Commands::Man(_))
    }
}

fn main() -> ExitCode {
    let cli = parse(arguments());
    if cli.command.needs_namespace() {
        match rootless::enter() {
            Ok(None) => {}
            Ok(Some(code)) => return exit_code(code),
            Err(err) => {
                log::print_error(&report(&err));
                return ExitCode::FAILURE;
            }
        }
    }
    let result = match cli.command {
        Commands::Build(args) => build::run_build(*args),
        Commands::Warm(args) => warm::run(*args),
        Commands::Executor(args) => executor::run(*args),
        Commands::Prune(args) => prune::run(args),
        Commands::Completions(args) => docs::completions(args, command()),
        Commands::Man(args) => docs::man(args, command()),
        Commands::Unshare(args) => rootless::unshare(args).map(|code| {
            if code != 0 {
                std::process::exit(code)
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            log::print_error(&report(&err));
            if let Some(hint) = rootless::failure_hint() {
                log::print_error(&hint);
            }
            ExitCode::FAILURE
        }
    }
}

/// The exit code `code` (0-255; anything else is a failure).
fn exit_code(code: i32) -> ExitCode {
    u8::try_from(code).map_or(ExitCode::FAILURE, ExitCode::from)
}

/// The command line, with `executor` (or `warm`) put in front when this binary was invoked
/// under the name `executor` (or `warmer`), as kaniko's, and not given one of its own
/// subcommands.
fn arguments() -> Vec<OsString> {
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    let invoked_as = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    let own_subcommand = argv
        .get(1)
        .is_some_and(|a| Cli::command().get_subcommands().any(|s| a == s.get_name()));
    let implied = match invoked_as.to_str() {
        Some("executor") => Some("executor"),
        Some("warmer") => Some("warm"),
        _ => None,
    };
    if let Some(command) = implied.filter(|_| !own_subcommand) {
        argv.insert(1, command.into());
    }
    argv
}

/// The command line definition, as `--help`, the man pages and the completions show it:
/// the kaniko flags that change nothing are listed under `executor` only, and `warm` shows
/// no push flags ([`warm::help`]).
fn command() -> clap::Command {
    Cli::command()
        .mut_subcommand("executor", flags::ignored::show)
        .mut_subcommand("warm", warm::help)
}

/// Parses the command line (exiting with clap's message when it is wrong, with the tip
/// of a misspelt flag from [`suggest`]).
fn parse(argv: Vec<OsString>) -> Cli {
    let matches = command()
        .try_get_matches_from(&argv)
        .unwrap_or_else(|err| suggest::closer_flag(err, command(), &argv).exit());
    Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.format(&mut command()).exit())
}

/// The error and those of its causes that its own message does not already include.
/// A full filesystem adds which directory is full and what to do ([`diskfull::hint`]).
fn report(err: &anyhow::Error) -> String {
    let text = ocibuild_core::error_chain(err.as_ref());
    match diskfull::hint(err) {
        Some(hint) => format!("{text}\n  {hint}"),
        None => text,
    }
}
