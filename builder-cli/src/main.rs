//! `ocibuild`: build OCI images from Dockerfiles without a daemon.

#![forbid(unsafe_code)]
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
    /// kaniko's executor: the same flags and defaults (also when this binary is invoked
    /// under the name `executor`), building in `/` when inside a container.
    #[command(args_conflicts_with_subcommands = true)]
    Executor(Box<ExecutorArgs>),
}

#[derive(Args, Debug)]
struct ExecutorArgs {
    #[command(subcommand)]
    command: Option<ExecutorCommand>,
    #[command(flatten)]
    build: BuildArgs,
}

#[derive(Subcommand, Debug)]
enum ExecutorCommand {
    /// Store registry credentials in $DOCKER_CONFIG/config.json (default /kaniko/.docker).
    Login(LoginArgs),
    /// Push an image already on disk (a `docker save`/`--tar-path` tarball or an OCI image
    /// layout directory, `DIR[:NAME]`) to registries.
    Push(PushArgs),
}

/// Registry connection flags shared by commands that only talk to registries.
#[derive(Args, Debug)]
struct RegistryTlsArgs {
    /// Use plain HTTP for every registry.
    #[arg(long)]
    insecure: bool,
    /// A registry to always use over plain HTTP; repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registries: Vec<String>,
    /// Skip TLS verification for every registry.
    #[arg(long)]
    skip_tls_verify: bool,
    /// Skip TLS verification for this registry; repeatable.
    #[arg(long = "skip-tls-verify-registry", value_name = "HOST[:PORT]")]
    skip_tls_verify_registry: Vec<String>,
    /// Trust this CA for a registry: `REGISTRY=PATH.pem`; repeatable.
    #[arg(long = "registry-certificate", value_name = "REGISTRY=PATH")]
    registry_certificates: Vec<String>,
    /// Client certificate for a registry (mTLS): `REGISTRY=CERT.pem,KEY.pem`; repeatable.
    #[arg(long = "registry-client-cert", value_name = "REGISTRY=CERT,KEY")]
    registry_client_certs: Vec<String>,
    /// Retries of a failing push.
    #[arg(long, value_name = "N", default_value = "0")]
    push_retry: u32,
}

impl RegistryTlsArgs {
    /// The registry client settings of these flags (credentials not included).
    fn client_options(&self) -> Result<ocibuild_registry::ClientOptions> {
        let mut options = ocibuild_registry::ClientOptions {
            insecure_all: self.insecure,
            insecure_registries: self.insecure_registries.clone(),
            skip_tls_verify: self.skip_tls_verify_registry.clone(),
            skip_tls_verify_all: self.skip_tls_verify,
            push_retries: self.push_retry,
            ..Default::default()
        };
        add_tls_files(
            &mut options,
            &self.registry_certificates,
            &self.registry_client_certs,
        )?;
        Ok(options)
    }
}

