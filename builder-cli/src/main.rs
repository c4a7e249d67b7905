//! `ocibuild`: build OCI images from Dockerfiles without a daemon.
//!
//! One module per subcommand (`build`, `executor` with its `login` and `push`, `warm`); the
//! build flags, shared by `build` and `executor`, are in `flags`. This file only parses the
//! command line and dispatches.

#![forbid(unsafe_code)]

mod build;
mod executor;
mod flags;
mod log;
mod login;
mod push;
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
    /// Build an image from a Dockerfile and push it.
    Build(Box<flags::BuildFlags>),
    /// Pre-fetch base images into a cache directory (the cache warmer).
    Warm(warm::WarmArgs),
    /// kaniko's executor: the same flags and defaults (also when this binary is invoked
    /// under the name `executor`), building in `/` when inside a container.
    #[command(args_conflicts_with_subcommands = true)]
    Executor(Box<executor::ExecutorArgs>),
}

fn main() -> ExitCode {
    let cli = parse(arguments());
    let result = match cli.command {
        Commands::Build(args) => build::run(*args, flags::Mode::Build),
        Commands::Warm(args) => warm::run(args),
        Commands::Executor(args) => executor::run(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", report(&err));
            ExitCode::FAILURE
        }
    }
}

/// The command line, with `executor` put in front when this binary was invoked under the
/// name `executor` (as kaniko's) and not given one of its own subcommands.
fn arguments() -> Vec<OsString> {
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    let invoked_as = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    let own_subcommand = argv
        .get(1)
        .is_some_and(|a| ["build", "warm", "executor"].iter().any(|s| a == *s));
    if invoked_as == "executor" && !own_subcommand {
        argv.insert(1, "executor".into());
    }
    argv
}

/// Parses the command line (exiting with clap's message when it is wrong). The kaniko
/// flags that change nothing are listed in `--help` under `executor` only.
fn parse(argv: Vec<OsString>) -> Cli {
    let command = Cli::command().mut_subcommand("executor", flags::ignored::show);
    let matches = command.get_matches_from(argv);
    Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.format(&mut Cli::command()).exit())
}

/// The error and those of its causes that its own message does not already include.
fn report(err: &anyhow::Error) -> String {
    ocibuild_core::error::error_chain(err.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `ocibuild ARGS...` or fails the test with clap's message.
    pub(crate) fn cli(args: &[&str]) -> Cli {
        let argv = std::iter::once("ocibuild").chain(args.iter().copied());
        let command = Cli::command().mut_subcommand("executor", flags::ignored::show);
        let matches = command.try_get_matches_from(argv).unwrap();
        Cli::from_arg_matches(&matches).unwrap()
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_op_flags_are_listed_under_executor_only() {
        let mut command = Cli::command().mut_subcommand("executor", flags::ignored::show);
        let executor = command.find_subcommand_mut("executor").unwrap();
        let executor_help = executor.render_long_help().to_string();
        let build = command.find_subcommand_mut("build").unwrap();
        let build_help = build.render_long_help().to_string();
        assert!(executor_help.contains("--compressed-caching"));
        assert!(executor_help.contains("--snapshot-mode"));
        assert!(!build_help.contains("--compressed-caching"));
        assert!(!build_help.contains("--snapshot-mode"));
        assert!(build_help.contains("Registry & TLS:"), "{build_help}");
    }

    #[test]
    fn build_and_executor_map_the_same_flags_with_their_own_defaults() {
        let args = ["--no-push", "--cache", "--compression", "zstd"];
        let Commands::Build(build) = cli(&[&["build"][..], &args].concat()).command else {
            panic!("not build");
        };
        let Commands::Executor(executor) = cli(&[&["executor"][..], &args].concat()).command else {
            panic!("not executor");
        };
        let build = build.options(flags::Mode::Build).unwrap();
        let executor = executor.flags().options(flags::Mode::Executor).unwrap();
        assert!(build.cache && executor.cache);
        assert!(build.cache_copy_layers);
        assert!(!executor.cache_copy_layers);
        assert_eq!(
            build.compression,
            ocibuild_core::Compression::Zstd { level: 3 }
        );
    }

    #[test]
    fn a_given_no_op_flag_is_warned_about() {
        let Commands::Build(build) = cli(&["build", "--no-push", "--use-new-run"]).command else {
            panic!("not build");
        };
        let warnings = build.ignored.warnings();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].starts_with("--use-new-run changes nothing"));
    }
}
