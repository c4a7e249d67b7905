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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{command, Cli, Commands};
    use clap::FromArgMatches;

    fn build_flags(argv: &[&str]) -> BuildFlags {
        let matches = command().try_get_matches_from(argv).unwrap();
        match Cli::from_arg_matches(&matches).unwrap().command {
            Commands::Executor(args) => args.build,
            _ => panic!("not the executor"),
        }
    }

    #[test]
    fn cache_with_a_cache_dir_still_caches_layers_in_the_destinations_cache_repo() {
        let argv = [
            "ocibuild",
            "executor",
            "--cache=true",
            "--cache-dir=/cache",
            "-d",
            "127.0.0.1:5000/team/app:1",
            "-d",
            "127.0.0.1:5000/other:2",
        ];
        let opts = build_flags(&argv).options(Mode::Executor).unwrap();
        assert_eq!(
            opts.cache_repo.as_deref(),
            Some("127.0.0.1:5000/team/app/cache")
        );
        assert_eq!(
            opts.cache_dir.as_deref(),
            Some(std::path::Path::new("/cache"))
        );
        // `ocibuild build` keeps --cache-dir alone as its layer cache.
        let opts = build_flags(&argv).options(Mode::Build).unwrap();
        assert_eq!(opts.cache_repo, None);
        // An explicit --cache-repo wins; without --cache there is none.
        let mut explicit = argv.to_vec();
        explicit.push("--cache-repo=reg.example/c");
        let opts = build_flags(&explicit).options(Mode::Executor).unwrap();
        assert_eq!(opts.cache_repo.as_deref(), Some("reg.example/c"));
        let uncached: Vec<&str> = argv
            .iter()
            .copied()
            .filter(|a| *a != "--cache=true")
            .collect();
        let opts = build_flags(&uncached).options(Mode::Executor).unwrap();
        assert_eq!(opts.cache_repo, None);
    }
}
