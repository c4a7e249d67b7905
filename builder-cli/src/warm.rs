//! `ocibuild warm` (kaniko's warmer): pre-fetches base images into a cache directory.

use crate::flags::logging::{LogFormat, Verbosity};
use crate::log::Log;
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

/// The `warm` command line.
#[derive(Args, Debug)]
pub struct WarmArgs {
    /// The cache directory to fill.
    #[arg(long, value_name = "DIR")]
    cache_dir: PathBuf,
    /// Images to fetch (all their layers, config and manifest).
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
    /// Size limit of the cache directory (e.g. 10GB, 500MiB).
    #[arg(long, value_name = "SIZE")]
    cache_dir_max_size: Option<String>,
    /// Pull over plain HTTP.
    #[arg(long)]
    insecure_pull: bool,
    /// A registry to always use over plain HTTP; repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registries: Vec<String>,
    /// Platform `os/arch[/variant]` to fetch (default: the host's).
    #[arg(long = "custom-platform", alias = "platform", value_name = "OS/ARCH")]
    platform: Option<String>,
}

/// Fetches the images, logging as text at info level.
pub fn run(args: WarmArgs) -> Result<()> {
    let mut opts = ocibuild_core::WarmOptions::default();
    opts.cache_dir = args.cache_dir;
    opts.images = args.images;
    opts.cache_dir_max_size = crate::flags::cache::parse_size(args.cache_dir_max_size.as_deref())?;
    opts.insecure_pull = args.insecure_pull;
    opts.insecure_registries = args.insecure_registries;
    opts.platform = args.platform;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let mut log = Log::new(Verbosity::Info, LogFormat::Text, false);
    runtime.block_on(ocibuild_core::warm(&opts, &mut |e| log.event(e)))?;
    Ok(())
}
