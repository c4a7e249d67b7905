//! Building in `/` (`--isolation none`, kaniko mode): the base image is unpacked over the
//! live root filesystem of a throwaway container and RUN runs there directly. Paths that
//! belong to the container and not to the image — `/proc`, `/sys`, `/dev`, the builder's
//! own directory (`/kaniko`), `/var/run`, `/etc/mtab`, every mount point, the build context
//! and `--ignore-path`s — are on an ignore list: never unpacked over, deleted, or
//! snapshotted.
//!
//! This overwrites the machine's `/`, so ocibuild refuses to do it outside a container
//! unless forced.

use crate::error::{BuildError, Result};
use crate::isolation::Isolation;
use crate::options::BuildOptions;
use ocibuild_snapshot::{Dir, RootDir};
use std::fs;
use std::path::{Path, PathBuf};

/// What decides the ignore list.
#[derive(Debug, Clone)]
pub struct IgnoreSpec<'a> {
    /// The builder's own directory (kaniko's `--kaniko-dir`, default `/kaniko`).
    pub kaniko_dir: &'a Path,
    /// Ignore `/var/run` (kaniko's `--ignore-var-run`, default true).
    pub ignore_var_run: bool,
    /// Extra paths (`--ignore-path`).
    pub extra: &'a [PathBuf],
    /// Further paths that must survive (the build context, the work directory).
    pub keep: &'a [PathBuf],
}

/// The ignore list as absolute paths, with the mount points of `/proc/self/mountinfo`.
pub fn ignore_list(spec: &IgnoreSpec<'_>) -> Vec<PathBuf> {
    let mut list: Vec<PathBuf> = ["/proc", "/sys", "/dev", "/etc/mtab"]
        .iter()
        .map(PathBuf::from)
        .collect();
    list.push(spec.kaniko_dir.to_path_buf());
    if spec.ignore_var_run {
        list.push(PathBuf::from("/var/run"));
        list.push(PathBuf::from("/run"));
    }
    list.extend(spec.extra.iter().cloned());
    list.extend(spec.keep.iter().cloned());
    if let Ok(text) = fs::read_to_string("/proc/self/mountinfo") {
        list.extend(mount_points(&text));
    }
    list.retain(|p| p.is_absolute() && p != Path::new("/"));
    list.sort();
    list.dedup();
    list
}

/// Mount points listed in mountinfo text (field 5), with `\040`-style escapes decoded.
pub fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .map(unescape_octal)
        .map(PathBuf::from)
        .collect()
}

