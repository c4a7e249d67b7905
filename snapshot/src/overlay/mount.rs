//! Detached overlay mounts with the new mount API (`fsopen`, `fsconfig`, `fsmount`).
//!
//! The mount is never attached anywhere: `fsmount` returns a descriptor of the new mount's
//! root, which belongs to no mount namespace. Paths are resolved relative to it, and when
//! the last descriptor of it (or of anything opened through it) is closed, the kernel
//! frees the mount. So an error, a panic or `kill -9` cannot leave a mount behind, and
//! nothing ever shows in a mount table.
//!
//! Each layer directory is named to the kernel as `/proc/self/fd/<n>` of a descriptor
//! held open while the filesystem is configured: a short name whatever the directory's
//! path (`fsconfig` takes values of at most 255 bytes), as Docker's overlay2 driver uses
//! short link names in its `l/` directory.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};

use rustix::fs::{Mode, OFlags, CWD};
use rustix::mount::{
    fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, FsMountFlags,
    FsOpenFlags, MountAttrFlags,
};

use super::{options, LowerOption, OverlayLayers, MAX_LOWERS};
use crate::error::{Error, Result};

/// The longest string value `fsconfig` takes (it copies at most 256 bytes, NUL included).
pub const MAX_OPTION_VALUE: usize = 255;

/// [`LowerOption`] of this kernel once known: 0 not yet, 1 append, 2 list.
static LOWER_OPTION: AtomicU8 = AtomicU8::new(0);

/// How this kernel takes lower directories: `lowerdir+` from Linux 6.8 on, one
/// `lowerdir=` list before.
pub fn lower_option() -> LowerOption {
    match LOWER_OPTION.load(Ordering::Relaxed) {
        1 => return LowerOption::Append,
        2 => return LowerOption::List,
        _ => {}
    }
    let uname = rustix::system::uname();
    let release = uname.release().to_string_lossy();
    let option = if kernel_at_least(&release, (6, 8)) {
        LowerOption::Append
    } else {
        LowerOption::List
    };
    let code = if option == LowerOption::Append { 1 } else { 2 };
    LOWER_OPTION.store(code, Ordering::Relaxed);
    option
}

/// True if the kernel release string (`6.18.0-foo`) is at least `(major, minor)`.
fn kernel_at_least(release: &str, wanted: (u32, u32)) -> bool {
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let major = numbers.next().unwrap_or(0);
    let minor = numbers.next().unwrap_or(0);
    (major, minor) >= wanted
}

/// Mounts `layers` as a detached overlay with the mount attributes `attrs`, passing the
/// lower directories as `option` says; returns the descriptor of the mount's root.
pub(crate) fn mount_detached(
    layers: &OverlayLayers,
    option: LowerOption,
    attrs: MountAttrFlags,
) -> Result<OwnedFd> {
    let lowers: Vec<&Path> = layers.top_first().collect();
    mount_stack(&lowers, Some((&layers.upper, &layers.work)), option, attrs)
}

/// Mounts the lower directories `lowers` (top-most first) as a detached overlay, with an
/// upper and a work directory when `upper` is given (read-only otherwise: overlayfs then
/// needs at least two lowers).
pub(crate) fn mount_stack(
    lowers: &[&Path],
    upper: Option<(&Path, &Path)>,
    option: LowerOption,
    attrs: MountAttrFlags,
) -> Result<OwnedFd> {
    let count = lowers.len();
    if count == 0 {
        return Err(Error::InvalidOption(
            "an overlay needs at least one lower directory".into(),
        ));
    }
    if count > MAX_LOWERS {
        return Err(Error::TooManyLowers {
            count,
            limit: MAX_LOWERS,
        });
    }
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| Error::Overlay {
        step: "fsopen",
        kernel: String::new(),
        source: e.into(),
    })?;
    let mut held = Vec::with_capacity(count + 2);
    let names = lowers
        .iter()
        .map(|lower| short_name(lower, &mut held))
        .collect::<Result<Vec<_>>>()?;
    match option {
        LowerOption::Append => {
            for name in &names {
                set(&fs, "lowerdir+", name)?;
            }
        }
        LowerOption::List => set(&fs, "lowerdir", &lower_list(&names)?)?,
    }
    if let Some((upper, work)) = upper {
        set(&fs, "upperdir", &short_name(upper, &mut held)?)?;
        set(&fs, "workdir", &short_name(work, &mut held)?)?;
    }
    for &(key, value) in options() {
        match value {
            "" => fsconfig_set_flag(&fs, key).map_err(|e| overlay_error(&fs, key, e))?,
            value => set(&fs, key, value)?,
        }
    }
    fsconfig_create(&fs).map_err(|e| overlay_error(&fs, "create the filesystem", e))?;
    fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs).map_err(|e| overlay_error(&fs, "fsmount", e))
}