#[derive(Args, Debug)]
struct PushArgs {
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

#[derive(Args, Debug)]
struct LoginArgs {
    /// The registry (host[:port]).
    registry: String,
    /// User name.
    #[arg(short = 'u', long)]
    username: String,
    /// Password (prefer --password-stdin).
    #[arg(short = 'p', long)]
    password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
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
    /// Build context: a directory (`dir://` optional), `tar://PATH.tar[.gz]`, `tar://stdin`,
    /// `git://host/repo.git#REF#COMMIT`, `s3://bucket/key.tar.gz` or `https://…/ctx.tar.gz`
    /// (default: `.`; `/workspace/` for `executor`).
    #[arg(short = 'c', long, value_name = "CONTEXT")]
    context: Option<String>,
    /// Sub-directory of the context to build from.
    #[arg(long, value_name = "PATH")]
    context_sub_path: Option<String>,
    /// Git context options: `branch=..,single-branch=..,recurse-submodules=..,insecure-skip-tls=..`.
    #[arg(long, value_name = "OPTIONS")]
    git: Option<String>,
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
    #[arg(long, alias = "tarPath", value_name = "PATH")]
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
    /// How RUN steps are isolated (default: namespaces; for `executor` inside a
    /// container: none, building in `/` like kaniko).
    #[arg(long, value_enum)]
    isolation: Option<IsolationArg>,
    /// Grant an entitlement to the Dockerfile: `security.insecure` lets
    /// `RUN --security=insecure` run with every capability and no seccomp filter.
    #[arg(long, value_enum, value_name = "ENTITLEMENT")]
    allow: Vec<EntitlementArg>,
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
    /// Cache COPY/ADD layers (default true; false for `executor`, as kaniko).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    cache_copy_layers: Option<bool>,
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
    #[arg(long, alias = "whitelist-var-run", num_args = 0..=1, default_missing_value = "true", default_value = "true", action = ArgAction::Set)]
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
    /// Do not push layers to the cache repository (they are still looked up there).
    #[arg(long)]
    no_push_cache: bool,
    /// Skip TLS verification for every registry.
    #[arg(long)]
    skip_tls_verify: bool,
    /// Skip TLS verification when pulling base images.
    #[arg(long)]
    skip_tls_verify_pull: bool,
    /// Skip TLS verification for this registry; repeatable.
    #[arg(long = "skip-tls-verify-registry", value_name = "HOST[:PORT]")]
    skip_tls_verify_registry: Vec<String>,
    /// Trust this CA for a registry: `REGISTRY=PATH.pem`; repeatable.
    #[arg(long = "registry-certificate", value_name = "REGISTRY=PATH")]
    registry_certificates: Vec<String>,
    /// Client certificate for a registry (mTLS): `REGISTRY=CERT.pem,KEY.pem`; repeatable.
    #[arg(long = "registry-client-cert", value_name = "REGISTRY=CERT,KEY")]
    registry_client_certs: Vec<String>,
    /// A mirror for docker.io pulls; repeatable.
    #[arg(long = "registry-mirror", value_name = "HOST")]
    registry_mirrors: Vec<String>,
    /// Pull from replacements: `ORIGINAL=REPLACEMENT[;REPLACEMENT...]`; repeatable.
    #[arg(long = "registry-map", value_name = "ORIGINAL=REPLACEMENTS")]
    registry_maps: Vec<String>,
    /// Do not fall back to the original registry when mirrors/maps fail.
    #[arg(long)]
    skip_default_registry_fallback: bool,
    /// Retries of a failing push.
    #[arg(long, value_name = "N", default_value = "0")]
    push_retry: u32,
    /// Retries of a failing base image download.
    #[arg(long, value_name = "N", default_value = "0")]
    image_download_retry: u32,
    /// Log format: text, color or json.
    #[arg(long, value_enum, default_value = "color")]
    log_format: LogFormat,
    /// Prefix log lines with a timestamp.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false", action = ArgAction::Set)]
    log_timestamp: bool,
    /// With --isolation none: delete the built filesystem from / at the end.
    #[arg(long)]
    cleanup: bool,
    /// kaniko: snapshot mode (full, redo, time). ocibuild always compares inode, mode,
    /// owner, size, mtime and ctime, which is as exact as `full`; accepted for compatibility.
    #[arg(long, alias = "snapshotMode", value_name = "MODE")]
    snapshot_mode: Option<String>,
    /// kaniko flags ocibuild accepts but that change nothing in its builds (each is
    /// reported as a warning when given; see the README's executor table).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    compressed_caching: Option<bool>,
    /// See `--compressed-caching`.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    single_snapshot: Option<bool>,
    /// See `--compressed-caching` (ocibuild always skips stages the target does not need).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    skip_unused_stages: Option<bool>,
    /// See `--compressed-caching`.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    use_new_run: Option<bool>,
    /// See `--compressed-caching`.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    push_ignore_immutable_tag_errors: Option<bool>,
    /// See `--compressed-caching`.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    skip_push_permission_check: Option<bool>,
    /// See `--compressed-caching`.
    #[arg(long, value_name = "N")]
    image_fs_extract_retry: Option<u32>,
    /// See `--compressed-caching`.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    force_build_metadata: Option<bool>,
    /// See `--compressed-caching`.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    materialize: Option<bool>,
    /// With --isolation none: delete the filesystem of / (but the ignored paths) before
    /// building.
    #[arg(long)]
    pre_cleanup: bool,
    /// See `--compressed-caching` (ocibuild never deletes the context).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    preserve_context: Option<bool>,
    /// See `--compressed-caching` (ocibuild uses the docker-credential-* helpers named in
    /// config.json).
    #[arg(long = "credential-helpers", value_name = "NAMES")]
    credential_helpers: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Color,
    Json,
}

/// Which command line the build flags came from: their defaults differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Build,
    Executor,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ImageFormatArg {
    Docker,
    Oci,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum EntitlementArg {
    #[value(name = "security.insecure")]
    SecurityInsecure,
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
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked_as = argv
        .first()
        .and_then(|a| {
            std::path::Path::new(a)
                .file_name()
                .map(|n| n.to_os_string())
        })
        .unwrap_or_default();
    let own_subcommand = argv
        .get(1)
        .is_some_and(|a| ["build", "warm", "executor"].iter().any(|s| a == *s));
    if invoked_as == "executor" && !own_subcommand {
        argv.insert(1, "executor".into());
    }
    let cli = Cli::parse_from(argv);
    let result = match cli.command {
        Commands::Build(args) => run_build(*args, Mode::Build),
        Commands::Warm(args) => run_warm(args),
        Commands::Executor(args) => match args.command {
            Some(ExecutorCommand::Login(login)) => run_login(login),
            Some(ExecutorCommand::Push(push)) => run_push(push),
            None => run_build(args.build, Mode::Executor),
        },
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
    ocibuild_core::error::error_chain(err.as_ref())
}

fn run_build(args: BuildArgs, mode: Mode) -> Result<()> {
    let mut opts = build_options(&args, mode)?;
    let verbosity = args.verbosity;
    let mut log = Log {
        verbosity,
        format: args.log_format,
        timestamps: args.log_timestamp,
    };
    for warning in ignored_flag_warnings(&args) {
        log.event(BuildEvent::Warning(warning));
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    // A remote or archived context is made available as a directory first.
    let default_context = if mode == Mode::Executor {
        "/workspace/"
    } else {
        "."
    };
    let context_text = args.context.as_deref().unwrap_or(default_context);
    let source = ocibuild_core::context::parse_context(context_text).context("--context")?;
    let git = match &args.git {
        Some(text) => ocibuild_core::context::parse_git_options(text).context("--git")?,
        None => Default::default(),
    };
    let context_parent = match opts.isolation {
        Isolation::None => opts.kaniko_dir.clone(),
        _ => std::env::temp_dir(),
    };
    std::fs::create_dir_all(&context_parent)
        .with_context(|| format!("creating {}", context_parent.display()))?;
    let context_work = tempfile::Builder::new()
        .prefix("ocibuild-context-")
        .tempdir_in(&context_parent)
        .context("creating a directory for the build context")?;
    opts.context = runtime
        .block_on(ocibuild_core::context::prepare_context(
            &source,
            args.context_sub_path.as_deref(),
            &git,
            context_work.path(),
        ))
        .context("preparing the build context")?;
    if args.dryrun {
        print!("{}", ocibuild_core::output::dry_run(&opts)?);
        return Ok(());
    }
    if args.pre_cleanup {
        clean_root(&opts).context("--pre-cleanup")?;
    }
    let started = std::time::Instant::now();
    let out = runtime.block_on(ocibuild_core::build(&opts, &mut |e| log.event(e)));
    if args.cleanup {
        clean_root(&opts).context("--cleanup")?;
    }
    let out = out?;
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
        format: LogFormat::Text,
        timestamps: false,
    };
    runtime.block_on(ocibuild_core::warm::warm(&opts, &mut |e| log.event(e)))?;
    Ok(())
}

/// `--cleanup` / `--pre-cleanup`: with `--isolation none`, removes everything from `/`
/// except the ignored paths.
fn clean_root(opts: &BuildOptions) -> Result<()> {
    if opts.isolation != Isolation::None {
        bail!("only meaningful with --isolation none (building in /)");
    }
    let keep = [opts.context.clone()];
    let list = ocibuild_core::liveroot::ignore_list(&ocibuild_core::liveroot::IgnoreSpec {
        kaniko_dir: &opts.kaniko_dir,
        ignore_var_run: opts.ignore_var_run,
        extra: &opts.ignore_paths,
        keep: &keep,
    });
    let relative = ocibuild_core::liveroot::relative(&list);
    ocibuild_core::liveroot::delete_filesystem(std::path::Path::new("/"), &relative)
        .context("deleting the filesystem of /")
}

/// One warning per given kaniko flag that changes nothing in ocibuild, so none is ignored
/// silently.
fn ignored_flag_warnings(args: &BuildArgs) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut note = |given: bool, flag: &str, why: &str| {
        if given {
            warnings.push(format!("{flag} changes nothing in ocibuild: {why}"));
        }
    };
    note(
        args.compressed_caching.is_some(),
        "--compressed-caching",
        "layers are always streamed from disk, never held in memory",
    );
    note(
        args.single_snapshot.is_some(),
        "--single-snapshot",
        "every filesystem step is snapshotted into its own layer",
    );
    note(
        args.skip_unused_stages.is_some(),
        "--skip-unused-stages",
        "stages the target does not need are always skipped, as in BuildKit",
    );
    note(
        args.use_new_run.is_some(),
        "--use-new-run",
        "RUN is always snapshotted by comparing the filesystem",
    );
    note(
        args.push_ignore_immutable_tag_errors.is_some(),
        "--push-ignore-immutable-tag-errors",
        "a rejected tag push is reported as an error",
    );
    note(
        args.skip_push_permission_check.is_some(),
        "--skip-push-permission-check",
        "ocibuild does not check push permission before building",
    );
    note(
        args.image_fs_extract_retry.is_some(),
        "--image-fs-extract-retry",
        "layers are verified by digest when downloaded and unpacked once",
    );
    note(
        args.force_build_metadata.is_some(),
        "--force-build-metadata",
        "metadata-only instructions always get history entries",
    );
    note(
        args.materialize.is_some(),
        "--materialize",
        "the root filesystem is unpacked whenever a step needs it",
    );
    note(
        args.preserve_context.is_some(),
        "--preserve-context",
        "ocibuild never deletes the build context",
    );
    note(
        !args.credential_helpers.is_empty(),
        "--credential-helpers",
        "use docker-credential-* helpers through credHelpers/credsStore in config.json",
    );
    note(args.snapshot_mode.is_some(), "--snapshot-mode", "snapshots always compare inode, mode, owner, size, mtime and ctime (as exact as kaniko's full mode)");
    warnings
}

/// Splits `KEY=VALUE` (for `--registry-certificate` and friends).
fn split_pair<'a>(flag: &str, text: &'a str) -> Result<(&'a str, &'a str)> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k, v)),
        _ => bail!("{flag} {text:?}: expected REGISTRY=VALUE"),
    }
}

