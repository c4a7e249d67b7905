//! `ocibuild`: build OCI images from Dockerfiles without a daemon.

use anyhow::{bail, Context, Result};
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use ocibuild_core::{BuildEvent, BuildOptions, Compression, Isolation};
use std::io::Write;
use std::path::PathBuf;
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
    Build(Box<BuildArgs>),
    /// Pre-fetch base images into a cache directory (the cache warmer).
    Warm(WarmArgs),
}

#[derive(Args, Debug)]
struct WarmArgs {
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

#[derive(Args, Debug)]
struct BuildArgs {
    /// Build context directory.
    #[arg(short = 'c', long, default_value = ".")]
    context: PathBuf,
    /// Dockerfile path (looked up in the context when relative and not found).
    #[arg(short = 'f', long, default_value = "Dockerfile")]
    dockerfile: PathBuf,
    /// Registry reference to push to; repeat for several.
    #[arg(short = 'd', long = "destination", value_name = "REF")]
    destinations: Vec<String>,
    /// Build argument `KEY=VALUE` (or `KEY` to take it from the environment); repeatable.
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    build_args: Vec<String>,
    /// Label `KEY=VALUE` added to the image; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Stage to build (default: the last).
    #[arg(long)]
    target: Option<String>,
    /// Build without pushing.
    #[arg(long)]
    no_push: bool,
    /// Write the image as a `docker save`-style tarball to this path.
    #[arg(long, value_name = "PATH")]
    tar_path: Option<PathBuf>,
    /// Write the pushed manifest digest to this file.
    #[arg(long, value_name = "PATH")]
    digest_file: Option<PathBuf>,
    /// Push to (and pull from the destination registries over) plain HTTP.
    #[arg(long)]
    insecure: bool,
    /// Pull base images over plain HTTP.
    #[arg(long)]
    insecure_pull: bool,
    /// A registry to always use over plain HTTP; repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registries: Vec<String>,
    /// How RUN steps are isolated.
    #[arg(long, value_enum, default_value = "namespaces")]
    isolation: IsolationArg,
    /// Layer compression.
    #[arg(long, value_enum, default_value = "gzip")]
    compression: CompressionArg,
    /// Compression level (gzip 1-9, default 6; zstd 1-22, default 3).
    #[arg(long, value_name = "N")]
    compression_level: Option<i32>,
    /// Set every timestamp to the epoch so equal inputs give equal digests.
    #[arg(long)]
    reproducible: bool,
    /// Target platform `os/arch[/variant]` (default: the host's).
    #[arg(long = "custom-platform", alias = "platform", value_name = "OS/ARCH")]
    platform: Option<String>,
    /// Directory for root filesystems and layers (default: a temporary one, removed after).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Log level: panic, fatal, error, warn, info, debug or trace.
    #[arg(short = 'v', long, default_value = "info")]
    verbosity: Verbosity,
    /// Use the layer cache: unchanged steps are taken from it instead of running.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false", action = ArgAction::Set)]
    cache: bool,
    /// Registry repository for cached layers (default with --cache and no --cache-dir:
    /// <first destination>/cache).
    #[arg(long, value_name = "REGISTRY/REPO")]
    cache_repo: Option<String>,
    /// Local cache directory (e.g. on a PVC): cached layers with --cache, base image
    /// layers always; safe for several builds at once.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Size limit of --cache-dir; least recently used entries are evicted (e.g. 10GB).
    #[arg(long, value_name = "SIZE")]
    cache_dir_max_size: Option<String>,
    /// Entries in --cache-repo older than this are ignored.
    #[arg(long, value_name = "DURATION", default_value = "336h")]
    cache_ttl: String,
    /// Cache COPY/ADD layers.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "true", action = ArgAction::Set)]
    cache_copy_layers: bool,
    /// Cache RUN layers.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "true", action = ArgAction::Set)]
    cache_run_layers: bool,
    /// Directory for `RUN --mount=type=cache` (default: mounts/ in --cache-dir, else
    /// ~/.cache/ocibuild/mounts).
    #[arg(long, value_name = "DIR")]
    cache_mounts_dir: Option<PathBuf>,
    /// A secret for `RUN --mount=type=secret`: `id=NAME,src=FILE` or `id=NAME,env=VAR`;
    /// repeatable.
    #[arg(long = "secret", value_name = "id=NAME,src=FILE|env=VAR")]
    secrets: Vec<String>,
    /// With --isolation none: the builder's own directory, left alone (and holding the
    /// work directory).
    #[arg(long, value_name = "DIR", default_value = "/kaniko")]
    kaniko_dir: PathBuf,
    /// With --isolation none: a path of / to leave alone; repeatable.
    #[arg(long = "ignore-path", value_name = "PATH")]
    ignore_paths: Vec<PathBuf>,
    /// With --isolation none: leave /var/run alone.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "true", action = ArgAction::Set)]
    ignore_var_run: bool,
    /// With --isolation none: build in / even outside a container (overwrites this machine).
    #[arg(long)]
    force: bool,
    /// Also write the image as an OCI image layout into this directory (an existing layout
    /// gets the image added, named after the first destination's tag).
    #[arg(long, value_name = "DIR")]
    oci_layout_path: Option<PathBuf>,
    /// Write `REGISTRY/REPO@DIGEST` for each destination to this file.
    #[arg(long, value_name = "PATH")]
    image_name_with_digest_file: Option<PathBuf>,
    /// Write `REGISTRY/REPO:TAG@DIGEST` for each destination to this file.
    #[arg(long, value_name = "PATH")]
    image_name_tag_with_digest_file: Option<PathBuf>,
    /// Annotation `KEY=VALUE` on the image manifest; repeatable.
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    annotations: Vec<String>,
    /// Manifest and config media types (default: those of the base image; OCI for scratch).
    #[arg(long, value_enum, value_name = "FORMAT")]
    image_format: Option<ImageFormatArg>,
    /// Print the build plan (stages, bases, steps, what the target needs) and exit.
    #[arg(long, alias = "dry-run")]
    dryrun: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ImageFormatArg {
    Docker,
    Oci,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum IsolationArg {
    Namespaces,
    Chroot,
    None,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CompressionArg {
    Gzip,
    Zstd,
    Uncompressed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Verbosity {
    Panic,
    Fatal,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Commands::Build(args) => run_build(*args),
        Commands::Warm(args) => run_warm(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", report(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and those of its causes that its own message does not already include.
fn report(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
    }
    text
}

fn run_build(args: BuildArgs) -> Result<()> {
    let opts = build_options(&args)?;
    if args.dryrun {
        print!("{}", ocibuild_core::output::dry_run(&opts)?);
        return Ok(());
    }
    let verbosity = args.verbosity;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let started = std::time::Instant::now();
    let mut log = Log { verbosity };
    let out = runtime.block_on(ocibuild_core::build(&opts, &mut |e| log.event(e)))?;
    if verbosity >= Verbosity::Info {
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

fn run_warm(args: WarmArgs) -> Result<()> {
    let max_size = args
        .cache_dir_max_size
        .as_deref()
        .map(ocibuild_core::cache::parse_size)
        .transpose()
        .context("--cache-dir-max-size")?;
    let opts = ocibuild_core::warm::WarmOptions {
        cache_dir: args.cache_dir,
        images: args.images,
        cache_dir_max_size: max_size,
        insecure_pull: args.insecure_pull,
        insecure_registries: args.insecure_registries,
        platform: args.platform,
        docker_config: None,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let mut log = Log {
        verbosity: Verbosity::Info,
    };
    runtime.block_on(ocibuild_core::warm::warm(&opts, &mut |e| log.event(e)))?;
    Ok(())
}

fn build_options(args: &BuildArgs) -> Result<BuildOptions> {
    if args.destinations.is_empty() && !args.no_push && !args.dryrun {
        bail!("no --destination given: pass --destination REGISTRY/REPO:TAG, or --no-push (with --tar-path to keep the image)");
    }
    let mut build_args = std::collections::BTreeMap::new();
    for arg in &args.build_args {
        match arg.split_once('=') {
            Some((k, v)) => build_args.insert(k.to_string(), Some(v.to_string())),
            None => build_args.insert(arg.clone(), std::env::var(arg).ok()),
        };
    }
    let labels = args
        .labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("--label {l:?}: expected KEY=VALUE"),
        })
        .collect::<Result<Vec<_>>>()?;
    let compression = match (args.compression, args.compression_level) {
        (CompressionArg::Gzip, level) => {
            let level = level.unwrap_or(6);
            if !(1..=9).contains(&level) {
                bail!("--compression-level {level}: gzip takes 1 to 9");
            }
            Compression::Gzip {
                level: level as u32,
            }
        }
        (CompressionArg::Zstd, level) => Compression::Zstd {
            level: level.unwrap_or(3),
        },
        (CompressionArg::Uncompressed, _) => Compression::None,
    };
    Ok(BuildOptions {
        context: args.context.clone(),
        dockerfile: args.dockerfile.clone(),
        destinations: args.destinations.clone(),
        build_args,
        labels,
        target: args.target.clone(),
        no_push: args.no_push,
        tar_path: args.tar_path.clone(),
        digest_file: args.digest_file.clone(),
        insecure: args.insecure,
        insecure_pull: args.insecure_pull,
        insecure_registries: args.insecure_registries.clone(),
        docker_config: None,
        isolation: match args.isolation {
            IsolationArg::Namespaces => Isolation::Namespaces,
            IsolationArg::Chroot => Isolation::Chroot,
            IsolationArg::None => Isolation::None,
        },
        compression,
        reproducible: args.reproducible,
        platform: args.platform.clone(),
        work_dir: args.work_dir.clone(),
        cache: args.cache,
        cache_repo: args.cache_repo.clone(),
        cache_dir: args.cache_dir.clone(),
        cache_dir_max_size: args
            .cache_dir_max_size
            .as_deref()
            .map(ocibuild_core::cache::parse_size)
            .transpose()
            .context("--cache-dir-max-size")?,
        cache_ttl: ocibuild_core::cache::parse_ttl(&args.cache_ttl).context("--cache-ttl")?,
        cache_run_layers: args.cache_run_layers,
        cache_copy_layers: args.cache_copy_layers,
        cache_mounts_dir: args.cache_mounts_dir.clone(),
        secrets: args
            .secrets
            .iter()
            .map(|s| ocibuild_core::mounts::parse_secret_flag(s).context("--secret"))
            .collect::<Result<Vec<_>>>()?,
        kaniko_dir: args.kaniko_dir.clone(),
        ignore_paths: args.ignore_paths.clone(),
        ignore_var_run: args.ignore_var_run,
        force: args.force,
        oci_layout_path: args.oci_layout_path.clone(),
        image_name_with_digest_file: args.image_name_with_digest_file.clone(),
        image_name_tag_with_digest_file: args.image_name_tag_with_digest_file.clone(),
        annotations: ocibuild_core::output::parse_annotations(&args.annotations)?,
        image_format: args.image_format.map(|f| match f {
            ImageFormatArg::Docker => ocibuild_core::image::ImageFormat::Docker,
            ImageFormatArg::Oci => ocibuild_core::image::ImageFormat::Oci,
        }),
    })
}

/// Prints build events as a step-by-step log on stderr.
struct Log {
    verbosity: Verbosity,
}

impl Log {
    fn event(&mut self, event: BuildEvent) {
        let info = self.verbosity >= Verbosity::Info;
        match event {
            BuildEvent::Step {
                number,
                total,
                stage,
                instruction,
            } if info => {
                let first_line = instruction.lines().next().unwrap_or_default();
                eprintln!("[{number}/{total}] (stage {stage}) {first_line}");
            }
            BuildEvent::Output(bytes) if info => {
                let _ = std::io::stderr().write_all(&bytes);
            }
            BuildEvent::StepDone { elapsed, layer, .. } if info => match layer {
                Some((digest, size)) => eprintln!(
                    "      -> layer {} ({}), {:.2}s",
                    short(&digest),
                    human_size(size),
                    elapsed.as_secs_f64()
                ),
                None => eprintln!("      -> no layer, {:.2}s", elapsed.as_secs_f64()),
            },
            BuildEvent::Cache { key, hit } if info => {
                eprintln!("      CACHE {} {key}", if hit { "HIT" } else { "MISS" });
            }
            BuildEvent::Pulled { reference, digest } if info => {
                eprintln!("      base {reference}@{digest}");
            }
            BuildEvent::Pushed {
                destination,
                digest,
            } if info => eprintln!("pushed {destination}@{digest}"),
            BuildEvent::Warning(text) if self.verbosity >= Verbosity::Warn => {
                eprintln!("warning: {text}");
            }
            _ => {}
        }
    }
}

fn short(digest: &str) -> &str {
    let end = digest.len().min("sha256:".len() + 12);
    &digest[..end]
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
