//! Specifications of the engine's internal modules, written against their crate-internal
//! API: COPY and ADD (`copy`), host-side writes into a hostile rootfs (`rootfs_links`) and
//! cache mounts and secrets (`mounts`). The public API is tested in `tests/`.

mod copy;
mod mounts;
mod rootfs_links;
