//! The layer cache: reusing the layer a Dockerfile step made in an earlier build.
//!
//! Every cacheable step (RUN, COPY, ADD, WORKDIR) gets a chained key — a sha256 hex string
//! computed from everything that decides the step's result — before it runs. The builder
//! asks the cache for that key; on a hit it takes the recorded layer instead of running the
//! step, on a miss it runs the step and stores the layer file under the key.
//!
//! Three stores exist and are meant to be used together, local first:
//!
//! * [`LocalCache`]: a directory, typically a volume shared by several build agents working
//!   at the same time. It also keeps base-image blobs, manifests and configs so that they
//!   are pulled once ([`LocalCache::blob`], [`LocalCache::image`]).
//! * [`RegistryCache`]: a registry repository (kaniko's `--cache-repo`); each entry is a
//!   one-layer image tagged with the key.
//! * [`LayoutCache`]: an OCI image layout directory (kaniko's `--cache-repo oci:DIR`,
//!   for air-gapped CI); each entry is a one-layer image named in `index.json` with the
//!   key as `org.opencontainers.image.ref.name`.
//!
//! Each is a [`CacheStore`]; [`LayerCache`] combines any number of them, so a new store is
//! a new implementation of that trait.
//!
//! # Directory layout of a [`LocalCache`]
//!
//! ```text
//! DIR/
//!   lock                  flock(2)ed shared by writers while a blob and what refers to it
//!                         appear, exclusive while orphans are collected and blobs evicted
//!   blobs/sha256/<hex>    content-addressed blobs: step layers and base-image layers
//!   keys/<key>.json       one entry per step key: a CachedLayer as JSON; its mtime is the
//!                         entry's last use (refreshed by every hit) and drives LRU eviction
//!   refs/<hex>            an empty file for each blob added with put_blob (a base-image
//!                         layer): that blob is kept for itself, no entry refers to it
//!   diffids/<hex>         the diff_id ocibuild computed for blob sha256:<hex> (a base
//!                         layer), so that a cached base layer is verified only once
//!   images/<hex>.json     {"manifest": base64, "config": base64} of a base image, named by
//!                         the manifest digest's hex
//!   tmp/<id>.writer       one per process writing into tmp/, flock(2)ed by it while it lives
//!   tmp/<what>.<id>.<n>.tmp  temporary files of writer <id>
//! ```
//!
//! # Safety with several processes
//!
//! Every file is written under `tmp/`, fsynced and renamed into place (or hard-linked into
//! place, which is just as atomic), and the directory is fsynced after the rename: readers
//! see either no file or a complete one, and a process killed at any moment leaves at most
//! a stray temporary file, which the next [`LocalCache::open`] removes at once (its writer
//! file is no longer locked). Storing a blob that is already present is a no-op. Blobs are
//! verified (size and sha256) whenever they are handed out, and an entry whose blob is
//! missing or corrupt is dropped with a warning.
//!
//! Builds storing the same key each store their own layer (layers are rarely
//! reproducible), and the last entry written wins: the other blobs become orphans, which
//! [`LocalCache::open`] and every eviction remove. A writer holds `DIR/lock` shared from
//! the moment its blob appears until its entry (or `refs/<hex>`) is written, and
//! collecting and evicting hold it exclusively, so a blob is never taken for an orphan
//! between the two, and two evictions never both work from the same listing (which
//! emptied the cache). A process stopped or stuck holding the lock hangs no other: opening
//! then skips collecting, and stores and evictions give up after a minute. Eviction
//! removes least recently used blobs first, never the blob being stored, and refuses
//! ([`CacheError::NotStored`]) a layer larger than the limit rather than evicting
//! everything for it.
//!
//! The cache is best-effort: a full filesystem (`ENOSPC`, `EDQUOT`) makes a store evict
//! least recently used blobs to make room and try once more, and a full or failing one
//! (`EIO`, `EROFS`) gives [`CacheError::NotStored`] — a warning, never a failed build. A
//! lookup that cannot read the disk is a miss with a warning.
//!
//! A path returned by a hit stays valid until the blob is evicted, possibly by another
//! process: open the file (an open descriptor survives removal) or hard-link it right away.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod fsutil;
mod key;
mod layout;
mod local;
mod parse;
mod registry;
mod store;
mod tempfiles;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use ocibuild_registry::Reference;
use ocibuild_snapshot::LayerInfo;

