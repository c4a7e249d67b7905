//! `ocibuild warm` (kaniko's warmer, also when this binary is invoked as `warmer`):
//! pre-fetches base images into a cache directory, named with `--image` or found in the FROM
//! lines of a `--dockerfile`, with kaniko's warmer flags and the executor's registry flags.

use crate::flags::logging::LoggingFlags;
use crate::flags::registry::RegistryFlags;
use crate::log::Log;
use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

/// The `warm` command line (kaniko's warmer flags).
#[derive(Args, Debug)]
pub struct WarmArgs {
    /// An image to fetch (all its layers, config and manifest); repeatable.
    #[arg(short = 'i', long = "image", value_name = "IMAGE")]
    image_flags: Vec<String>,
    /// Images to fetch, as --image.
    #[arg(value_name = "IMAGE")]
    images: Vec<String>,
    /// The cache directory to fill (a build's --cache-dir).
    #[arg(short = 'c', long, value_name = "DIR", default_value = "/cache")]
    cache_dir: PathBuf,
    /// Size limit of the cache directory (e.g. 10GB, 500MiB).
    #[arg(long, value_name = "SIZE")]
    cache_dir_max_size: Option<String>,
    /// Also fetch the images the FROM lines of this Dockerfile start from.
    #[arg(short = 'd', long, value_name = "PATH")]
    dockerfile: Option<PathBuf>,
    /// Build argument `KEY=VALUE` (or `KEY` to take it from the environment) for the
    /// Dockerfile's global ARGs; repeatable.
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    build_args: Vec<String>,
    /// Download every layer again, even those already in the cache directory.
    #[arg(short = 'f', long)]
    force: bool,
    /// Platform `os/arch[/variant]` to fetch (default: the host's).
    #[arg(
        long = "custom-platform",
        visible_alias = "customPlatform",
        alias = "platform",
        value_name = "OS/ARCH"
    )]
    platform: Option<String>,
    /// Download an image again (as --force) when its entry in the cache directory is
    /// older than this (e.g. 24h, 336h, 14d); younger ones are skipped [default: never]
    #[arg(long, value_name = "DURATION")]
    cache_ttl: Option<String>,
    /// Registry & TLS.
    #[command(flatten)]
    registry: RegistryFlags,
    /// Logging.
    #[command(flatten)]
    logging: LoggingFlags,
}

/// Fetches the images, logging as the logging flags say (each layer downloaded is a
/// `pulled` line at `debug`, a bar in the live view).
pub fn run(args: WarmArgs) -> Result<()> {
    let mut opts = ocibuild_core::WarmOptions::default();
    opts.cache_dir = args.cache_dir;
    opts.images = args.image_flags;
    opts.images.extend(args.images);
    opts.cache_dir_max_size = crate::flags::cache::parse_size(args.cache_dir_max_size.as_deref())?;
    opts.dockerfile = args.dockerfile;
    opts.build_args = crate::flags::source::parse_build_args(&args.build_args);
    opts.force = args.force;
    opts.cache_ttl = args
        .cache_ttl
        .as_deref()
        .map(ocibuild_cache::parse_ttl)
        .transpose()
        .context("--cache-ttl")?;
    opts.platform = args.platform;
    opts.registry = args.registry.pull_client_options()?;
    opts.docker_config = kaniko_docker_config();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let mut log = Log::from_flags(&args.logging);
    let started = std::time::Instant::now();
    let (mut images, mut layers) = (0, 0);
    runtime.block_on(ocibuild_core::warm(&opts, &mut |e| {
        match &e {
            ocibuild_core::BuildEvent::Pulled { .. } => images += 1,
            ocibuild_core::BuildEvent::BlobPulled { .. } => layers += 1,
            _ => {}
        }
        log.event(e)
    }))?;
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    log.finish(&format!(
        "warmed {} in {:.2}s ({} downloaded)",
        plural(images, "image"),
        started.elapsed().as_secs_f64(),
        plural(layers, "layer")
    ));
    Ok(())
}

/// The `warm` command as its `--help` shows it: the Registry & TLS flags it shares with
/// builds, without those about pushing (`--push-retry`, accepted and unused) and with
/// `--insecure` described for pulls.
pub fn help(command: clap::Command) -> clap::Command {
    command
        .mut_arg("push_retry", |arg| arg.hide(true))
        .mut_arg("insecure", |arg| {
            arg.help("Pull base images over plain HTTP (as --insecure-pull)")
        })
}

/// kaniko's credentials file, `/kaniko/.docker/config.json`, when `DOCKER_CONFIG` is not
/// set and it exists (else the usual places: `$DOCKER_CONFIG`, `~/.docker`, podman's).
fn kaniko_docker_config() -> Option<PathBuf> {
    let kaniko = Path::new("/kaniko/.docker/config.json");
    (std::env::var_os("DOCKER_CONFIG").is_none() && kaniko.is_file()).then(|| kaniko.into())
}
