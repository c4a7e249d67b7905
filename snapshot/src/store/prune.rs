//! Listing the store, removing least recently used layers, and sweeping leftovers.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{checked_hex, lock, LayerStore};
use crate::error::{io_err, Error, Result};

/// One layer of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerEntry {
    /// Its diff ID.
    pub diff_id: String,
    /// Bytes it takes on disk (0 when its record is missing).
    pub size: u64,
    /// When it was last inserted or handed out (the Unix epoch when its record is missing).
    pub last_used: SystemTime,
}

/// Which layers [`LayerStore::prune`] removes: those any option asks for, unless in use.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Remove least recently used layers until the others take at most this many bytes.
    pub max_size: Option<u64>,
    /// Remove layers last used longer ago than this.
    pub older_than: Option<Duration>,
    /// Remove every layer.
    pub all: bool,
}

/// What [`LayerStore::prune`] did.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// The layers removed, least recently used first.
    pub removed: Vec<LayerEntry>,
    /// Layers that were to be removed but were in use (or used while pruning), so kept.
    pub in_use: Vec<LayerEntry>,
    /// Bytes freed: the sizes of the removed layers.
    pub freed: u64,
    /// Layers left in the store.
    pub remaining_layers: usize,
    /// Bytes the layers left take.
    pub remaining_bytes: u64,
}

/// The outcome of removing one layer.
enum Removal {
    Removed,
    /// In use, or used since it was listed.
    Kept,
    /// Removed by someone else meanwhile.
    Gone,
}

impl LayerStore {
    /// The layers in the store, least recently used first.
    pub fn layers(&self) -> Result<Vec<LayerEntry>> {
        let mut layers = Vec::new();
        for name in names(&self.layers_dir())? {
            let Ok(hex) = checked_hex(&format!("sha256:{name}")).map(str::to_string) else {
                continue;
            };
            if !self.is_present(&hex) {
                continue;
            }
            layers.push(LayerEntry {
                size: self.read_record(&hex).map_or(0, |r| r.size),
                last_used: self.last_used(&hex),
                diff_id: format!("sha256:{hex}"),
            });
        }
        layers.sort_by(|a, b| (a.last_used, &a.diff_id).cmp(&(b.last_used, &b.diff_id)));
        Ok(layers)
    }

    /// Removes the layers `options` ask for, least recently used first, skipping those in
    /// use; leftovers of killed processes go too. Safe while builds use the store.
    pub fn prune(&self, options: &PruneOptions) -> Result<PruneReport> {
        self.sweep()?;
        let layers = self.layers()?;
        let cutoff = options
            .older_than
            .and_then(|age| SystemTime::now().checked_sub(age));
        let mut report = PruneReport {
            remaining_layers: layers.len(),
            remaining_bytes: layers.iter().map(|l| l.size).sum(),
            ..PruneReport::default()
        };
        for layer in layers {
            let old = cutoff.is_some_and(|cutoff| layer.last_used < cutoff);
            let over = options
                .max_size
                .is_some_and(|max| report.remaining_bytes > max);
            if !(options.all || old || over) {
                continue;
            }
            let removal = self.remove_layer(&layer)?;
            if let Removal::Removed | Removal::Gone = removal {
                report.remaining_layers -= 1;
                report.remaining_bytes = report.remaining_bytes.saturating_sub(layer.size);
            }
            match removal {
                Removal::Removed => {
                    report.freed += layer.size;
                    report.removed.push(layer);
                }
                Removal::Kept => report.in_use.push(layer),
                Removal::Gone => {}
            }
        }
        Ok(report)
    }

    /// Removes `layer` unless someone holds it or used it since it was listed.
    fn remove_layer(&self, layer: &LayerEntry) -> Result<Removal> {
        let hex = checked_hex(&layer.diff_id)?;
        let Some(_lock) = lock::try_lock(&self.use_lock(hex), lock::Kind::Exclusive)? else {
            return Ok(Removal::Kept);
        };
        if !self.is_present(hex) {
            self.forget(hex)?;
            return Ok(Removal::Gone);
        }
        if self.last_used(hex) != layer.last_used {
            return Ok(Removal::Kept);
        }
        let trash = self.temp_path(hex, "");
        let path = self.layer_path(hex);
        fs::rename(&path, &trash).map_err(io_err(&path, "move out of the store"))?;
        self.remove_temp(&trash)?;
        self.forget(hex)?;
        Ok(Removal::Removed)
    }

    /// Removes what killed processes left: their step directories, directories and files
    /// in `tmp/`, and records and lock files of layers that are not there. Leftovers of a layer being inserted
    /// (its use lock is held) are left alone.
    pub(super) fn sweep(&self) -> Result<()> {
        self.sweep_steps()?;
        let mut leftovers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for name in names(&self.tmp_dir())? {
            if let Some(hex) = hex_prefix(&name) {
                leftovers.entry(hex).or_default().push(name);
            }
        }
        for dir in [self.meta_dir(), self.locks_dir()] {
            for name in names(&dir)? {
                match hex_prefix(&name) {
                    Some(hex) if !self.is_present(&hex) => leftovers.entry(hex).or_default(),
                    _ => continue,
                };
            }
        }
        for (hex, temps) in leftovers {
            let Some(_lock) = lock::try_lock(&self.use_lock(&hex), lock::Kind::Exclusive)? else {
                continue;
            };
            for name in temps {
                self.remove_temp(&self.tmp_dir().join(name))?;
            }
            if !self.is_present(&hex) {
                self.forget(&hex)?;
            }
        }
        Ok(())
    }

    /// Removes the record and lock files of the absent layer `hex`. The caller holds its
    /// use lock exclusively, so nobody else holds either lock.
    fn forget(&self, hex: &str) -> Result<()> {
        for path in [self.record(hex), self.insert_lock(hex), self.use_lock(hex)] {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(Error::io(&path, "remove", e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// When layer `hex` was last used: its record's mtime (the epoch without a record).
    fn last_used(&self, hex: &str) -> SystemTime {
        fs::metadata(self.record(hex))
            .and_then(|m| m.modified())
            .unwrap_or(UNIX_EPOCH)
    }
}

/// The names in directory `dir` that are UTF-8 (the store makes no others).
pub(super) fn names(dir: &Path) -> Result<Vec<String>> {
    let entries = fs::read_dir(dir).map_err(io_err(dir, "read directory"))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(dir, "read directory"))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

/// The layer hex a store file name starts with (`<hex>.json`, `<hex>.<unique>`, ...).
fn hex_prefix(name: &str) -> Option<String> {
    let (hex, _) = name.split_once('.')?;
    checked_hex(&format!("sha256:{hex}"))
        .ok()
        .map(str::to_string)
}