/// Adds `--registry-certificate REGISTRY=PATH` and `--registry-client-cert
/// REGISTRY=CERT,KEY` values to `options`.
fn add_tls_files(
    options: &mut ocibuild_registry::ClientOptions,
    certificates: &[String],
    client_certs: &[String],
) -> Result<()> {
    for text in certificates {
        let (registry, path) = split_pair("--registry-certificate", text)?;
        options
            .ca_certificates
            .push((registry.to_string(), PathBuf::from(path)));
    }
    for text in client_certs {
        let (registry, files) = split_pair("--registry-client-cert", text)?;
        let Some((cert, key)) = files.split_once(',') else {
            bail!("--registry-client-cert {text:?}: expected REGISTRY=CERT.pem,KEY.pem");
        };
        options.client_certificates.push((
            registry.to_string(),
            PathBuf::from(cert),
            PathBuf::from(key),
        ));
    }
    Ok(())
}

/// The registry client settings of the TLS, mirror and retry flags.
fn registry_options(args: &BuildArgs) -> Result<ocibuild_registry::ClientOptions> {
    let mut options = ocibuild_registry::ClientOptions {
        skip_tls_verify: args.skip_tls_verify_registry.clone(),
        skip_tls_verify_all: args.skip_tls_verify,
        mirrors: args.registry_mirrors.clone(),
        skip_default_registry_fallback: args.skip_default_registry_fallback,
        push_retries: args.push_retry,
        ..Default::default()
    };
    options.retries = options.retries.max(args.image_download_retry);
    add_tls_files(
        &mut options,
        &args.registry_certificates,
        &args.registry_client_certs,
    )?;
    for text in &args.registry_maps {
        let (original, replacements) = split_pair("--registry-map", text)?;
        let replacements = replacements
            .split(';')
            .filter(|r| !r.is_empty())
            .map(str::to_string)
            .collect();
        options
            .registry_map
            .push((original.to_string(), replacements));
    }
    Ok(options)
}

