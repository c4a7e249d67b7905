//! ocibuild's image formats, independent of the build engine: the image configuration
//! ([`config`]), RFC 3339 timestamps ([`time`]), sha256 digests ([`digest`]), compression
//! told by magic bytes ([`compression`]), atomic file writes ([`atomic`]), the OCI image
//! layout ([`layout`]) and `docker save` tarballs ([`docker_archive`]).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod atomic;
pub mod chain;
pub mod compression;
pub mod config;
pub mod digest;
pub mod docker_archive;
pub mod layout;
pub mod time;
