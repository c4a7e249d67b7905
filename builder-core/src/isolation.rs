//! Running commands inside a rootfs.
