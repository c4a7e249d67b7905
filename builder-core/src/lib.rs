//! ocibuild's library: a Dockerfile becomes a build plan (stages, instructions with their
//! arguments expanded), each step runs against a root filesystem in user space, each
//! filesystem-changing step is snapshotted into an OCI layer, and the result is an image
//! config + manifest pushed to a registry or written to a tarball.

pub mod dockerfile;
pub mod expand;
pub mod isolation;
