//! ocibuild's image formats, independent of the build engine: the image configuration
//! ([`config`], ocibuild's own type), manifests, indexes, descriptors and media types
//! ([`manifest`], oci-spec's types with byte-stable serialisation), platforms
//! ([`platform`]), RFC 3339 timestamps ([`time`]), digests and sha256 hashing
//! ([`digest`]), compression told by magic bytes ([`compression`]), atomic file writes
//! ([`atomic`]), the OCI image layout ([`layout`]), `docker save` tarballs
//! ([`docker_archive`]) and one-line error reports ([`chain`]).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod atomic;
pub mod blob;
pub mod chain;
pub mod compression;
pub mod config;
pub mod digest;
pub mod docker_archive;
pub mod layout;
pub mod manifest;
pub mod platform;
pub mod time;
