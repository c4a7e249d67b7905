//! The two snapshotters are interchangeable: for the same filesystem operations, the
//! overlay snapshotter (reading the step's upper directory) and the walk snapshotter
//! (walking a plain directory) find the same changes and write byte-identical layers.
//!
//! Each case starts from the same two lower directories (a base layer and a layer on top
//! of it with whiteouts and an opaque directory), applies one sequence of random
//! operations from a fixed seed to a plain directory through `StatWalk` and to the merged
//! tree of an `Overlay` step, and compares. Operations are applied as `mv`, `rm -rf` and
//! friends would: a directory rename that overlayfs refuses with `EXDEV`
//! (`redirect_dir=off`) is done as a copy and a removal, as `mv` does.
//!
//! Needs root (chown, device nodes, overlay mounts), as the build machine has.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ocibuild_snapshot::{
    write_layer, Compression, Diff, LayerOptions, Overlay, Snapshotter, StatWalk, StepRoot,
};

/// How many random cases run, each with its own seed.
const SEEDS: u64 = 50;
/// Operations per case.
const OPS: usize = 40;

/// A xorshift64 generator: the same seed gives the same case on every machine.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.below(items.len())].clone())
    }

    fn name(&mut self) -> String {
        const NAMES: &[&str] = &["a", "b", "c", "data", "x.conf", "lib", "n", "z"];
        format!("{}{}", NAMES[self.below(NAMES.len())], self.below(4))
    }

    fn data(&mut self) -> Vec<u8> {
        let len = [0, 1, 7, 100, 5000][self.below(5)];
        (0..len).map(|_| b'a' + self.below(26) as u8).collect()
    }

    /// A short xattr value (ext4 keeps xattrs in one block).
    fn value(&mut self) -> Vec<u8> {
        let mut data = self.data();
        data.truncate(40);
        data
    }

    fn mode(&mut self) -> u32 {
        [0o644, 0o600, 0o755, 0o4755, 0o1777, 0o640][self.below(6)]
    }

    fn owner(&mut self) -> (u32, u32) {
        [(0, 0), (1000, 1000), (33, 33), (0, 50)][self.below(4)]
    }
}

fn mknod(path: &Path, kind: nix::sys::stat::SFlag, dev: (u64, u64)) -> io::Result<()> {
    let mode = nix::sys::stat::Mode::from_bits_truncate(0o640);
    let dev = nix::sys::stat::makedev(dev.0, dev.1);
    nix::sys::stat::mknod(path, kind, mode, dev).map_err(io::Error::from)
}

fn lchown(path: &Path, (uid, gid): (u32, u32)) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
}

