//! Cache flags: the layer cache (registry repository or directory) and its limits.

use super::Mode;
use anyhow::{Context, Result};
use clap::{ArgAction, Args};
use ocibuild_core::BuildOptions;
use std::path::PathBuf;

/// Which layers are cached, where, and for how long.
#[derive(Args, Debug)]
#[command(next_help_heading = "Cache")]
pub struct CacheFlags {
    /// Use the layer cache: unchanged steps are taken from it instead of running.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false", action = ArgAction::Set)]
    cache: bool,
    /// Registry repository for cached layers (default with --cache: <first
    /// destination>/cache; for `build` only without --cache-dir).
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
    /// Do not push layers to the cache repository (they are still looked up there).
    #[arg(long)]
    no_push_cache: bool,
    /// The layer store: base and cached layers extracted once, shared by later builds
    /// (default: layer-store/ in --cache-dir, else /var/lib/ocibuild as root or
    /// $XDG_DATA_HOME/ocibuild; building in /: in --cache-dir or the work directory).
    /// `ocibuild prune` trims it.
    #[arg(long, value_name = "DIR", env = "OCIBUILD_LAYER_STORE")]
    layer_store: Option<PathBuf>,
}

impl CacheFlags {
    /// Sets the cache settings (after the destinations); COPY/ADD layers are cached by
    /// default for `build` only.
    pub fn apply(&self, opts: &mut BuildOptions, mode: Mode) -> Result<()> {
        opts.cache = self.cache;
        opts.cache_repo = self.cache_repo(mode, &opts.destinations)?;
        opts.cache_dir = self.cache_dir.clone();
        opts.cache_dir_max_size = parse_size(self.cache_dir_max_size.as_deref())?;
        opts.cache_ttl = ocibuild_cache::parse_ttl(&self.cache_ttl).context("--cache-ttl")?;
        opts.cache_run_layers = self.cache_run_layers;
        opts.cache_copy_layers = self.cache_copy_layers.unwrap_or(mode == Mode::Build);
        opts.cache_mounts_dir = self.cache_mounts_dir.clone();
        opts.no_push_cache = self.no_push_cache;
        opts.layer_store = self.layer_store.clone();
        Ok(())
    }
}

impl CacheFlags {
    /// `--cache-repo`, or for `executor` with `--cache` kaniko's default
    /// `<first destination>/cache` even with `--cache-dir` (which kaniko only uses for base
    /// images; `build` then caches layers in the directory alone).
    fn cache_repo(&self, mode: Mode, destinations: &[String]) -> Result<Option<String>> {
        match (&self.cache_repo, destinations.first()) {
            (Some(repo), _) => Ok(Some(repo.clone())),
            (None, Some(dest)) if mode == Mode::Executor && self.cache => {
                Ok(Some(ocibuild_core::default_cache_repo(dest)?))
            }
            _ => Ok(None),
        }
    }
}

/// The bytes of a `--cache-dir-max-size` value (e.g. `10GB`), if given.
pub fn parse_size(text: Option<&str>) -> Result<Option<u64>> {
    text.map(ocibuild_cache::parse_size)
        .transpose()
        .context("--cache-dir-max-size")
}
