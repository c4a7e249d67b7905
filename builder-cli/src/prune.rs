//! `ocibuild prune`: frees space in the layer store, least recently used layers first.

use anyhow::{Context, Result};
use clap::Args;
use ocibuild_cache as cache;
use ocibuild_image::time;
use ocibuild_snapshot::store::{default_store_dir, LayerEntry, LayerStore, PruneOptions};
use std::path::PathBuf;
use std::time::UNIX_EPOCH;

/// The `prune` command line.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// The layer store (default: layer-store/ in --cache-dir when given, else
    /// /var/lib/ocibuild as root, $XDG_DATA_HOME/ocibuild or ~/.local/share/ocibuild
    /// otherwise).
    #[arg(long, value_name = "DIR", conflicts_with = "cache_dir")]
    store: Option<PathBuf>,
    /// Prune the layer store of this cache directory (its layer-store/).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Remove least recently used layers until the store takes at most SIZE (e.g. 10G,
    /// 500MiB).
    #[arg(long, value_name = "SIZE")]
    max_size: Option<String>,
    /// Remove layers not used for DURATION (e.g. 72h, 90m).
    #[arg(long, value_name = "DURATION")]
    older_than: Option<String>,
    /// Remove every layer.
    #[arg(long)]
    all: bool,
}

/// Prunes the store and prints what was removed, what was kept because a build uses it,
/// and what is left. Layers in use are never removed.
pub fn run(args: PruneArgs) -> Result<()> {
    let dir = match args.store {
        Some(dir) => dir,
        None => default_store_dir(args.cache_dir.as_deref())
            .context("no layer store location: give --store (HOME is not set)")?,
    };
    let options = PruneOptions {
        max_size: args
            .max_size
            .as_deref()
            .map(cache::parse_size)
            .transpose()
            .context("--max-size")?,
        older_than: args
            .older_than
            .as_deref()
            .map(cache::parse_ttl)
            .transpose()
            .context("--older-than")?,
        all: args.all,
    };
    if !dir.is_dir() {
        println!("no layer store at {}", dir.display());
        return Ok(());
    }
    let store = LayerStore::open(&dir)
        .with_context(|| format!("opening the layer store {}", dir.display()))?;
    let report = store.prune(&options)?;
    for layer in &report.removed {
        println!("removed {}", describe(layer));
    }
    for layer in &report.in_use {
        println!("kept {}: in use", describe(layer));
    }
    if options.max_size.is_none() && options.older_than.is_none() && !options.all {
        println!("nothing to remove: give --max-size, --older-than or --all");
    }
    let layers = match report.remaining_layers {
        1 => "layer",
        _ => "layers",
    };
    println!(
        "freed {}; {} {layers} ({}) left in {}",
        cache::format_size(report.freed),
        report.remaining_layers,
        cache::format_size(report.remaining_bytes),
        dir.display()
    );
    Ok(())
}

/// `<diff_id> (<size>, last used <time>)`.
fn describe(layer: &LayerEntry) -> String {
    let secs = layer
        .last_used
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "{} ({}, last used {})",
        layer.diff_id,
        cache::format_size(layer.size),
        time::rfc3339(secs)
    )
}