fn chmod(path: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// The base layer: directories, files, symlinks, device nodes, a FIFO, owners, modes and
/// xattrs, different for each seed.
fn make_base(dir: &Path, rng: &mut Rng) {
    for sub in [
        "etc",
        "etc/conf.d",
        "usr",
        "usr/lib",
        "usr/share/doc",
        "var/log",
        "opt",
    ] {
        fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let dirs = [
        "",
        "etc",
        "etc/conf.d",
        "usr/lib",
        "usr/share/doc",
        "var/log",
        "opt",
    ];
    for i in 0..24 {
        let parent = dir.join(dirs[rng.below(dirs.len())]);
        let path = parent.join(format!("{}{i}", rng.name()));
        fs::write(&path, rng.data()).unwrap();
        chmod(&path, rng.mode()).unwrap();
        lchown(&path, rng.owner()).unwrap();
        if rng.chance(25) {
            xattr::set(&path, "user.tag", &rng.value()).unwrap();
        }
    }
    symlink("../etc/conf.d", dir.join("usr/conf")).unwrap();
    symlink("/etc/passwd", dir.join("etc/link")).unwrap();
    mknod(
        &dir.join("var/null"),
        nix::sys::stat::SFlag::S_IFCHR,
        (1, 3),
    )
    .unwrap();
    mknod(
        &dir.join("var/fifo"),
        nix::sys::stat::SFlag::S_IFIFO,
        (0, 0),
    )
    .unwrap();
    xattr::set(dir.join("usr/lib"), "user.dir", b"lib").unwrap();
    chmod(&dir.join("opt"), 0o700).unwrap();
    lchown(&dir.join("var/log"), (0, 4)).unwrap();
}

/// A layer on top of `base` in overlay lower-dir format: a whiteout, an opaque directory
/// with new content, a changed file and new entries.
fn make_top(dir: &Path, base: &Path) {
    fs::create_dir_all(dir.join("etc/conf.d")).unwrap();
    fs::create_dir_all(dir.join("var")).unwrap();
    fs::create_dir_all(dir.join("new/deep")).unwrap();
    fs::write(dir.join("new/deep/file"), b"from the top layer").unwrap();
    xattr::set(dir.join("etc/conf.d"), "trusted.overlay.opaque", b"y").unwrap();
    fs::write(dir.join("etc/conf.d/only"), b"only this").unwrap();
    mknod(
        &dir.join("var/fifo"),
        nix::sys::stat::SFlag::S_IFCHR,
        (0, 0),
    )
    .unwrap();
    let changed = first_file(&base.join("usr/lib")).unwrap_or_else(|| base.join("usr/lib/x"));
    let name = changed.file_name().unwrap();
    fs::create_dir_all(dir.join("usr/lib")).unwrap();
    fs::write(dir.join("usr/lib").join(name), b"changed on top").unwrap();
    for sub in ["etc", "usr", "usr/lib", "var"] {
        let meta = fs::metadata(base.join(sub)).unwrap();
        chmod(&dir.join(sub), meta.mode() & 0o7777).unwrap();
        lchown(&dir.join(sub), (meta.uid(), meta.gid())).unwrap();
    }
    xattr::set(dir.join("usr/lib"), "user.dir", b"lib").unwrap();
}

fn first_file(dir: &Path) -> Option<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files.into_iter().next()
}

/// One entry of the tree operations are chosen from.
#[derive(Debug, Clone)]
struct Node {
    rel: PathBuf,
    kind: NodeKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeKind {
    Dir,
    File,
    Symlink,
    Special,
}

/// Every entry below `root` (not the root), sorted.
fn scan(root: &Path) -> Vec<Node> {
    fn walk(root: &Path, rel: &Path, out: &mut Vec<Node>) {
        let mut entries: Vec<_> = fs::read_dir(root.join(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        entries.sort();
        for name in entries {
            let rel = rel.join(name);
            let meta = fs::symlink_metadata(root.join(&rel)).unwrap();
            let kind = match meta.file_type() {
                t if t.is_dir() => NodeKind::Dir,
                t if t.is_file() => NodeKind::File,
                t if t.is_symlink() => NodeKind::Symlink,
                _ => NodeKind::Special,
            };
            out.push(Node {
                rel: rel.clone(),
                kind,
            });
            if kind == NodeKind::Dir {
                walk(root, &rel, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, Path::new(""), &mut out);
    out
}

/// A filesystem operation, with everything it needs chosen up front.
#[derive(Debug, Clone)]
enum Op {
    Create {
        path: PathBuf,
        data: Vec<u8>,
        mode: u32,
    },
    Overwrite {
        path: PathBuf,
        data: Vec<u8>,
    },
    Append {
        path: PathBuf,
        data: Vec<u8>,
    },
    Delete {
        path: PathBuf,
    },
    RecreateDir {
        path: PathBuf,
        child: String,
    },
    RecreateFile {
        path: PathBuf,
    },
    Rename {
        from: PathBuf,
        to: PathBuf,
    },
    DirToFile {
        path: PathBuf,
        data: Vec<u8>,
    },
    FileToDir {
        path: PathBuf,
        child: String,
    },
    Chmod {
        path: PathBuf,
        mode: u32,
    },
    Chown {
        path: PathBuf,
        owner: (u32, u32),
    },
    HardLink {
        from: PathBuf,
        to: PathBuf,
    },
    Symlink {
        path: PathBuf,
        target: String,
    },
    SetXattr {
        path: PathBuf,
        value: Vec<u8>,
    },
    RemoveXattr {
        path: PathBuf,
    },
    Mknod {
        path: PathBuf,
        kind: u8,
    },
    MkdirAll {
        path: PathBuf,
    },
    Touch {
        path: PathBuf,
        secs: i64,
    },
}

/// Chooses the next operation against the tree `root` (the walk side).
fn choose(rng: &mut Rng, root: &Path) -> Op {
    let nodes = scan(root);
    loop {
        if let Some(op) = candidate(rng, root, &nodes) {
            if !conflicts(&op, root) {
                return op;
            }
        }
    }
}

/// A random operation on `nodes` (the entries of `root`), or `None` when the one drawn
/// has nothing to work on.
fn candidate(rng: &mut Rng, root: &Path, nodes: &[Node]) -> Option<Op> {
    let of = |kinds: &[NodeKind]| -> Vec<PathBuf> {
        nodes
            .iter()
            .filter(|n| kinds.contains(&n.kind))
            .map(|n| n.rel.clone())
            .collect()
    };
    let (dirs, files) = (of(&[NodeKind::Dir]), of(&[NodeKind::File]));
    let all: Vec<PathBuf> = nodes.iter().map(|n| n.rel.clone()).collect();
    let not_links = of(&[NodeKind::Dir, NodeKind::File, NodeKind::Special]);
    let mut parents = dirs.clone();
    parents.push(PathBuf::new());
    let fresh = |rng: &mut Rng| -> PathBuf {
        let parent = rng.pick(&parents).unwrap_or_default();
        parent.join(format!("{}-new{}", rng.name(), rng.below(1000)))
    };
    match rng.below(18) {
        0 => Some(Op::Create {
            path: fresh(rng),
            data: rng.data(),
            mode: rng.mode(),
        }),
        1 => rng.pick(&files).map(|path| Op::Overwrite {
            path,
            data: rng.data(),
        }),
        2 => rng.pick(&files).map(|path| Op::Append {
            path,
            data: [rng.data(), b"+".to_vec()].concat(),
        }),
        3 => rng.pick(&all).map(|path| Op::Delete { path }),
        4 => rng.pick(&dirs).map(|path| Op::RecreateDir {
            path,
            child: rng.name(),
        }),
        5 => rng.pick(&files).map(|path| Op::RecreateFile { path }),
        6 => rename(rng, root, &all, &parents),
        7 => rng.pick(&dirs).map(|path| Op::DirToFile {
            path,
            data: rng.data(),
        }),
        8 => rng.pick(&files).map(|path| Op::FileToDir {
            path,
            child: rng.name(),
        }),
        9 => rng.pick(&not_links).map(|path| Op::Chmod {
            path,
            mode: rng.mode(),
        }),
        10 => rng.pick(&all).map(|path| Op::Chown {
            path,
            owner: rng.owner(),
        }),
        11 => rng.pick(&files).map(|from| {
            let to = from.with_file_name(format!("{}-link{}", rng.name(), rng.below(100)));
            Op::HardLink { from, to }
        }),
        12 => Some(Op::Symlink {
            path: fresh(rng),
            target: ["../etc", "/etc/passwd", "x", "/"][rng.below(4)].to_string(),
        }),
        13 => rng
            .pick(&of(&[NodeKind::Dir, NodeKind::File]))
            .map(|path| Op::SetXattr {
                path,
                value: rng.value(),
            }),
        14 => rng
            .pick(&tagged(root, nodes))
            .map(|path| Op::RemoveXattr { path }),
        15 => Some(Op::Mknod {
            path: fresh(rng),
            kind: rng.below(3) as u8,
        }),
        16 => Some(Op::MkdirAll {
            path: fresh(rng).join(rng.name()).join(rng.name()),
        }),
        _ => rng.pick(&all).map(|path| Op::Touch {
            path,
            secs: 1_600_000_000 + rng.below(1000) as i64,
        }),
    }
}

/// The paths that have the xattr `user.op`.
fn tagged(root: &Path, nodes: &[Node]) -> Vec<PathBuf> {
    nodes
        .iter()
        .filter(|n| matches!(n.kind, NodeKind::Dir | NodeKind::File))
        .filter(|n| xattr::get(root.join(&n.rel), "user.op").is_ok_and(|v| v.is_some()))
        .map(|n| n.rel.clone())
        .collect()
}

/// A rename of a file or directory to a fresh name in any directory (not below itself).
/// Directories holding a file with a hard link outside them are not moved: overlayfs
/// copies such a directory (`EXDEV`), and a copy cannot keep a link to outside.
fn rename(rng: &mut Rng, root: &Path, all: &[PathBuf], parents: &[PathBuf]) -> Option<Op> {
    let from = rng.pick(all)?;
    let parent = rng.pick(parents)?;
    if parent.starts_with(&from) || links_outside(root, &from) {
        return None;
    }
    let to = parent.join(format!("{}-moved{}", rng.name(), rng.below(1000)));
    Some(Op::Rename { from, to })
}

/// True if a file below `rel` (or `rel` itself) has a hard link outside it.
fn links_outside(root: &Path, rel: &Path) -> bool {
    let mut inside: HashMap<u64, u64> = HashMap::new();
    let mut nlinks: HashMap<u64, u64> = HashMap::new();
    let top = root.join(rel);
    let mut stack = vec![top];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            stack.extend(fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if meta.nlink() > 1 {
            *inside.entry(meta.ino()).or_default() += 1;
            nlinks.insert(meta.ino(), meta.nlink());
        }
    }
    inside.iter().any(|(ino, n)| nlinks[ino] > *n)
}

/// True if `op`'s new path already exists (the fresh names may collide).
fn conflicts(op: &Op, root: &Path) -> bool {
    let new = match op {
        Op::Create { path, .. } | Op::Symlink { path, .. } | Op::Mknod { path, .. } => path,
        Op::MkdirAll { path } => path,
        Op::Rename { to, .. } | Op::HardLink { to, .. } => to,
        _ => return false,
    };
    fs::symlink_metadata(root.join(new)).is_ok()
}

/// Applies `op` to the tree at `root`.
fn apply(op: &Op, root: &Path) -> io::Result<()> {
    let at = |rel: &Path| root.join(rel);
    match op {
        Op::Create { path, data, mode } => {
            fs::write(at(path), data)?;
            chmod(&at(path), *mode)
        }
        Op::Overwrite { path, data } => fs::write(at(path), data),
        Op::Append { path, data } => fs::OpenOptions::new()
            .append(true)
            .open(at(path))?
            .write_all(data),
        Op::Delete { path } => remove_all(&at(path)),
        Op::RecreateDir { path, child } => {
            remove_all(&at(path))?;
            fs::create_dir(at(path))?;
            fs::write(at(path).join(child), b"recreated")
        }
        Op::RecreateFile { path } => {
            let meta = fs::symlink_metadata(at(path))?;
            let data = fs::read(at(path))?;
            fs::remove_file(at(path))?;
            fs::write(at(path), data)?;
            chmod(&at(path), meta.mode() & 0o7777)?;
            lchown(&at(path), (meta.uid(), meta.gid()))
        }
        Op::Rename { from, to } => move_path(&at(from), &at(to)),
        Op::DirToFile { path, data } => {
            remove_all(&at(path))?;
            fs::write(at(path), data)
        }
        Op::FileToDir { path, child } => {
            fs::remove_file(at(path))?;
            fs::create_dir(at(path))?;
            fs::write(at(path).join(child), b"in a new directory")
        }
        Op::Chmod { path, mode } => chmod(&at(path), *mode),
        Op::Chown { path, owner } => lchown(&at(path), *owner),
        Op::HardLink { from, to } => fs::hard_link(at(from), at(to)),
        Op::Symlink { path, target } => symlink(target, at(path)),
        Op::SetXattr { path, value } => xattr::set(at(path), "user.op", value),
        Op::RemoveXattr { path } => xattr::remove(at(path), "user.op"),
        Op::Mknod { path, kind } => {
            use nix::sys::stat::SFlag;
            let (kind, dev) = match kind {
                0 => (SFlag::S_IFCHR, (1, 5)),
                1 => (SFlag::S_IFBLK, (7, 1)),
                _ => (SFlag::S_IFIFO, (0, 0)),
            };
            mknod(&at(path), kind, dev)
        }
        Op::MkdirAll { path } => fs::create_dir_all(at(path)),
        Op::Touch { path, secs } => {
            let time = filetime::FileTime::from_unix_time(*secs, 0);
            filetime::set_symlink_file_times(at(path), time, time)
        }
    }
}

/// `rm -rf`.
fn remove_all(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path)?.is_dir() {
        true => fs::remove_dir_all(path),
        false => fs::remove_file(path),
    }
}

/// How many renames overlayfs refused with `EXDEV` (and were copied instead).
static COPIED_RENAMES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// `mv`: a rename, or where the filesystem refuses it with `EXDEV` (overlayfs, a directory
/// from a lower layer), a copy that keeps modes, owners, xattrs, times and the hard links
/// inside the tree, then a removal.
fn move_path(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            COPIED_RENAMES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            copy_tree(from, to, &mut HashMap::new())?;
            remove_all(from)
        }
        other => other,
    }
}

/// Copies `from` to `to` like `cp -a`; `links` maps inodes already copied to their copy.
fn copy_tree(from: &Path, to: &Path, links: &mut HashMap<u64, PathBuf>) -> io::Result<()> {
    let meta = fs::symlink_metadata(from)?;
    let kind = meta.file_type();
    if kind.is_file() && meta.nlink() > 1 {
        if let Some(first) = links.get(&meta.ino()) {
            return fs::hard_link(first, to);
        }
        links.insert(meta.ino(), to.to_path_buf());
    }
    if kind.is_dir() {
        fs::create_dir(to)?;
        for entry in fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()), links)?;
        }
    } else if kind.is_file() {
        fs::copy(from, to)?;
    } else if kind.is_symlink() {
        symlink(fs::read_link(from)?, to)?;
    } else {
        let file_type = nix::sys::stat::SFlag::from_bits_truncate(meta.mode() & libc::S_IFMT);
        let dev = (
            libc::major(meta.rdev()) as u64,
            libc::minor(meta.rdev()) as u64,
        );
        mknod(to, file_type, dev)?;
    }
    lchown(to, (meta.uid(), meta.gid()))?;
    if !kind.is_symlink() {
        chmod(to, meta.mode() & 0o7777)?;
        for name in xattr::list(from)? {
            if let Some(value) = xattr::get(from, &name)? {
                xattr::set(to, &name, &value)?;
            }
        }
    }
    let mtime = filetime::FileTime::from_last_modification_time(&meta);
    filetime::set_symlink_file_times(to, mtime, mtime)
}

/// What a tree holds, path by path: type, mode, owner, size, content, link target, device
/// and user xattrs (not times).
fn describe(root: &Path) -> BTreeMap<PathBuf, String> {
    scan(root)
        .into_iter()
        .map(|node| {
            let path = root.join(&node.rel);
            let meta = fs::symlink_metadata(&path).unwrap();
            let content = match node.kind {
                NodeKind::File => hex(&fs::read(&path).unwrap()),
                NodeKind::Symlink => fs::read_link(&path).unwrap().display().to_string(),
                _ => String::new(),
            };
            let mut xattrs: Vec<String> = xattr::list(&path)
                .map(|names| names.map(|n| n.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            xattrs.retain(|n| n.starts_with("user."));
            xattrs.sort();
            let xattrs: Vec<String> = xattrs
                .into_iter()
                .map(|n| format!("{n}={:?}", xattr::get(&path, &n).unwrap()))
                .collect();
            let size = if node.kind == NodeKind::Dir {
                0
            } else {
                meta.len()
            };
            let text = format!(
                "mode={:o} owner={}:{} size={size} rdev={} content={content} xattrs={xattrs:?}",
                meta.mode(),
                meta.uid(),
                meta.gid(),
                meta.rdev(),
            );
            (node.rel, text)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    ocibuild_image::digest::sha256_digest(bytes)
}

/// One tar entry of a layer: path, type, mode, owner, size, content digest, link target,
/// device numbers and xattrs (whiteouts are entries named `.wh.*`).
#[derive(Debug, PartialEq, Eq)]
struct LayerEntry {
    path: String,
    kind: u8,
    mode: u32,
    owner: (u64, u64),
    size: u64,
    content: String,
    link: Option<String>,
    device: (Option<u32>, Option<u32>),
    xattrs: Vec<(String, Vec<u8>)>,
}

fn layer_entries(file: &Path) -> Vec<LayerEntry> {
    let mut archive = tar::Archive::new(fs::File::open(file).unwrap());
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut xattrs = Vec::new();
        if let Some(extensions) = entry.pax_extensions().unwrap() {
            for ext in extensions {
                let ext = ext.unwrap();
                if let Some(name) = ext.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
        let header = entry.header().clone();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.push(LayerEntry {
            path: String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
            kind: header.entry_type().as_byte(),
            mode: header.mode().unwrap(),
            owner: (header.uid().unwrap(), header.gid().unwrap()),
            size: header.size().unwrap(),
            content: hex(&data),
            link: entry
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned()),
            device: (
                header.device_major().unwrap(),
                header.device_minor().unwrap(),
            ),
            xattrs,
        });
    }
    out
}

/// The host path of the merged tree of an overlay step (its detached mount).
fn merged(step: &mut StepRoot) -> PathBuf {
    use std::os::fd::{AsFd, AsRawFd};
    let fd = step.root_dir().unwrap().as_dir().as_fd().as_raw_fd();
    PathBuf::from(format!("/proc/self/fd/{fd}"))
}

/// Writes the layer of `diff` into `dir` (uncompressed, times pinned) and reads it back.
fn layer_of(diff: &Diff, dir: &Path) -> (String, Vec<LayerEntry>) {
    fs::create_dir_all(dir).unwrap();
    let options = LayerOptions {
        compression: Compression::None,
        mtime: Some(0),
    };
    let info = write_layer(&diff.source, &diff.changes, dir, &options).unwrap();
    (info.digest, layer_entries(&info.path))
}

/// One case: the same operations from `seed` through both snapshotters. Returns the
/// operations applied.
fn check_seed(seed: u64) -> Vec<Op> {
    let tmp = tempfile::tempdir().unwrap();
    let (base, top) = (tmp.path().join("base"), tmp.path().join("top"));
    let mut rng = Rng::new(seed);
    make_base(&base, &mut rng);
    make_top(&top, &base);
    let lowers = vec![base, top];

    let rootfs = tmp.path().join("rootfs");
    let mut walk: Box<dyn Snapshotter> = Box::new(StatWalk::at(&rootfs, Vec::new()));
    let mut overlay: Box<dyn Snapshotter> =
        Box::new(Overlay::new(&tmp.path().join("state")).unwrap());
    let mut walk_step = walk.prepare(&lowers).unwrap();
    let mut overlay_step = overlay.prepare(&lowers).unwrap();
    let view = merged(&mut overlay_step);
    assert_eq!(
        describe(&rootfs),
        describe(&view),
        "seed {seed}: the starting trees"
    );

    let mut ops = Vec::new();
    for _ in 0..OPS {
        let op = choose(&mut rng, &rootfs);
        let on_walk = apply(&op, &rootfs);
        let on_overlay = apply(&op, &view);
        assert!(
            on_walk.is_ok() && on_overlay.is_ok(),
            "seed {seed}: {op:?}: walk {on_walk:?}, overlay {on_overlay:?}"
        );
        ops.push(op);
    }
    assert_eq!(
        describe(&rootfs),
        describe(&view),
        "seed {seed}: trees after {ops:#?}"
    );

    let walk_diff = walk.diff(&mut walk_step).unwrap();
    let overlay_diff = overlay.diff(&mut overlay_step).unwrap();
    assert_eq!(
        walk_diff.changes, overlay_diff.changes,
        "seed {seed}: changes after {ops:#?}"
    );
    let (walk_digest, walk_entries) = layer_of(&walk_diff, &tmp.path().join("walk-layer"));
    let (overlay_digest, overlay_entries) =
        layer_of(&overlay_diff, &tmp.path().join("overlay-layer"));
    assert_eq!(
        walk_entries, overlay_entries,
        "seed {seed}: layer entries after {ops:#?}"
    );
    assert_eq!(walk_digest, overlay_digest, "seed {seed}: layer digests");
    ops
}

#[test]
fn both_snapshotters_write_identical_layers_for_random_operations() {
    let mut kinds = std::collections::BTreeSet::new();
    for seed in 1..=SEEDS {
        for op in check_seed(seed) {
            let name = format!("{op:?}");
            kinds.insert(
                name.split([' ', '{'])
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    }
    assert_eq!(kinds.len(), 18, "every kind of operation ran: {kinds:?}");
    let copied = COPIED_RENAMES.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        copied > 0,
        "some directory renames were refused by overlayfs and copied"
    );
}

/// The one difference: overlayfs copies a file up when it is opened for writing, before
/// anything is written. Closed unchanged, the walk does not see it (its ctime did not
/// change); the overlay's layer has it, unchanged. Everything else in the layer is the
/// same. (Package managers open lock files this way.)
#[test]
fn a_file_opened_for_writing_and_left_unchanged_is_only_in_the_overlay_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let lower = tmp.path().join("lower");
    fs::create_dir_all(lower.join("var/lib")).unwrap();
    fs::write(lower.join("var/lib/lock"), b"").unwrap();
    let lowers = vec![lower];
    let mut walk = StatWalk::at(&tmp.path().join("rootfs"), Vec::new());
    let mut overlay = Overlay::new(&tmp.path().join("state")).unwrap();
    let mut walk_step = walk.prepare(&lowers).unwrap();
    let mut overlay_step = overlay.prepare(&lowers).unwrap();
    let view = merged(&mut overlay_step);
    for root in [tmp.path().join("rootfs"), view] {
        drop(
            fs::OpenOptions::new()
                .write(true)
                .open(root.join("var/lib/lock"))
                .unwrap(),
        );
        fs::write(root.join("new"), b"changed").unwrap();
    }
    let walk_diff = walk.diff(&mut walk_step).unwrap();
    let overlay_diff = overlay.diff(&mut overlay_step).unwrap();
    let upserts = |diff: &Diff| diff.changes.upserts.iter().cloned().collect::<Vec<_>>();
    assert_eq!(upserts(&walk_diff), [PathBuf::from("new")]);
    assert_eq!(
        upserts(&overlay_diff),
        [PathBuf::from("new"), PathBuf::from("var/lib/lock")]
    );
}
