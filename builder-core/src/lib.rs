//! ocibuild's library: a Dockerfile becomes a build plan (stages, instructions with their
//! arguments expanded), each step runs against a root filesystem in user space, each
//! filesystem-changing step is snapshotted into an OCI layer, and the result is an image
//! config + manifest pushed to a registry or written to a tarball.
//!
//! The entry point for tools embedding ocibuild is [`build`] with [`BuildOptions`]; progress
//! arrives as [`BuildEvent`]s and failures as [`BuildError`]s that name the Dockerfile line.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod api;
mod blocking;
pub mod build;
pub mod cache;
pub mod cancel;
pub mod config;
pub mod context;
pub mod contextfile;
pub mod copy;
pub(crate) mod diffid;
pub mod dockerfile;
pub mod error;
pub mod expand;
pub(crate) mod fetch;
pub mod image;
pub mod liveroot;
pub mod mounts;
pub mod output;
pub mod pathmatch;
pub mod plan;
pub mod pushimage;
mod stage;
pub mod time;
pub mod warm;

pub use api::{Build, BuiltImage, BuiltLayer, Context, Dockerfile};
pub use build::{build, BuildEvent, BuildOptions, BuildOutput};
pub use cancel::CancelToken;
pub use error::BuildError;
pub use ocibuild_isolation as isolation;
pub use ocibuild_isolation::Isolation;
pub use ocibuild_snapshot::Compression;
