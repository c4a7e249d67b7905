//! `executor push`: pushes an image already on disk (a tarball or an OCI image layout) to
//! every destination, printing `pushed REF@DIGEST` for each on standard output.

use crate::flags::registry::RegistryTlsArgs;
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

/// The `executor push` command line.
#[derive(Args, Debug)]
pub struct PushArgs {
    /// The image: a docker-archive tarball, or an OCI image layout directory (`DIR` with
    /// one image, or `DIR:NAME` for the entry named NAME).
    #[arg(value_name = "PATH")]
    path: String,
    /// Registry reference to push to; repeat for several.
    #[arg(short = 'd', long = "destination", value_name = "REF", required = true)]
    destinations: Vec<String>,
    /// Write the pushed manifest digest to this file.
    #[arg(long, value_name = "PATH")]
    digest_file: Option<PathBuf>,
    /// Where a tarball is extracted before pushing (default: the system's temporary
    /// directory).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    #[command(flatten)]
    registry: RegistryTlsArgs,
}

/// Pushes the image with the credentials of kaniko's config file.
pub fn run(args: PushArgs) -> Result<()> {
    let docker_config = crate::login::docker_config_dir().join("config.json");
    let mut client = args.registry.client_options()?;
    client.docker_config = ocibuild_registry::DockerConfig::load(Some(&docker_config))
        .context("reading registry credentials")?;
    let mut opts = ocibuild_core::PushOptions::default();
    opts.source = args.path;
    opts.destinations = args.destinations;
    opts.digest_file = args.digest_file;
    opts.client = client;
    opts.work_dir = args.work_dir;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(ocibuild_core::push_image(&opts, &mut |dest, digest| {
        let name = ocibuild_registry::Reference {
            digest: None,
            ..dest.clone()
        };
        println!("pushed {name}@{digest}");
    }))?;
    Ok(())
}
