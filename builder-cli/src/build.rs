//! `ocibuild build` and `ocibuild executor` (without a subcommand): check, prepare the
//! context, build, push. The image digest is the only line on standard output (as
//! `docker build -q` and buildah print it); the log goes to standard error.

use crate::flags::{BuildFlags, Mode};
use crate::interrupt::Interrupts;
use crate::preflight;
use anyhow::{Context, Result};
use clap::Args;
use ocibuild_core::{clean_root, BuildEvent, BuildOptions, BuildOutput};
use tokio::runtime::Runtime;

/// The `build` command line: the build flags, and the context as docker's and buildah's
/// positional argument.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Build context, as --context (`docker build .`); not both.
    #[arg(value_name = "CONTEXT", conflicts_with = "context")]
    positional_context: Option<String>,
    #[command(flatten)]
    flags: BuildFlags,
}

/// Runs `ocibuild build`.
pub fn run_build(args: BuildArgs) -> Result<()> {
    let mut flags = args.flags;
    flags.source.set_context(args.positional_context);
    run(flags, Mode::Build)
}

/// Builds (or with `--dryrun` prints the plan) as the flags say, with the defaults of
/// `mode`.
pub fn run(args: BuildFlags, mode: Mode) -> Result<()> {
    let mut log = crate::log::Log::from_flags(&args.logging);
    let mut opts = args.options(mode)?;
    preflight::destinations(&opts)?;
    if !args.outputs.dryrun {
        if let Some(warning) = crate::rootless::single_id_warning() {
            log.event(BuildEvent::Warning(warning));
        }
        ocibuild_core::check_live_root(&opts)?;
    }
    for warning in args.ignored.warnings() {
        log.event(BuildEvent::Warning(warning));
    }
    let runtime = Runtime::new().context("starting the async runtime")?;
    let interrupts = Interrupts::install(&runtime).context("installing signal handlers")?;
    opts.cancel = interrupts.token();
    let out = build_interruptibly(&args, mode, &mut opts, &runtime, &interrupts, &mut log);
    if let Some(code) = interrupts.exit_code() {
        // The build has stopped and removed its temporary directories (and the context's).
        std::process::exit(code);
    }
    if let Some(out) = out? {
        println!("{}", out.manifest_digest);
    }
    Ok(())
}

/// The build (`None` for `--dryrun`, or when a signal stopped it before it started), on
/// `runtime`, stopped by `interrupts`: what [`run`] does after the checks.
fn build_interruptibly(
    args: &BuildFlags,
    mode: Mode,
    opts: &mut BuildOptions,
    runtime: &Runtime,
    interrupts: &Interrupts,
    log: &mut crate::log::Log,
) -> Result<Option<BuildOutput>> {
    if !args.outputs.dryrun && !args.outputs.skip_push_permission_check {
        let Some(checked) = interrupts.run(runtime, preflight::check_push_permission(opts)) else {
            return Ok(None);
        };
        checked?;
    }
    // Kept until the build is over: a fetched or extracted context lives in it.
    let prepare = args.source.context(mode)?.prepare(opts);
    let Some(context) = interrupts.run(runtime, prepare) else {
        return Ok(None);
    };
    let context = context?;
    opts.context = context.path().to_path_buf();
    if args.outputs.dryrun {
        print!("{}", ocibuild_core::dry_run(opts)?);
        return Ok(None);
    }
    if args.root.pre_cleanup {
        clean_root(opts).context("--pre-cleanup")?;
    }
    let started = std::time::Instant::now();
    let out = runtime.block_on(ocibuild_core::build(opts, &mut |e| log.event(e)));
    if args.root.cleanup {
        clean_root(opts).context("--cleanup")?;
    }
    if interrupts.exit_code().is_some() {
        return Ok(None);
    }
    let out = out?;
    log.built(&out, started.elapsed(), opts.cache);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{command, Cli, Commands};
    use clap::FromArgMatches;

    fn parse(argv: &[&str]) -> Result<BuildArgs, clap::Error> {
        let matches = command().try_get_matches_from(argv)?;
        match Cli::from_arg_matches(&matches)?.command {
            Commands::Build(args) => Ok(*args),
            _ => panic!("not a build"),
        }
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn build_takes_docker_s_spellings() {
        let args = parse(&[
            "ocibuild", "build", "ctx", "-t", "a:1", "--tag", "b:2", "-d", "c",
        ])
        .unwrap();
        assert_eq!(args.positional_context.as_deref(), Some("ctx"));
        assert_eq!(args.flags.outputs.destinations, ["a:1", "b:2", "c"]);
        assert!(!args.flags.outputs.skip_push_permission_check);
        let args = parse(&[
            "ocibuild",
            "build",
            "--file",
            "x/Containerfile",
            "--no-push",
        ]);
        let opts = args.unwrap().flags.options(Mode::Build).unwrap();
        assert_eq!(opts.dockerfile, std::path::Path::new("x/Containerfile"));
        let args = parse(&[
            "ocibuild",
            "build",
            "--skip-push-permission-check",
            "--no-push",
        ]);
        assert!(args.unwrap().flags.outputs.skip_push_permission_check);
        let both = parse(&["ocibuild", "build", "ctx", "--context", "ctx"]).unwrap_err();
        assert_eq!(both.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}
