//! ocibuild's library: a Dockerfile becomes a build plan (stages, instructions with their
//! arguments expanded), each step runs against a root filesystem in user space, each
//! filesystem-changing step is snapshotted into an OCI layer, and the result is an image
//! config + manifest pushed to a registry or written to a tarball.
//!
//! The entry point for tools embedding ocibuild is [`build`] with [`BuildOptions`]; progress
//! arrives as [`BuildEvent`]s and failures as [`BuildError`]s that name the Dockerfile line.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod build;
pub mod cache;
pub mod config;
pub mod context;
pub mod contextfile;
pub mod copy;
pub mod diffid;
pub mod error;
pub mod fetch;
pub mod image;
pub mod liveroot;
pub mod mounts;
pub mod output;
pub mod pushimage;
mod stage;
pub mod time;
pub mod warm;

pub use ocibuild_dockerfile::parser as dockerfile;
pub use ocibuild_dockerfile::{expand, pathmatch, plan};

pub use build::{build, BuildEvent, BuildOptions, BuildOutput};
pub use error::BuildError;
pub use ocibuild_isolation as isolation;
pub use ocibuild_isolation::Isolation;
pub use ocibuild_snapshot::Compression;
