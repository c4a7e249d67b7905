//! ocibuild's library: a Dockerfile becomes a build plan (stages, instructions with their
//! arguments expanded), each step runs against a root filesystem in user space, each
//! filesystem-changing step is snapshotted into an OCI layer, and the result is an image
//! config + manifest pushed to a registry or written to a tarball.
//!
//! The entry point for tools embedding ocibuild is [`Build`]: a [`Dockerfile`] (a file or a
//! string) and a [`Context`] (a directory, a tar stream or a kaniko-style URL) become a
//! [`BuiltImage`] that owns its layer files until dropped and pushes itself or writes an OCI
//! layout or a `docker save` tarball. Progress arrives as [`BuildEvent`]s, failures as
//! [`BuildError`]s that name the Dockerfile line, and a [`CancelToken`] stops a build
//! (killing its running RUN command). Blocking work (RUN, unpacking, compression) runs on
//! tokio's blocking thread pool.
//!
//! ```no_run
//! use ocibuild_core::{Build, Context, Dockerfile};
//! # async fn demo() -> Result<(), ocibuild_core::BuildError> {
//! let image = Build::new(Dockerfile::inline("FROM scratch\nCOPY a /a\n"), Context::dir("."))
//!     .run()
//!     .await?;
//! image.write_oci_layout("layout", Some("latest")).await?;
//! # Ok(()) }
//! ```
//!
//! [`build()`] with [`BuildOptions`] is the lower-level entry point the `ocibuild` CLI uses,
//! with a [`Context`] prepared by [`Context::prepare`]; [`warm()`] fills a cache directory
//! with base images and [`push_image()`] pushes an image already on disk.
//!
//! Everything public is at the crate root; the modules are internal.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod api;
mod blocking;
mod build;
mod cancel;
mod context;
mod copy;
mod diffid;
mod engine;
mod error;
mod event_display;
mod events;
mod image;
mod layers;
mod liveroot;
mod mounts;
mod options;
mod output;
mod pushimage;
mod stage;
mod upload;
mod warm;

#[cfg(test)]
mod tests;

// Short names of the sibling crates' modules, for the engine's modules.
use ocibuild_cache as cache;
use ocibuild_context::{contextfile, fetch};
use ocibuild_dockerfile::parser as dockerfile;
use ocibuild_image::chain;
use ocibuild_image::{config, time};
use ocibuild_isolation as isolation;

// The embedding API.
pub use api::{Build, BuiltImage, Dockerfile};
pub use cancel::CancelToken;
pub use context::{Context, PreparedContext};
pub use error::{error_chain, BuildError};
pub use events::BuildEvent;
pub use ocibuild_context::{ContextError, GitOptions};
pub use ocibuild_image::config::ImageConfig;
pub use ocibuild_isolation::Isolation;
pub use ocibuild_snapshot::Compression;

// The lower-level entry points and their options (what the `ocibuild` CLI calls).
pub use build::{build, check_live_root, default_cache_repo, dry_run, BuildOutput, BuiltLayer};
pub use events::Events;
pub use image::ImageFormat;
pub use liveroot::{clean_root, in_container};
pub use mounts::{parse_secret_flag, MountError, SecretSource};
pub use ocibuild_registry::{ClientOptions, Reference};
pub use options::{BuildOptions, SnapshotterChoice, DEFAULT_CACHE_TTL};
pub use output::parse_annotations;
pub use pushimage::{push_image, PushImageError, PushOptions};
pub use warm::{dockerfile_bases, warm, WarmOptions};
