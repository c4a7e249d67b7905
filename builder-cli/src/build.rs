//! `ocibuild build` and `ocibuild executor` (without a subcommand): prepare the context,
//! build, push.

use crate::flags::logging::Verbosity;
use crate::flags::root::clean_root;
use crate::flags::{BuildFlags, Mode};
use anyhow::{Context, Result};
use ocibuild_core::{BuildEvent, BuildOptions, Isolation};
use tokio::runtime::Runtime;

/// Builds (or with `--dryrun` prints the plan) as the flags say, with the defaults of
/// `mode`.
pub fn run(args: BuildFlags, mode: Mode) -> Result<()> {
    let mut opts = args.options(mode)?;
    let mut log = args.logging.log();
    for warning in args.ignored.warnings() {
        log.event(BuildEvent::Warning(warning));
    }
    let runtime = Runtime::new().context("starting the async runtime")?;
    // Kept until the build is over: the prepared context lives in it.
    let _context_work = prepare_context(&args, mode, &mut opts, &runtime)?;
    if args.outputs.dryrun {
        print!("{}", ocibuild_core::build::dry_run(&opts)?);
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
            out.image.layers.len()
        );
    }
    Ok(())
}

/// Makes a remote or archived context available as a directory (in a temporary
/// directory, returned, under the builder's own directory when building in `/`) and sets
/// it as `opts.context`.
fn prepare_context(
    args: &BuildFlags,
    mode: Mode,
    opts: &mut BuildOptions,
    runtime: &Runtime,
) -> Result<tempfile::TempDir> {
    let source = args.source.context_source(mode)?;
    let git = args.source.git_options()?;
    let parent = match opts.isolation {
        Isolation::None => opts.kaniko_dir.clone(),
        _ => std::env::temp_dir(),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let work = tempfile::Builder::new()
        .prefix("ocibuild-context-")
        .tempdir_in(&parent)
        .context("creating a directory for the build context")?;
    opts.context = runtime
        .block_on(ocibuild_core::context::prepare_context(
            &source,
            args.source.context_sub_path.as_deref(),
            &git,
            work.path(),
        ))
        .context("preparing the build context")?;
    Ok(work)
}