fn unescape_octal(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&text[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The ignore list of building in `/` with `opts`, also keeping `keep` (the build context,
/// the work directory), relative to `/`.
pub(crate) fn ignored_paths(opts: &BuildOptions, keep: &[PathBuf]) -> Vec<PathBuf> {
    relative(&ignore_list(&IgnoreSpec {
        kaniko_dir: &opts.kaniko_dir,
        ignore_var_run: opts.ignore_var_run,
        extra: &opts.ignore_paths,
        keep,
    }))
}

/// kaniko's `--cleanup` and `--pre-cleanup`: with [`Isolation::None`], removes everything
/// from `/` but the paths a build with `opts` leaves alone (and the build context).
pub fn clean_root(opts: &BuildOptions) -> Result<()> {
    if opts.isolation != Isolation::None {
        return Err(BuildError::Options(
            "only meaningful with --isolation none (building in /)".into(),
        ));
    }
    let ignore = ignored_paths(opts, std::slice::from_ref(&opts.context));
    delete_filesystem(Path::new("/"), &ignore).map_err(BuildError::io("/"))
}

/// The ignore list relative to `/` (what the snapshotter and unpacker take).
pub fn relative(list: &[PathBuf]) -> Vec<PathBuf> {
    list.iter()
        .filter_map(|p| p.strip_prefix("/").ok().map(Path::to_path_buf))
        .filter(|p| !p.as_os_str().is_empty())
        .collect()
}

/// True when this process looks like it runs in a container: `/.dockerenv`,
/// `/run/.containerenv`, a `container` or `KUBERNETES_SERVICE_HOST` environment variable,
/// or a container runtime in `/proc/1/cgroup`.
pub fn in_container() -> bool {
    if Path::new("/.dockerenv").exists() || Path::new("/run/.containerenv").exists() {
        return true;
    }
    if std::env::var_os("container").is_some()
        || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
    {
        return true;
    }
    fs::read_to_string("/proc/1/cgroup").is_ok_and(|text| {
        ["docker", "kubepods", "containerd", "libpod", "crio"]
            .iter()
            .any(|marker| text.contains(marker))
    })
}

/// Removes everything under `root` except the ignored paths (relative to `root`) and the
/// directories leading to them, as kaniko does between stages. Entries are removed by name
/// in directory descriptors ([`ocibuild_snapshot::Dir`]): symlinks are removed, never
/// followed, and only real directories are descended into.
pub fn delete_filesystem(root: &Path, ignore: &[PathBuf]) -> std::io::Result<()> {
    let root = RootDir::open(root).map_err(into_io)?;
    delete_below(root.as_dir(), Path::new(""), ignore).map_err(into_io)
}

/// The OS error inside a rootfs operation's error (or the error as text).
fn into_io(e: ocibuild_snapshot::Error) -> std::io::Error {
    match e {
        ocibuild_snapshot::Error::Io { source, .. } => source,
        other => std::io::Error::other(other.to_string()),
    }
}

fn delete_below(dir: &Dir, rel: &Path, ignore: &[PathBuf]) -> ocibuild_snapshot::Result<()> {
    for name in dir.names()? {
        let child = rel.join(&name);
        if ignore.iter().any(|i| child.starts_with(i)) {
            continue;
        }
        let holds_ignored = ignore.iter().any(|i| i.starts_with(&child));
        let is_dir = dir.lstat(&name)?.is_some_and(|m| m.is_dir());
        if holds_ignored && is_dir {
            delete_below(&dir.open_dir(&name)?, &child, ignore)?;
        } else {
            dir.remove_all(&name)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_come_from_field_five() {
        let text = "22 1 0:21 / / rw - ext4 /dev/vda rw\n\
                    30 22 0:5 / /proc rw - proc proc rw\n\
                    31 22 0:6 / /work\\040space rw - tmpfs t rw\n";
        assert_eq!(
            mount_points(text),
            vec![
                PathBuf::from("/"),
                PathBuf::from("/proc"),
                PathBuf::from("/work space")
            ]
        );
    }

    #[test]
    fn the_ignore_list_has_kaniko_defaults_and_extras() {
        let extra = [PathBuf::from("/cache")];
        let keep = [PathBuf::from("/workspace")];
        let list = ignore_list(&IgnoreSpec {
            kaniko_dir: Path::new("/kaniko"),
            ignore_var_run: true,
            extra: &extra,
            keep: &keep,
        });
        for p in [
            "/proc",
            "/sys",
            "/dev",
            "/kaniko",
            "/var/run",
            "/etc/mtab",
            "/cache",
            "/workspace",
        ] {
            assert!(list.contains(&PathBuf::from(p)), "{p} in {list:?}");
        }
        assert!(!list.contains(&PathBuf::from("/")));
    }

    #[test]
    fn delete_filesystem_keeps_ignored_paths_and_their_parents() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for d in ["kaniko", "var/run", "var/lib", "etc"] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        fs::write(r.join("kaniko/executor"), "x").unwrap();
        fs::write(r.join("var/lib/db"), "x").unwrap();
        fs::write(r.join("etc/passwd"), "x").unwrap();
        fs::write(r.join("file"), "x").unwrap();
        let ignore = relative(&[PathBuf::from("/kaniko"), PathBuf::from("/var/run")]);
        delete_filesystem(r, &ignore).unwrap();
        assert!(r.join("kaniko/executor").exists());
        assert!(r.join("var/run").is_dir());
        assert!(!r.join("var/lib").exists());
        assert!(!r.join("etc").exists());
        assert!(!r.join("file").exists());
    }
}
