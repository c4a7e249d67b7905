//! Looking a path up in a stack of lower directories the way overlayfs merges them,
//! without mounting: what a step's rootfs showed at that path before the step.

use std::fs::{self, Metadata};
use std::path::{Path, PathBuf};

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

/// One layer's directory merged into a directory of the lowers' tree.
#[derive(Debug, Clone)]
pub(crate) struct Level {
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

    /// The directories merged at the root: every layer's root.
    pub(crate) fn root_levels(&self) -> Vec<Level> {
        (0..self.layers.len())
            .map(|layer| Level { layer, x: false })
            .collect()
    }

    /// Looks `prefix` (a path of plain names) up in the directories of `levels`, those
    /// merged at its parent, so a walk down a tree looks each entry up once. Returns the
    /// directories merged at `prefix` (none unless it is a directory) and the host path
    /// and metadata of the top-most entry visible there, if any.
    ///
    /// This is overlayfs' lookup without redirects: the layers are searched top-most
    /// first; a whiteout ends the search, a non-directory is the answer and hides
    /// everything below it, and a directory merges with the directories below it up to
    /// the first opaque one.
    pub(crate) fn lookup(
        &self,
        levels: &[Level],
        prefix: &Path,
    ) -> Result<(Vec<Level>, Option<Found>)> {
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