/// `executor login`: adds the credentials to `$DOCKER_CONFIG/config.json` (default
/// `/kaniko/.docker/config.json`), keeping everything else in the file.
fn run_login(args: LoginArgs) -> Result<()> {
    use std::io::Read;
    let password = match (&args.password, args.password_stdin) {
        (Some(p), false) => p.clone(),
        (None, true) => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the password from standard input")?;
            text.trim_end_matches(['\n', '\r']).to_string()
        }
        _ => bail!("pass exactly one of --password and --password-stdin"),
    };
    let dir = std::env::var_os("DOCKER_CONFIG")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/kaniko/.docker"));
    let path = dir.join("config.json");
    let mut config: serde_json::Value = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{}:{password}", args.username),
    );
    let Some(object) = config.as_object_mut() else {
        bail!("{} does not hold a JSON object", path.display());
    };
    let auths = object
        .entry("auths")
        .or_insert_with(|| serde_json::json!({}));
    let Some(auths) = auths.as_object_mut() else {
        bail!("{}: \"auths\" is not an object", path.display());
    };
    auths.insert(args.registry.clone(), serde_json::json!({ "auth": auth }));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&config)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "login succeeded: credentials for {} stored in {}",
        args.registry,
        path.display()
    );
    Ok(())
}

/// `executor push`: pushes a tarball or OCI layout to every destination, printing
/// `pushed REF@DIGEST` for each on standard output.
fn run_push(args: PushArgs) -> Result<()> {
    let docker_config = std::env::var_os("DOCKER_CONFIG")
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join("config.json"))
        .unwrap_or_else(|| PathBuf::from("/kaniko/.docker/config.json"));
    let mut client = args.registry.client_options()?;
    client.docker_config = ocibuild_registry::DockerConfig::load(Some(&docker_config))
        .context("reading registry credentials")?;
    let opts = ocibuild_core::pushimage::PushOptions {
        source: args.path,
        destinations: args.destinations,
        digest_file: args.digest_file,
        client,
        work_dir: args.work_dir,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(ocibuild_core::pushimage::push_image(
        &opts,
        &mut |dest, digest| {
            let name = ocibuild_registry::Reference {
                digest: None,
                ..dest.clone()
            };
            println!("pushed {name}@{digest}");
        },
    ))?;
    Ok(())
}

