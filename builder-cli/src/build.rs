//! `ocibuild build` and `ocibuild executor` (without a subcommand): prepare the context,
//! build, push.

use crate::flags::logging::Verbosity;
use crate::flags::{BuildFlags, Mode};
use anyhow::{Context, Result};
use ocibuild_core::{clean_root, BuildEvent};
use tokio::runtime::Runtime;

/// Builds (or with `--dryrun` prints the plan) as the flags say, with the defaults of
/// `mode`.
pub fn run(args: BuildFlags, mode: Mode) -> Result<()> {
    let mut opts = args.options(mode)?;
    let mut log = crate::log::Log::from_flags(&args.logging);
    for warning in args.ignored.warnings() {
        log.event(BuildEvent::Warning(warning));
    }
    let runtime = Runtime::new().context("starting the async runtime")?;
    // Kept until the build is over: a fetched or extracted context lives in it.
    let context = runtime.block_on(args.source.context(mode)?.prepare(&opts))?;
    opts.context = context.path().to_path_buf();
    if args.outputs.dryrun {
        print!("{}", ocibuild_core::dry_run(&opts)?);
        return Ok(());
    }
    if args.root.pre_cleanup {
        clean_root(&opts).context("--pre-cleanup")?;
    }
    let started = std::time::Instant::now();
    let out = runtime.block_on(ocibuild_core::build(&opts, &mut |e| log.event(e)));
    if args.root.cleanup {
        clean_root(&opts).context("--cleanup")?;
    }
    let out = out?;
    if args.logging.verbosity >= Verbosity::Info {
        if opts.cache {
            eprintln!(
                "cache: {} hits, {} misses",
                out.cache_hits, out.cache_misses
            );
        }
        eprintln!(
            "built {} in {:.2}s ({} layers)",
            out.manifest_digest,
            started.elapsed().as_secs_f64(),
            out.layers().len()
        );
    }
    Ok(())
}