/// The `lowerdir=` value for `names` (top-most first), or [`Error::TooManyLowers`] when
/// it is longer than `fsconfig` takes.
pub(crate) fn lower_list(names: &[String]) -> Result<String> {
    let list = names.join(":");
    if list.len() <= MAX_OPTION_VALUE {
        return Ok(list);
    }
    let mut length = 0;
    let fitting = names
        .iter()
        .take_while(|name| {
            length += name.len() + 1;
            length - 1 <= MAX_OPTION_VALUE
        })
        .count();
    Err(Error::TooManyLowers {
        count: names.len(),
        limit: fitting,
    })
}

/// Opens the directory `path` into `held` and returns its short name,
/// `/proc/self/fd/<n>`.
fn short_name(path: &Path, held: &mut Vec<OwnedFd>) -> Result<String> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(CWD, path, flags, Mode::empty())
        .map_err(|e| Error::io(path, "open layer directory", e.into()))?;
    let name = format!("/proc/self/fd/{}", fd.as_raw_fd());
    held.push(fd);
    Ok(name)
}

/// Sets the string option `key` of the filesystem context `fs`.
fn set(fs: &OwnedFd, key: &'static str, value: &str) -> Result<()> {
    fsconfig_set_string(fs, key, value).map_err(|e| overlay_error(fs, key, e))
}

/// An [`Error::Overlay`] for `step`, with what the kernel logged in the context `fs`.
fn overlay_error(fs: &OwnedFd, step: &'static str, errno: rustix::io::Errno) -> Error {
    Error::Overlay {
        step,
        kernel: kernel_messages(fs),
        source: io::Error::from(errno),
    }
}

/// The messages the kernel logged in the filesystem context `fs` (read from it).
fn kernel_messages(fs: &OwnedFd) -> String {
    let mut messages = Vec::new();
    let mut buf = [0u8; 1024];
    for _ in 0..16 {
        match rustix::io::read(fs, &mut buf) {
            Ok(n) if n > 0 => {
                let text = String::from_utf8_lossy(&buf[..n]);
                messages.push(text.trim().to_string());
            }
            _ => break,
        }
    }
    messages.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_compare_by_major_and_minor() {
        assert!(kernel_at_least("6.18.0-rc1", (6, 8)));
        assert!(kernel_at_least("6.8.0", (6, 8)));
        assert!(!kernel_at_least("6.7.12-generic", (6, 8)));
        assert!(!kernel_at_least("5.15.0", (6, 8)));
        assert!(kernel_at_least("7.0", (6, 8)));
        assert!(!kernel_at_least("garbage", (6, 8)));
    }

    #[test]
    fn a_lower_list_longer_than_fsconfig_takes_says_how_many_fit() {
        let names: Vec<String> = (0..40)
            .map(|n| format!("/proc/self/fd/{}", n + 10))
            .collect();
        let err = lower_list(&names).unwrap_err();
        let Error::TooManyLowers { count, limit } = err else {
            panic!("{err}")
        };
        assert_eq!(count, 40);
        assert!(lower_list(&names[..limit]).is_ok());
        assert!(lower_list(&names[..limit + 1]).is_err());
    }
}