fn build_options(args: &BuildArgs, mode: Mode) -> Result<BuildOptions> {
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
    let mut opts = BuildOptions::default();
    opts.context = PathBuf::from(".");
    opts.dockerfile = args.dockerfile.clone();
    opts.destinations = args.destinations.clone();
    opts.build_args = build_args;
    opts.labels = labels;
    opts.target = args.target.clone();
    opts.no_push = args.no_push;
    opts.tar_path = args.tar_path.clone();
    opts.digest_file = args.digest_file.clone();
    opts.insecure = args.insecure;
    opts.insecure_pull = args.insecure_pull;
    opts.insecure_registries = args.insecure_registries.clone();
    opts.docker_config = match (mode, std::env::var_os("DOCKER_CONFIG")) {
        (Mode::Executor, None) => Some(PathBuf::from("/kaniko/.docker/config.json")),
        _ => None,
    };
    opts.isolation = match args.isolation.unwrap_or(match mode {
        Mode::Executor if ocibuild_core::liveroot::in_container() => IsolationArg::None,
        _ => IsolationArg::Namespaces,
    }) {
        IsolationArg::Namespaces => Isolation::Namespaces,
        IsolationArg::Chroot => Isolation::Chroot,
        IsolationArg::None => Isolation::None,
    };
    opts.allow_insecure = args.allow.contains(&EntitlementArg::SecurityInsecure);
    opts.compression = compression;
    opts.reproducible = args.reproducible;
    opts.platform = args.platform.clone();
    opts.work_dir = args.work_dir.clone();
    opts.cache = args.cache;
    opts.cache_repo = args.cache_repo.clone();
    opts.cache_dir = args.cache_dir.clone();
    opts.cache_dir_max_size = args
        .cache_dir_max_size
        .as_deref()
        .map(ocibuild_core::cache::parse_size)
        .transpose()
        .context("--cache-dir-max-size")?;
    opts.cache_ttl = ocibuild_core::cache::parse_ttl(&args.cache_ttl).context("--cache-ttl")?;
    opts.cache_run_layers = args.cache_run_layers;
    opts.cache_copy_layers = args.cache_copy_layers.unwrap_or(mode == Mode::Build);
    opts.cache_mounts_dir = args.cache_mounts_dir.clone();
    opts.secrets = args
        .secrets
        .iter()
        .map(|s| ocibuild_core::mounts::parse_secret_flag(s).context("--secret"))
        .collect::<Result<Vec<_>>>()?;
    opts.kaniko_dir = args.kaniko_dir.clone();
    opts.ignore_paths = args.ignore_paths.clone();
    opts.ignore_var_run = args.ignore_var_run;
    opts.force = args.force;
    opts.registry = registry_options(args)?;
    opts.skip_tls_verify_pull = args.skip_tls_verify_pull;
    opts.no_push_cache = args.no_push_cache;
    opts.oci_layout_path = args.oci_layout_path.clone();
    opts.image_name_with_digest_file = args.image_name_with_digest_file.clone();
    opts.image_name_tag_with_digest_file = args.image_name_tag_with_digest_file.clone();
    opts.annotations = ocibuild_core::output::parse_annotations(&args.annotations)?;
    opts.image_format = args.image_format.map(|f| match f {
        ImageFormatArg::Docker => ocibuild_core::image::ImageFormat::Docker,
        ImageFormatArg::Oci => ocibuild_core::image::ImageFormat::Oci,
    });
    Ok(opts)
}