pub use error::{CacheError, NotStored};
pub use key::StepKey;
pub use layout::LayoutCache;
pub use local::{CacheUsage, LocalCache};
pub use parse::{format_size, parse_size, parse_ttl};
pub use registry::RegistryCache;
pub use store::{CacheStore, LayerCache, ReadOnly, StoreFuture};

/// What a cache entry records about a step: enough to reuse its layer and history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedLayer {
    /// `sha256:<hex>` of the compressed layer blob.
    pub digest: String,
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    /// Size of the layer blob in bytes.
    pub size: u64,
    /// OCI layer media type (`application/vnd.oci.image.layer.v1.tar+gzip`, `+zstd` or
    /// plain `tar`).
    pub media_type: String,
    /// The history text of the step (`created_by`).
    pub created_by: String,
    /// RFC 3339 time the entry was made; a registry cache's TTL is measured from it.
    pub created: String,
}

impl CachedLayer {
    /// The entry for a layer a step just wrote, created now.
    pub fn from_layer_info(info: &LayerInfo, created_by: &str) -> CachedLayer {
        CachedLayer {
            digest: info.digest.clone(),
            diff_id: info.diff_id.clone(),
            size: info.size,
            media_type: info.oci_media_type().to_string(),
            created_by: created_by.to_string(),
            created: ocibuild_image::time::now_rfc3339(),
        }
    }

    /// The preamble of a store's `put`: the entry is valid ([`CachedLayer::validate`]) and
    /// `file`, the layer blob, has the size the entry announces.
    pub(crate) fn check_file(&self, file: &Path) -> Result<(), CacheError> {
        self.validate()?;
        let size = std::fs::metadata(file)
            .map_err(CacheError::io("read", file))?
            .len();
        self.check_size(file, size)
    }

    /// Fails with [`CacheError::SizeMismatch`] unless `size`, the size of `file`, is the
    /// size the entry announces.
    pub(crate) fn check_size(&self, file: &Path, size: u64) -> Result<(), CacheError> {
        if size == self.size {
            return Ok(());
        }
        Err(CacheError::SizeMismatch {
            path: file.to_path_buf(),
            expected: self.size,
            actual: size,
        })
    }

    /// Checks the fields a store relies on: both digests are `sha256:` + 64 lowercase hex,
    /// the media type is not empty and `created` is an RFC 3339 time.
    pub fn validate(&self) -> Result<(), CacheError> {
        fsutil::digest_hex(&self.digest)?;
        fsutil::digest_hex(&self.diff_id)?;
        if self.media_type.trim().is_empty() {
            return Err(CacheError::InvalidEntry {
                reason: "the layer media type is empty".into(),
            });
        }
        parse::parse_rfc3339(&self.created).map_err(|reason| CacheError::InvalidEntry {
            reason: format!(
                "created {:?} is not an RFC 3339 time: {reason}",
                self.created
            ),
        })?;
        Ok(())
    }
}

/// Where a hit's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheHit {
    /// A verified blob file on disk: in the local cache directory, or in the OCI layout
    /// of an `oci:` cache repository.
    Local {
        /// The entry.
        layer: CachedLayer,
        /// The verified blob file.
        path: PathBuf,
    },
    /// In the registry cache repository (blob `layer.digest` of `repository`).
    Registry {
        /// The entry.
        layer: CachedLayer,
        /// The cache repository (its tag is the key).
        repository: Reference,
    },
}

impl CacheHit {
    /// The entry, wherever it is.
    pub fn layer(&self) -> &CachedLayer {
        match self {
            CacheHit::Local { layer, .. } | CacheHit::Registry { layer, .. } => layer,
        }
    }
}
