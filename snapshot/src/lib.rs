//! Root filesystems and OCI layers for ocibuild.
//!
//! This crate does everything ocibuild needs on the filesystem side of an
//! image build:
//!
//! - [`unpack_layer`] / [`unpack_layer_file`] apply base-image layers onto a
//!   root filesystem directory with OCI layer semantics (whiteouts, opaque
//!   directories, hard links, ownership, modes, xattrs, timestamps), never
//!   writing outside the rootfs ([`RootDir`]).
//! - [`RootDir`] and [`Dir`] are the one way ocibuild writes inside a rootfs from the
//!   host: paths are resolved inside it on directory descriptors (`openat2` with
//!   `RESOLVE_IN_ROOT`, or an equivalent walk), and files are created, removed, linked,
//!   chowned, chmodded and timestamped by name, never following a link out of it.
//! - [`Snapshotter`] is the seam between the build's stage loop and the rootfs: it
//!   materialises each step's rootfs from layer directories ([`StepRoot`], [`RunRoot`]
//!   for the RUN sandbox) and finds what the step changed ([`Diff`]). [`Overlay`] stacks
//!   an overlayfs upper directory per step on the layer directories and reads the layer
//!   from it; [`StatWalk`] extracts them into a plain directory and walks it with `lstat`
//!   (the fallback, see [`Overlay::available`]). Both give identical layers.
//! - [`LayerStore`] keeps layers extracted once, by diff ID, in overlayfs lower-dir format
//!   ([`UnpackFormat::OverlayLower`]), verified while they stream in, shared by concurrent
//!   builds and pruned least recently used first ([`store`]).
//! - [`write_layer`] turns [`Changes`] into a compressed layer file in a single
//!   streaming pass, computing its digest and diff ID on the way; [`ParallelGzip`] and
//!   [`compress::zstd_encoder`] compress it on several threads, with the same bytes
//!   whatever their number.
//! - [`decompressed`] reads a gzip, zstd or plain layer blob as its tar.
//! - [`write_sparse`] and [`copy_file_sparse`] write files keeping their holes, so that a
//!   sparse file takes its data on disk, not its apparent size ([`sparse`]).
//! - [`spread_subdirectories`] has ext4 start each new tree (an extracted layer, a step's
//!   upper directory, a build's temporary directory) in a quiet block group, away from
//!   files just deleted ([`spread`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod compress;
pub mod decompress;
pub mod error;
pub mod layer;
pub mod overlay;
pub mod rootfd;
pub mod rootpath;
pub mod snapshotter;
pub mod sparse;
pub mod spread;
pub mod store;
pub mod tarwriter;
pub mod unpack;
pub mod walk;

pub use compress::ParallelGzip;
pub use decompress::{decompressed, Decompressed};
pub use error::{Error, Result};
pub use layer::{
    layer_file_name, write_layer, Compression, LayerInfo, LayerOptions, DEFAULT_GZIP_LEVEL,
};
pub use overlay::{Overlay, OverlayLayers, Unavailable};
pub use rootfd::{Dir, RootDir};
pub use rootpath::{is_missing, resolve_in_root};
pub use snapshotter::{Diff, RunRoot, Snapshotter, StepRoot};
pub use sparse::{copy_file_sparse, write_sparse};
pub use spread::{spread_subdirectories, Spread};
pub use store::{
    default_store_dir, is_host_root, HeldDir, Inserted, LayerDigests, LayerEntry, LayerStore,
    PruneOptions, PruneReport, StepDirs, StoredLayer,
};
pub use unpack::{
    unpack_layer, unpack_layer_dir, unpack_layer_file, unpack_layer_file_skipping,
    unpack_layer_with, UnpackFormat, UnpackOptions, UnpackStats,
};
pub use walk::{Changes, StatWalk};