/// Prints build events as a step-by-step log on stderr: plain text, text with colour, or
/// one JSON object per line (`--log-format`), optionally timestamped.
struct Log {
    verbosity: Verbosity,
    format: LogFormat,
    timestamps: bool,
}

impl Log {
    fn event(&mut self, event: BuildEvent) {
        let info = self.verbosity >= Verbosity::Info;
        let (level, text) = match event {
            BuildEvent::Step {
                number,
                total,
                stage,
                instruction,
            } if info => {
                let first_line = instruction.lines().next().unwrap_or_default();
                (
                    "info",
                    format!("[{number}/{total}] (stage {stage}) {first_line}"),
                )
            }
            BuildEvent::Output(bytes) if info => {
                if self.format == LogFormat::Json {
                    let text = String::from_utf8_lossy(&bytes);
                    ("info", text.trim_end_matches('\n').to_string())
                } else {
                    let _ = std::io::stderr().write_all(&bytes);
                    return;
                }
            }
            BuildEvent::StepDone { elapsed, layer, .. } if info => match layer {
                Some((digest, size)) => (
                    "info",
                    format!(
                        "      -> layer {} ({}), {:.2}s",
                        short(&digest),
                        human_size(size),
                        elapsed.as_secs_f64()
                    ),
                ),
                None => (
                    "info",
                    format!("      -> no layer, {:.2}s", elapsed.as_secs_f64()),
                ),
            },
            BuildEvent::Cache { key, hit } if info => (
                "info",
                format!("      CACHE {} {key}", if hit { "HIT" } else { "MISS" }),
            ),
            BuildEvent::Pulled { reference, digest } if info => {
                ("info", format!("      base {reference}@{digest}"))
            }
            BuildEvent::Pushed {
                destination,
                digest,
            } if info => ("info", format!("pushed {destination}@{digest}")),
            BuildEvent::Warning(text) if self.verbosity >= Verbosity::Warn => {
                ("warning", format!("warning: {text}"))
            }
            _ => return,
        };
        self.print(level, &text);
    }

    fn print(&self, level: &str, text: &str) {
        let time = ocibuild_core::time::now_rfc3339();
        match self.format {
            LogFormat::Json => {
                let line =
                    serde_json::json!({"level": level, "msg": text.trim_start(), "time": time});
                eprintln!("{line}");
            }
            LogFormat::Color | LogFormat::Text => {
                let stamp = if self.timestamps {
                    format!("{time} ")
                } else {
                    String::new()
                };
                let colour = self.format == LogFormat::Color
                    && std::io::IsTerminal::is_terminal(&std::io::stderr());
                if colour && level == "warning" {
                    eprintln!("{stamp}\x1b[33m{text}\x1b[0m");
                } else {
                    eprintln!("{stamp}{text}");
                }
            }
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
