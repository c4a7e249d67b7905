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
//! [`build()`] with [`BuildOptions`] is the lower-level entry point the `ocibuild` CLI uses.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod api;
mod blocking;
pub mod build;
pub mod cancel;
use ocibuild_image::chain;
pub mod context;
pub mod copy;
pub(crate) mod diffid;
mod engine;
pub mod error;
mod event_display;
mod events;
pub(crate) use ocibuild_context::fetch;
pub mod image;
pub mod liveroot;
pub mod mounts;
mod options;
pub mod output;
pub mod pushimage;
mod stage;
pub mod warm;

pub use api::{Build, BuiltImage, BuiltLayer, Context, Dockerfile};
pub use build::{build, BuildEvent, BuildOptions, BuildOutput};
pub use cancel::CancelToken;
pub use error::BuildError;
pub use ocibuild_cache as cache;
pub use ocibuild_context::contextfile;
pub use ocibuild_dockerfile::parser as dockerfile;
pub use ocibuild_dockerfile::{expand, pathmatch, plan};
pub use ocibuild_image::{config, time};
pub use ocibuild_isolation as isolation;
pub use ocibuild_isolation::Isolation;
pub use ocibuild_snapshot::Compression;
