//! Looking a path up in a stack of lower directories the way overlayfs merges them,
//! without mounting: what a step's rootfs showed at that path before the step.

use std::fs::{self, Metadata};
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::overlay::format::{kind_of, Kind};
use crate::rootpath::is_missing;

/// The lower directories of an overlay, top-most first.
#[derive(Debug, Clone)]
pub(crate) struct LowerStack {
    layers: Vec<PathBuf>,
}

/// An entry found in a layer: its host path and metadata.
pub(crate) type Found = (PathBuf, Metadata);

/// One layer's directory at the current level of a lookup.
struct Level {
    /// Index into [`LowerStack::layers`].
    layer: usize,
    /// Whether that directory is marked as holding xwhiteouts.
    x: bool,
}

impl LowerStack {
    /// A stack of `layers`, top-most first.
    pub(crate) fn new(layers: Vec<PathBuf>) -> LowerStack {
        LowerStack { layers }
    }

    /// Where the merged lower directories show `rel` (a relative path of plain names):
    /// the host path of the top-most entry that is visible there and its metadata, or
    /// `None` when nothing is (missing, whited out, or below a non-directory).
    ///
    /// This is overlayfs' lookup without redirects: per path component, the layers are
    /// searched top-most first; a whiteout ends the search, a non-directory is the answer
    /// and hides everything below it, and a directory merges with the directories below it
    /// up to the first opaque one.
    pub(crate) fn find(&self, rel: &Path) -> Result<Option<Found>> {
        let mut levels: Vec<Level> = (0..self.layers.len())
            .map(|layer| Level { layer, x: false })
            .collect();
        let mut prefix = PathBuf::new();
        let mut found = None;
        for component in rel.components() {
            let Component::Normal(name) = component else {
                return Err(Error::UnsafePath {
                    path: rel.to_path_buf(),
                    reason: "not a path of plain names".into(),
                });
            };
            if matches!(&found, Some((_, meta)) if !Metadata::is_dir(meta)) {
                return Ok(None);
            }
            prefix.push(name);
            let (next, top) = self.step(&levels, &prefix)?;
            let Some(top) = top else { return Ok(None) };
            levels = next;
            found = Some(top);
        }
        match found {
            Some(found) => Ok(Some(found)),
            None => self.root(),
        }
    }

    /// The top-most layer's root directory (the merged root takes its attributes).
    fn root(&self) -> Result<Option<Found>> {
        let Some(top) = self.layers.first() else {
            return Ok(None);
        };
        let meta = fs::metadata(top).map_err(|e| Error::io(top, "stat", e))?;
        Ok(Some((top.clone(), meta)))
    }

    /// Looks `prefix` up in the directories of `levels` (those of its parent). Returns
    /// the directories merged at `prefix` and the top-most visible entry there.
    fn step(&self, levels: &[Level], prefix: &Path) -> Result<(Vec<Level>, Option<Found>)> {
        let mut next = Vec::new();
        let mut top: Option<Found> = None;
        for level in levels {
            // Read only, in layer directories no command runs in: every component of
            // `prefix` but the last was found to be a directory of this layer.
            let host = self.layers[level.layer].join(prefix);
            let meta = match fs::symlink_metadata(&host) {
                Ok(meta) => meta,
                Err(e) if is_missing(&e) => continue,
                Err(e) => return Err(Error::io(&host, "lstat", e)),
            };
            let kind = kind_of(&host, &meta, level.x)?;
            let Kind::Dir { opaque, xwhiteouts } = kind else {
                // A whiteout, or a non-directory: the answer when nothing is above it,
                // ignored below a directory; either way the search stops.
                if top.is_none() && kind == Kind::Other {
                    top = Some((host, meta));
                }
                break;
            };
            if top.is_none() {
                top = Some((host, meta));
            }
            next.push(Level {
                layer: level.layer,
                x: xwhiteouts,
            });
            if opaque {
                break;
            }
        }
        Ok((next, top))
    }
}
