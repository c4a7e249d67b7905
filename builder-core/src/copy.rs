//! COPY and ADD: files from the build context (or another stage's root filesystem, or a
//! download) into the root filesystem being built, following Docker's rules:
//!
//! - a source directory copies its *contents*, not the directory itself;
//! - a destination ending in `/`, an existing directory, or several sources make the
//!   destination a directory; several sources that match something require the trailing `/`;
//! - sources may be globs (`*`, `?`, `[..]`, `**`); a glob may match nothing (BuildKit's
//!   AllowEmptyWildcard), a plain path must exist; matches are taken in sorted order, and a
//!   matched directory copies its contents;
//! - `.dockerignore`d paths and `--exclude=PATTERN` paths are never copied;
//! - `--parents` keeps the source's parent directories (from the context root, or from a
//!   `/./` pivot in the source) under the destination;
//! - files keep their permission bits and mtime; owners become 0:0 (or `--chown`) when
//!   copying from the context and are kept when copying from a stage (unless `--chown`);
//! - symlinks inside a copied directory stay symlinks (verbatim), hard links stay hard links;
//! - ADD extracts local tar archives (plain, gzip, bzip2, xz, zstd; told by content, not
//!   by name) into the destination, and downloads `http(s)://` sources ([`add_sources`]).
//!
//! Every path is resolved inside its root: a source cannot leave the build context through
//! `..` or by following a symlink (that is an error, [`CopyError::OutsideRoot`] and
//! [`CopyError::SymlinkOutside`]); in another stage's root filesystem symlinks are followed
//! inside that root. Destinations (and archive members) never land outside the root
//! filesystem (or the extraction directory).
//!
//! Every write into the root filesystem goes through [`RootDir`]: the destination's parent
//! is opened inside the root by descriptor (symlinks resolved as if the rootfs were `/`),
//! and the entry is created, replaced, linked, chowned, chmodded and timestamped by name
//! relative to that descriptor, never following a symlink in its place. Archive members are
//! confined the same way to their extraction directory (a [`RootDir`] of its own). Sources
//! are only read, by plain host paths: the build context and other stages' root
//! filesystems have no process running in them while a COPY runs.

use crate::fetch::{self, FetchError, FetchedFile};
use filetime::FileTime;
use ocibuild_dockerfile::pathmatch::{self, IgnoreRules, PathPattern};
use ocibuild_image::compression::{sniff, Sniffed};
use ocibuild_snapshot::{Dir, RootDir};
use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

/// How many symbolic links resolving one source may follow.
const MAX_SYMLINKS: u32 = 40;

/// What went wrong while copying.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A source matched nothing.
    #[error("{source_name}: no such file or directory in the {origin}{hint}")]
    NotFound {
        /// The source as written.
        source_name: String,
        /// "build context" or "stage ...".
        origin: String,
        /// Extra explanation (e.g. excluded by .dockerignore).
        hint: String,
    },
    /// Several sources need a directory destination.
    #[error("when copying more than one source the destination must be a directory ending in '/': {dest}")]
    DestNotDir {
        /// The destination as given.
        dest: String,
    },
    /// A source path leaves its root.
    #[error("{path}: source path is outside the {origin}")]
    OutsideRoot {
        /// The offending source.
        path: String,
        /// "build context" or "stage ...".
        origin: String,
    },
    /// A source is, or goes through, a symlink whose target is outside the build context.
    #[error("{source_name}: symlink {link} to {target} points outside the {origin}; copy the file it points to into the context instead")]
    SymlinkOutside {
        /// The source as written.
        source_name: String,
        /// The symlink, relative to the context root.
        link: PathBuf,
        /// Its target, as stored in the link.
        target: PathBuf,
        /// "build context" or similar.
        origin: String,
    },
    /// Extracting a local archive (ADD) failed.
    #[error("{archive}: extracting the archive failed at {member}: {message}; use ADD --unpack=false to copy it as a file")]
    Archive {
        /// The archive on the host.
        archive: PathBuf,
        /// The member being extracted ("its start" when reading the archive failed).
        member: String,
        /// What went wrong.
        message: String,
    },
    /// ADD of a git repository.
    #[error("{source_name}: ADD of a git repository is not supported yet; clone it in a RUN step or ADD a tarball URL of the repository")]
    GitUnsupported {
        /// The source as written.
        source_name: String,
    },
    /// `--checksum` with a source that is not a URL.
    #[error("{source_name}: --checksum only applies to http:// and https:// sources; remove it or add the file from a URL")]
    ChecksumNotUrl {
        /// The local source.
        source_name: String,
    },
    /// Downloading an ADD source failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// A filesystem operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Resolving a path inside a root failed.
    #[error(transparent)]
    Resolve(#[from] ocibuild_snapshot::Error),
}

type Result<T> = std::result::Result<T, CopyError>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CopyError + '_ {
    move |source| CopyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where sources are read from.
pub struct SourceRoot<'a> {
    /// The directory sources are relative to.
    pub dir: &'a Path,
    /// `.dockerignore` rules (context only).
    pub ignore: Option<&'a IgnoreRules>,
    /// Human name for messages: "build context" or "stage build".
    pub origin: String,
    /// Copying from a stage or image: keep the sources' owners instead of 0:0, and resolve
    /// symlinks inside `dir` as that root filesystem's `/`. When false (the build context),
    /// a symlink that has to be followed may not point outside `dir`.
    pub keep_owner: bool,
}

/// Options of one COPY/ADD.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// `--chown` resolved to numeric ids.
    pub chown: Option<(u32, u32)>,
    /// `--chmod` as octal bits.
    pub chmod: Option<u32>,
    /// Extract local tar archives into the destination ([`copy_sources`]); [`add_sources`]
    /// decides this itself from [`AddOptions::unpack`].
    pub extract_archives: bool,
    /// `--exclude=PATTERN` values, in order (`.dockerignore` syntax, `!` exceptions).
    /// A path is excluded when the patterns match it relative to the source root or, inside
    /// a copied directory, relative to that directory.
    pub exclude: Vec<String>,
    /// `COPY --parents`: keep each source's parent directories under the destination.
    pub parents: bool,
}

/// ADD-only options.
#[derive(Debug, Clone, Default)]
pub struct AddOptions {
    /// `--checksum=sha256:<hex>` for URL sources.
    pub checksum: Option<String>,
    /// `--unpack`: `None` extracts local archives and not downloads; `Some(true)` also
    /// extracts downloads; `Some(false)` extracts nothing.
    pub unpack: Option<bool>,
    /// `--keep-git-dir`: only meaningful for git sources, which are not supported yet.
    pub keep_git_dir: Option<bool>,
}

/// What an ADD source is, told by its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A path in the context (or heredoc, or stage).
    Local,
    /// An `http://` or `https://` URL to download.
    Url,
    /// A git repository (`git@host:repo`, `git://`, `ssh://`, or a URL ending in `.git`).
    Git,
}

/// Classifies an ADD source; `keep_git_dir` (the flag was given) makes a URL a git source.
pub fn source_kind(source: &str, keep_git_dir: Option<bool>) -> SourceKind {
    let lower = source.to_ascii_lowercase();
    if lower.starts_with("git@") || lower.starts_with("git://") || lower.starts_with("ssh://") {
        return SourceKind::Git;
    }
    if !fetch::is_url(source) {
        return SourceKind::Local;
    }
    let path = lower.split(['#', '?']).next().unwrap_or_default();
    if keep_git_dir.is_some() || path.trim_end_matches('/').ends_with(".git") {
        SourceKind::Git
    } else {
        SourceKind::Url
    }
}

/// True when `dest` as written names a directory.
fn names_dir(dest: &str) -> bool {
    dest.ends_with('/') || dest.ends_with("/.") || dest == "."
}

/// Copies `sources` (already expanded, relative to the source root) to `dest` (absolute
/// path inside the image) in `rootfs`. Local archives are extracted when
/// `opts.extract_archives` is set.
pub fn copy_sources(
    from: &SourceRoot<'_>,
    sources: &[String],
    dest: &str,
    rootfs: &RootDir,
    opts: &CopyOptions,
) -> Result<()> {
    let exclude = IgnoreRules::from_patterns(&opts.exclude);
    let mut matched: Vec<Match> = Vec::new();
    let mut sources_matched = 0;
    for source in sources {
        let matches = expand_source(from, source, &exclude)?;
        sources_matched += usize::from(!matches.is_empty());
        matched.extend(matches);
    }
    if sources_matched > 1 && !names_dir(dest) {
        return Err(CopyError::DestNotDir {
            dest: dest.to_string(),
        });
    }
    let mut copier = Copier::new(from, opts, rootfs, exclude)?;
    copier.copy_matches(&matched, dest, false, opts.extract_archives)
}

/// A digest of everything [`copy_sources`] would read for `sources` (URLs excluded): for
/// each entry its path, type, permission bits, owner, size, content and link target —
/// never its mtime — after `.dockerignore` and `--exclude`. Used in layer cache keys.
pub fn hash_sources(
    from: &SourceRoot<'_>,
    sources: &[String],
    opts: &CopyOptions,
) -> Result<String> {
    use sha2::{Digest, Sha256};
    let exclude = IgnoreRules::from_patterns(&opts.exclude);
    let mut hasher = Sha256::new();
    for source in sources.iter().filter(|s| !crate::fetch::is_url(s)) {
        hasher.update(source.as_bytes());
        hasher.update([0]);
        for m in expand_source(from, source, &exclude)? {
            let root = from.dir.join(&m.real);
            for entry in walkdir::WalkDir::new(&root).sort_by_file_name() {
                let entry = entry.map_err(|e| CopyError::Io {
                    path: e.path().unwrap_or(&root).to_path_buf(),
                    source: e.into(),
                })?;
                let inner = entry.path().strip_prefix(&root).unwrap_or(Path::new(""));
                let real = m.real.join(inner);
                let ignored = !inner.as_os_str().is_empty()
                    && (from.ignore.is_some_and(|i| i.is_excluded(&real))
                        || exclude.is_excluded(&m.shown.join(inner))
                        || exclude.is_excluded(inner));
                if ignored {
                    continue;
                }
                hash_entry(&mut hasher, &m.dest_rel.join(inner), entry.path())?;
            }
        }
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

fn hash_entry(hasher: &mut sha2::Sha256, name: &Path, path: &Path) -> Result<()> {
    use sha2::Digest;
    use std::os::unix::ffi::OsStrExt;
    let meta = fs::symlink_metadata(path).map_err(io_err(path))?;
    hasher.update(name.as_os_str().as_bytes());
    let header = format!(
        "\0{:o} {} {} {}\0",
        meta.mode(),
        meta.uid(),
        meta.gid(),
        if meta.is_file() { meta.len() } else { 0 }
    );
    hasher.update(header.as_bytes());
    if meta.file_type().is_symlink() {
        let target = fs::read_link(path).map_err(io_err(path))?;
        hasher.update(target.as_os_str().as_bytes());
    } else if meta.is_file() {
        let mut file = fs::File::open(path).map_err(io_err(path))?;
        io::copy(&mut file, hasher).map_err(io_err(path))?;
    }
    hasher.update([0]);
    Ok(())
}

/// ADD: copies local `sources` from `from` like [`copy_sources`] and downloads `http(s)://`
/// sources into `scratch` (created if missing; the caller removes it afterwards), all in
/// the order given. Local archives are extracted unless `add.unpack == Some(false)`;
/// downloads only when `add.unpack == Some(true)`. Git sources and `--checksum` with a
/// local source are refused. `opts.extract_archives` is ignored.
///
/// The three parts are public for callers that run the file work on a thread of their
/// own: [`plan_add`], [`download_add`] and [`place_add`] (the stage's ADD does); this
/// composition is what the tests call.
#[cfg(test)]
pub async fn add_sources(
    from: &SourceRoot<'_>,
    sources: &[String],
    dest: &str,
    rootfs: &RootDir,
    opts: &CopyOptions,
    add: &AddOptions,
    scratch: &Path,
) -> Result<()> {
    let plan = crate::blocking::in_place(|| plan_add(from, sources, dest, opts, add))?;
    let fetched = download_add(&plan, scratch, add).await?;
    crate::blocking::in_place(|| place_add(from, &plan, fetched, dest, rootfs, opts, add))
}

/// The sources of an ADD, checked, with the local ones expanded ([`plan_add`]).
#[derive(Debug, Clone)]
pub struct AddPlan {
    /// Each source in order: its matches, or the URL to download.
    sources: Vec<AddSource>,
    /// More than one thing is added: the destination is a directory.
    many: bool,
}

/// One source of an ADD.
#[derive(Debug, Clone)]
enum AddSource {
    /// A local source and what it matched.
    Local(Vec<Match>),
    /// A URL to download.
    Url(String),
}

/// Checks and expands every local source of an ADD (before anything is downloaded): git
/// sources and `--checksum` with a local source are refused, and several things added
/// need a directory destination.
pub fn plan_add(
    from: &SourceRoot<'_>,
    sources: &[String],
    dest: &str,
    opts: &CopyOptions,
    add: &AddOptions,
) -> Result<AddPlan> {
    let exclude = IgnoreRules::from_patterns(&opts.exclude);
    let mut planned = Vec::new();
    for source in sources {
        planned.push(match source_kind(source, add.keep_git_dir) {
            SourceKind::Git => {
                return Err(CopyError::GitUnsupported {
                    source_name: source.clone(),
                })
            }
            SourceKind::Local if add.checksum.is_some() => {
                return Err(CopyError::ChecksumNotUrl {
                    source_name: source.clone(),
                })
            }
            SourceKind::Local => AddSource::Local(expand_source(from, source, &exclude)?),
            SourceKind::Url => AddSource::Url(source.clone()),
        });
    }
    // URLs always give something; an empty wildcard gives nothing.
    let given = |s: &AddSource| !matches!(s, AddSource::Local(m) if m.is_empty());
    let many = planned.iter().filter(|s| given(s)).count() > 1;
    if many && !names_dir(dest) {
        return Err(CopyError::DestNotDir {
            dest: dest.to_string(),
        });
    }
    Ok(AddPlan {
        sources: planned,
        many,
    })
}

/// Downloads the URL sources of `plan`, in order, into fresh directories under `scratch`
/// (created if missing), each checked against `add.checksum` when given.
pub async fn download_add(
    plan: &AddPlan,
    scratch: &Path,
    add: &AddOptions,
) -> Result<Vec<FetchedFile>> {
    let mut fetched = Vec::new();
    for source in &plan.sources {
        if let AddSource::Url(url) = source {
            if fetched.is_empty() {
                fs::create_dir_all(scratch).map_err(io_err(scratch))?;
            }
            fetched.push(fetch::download(url, scratch, add.checksum.as_deref()).await?);
        }
    }
    Ok(fetched)
}

/// Copies the sources of `plan` to `dest` in order: local matches from `from`, and the
/// `fetched` files of its URLs ([`download_add`]).
pub fn place_add(
    from: &SourceRoot<'_>,
    plan: &AddPlan,
    fetched: Vec<FetchedFile>,
    dest: &str,
    rootfs: &RootDir,
    opts: &CopyOptions,
    add: &AddOptions,
) -> Result<()> {
    let exclude = IgnoreRules::from_patterns(&opts.exclude);
    let mut fetched = fetched.into_iter();
    for source in &plan.sources {
        match source {
            AddSource::Local(matches) => {
                let mut copier = Copier::new(from, opts, rootfs, exclude.clone())?;
                copier.copy_matches(matches, dest, plan.many, add.unpack != Some(false))?;
            }
            AddSource::Url(url) => {
                let file = fetched.next().ok_or_else(|| CopyError::Io {
                    path: PathBuf::from(url),
                    source: io::Error::other("the download is missing"),
                })?;
                let extract = add.unpack == Some(true);
                copy_fetched_into(&file, dest, rootfs, opts, plan.many, extract)?;
            }
        }
    }
    Ok(())
}

fn copy_fetched_into(
    file: &FetchedFile,
    dest: &str,
    rootfs: &RootDir,
    opts: &CopyOptions,
    force_dir: bool,
    extract: bool,
) -> Result<()> {
    let from = SourceRoot {
        dir: &file.dir,
        ignore: None,
        origin: format!("download of {}", file.url),
        keep_owner: false,
    };
    let opts = CopyOptions {
        parents: false,
        exclude: Vec::new(),
        ..opts.clone()
    };
    let name = PathBuf::from(&file.name);
    let matched = [Match {
        shown: name.clone(),
        real: name.clone(),
        dest_rel: name,
    }];
    let mut copier = Copier::new(&from, &opts, rootfs, IgnoreRules::default())?;
    copier.copy_matches(&matched, dest, force_dir, extract)
}

/// One path a source matched.
#[derive(Debug, Clone)]
struct Match {
    /// As matched, relative to the source root, before following symlinks.
    shown: PathBuf,
    /// With symlinks followed (inside the root), relative to the source root.
    real: PathBuf,
    /// Where it goes under the destination with `--parents`.
    dest_rel: PathBuf,
}

/// Turns one source argument into the matching paths relative to the source root, sorted,
/// with symlinks resolved inside the root, `.dockerignore` and `--exclude` applied.
fn expand_source(from: &SourceRoot<'_>, source: &str, exclude: &IgnoreRules) -> Result<Vec<Match>> {
    let outside = || CopyError::OutsideRoot {
        path: source.to_string(),
        origin: from.origin.clone(),
    };
    let rel = clean_relative(source).ok_or_else(outside)?;
    let pivot = pivot_depth(source);
    let comps = pathmatch::components(&rel);
    let first_wild = comps
        .iter()
        .position(|c| pathmatch::has_wildcard(c))
        .unwrap_or(comps.len());
    let prefix: PathBuf = comps[..first_wild].iter().collect();
    let mut candidates = Vec::new();
    // BuildKit copies with AllowEmptyWildcard: a wildcard that matches nothing (in a
    // directory that exists) adds nothing, without an error.
    let mut may_be_empty = false;
    if first_wild == comps.len() {
        candidates.push(rel.clone());
    } else {
        let base = from.dir.join(resolve_source(from, source, &prefix)?);
        may_be_empty = base.is_dir();
        if base.is_dir() {
            // Docker matches COPY sources with Go's filepath.Match, one component per
            // pattern component: `**` there is just `*` (unlike in .dockerignore).
            let rest: Vec<&str> = comps[first_wild..]
                .iter()
                .map(|c| if c == "**" { "*" } else { c.as_str() })
                .collect();
            let pattern = PathPattern::new(&rest.join("/"));
            let walker = walkdir::WalkDir::new(&base)
                .min_depth(1)
                .max_depth(rest.len());
            for entry in walker {
                let entry = entry.map_err(|e| CopyError::Io {
                    path: e.path().unwrap_or(&base).to_path_buf(),
                    source: e.into(),
                })?;
                let r = entry.path().strip_prefix(&base).unwrap_or(entry.path());
                if pattern.matches(r) {
                    candidates.push(prefix.join(r));
                }
            }
        }
    }
    candidates.sort();
    let ignored =
        |p: &Path| !p.as_os_str().is_empty() && from.ignore.is_some_and(|i| i.is_excluded(p));
    let (mut by_ignore, mut by_exclude) = (false, false);
    let mut kept = Vec::new();
    for shown in candidates {
        if ignored(&shown) {
            by_ignore = true;
            continue;
        }
        if exclude.is_excluded(&shown) {
            by_exclude = true;
            continue;
        }
        let real = resolve_source(from, source, &shown)?;
        if fs::symlink_metadata(from.dir.join(&real)).is_err() {
            continue;
        }
        if ignored(&real) {
            by_ignore = true;
            continue;
        }
        let dest_rel = shown.components().skip(pivot).collect();
        kept.push(Match {
            shown,
            real,
            dest_rel,
        });
    }
    if kept.is_empty() && !may_be_empty {
        let hint = if by_ignore {
            " (it is excluded by .dockerignore)"
        } else if by_exclude {
            " (it is excluded by --exclude)"
        } else {
            ""
        };
        return Err(CopyError::NotFound {
            source_name: source.to_string(),
            origin: from.origin.clone(),
            hint: hint.to_string(),
        });
    }
    Ok(kept)
}

/// How many leading components of a source `--parents` drops: those before a `/./` pivot.
fn pivot_depth(source: &str) -> usize {
    match source.find("/./") {
        Some(i) => clean_relative(&source[..i]).map_or(0, |p| p.components().count()),
        None => 0,
    }
}

/// `a/./b/` → `a/b`; `/x` → `x`; `..` that would leave the root → None.
fn clean_relative(path: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir if !out.pop() => return None,
            _ => {}
        }
    }
    Some(out)
}

/// Follows the symlinks in `rel` (a clean relative path) and returns the real path,
/// relative to the source root. Inside a stage's root filesystem links resolve as in that
/// image; in the context a link whose target is absolute or climbs above the root is an
/// error. Missing components are kept as they are.
fn resolve_source(from: &SourceRoot<'_>, source: &str, rel: &Path) -> Result<PathBuf> {
    if from.keep_owner {
        return Ok(RootDir::open(from.dir)?.resolve(rel, true)?);
    }
    enum Step {
        Parent,
        Name(OsString),
    }
    let mut pending: VecDeque<Step> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(Step::Name(n.to_os_string())),
            _ => None,
        })
        .collect();
    let mut resolved = PathBuf::new();
    let mut last_link: Option<(PathBuf, PathBuf)> = None;
    let mut links = 0;
    let escape = |link: Option<(PathBuf, PathBuf)>| {
        let (link, target) = link.unwrap_or_default();
        CopyError::SymlinkOutside {
            source_name: source.to_string(),
            link,
            target,
            origin: from.origin.clone(),
        }
    };
    while let Some(step) = pending.pop_front() {
        let name = match step {
            Step::Parent => {
                if !resolved.pop() {
                    return Err(escape(last_link));
                }
                continue;
            }
            Step::Name(name) => name,
        };
        resolved.push(&name);
        let host = from.dir.join(&resolved);
        let meta = match fs::symlink_metadata(&host) {
            Ok(meta) => meta,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                continue
            }
            Err(e) => return Err(io_err(&host)(e)),
        };
        if !meta.file_type().is_symlink() {
            continue;
        }
        links += 1;
        if links > MAX_SYMLINKS {
            return Err(ocibuild_snapshot::Error::SymlinkLoop {
                path: PathBuf::from(source),
                limit: MAX_SYMLINKS,
            }
            .into());
        }
        let target = fs::read_link(&host).map_err(io_err(&host))?;
        let link = (resolved.clone(), target.clone());
        if target.has_root() {
            return Err(escape(Some(link)));
        }
        last_link = Some(link);
        resolved.pop();
        for c in target.components().rev() {
            match c {
                Component::Normal(n) => pending.push_front(Step::Name(n.to_os_string())),
                Component::ParentDir => pending.push_front(Step::Parent),
                _ => {}
            }
        }
    }
    Ok(resolved)
}

/// Paths of one entry being copied.
#[derive(Debug, Clone)]
struct EntryPaths {
    /// Relative to the source root after following symlinks (for `.dockerignore`).
    real: PathBuf,
    /// Relative to the source root as matched (for `--exclude`).
    shown: PathBuf,
    /// Relative to the matched source directory (for `--exclude`).
    inner: PathBuf,
}

impl EntryPaths {
    fn child(&self, name: &OsStr) -> EntryPaths {
        EntryPaths {
            real: self.real.join(name),
            shown: self.shown.join(name),
            inner: self.inner.join(name),
        }
    }
}

struct Copier<'a> {
    from: &'a SourceRoot<'a>,
    opts: &'a CopyOptions,
    /// The root filesystem (or extraction directory) written to.
    root: RootDir,
    exclude: IgnoreRules,
    /// (dev, ino) of source files already copied → where they went (resolved, inside the
    /// root), to keep hard links.
    links: HashMap<(u64, u64), PathBuf>,
}

/// Opens the directory `name` in `parent`, creating it first when it is not one.
fn open_or_create_dir(parent: &Dir, name: &OsStr) -> Result<Dir> {
    if !parent.lstat(name)?.is_some_and(|m| m.is_dir()) {
        parent.mkdir(name, 0o755)?;
    }
    Ok(parent.open_dir(name)?)
}

impl<'a> Copier<'a> {
    fn new(
        from: &'a SourceRoot<'a>,
        opts: &'a CopyOptions,
        rootfs: &RootDir,
        exclude: IgnoreRules,
    ) -> Result<Copier<'a>> {
        Ok(Copier {
            from,
            opts,
            root: rootfs.try_clone()?,
            exclude,
            links: HashMap::new(),
        })
    }

    /// Copies every match to `dest`; `force_dir` treats `dest` as a directory.
    fn copy_matches(
        &mut self,
        matched: &[Match],
        dest: &str,
        force_dir: bool,
        extract: bool,
    ) -> Result<()> {
        let dest_is_dir = force_dir || names_dir(dest);
        let dest_rel = self.root.resolve(Path::new(dest), true)?;
        let dest_exists_as_dir = self.root.lstat(&dest_rel)?.is_some_and(|m| m.is_dir());
        for m in matched {
            // Sources are read by host path: nothing runs in the source root meanwhile.
            let src = self.from.dir.join(&m.real);
            let meta = fs::metadata(&src).map_err(io_err(&src))?;
            let paths = EntryPaths {
                real: m.real.clone(),
                shown: m.shown.clone(),
                inner: PathBuf::new(),
            };
            if self.opts.parents {
                self.copy_with_parents(m, dest, &src, &paths, &meta)?;
            } else if meta.is_dir() {
                self.ensure_dir(&dest_rel, true)?;
                let dir = self.root.open_dir(&dest_rel)?;
                self.copy_dir_contents(&src, &paths, &dir)?;
            } else if extract && is_archive(&src)? {
                self.ensure_dir(&dest_rel, true)?;
                self.extract_archive(&src, &dest_rel)?;
            } else {
                let target = if dest_is_dir || dest_exists_as_dir || matched.len() > 1 {
                    self.ensure_dir(&dest_rel, true)?;
                    let name = m.shown.file_name().or(m.real.file_name());
                    dest_rel.join(name.unwrap_or_default())
                } else {
                    self.ensure_dir(dest_rel.parent().unwrap_or(Path::new("")), false)?;
                    dest_rel.clone()
                };
                let (dir, name) = self.root.open_parent(&target)?;
                self.copy_entry(&src, &paths, &dir, &name)?;
            }
        }
        Ok(())
    }

    /// `--parents`: copies the match `m` (at `src`) to `dest` joined with its parents.
    fn copy_with_parents(
        &mut self,
        m: &Match,
        dest: &str,
        src: &Path,
        paths: &EntryPaths,
        meta: &fs::Metadata,
    ) -> Result<()> {
        let mut in_image = Path::new(dest).join(&m.dest_rel);
        if m.dest_rel.as_os_str().is_empty() && !meta.is_dir() {
            // `--parents dir/file/./`: nothing left of the path but the file itself
            in_image.push(m.shown.file_name().unwrap_or_default());
        }
        let target = self.root.resolve(&in_image, meta.is_dir())?;
        if meta.is_dir() {
            self.ensure_dir(&target, true)?;
            let dir = self.root.open_dir(&target)?;
            self.copy_dir_contents(src, paths, &dir)?;
            if !m.dest_rel.as_os_str().is_empty() {
                let (parent, name) = self.root.open_parent(&target)?;
                self.apply_metadata(&parent, &name, meta)?;
            }
        } else {
            self.ensure_dir(target.parent().unwrap_or(Path::new("")), true)?;
            let (parent, name) = self.root.open_parent(&target)?;
            self.copy_entry(src, paths, &parent, &name)?;
        }
        Ok(())
    }

    fn owner(&self, meta: &fs::Metadata) -> (u32, u32) {
        match self.opts.chown {
            Some(ids) => ids,
            None if self.from.keep_owner => (meta.uid(), meta.gid()),
            None => (0, 0),
        }
    }

    /// Creates the directory `rel` (inside the root) and missing parents (mode 0755, owned
    /// by `--chown` or root). An existing non-directory in the way is replaced when
    /// `replace` is set.
    fn ensure_dir(&self, rel: &Path, replace: bool) -> Result<()> {
        if rel.as_os_str().is_empty() {
            return Ok(());
        }
        if let Some(meta) = self.root.lstat(rel)? {
            if meta.is_dir() {
                return Ok(());
            }
            if !replace {
                return Err(CopyError::Io {
                    path: self.root.host_path().join(rel),
                    source: io::Error::new(io::ErrorKind::AlreadyExists, "not a directory"),
                });
            }
            let (parent, name) = self.root.open_parent(rel)?;
            parent.remove(&name)?;
        }
        let owner = self.opts.chown.unwrap_or((0, 0));
        self.root.create_dir_all_owned(rel, 0o755, owner)?;
        Ok(())
    }

    /// Copies the contents of the source directory `src` into `dest`.
    fn copy_dir_contents(&mut self, src: &Path, paths: &EntryPaths, dest: &Dir) -> Result<()> {
        for name in sorted_names(src)? {
            let child = paths.child(&name);
            let child_src = src.join(&name);
            if self.is_skipped(&child) {
                if self.may_reinclude(&child_src) {
                    self.copy_reincluded(&child_src, &child, dest, &name)?;
                }
                continue;
            }
            self.copy_entry(&child_src, &child, dest, &name)?;
        }
        Ok(())
    }

    /// True when `src` is a directory excluded by `.dockerignore` whose rules have `!`
    /// exceptions, which may re-include something below it (Docker walks into it then).
    fn may_reinclude(&self, src: &Path) -> bool {
        self.from.ignore.is_some_and(|i| i.has_exceptions())
            && fs::symlink_metadata(src).is_ok_and(|m| m.is_dir())
    }

    /// Copies what `!` exceptions re-include from the excluded directory `src` to `name`
    /// in `parent`; the directory itself is created (with its metadata) only when
    /// something is.
    fn copy_reincluded(
        &mut self,
        src: &Path,
        paths: &EntryPaths,
        parent: &Dir,
        name: &OsStr,
    ) -> Result<bool> {
        let existed = parent.lstat(name)?.is_some_and(|m| m.is_dir());
        let mut dest: Option<Dir> = None;
        let mut copied = false;
        for child_name in sorted_names(src)? {
            let child = paths.child(&child_name);
            let child_src = src.join(&child_name);
            let skipped = self.is_skipped(&child);
            if skipped && !self.may_reinclude(&child_src) {
                continue;
            }
            let dir = match dest.take() {
                Some(dir) => dir,
                None => open_or_create_dir(parent, name)?,
            };
            if skipped {
                copied |= self.copy_reincluded(&child_src, &child, &dir, &child_name)?;
            } else {
                self.copy_entry(&child_src, &child, &dir, &child_name)?;
                copied = true;
            }
            dest = Some(dir);
        }
        if copied {
            let meta = fs::symlink_metadata(src).map_err(io_err(src))?;
            self.apply_metadata(parent, name, &meta)?;
        } else if !existed && parent.lstat(name)?.is_some_and(|m| m.is_dir()) {
            parent.remove_dir(name)?;
        }
        Ok(copied)
    }

    /// `.dockerignore`d or `--exclude`d.
    fn is_skipped(&self, paths: &EntryPaths) -> bool {
        self.from.ignore.is_some_and(|i| i.is_excluded(&paths.real))
            || self.exclude.is_excluded(&paths.shown)
            || self.exclude.is_excluded(&paths.inner)
    }

    /// Copies one entry (recursively for directories) to `name` in `parent`.
    fn copy_entry(
        &mut self,
        src: &Path,
        paths: &EntryPaths,
        parent: &Dir,
        name: &OsStr,
    ) -> Result<()> {
        let meta = fs::symlink_metadata(src).map_err(io_err(src))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            match parent.lstat(name)? {
                Some(existing) if existing.is_dir() => {}
                Some(_) => {
                    parent.remove(name)?;
                    parent.mkdir(name, 0o755)?;
                }
                None => parent.mkdir(name, 0o755)?,
            }
            let dir = parent.open_dir(name)?;
            self.copy_dir_contents(src, paths, &dir)?;
            return self.apply_metadata(parent, name, &meta);
        }
        if ft.is_symlink() {
            let link = fs::read_link(src).map_err(io_err(src))?;
            replacing(parent, name, || parent.symlink(&link, name))?;
            let (uid, gid) = self.owner(&meta);
            parent.chown(name, uid, gid)?;
            return set_mtime(parent, name, &meta);
        }
        if ft.is_file() && meta.nlink() > 1 {
            if let Some(first) = self.links.get(&(meta.dev(), meta.ino())) {
                let (first_dir, first_name) = self.root.open_parent(first)?;
                let link = || first_dir.hard_link(&first_name, parent, name);
                return Ok(replacing(parent, name, link)?);
            }
            self.links
                .insert((meta.dev(), meta.ino()), parent.rel().join(name));
        }
        if ft.is_file() {
            let created = replacing(parent, name, || parent.create_file(name, 0o644))?;
            copy_file_contents(src, created, parent, name)?;
        } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            replacing(parent, name, || {
                parent.mknod(name, meta.mode(), meta.rdev())
            })?;
        } else {
            parent.remove_all(name)?;
            return Ok(()); // sockets are not copied
        }
        self.apply_metadata(parent, name, &meta)
    }

    /// Gives `name` in `parent` the owner, mode and mtime a copy of `meta` gets.
    fn apply_metadata(&self, parent: &Dir, name: &OsStr, meta: &fs::Metadata) -> Result<()> {
        let (uid, gid) = self.owner(meta);
        parent.chown(name, uid, gid)?;
        let mode = match self.opts.chmod {
            Some(bits) => bits,
            None => meta.mode() & 0o7777,
        };
        parent.chmod(name, mode)?;
        set_mtime(parent, name, meta)
    }

    /// Extracts the local archive `archive` into the directory `dest` (inside the root),
    /// member by member, confined to that directory.
    fn extract_archive(&mut self, archive: &Path, dest: &Path) -> Result<()> {
        let reader = open_decompressed(archive)?;
        let mut inner = Copier {
            from: self.from,
            opts: self.opts,
            root: RootDir::from_dir(self.root.open_dir(dest)?),
            exclude: self.exclude.clone(),
            links: HashMap::new(),
        };
        inner.extract_tar(reader, archive)
    }

    /// Extracts the (decompressed) tar stream `reader` into the root; `archive` names it
    /// in errors.
    fn extract_tar<R: Read>(&mut self, reader: R, archive: &Path) -> Result<()> {
        let fail = |member: &str, message: String| CopyError::Archive {
            archive: archive.to_path_buf(),
            member: member.to_string(),
            message,
        };
        let mut tar = tar::Archive::new(reader);
        let mut dir_times: Vec<(PathBuf, FileTime)> = Vec::new();
        let entries = tar
            .entries()
            .map_err(|e| fail("its start", e.to_string()))?;
        let mut previous = String::from("its start");
        for entry in entries {
            let mut entry =
                entry.map_err(|e| fail(&format!("the member after {previous}"), e.to_string()))?;
            let raw = entry.path_bytes().into_owned();
            let name = String::from_utf8_lossy(&raw).into_owned();
            let rel = clean_member(&raw);
            if !rel.as_os_str().is_empty() {
                self.extract_member(&mut entry, &rel, &mut dir_times)
                    .map_err(|e| fail(&name, e.to_string()))?;
            }
            previous = name;
        }
        for (dir, mtime) in dir_times.iter().rev() {
            let (parent, name) = self.root.open_parent(dir)?;
            parent.set_times(&name, *mtime, *mtime)?;
        }
        Ok(())
    }

    /// Extracts one member (at `rel`, cleaned) of the archive into the root; the times of
    /// directories are set at the end (`dir_times`), after their contents.
    fn extract_member<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        rel: &Path,
        dir_times: &mut Vec<(PathBuf, FileTime)>,
    ) -> Result<()> {
        let target = self.root.resolve(rel, false)?;
        let meta = self.member_meta(entry.header(), rel)?;
        let kind = entry.header().entry_type();
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        self.ensure_dir(target.parent().unwrap_or(Path::new("")), false)?;
        let (dir, name) = self.root.open_parent(&target)?;
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                extract_dir(&dir, &name, &meta)?;
                dir_times.push((target, meta.mtime));
                Ok(())
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                extract_file(entry, &dir, &name)?;
                meta.apply(&dir, &name)
            }
            T::Symlink => {
                let link = link.ok_or_else(|| bad_member(rel, "symlink", "no target"))?;
                extract_symlink(&link, &dir, &name, &meta)
            }
            T::Link => {
                let link = link.ok_or_else(|| bad_member(rel, "hard link", "no target"))?;
                self.extract_hard_link(&link, rel, &target, &dir, &name)
            }
            T::Char | T::Block | T::Fifo => {
                extract_device(kind, &dir, &name, &meta)?;
                meta.apply(&dir, &name)
            }
            _ => Ok(()), // global headers and other metadata-only entries
        }
    }

    /// The mode, owner, mtime and device numbers member `rel` gets, from its `header`
    /// (mode and owner as `--chmod`/`--chown` say when given).
    fn member_meta(&self, header: &tar::Header, rel: &Path) -> Result<MemberMeta> {
        let old = header.as_old();
        // Empty numeric fields count as 0, as Go's archive/tar (and so Docker) reads them.
        let number = |v: io::Result<u64>, raw: &[u8], what: &str| -> Result<u64> {
            match v {
                Ok(v) => Ok(v),
                Err(_) if raw.iter().all(|b| matches!(b, 0 | b' ')) => Ok(0),
                Err(e) => Err(bad_member(rel, what, e)),
            }
        };
        let mode = number(header.mode().map(u64::from), &old.mode, "mode")? as u32 & 0o7777;
        let id = |v: u64, what: &str| -> Result<u32> {
            u32::try_from(v).map_err(|_| bad_member(rel, what, "too large"))
        };
        let (uid, gid) = match self.opts.chown {
            Some(ids) => ids,
            None => (
                id(number(header.uid(), &old.uid, "uid")?, "uid")?,
                id(number(header.gid(), &old.gid, "gid")?, "gid")?,
            ),
        };
        let mtime = number(header.mtime(), &old.mtime, "mtime")?;
        let device_number = |n: io::Result<Option<u32>>| n.ok().flatten().unwrap_or(0);
        Ok(MemberMeta {
            mode: self.opts.chmod.unwrap_or(mode),
            uid,
            gid,
            mtime: FileTime::from_unix_time(i64::try_from(mtime).unwrap_or(i64::MAX), 0),
            device: libc::makedev(
                device_number(header.device_major()),
                device_number(header.device_minor()),
            ),
        })
    }

    /// A hard link member at `target` (`name` in `dir`) to `link`, a member extracted
    /// before it; a link to itself is nothing to do.
    fn extract_hard_link(
        &self,
        link: &[u8],
        rel: &Path,
        target: &Path,
        dir: &Dir,
        name: &OsStr,
    ) -> Result<()> {
        let first = self.root.resolve(&clean_member(link), false)?;
        if first == target {
            return Ok(());
        }
        let not_extracted = || {
            let text = String::from_utf8_lossy(link);
            bad_member(
                rel,
                "hard link",
                format!("{text} is not a file extracted before it"),
            )
        };
        let (first_dir, first_name) = self.root.open_parent(&first).map_err(|_| not_extracted())?;
        match first_dir.lstat(&first_name)? {
            Some(m) if !m.is_dir() => {}
            _ => return Err(not_extracted()),
        }
        dir.remove_all(name)?;
        Ok(first_dir.hard_link(&first_name, dir, name)?)
    }
}

/// What an archive member gets besides its content.
struct MemberMeta {
    /// Permission bits.
    mode: u32,
    /// Owner.
    uid: u32,
    /// Group.
    gid: u32,
    /// Modification (and access) time.
    mtime: FileTime,
    /// Device number (character and block devices).
    device: libc::dev_t,
}

impl MemberMeta {
    /// Gives `name` in `dir` this owner, mode and mtime.
    fn apply(&self, dir: &Dir, name: &OsStr) -> Result<()> {
        dir.chown(name, self.uid, self.gid)?;
        dir.chmod(name, self.mode)?;
        Ok(dir.set_times(name, self.mtime, self.mtime)?)
    }
}

/// The error for a member header field (or link target) `what` of member `rel` that is
/// not usable.
fn bad_member(rel: &Path, what: &str, e: impl std::fmt::Display) -> CopyError {
    CopyError::Io {
        path: rel.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidData, format!("bad {what}: {e}")),
    }
}

/// A directory member: made (replacing a non-directory) with owner and mode; its time is
/// set after its contents.
fn extract_dir(dir: &Dir, name: &OsStr, meta: &MemberMeta) -> Result<()> {
    match dir.lstat(name)? {
        Some(m) if m.is_dir() => {}
        Some(_) => {
            dir.remove_all(name)?;
            dir.mkdir(name, 0o755)?;
        }
        None => dir.mkdir(name, 0o755)?,
    }
    dir.chown(name, meta.uid, meta.gid)?;
    Ok(dir.chmod(name, meta.mode)?)
}

/// A regular file member: its content written to a new `name` in `dir`.
fn extract_file(content: &mut dyn Read, dir: &Dir, name: &OsStr) -> Result<()> {
    dir.remove_all(name)?;
    let out = dir.create_file(name, 0o600)?;
    let shown = dir.display_path().join(name);
    // Blocks of zeros become holes, as when a layer is unpacked.
    ocibuild_snapshot::write_sparse(content, &out).map_err(io_err(&shown))?;
    Ok(())
}

/// A symlink member to `link`, stored as written (owner and times set, never followed).
fn extract_symlink(link: &[u8], dir: &Dir, name: &OsStr, meta: &MemberMeta) -> Result<()> {
    dir.remove_all(name)?;
    dir.symlink(Path::new(OsStr::from_bytes(link)), name)?;
    dir.chown(name, meta.uid, meta.gid)?;
    Ok(dir.set_times(name, meta.mtime, meta.mtime)?)
}

/// A character device, block device or FIFO member.
fn extract_device(kind: tar::EntryType, dir: &Dir, name: &OsStr, meta: &MemberMeta) -> Result<()> {
    let kind_bits = match kind {
        tar::EntryType::Char => libc::S_IFCHR,
        tar::EntryType::Block => libc::S_IFBLK,
        _ => libc::S_IFIFO,
    };
    dir.remove_all(name)?;
    Ok(dir.mknod(name, kind_bits | meta.mode, meta.device)?)
}

/// The names in the source directory `src`, sorted.
fn sorted_names(src: &Path) -> Result<Vec<OsString>> {
    let mut names: Vec<_> = fs::read_dir(src)
        .map_err(io_err(src))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .map_err(io_err(src))?;
    names.sort();
    Ok(names)
}

/// Extracts a tar stream, plain or compressed (gzip, bzip2, xz, zstd; told by its first
/// bytes), into the existing directory `dest` with the same rules as `ADD` of a local
/// archive: members never land outside `dest`, symlinks are followed inside it. Files are
/// owned by the current user; `name` names the archive in errors. Used for build contexts.
pub(crate) fn extract_tar_stream<R: Read>(reader: R, name: &Path, dest: &Path) -> Result<()> {
    let mut reader = reader;
    let mut head = [0u8; 6];
    let n = read_full(&mut reader, &mut head).map_err(io_err(name))?;
    let whole = io::Cursor::new(head[..n].to_vec()).chain(reader);
    let reader: Box<dyn Read + '_> = match sniff(&head[..n]) {
        Sniffed::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(whole))),
        Sniffed::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(BufReader::new(whole))),
        Sniffed::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(BufReader::new(
            whole,
        ))),
        Sniffed::Zstd => Box::new(zstd::Decoder::new(whole).map_err(io_err(name))?),
        Sniffed::Plain => Box::new(whole),
    };
    let from = SourceRoot {
        dir: dest,
        ignore: None,
        origin: "build context".into(),
        keep_owner: false,
    };
    let me = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    let opts = CopyOptions {
        chown: Some(me),
        ..CopyOptions::default()
    };
    let root = RootDir::open(dest)?;
    let mut copier = Copier::new(&from, &opts, &root, IgnoreRules::default())?;
    copier.extract_tar(reader, name)
}

/// A member name made relative and clean: leading `/` and `.` dropped, `..` never climbing
/// above the extraction directory.
fn clean_member(raw: &[u8]) -> PathBuf {
    let mut out = PathBuf::new();
    for c in Path::new(OsStr::from_bytes(raw)).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Copies the content of the source file `src` into the new file `name` in `dir`.
/// Creates `name` in `parent` with `create`; when something is in the way (`EEXIST`), it
/// is removed (a directory with everything in it, a symlink itself, never followed) and
/// `create` tried again. Creating first saves a lookup per entry in the common case of a
/// name that is new (a COPY of many files into a fresh directory).
fn replacing<T>(
    parent: &Dir,
    name: &OsStr,
    create: impl Fn() -> ocibuild_snapshot::Result<T>,
) -> ocibuild_snapshot::Result<T> {
    match create() {
        Err(ocibuild_snapshot::Error::Io { source, .. })
            if source.raw_os_error() == Some(libc::EEXIST) =>
        {
            parent.remove_all(name)?;
            create()
        }
        other => other,
    }
}

/// Copies the content of the file `src` into `output`, just created as `name` in `dir`.
fn copy_file_contents(src: &Path, output: fs::File, dir: &Dir, name: &OsStr) -> Result<()> {
    let input = fs::File::open(src).map_err(io_err(src))?;
    let shown = dir.display_path().join(name);
    // Holes of a sparse source stay holes (SEEK_DATA/SEEK_HOLE).
    ocibuild_snapshot::copy_file_sparse(&input, &output).map_err(io_err(&shown))?;
    Ok(())
}

/// Sets `name` in `dir` to the modification time of `meta` (atime too), not following it.
fn set_mtime(dir: &Dir, name: &OsStr, meta: &fs::Metadata) -> Result<()> {
    let mtime = FileTime::from_last_modification_time(meta);
    Ok(dir.set_times(name, mtime, mtime)?)
}

/// Opens `path` decompressing it as its first bytes say.
fn open_decompressed(path: &Path) -> Result<Box<dyn Read>> {
    let mut file = fs::File::open(path).map_err(io_err(path))?;
    let mut head = [0u8; 6];
    let n = read_full(&mut file, &mut head).map_err(io_err(path))?;
    let file = fs::File::open(path).map_err(io_err(path))?;
    let reader: Box<dyn Read> = match sniff(&head[..n]) {
        Sniffed::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))),
        Sniffed::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(BufReader::new(file))),
        Sniffed::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(BufReader::new(
            file,
        ))),
        Sniffed::Zstd => Box::new(zstd::Decoder::new(file).map_err(io_err(path))?),
        Sniffed::Plain => Box::new(BufReader::new(file)),
    };
    Ok(reader)
}

/// Reads until `buf` is full or the end; returns how much was read.
fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// True when `path` is a tar archive, compressed or not: its (decompressed) start is a
/// valid tar header. A file that cannot be decompressed is not an archive.
fn is_archive(path: &Path) -> Result<bool> {
    let mut reader = open_decompressed(path)?;
    let mut header = [0u8; 512];
    match read_full(&mut reader, &mut header) {
        Ok(512) => Ok(valid_tar_header(&header)),
        _ => Ok(false),
    }
}

/// Checks the header checksum (unsigned or, as old tars wrote it, signed).
fn valid_tar_header(header: &[u8; 512]) -> bool {
    let field = &header[148..156];
    let text: String = field
        .iter()
        .map(|&b| b as char)
        .filter(|c| !matches!(c, '\0' | ' '))
        .collect();
    let Ok(stored) = i64::from_str_radix(&text, 8) else {
        return false;
    };
    let mut unsigned = 0i64;
    let mut signed = 0i64;
    for (i, &b) in header.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    stored == unsigned || stored == signed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    fn context() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("bin/sub")).unwrap();
        fs::write(root.join("bin/start"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(root.join("bin/start"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(root.join("bin/sub/x.txt"), "x").unwrap();
        fs::write(root.join("config.txt"), "cfg").unwrap();
        fs::write(root.join("a.md"), "a").unwrap();
        fs::write(root.join("b.md"), "b").unwrap();
        symlink("start", root.join("bin/run")).unwrap();
        dir
    }

    fn copy(ctx: &Path, rootfs: &Path, sources: &[&str], dest: &str) -> Result<()> {
        let from = SourceRoot {
            dir: ctx,
            ignore: None,
            origin: "build context".into(),
            keep_owner: false,
        };
        let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
        let root = RootDir::open(rootfs)?;
        copy_sources(&from, &sources, dest, &root, &CopyOptions::default())
    }

    #[test]
    fn directory_source_copies_contents_and_keeps_modes_and_symlinks() {
        let ctx = context();
        let rootfs = tempfile::tempdir().unwrap();
        copy(ctx.path(), rootfs.path(), &["bin/"], "/app/bin/").unwrap();
        let start = rootfs.path().join("app/bin/start");
        assert_eq!(fs::metadata(&start).unwrap().mode() & 0o7777, 0o755);
        assert_eq!(
            fs::read(rootfs.path().join("app/bin/sub/x.txt")).unwrap(),
            b"x"
        );
        assert_eq!(
            fs::read_link(rootfs.path().join("app/bin/run")).unwrap(),
            Path::new("start")
        );
        assert!(!rootfs.path().join("app/bin/bin").exists());
    }

    #[test]
    fn file_to_directory_and_to_file_name() {
        let ctx = context();
        let rootfs = tempfile::tempdir().unwrap();
        copy(ctx.path(), rootfs.path(), &["config.txt"], "/etc/app/").unwrap();
        assert_eq!(
            fs::read(rootfs.path().join("etc/app/config.txt")).unwrap(),
            b"cfg"
        );
        copy(ctx.path(), rootfs.path(), &["config.txt"], "/etc/renamed").unwrap();
        assert_eq!(fs::read(rootfs.path().join("etc/renamed")).unwrap(), b"cfg");
        // An existing directory takes the file inside it even without a trailing slash.
        copy(ctx.path(), rootfs.path(), &["a.md"], "/etc/app").unwrap();
        assert!(rootfs.path().join("etc/app/a.md").is_file());
    }

    #[test]
    fn several_sources_need_a_directory_destination() {
        let ctx = context();
        let rootfs = tempfile::tempdir().unwrap();
        let err = copy(ctx.path(), rootfs.path(), &["a.md", "b.md"], "/docs").unwrap_err();
        assert!(matches!(err, CopyError::DestNotDir { .. }), "{err}");
        copy(ctx.path(), rootfs.path(), &["a.md", "b.md"], "/docs/").unwrap();
        assert!(rootfs.path().join("docs/b.md").is_file());
    }

    #[test]
    fn globs_match_and_missing_sources_fail() {
        let ctx = context();
        let rootfs = tempfile::tempdir().unwrap();
        copy(ctx.path(), rootfs.path(), &["*.md"], "/docs/").unwrap();
        assert!(rootfs.path().join("docs/a.md").is_file());
        assert!(rootfs.path().join("docs/b.md").is_file());
        let err = copy(ctx.path(), rootfs.path(), &["nope"], "/x/").unwrap_err();
        assert!(err.to_string().contains("build context"), "{err}");
        let err = copy(ctx.path(), rootfs.path(), &["nodir/*.md"], "/x/").unwrap_err();
        assert!(err.to_string().contains("nodir/*.md"), "{err}");
    }

    /// BuildKit (dockerfile2llb dispatchCopy: AllowEmptyWildcard for every local source;
    /// solver/llbsolver/file/backend.go docopy returns early on an empty match): a wildcard
    /// matching nothing adds nothing, and the destination is named by what did match.
    #[test]
    fn a_wildcard_matching_nothing_adds_nothing() {
        let ctx = context();
        let rootfs = tempfile::tempdir().unwrap();
        copy(ctx.path(), rootfs.path(), &["nomatch*", "a.md"], "/hello").unwrap();
        assert!(rootfs.path().join("hello").is_file(), "one match: a file");
        copy(ctx.path(), rootfs.path(), &["*.rs"], "/x/").unwrap();
        assert!(
            !rootfs.path().join("x").exists(),
            "nothing matched, nothing made"
        );
    }

    #[test]
    fn sources_cannot_leave_the_context() {
        let ctx = context();
        let rootfs = tempfile::tempdir().unwrap();
        let err = copy(ctx.path(), rootfs.path(), &["../etc/passwd"], "/x").unwrap_err();
        assert!(matches!(err, CopyError::OutsideRoot { .. }), "{err}");
    }

    #[test]
    fn destination_symlinks_stay_inside_the_rootfs() {
        let ctx = context();
        let rootfs = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), rootfs.path().join("escape")).unwrap();
        copy(ctx.path(), rootfs.path(), &["config.txt"], "/escape/").unwrap();
        assert!(!outside.path().join("config.txt").exists());
    }

    #[test]
    fn dockerignore_applies_to_sources_and_directory_contents() {
        let ctx = context();
        let rootfs = tempfile::tempdir().unwrap();
        let rules = IgnoreRules::parse("bin/sub\n*.md\n");
        let from = SourceRoot {
            dir: ctx.path(),
            ignore: Some(&rules),
            origin: "build context".into(),
            keep_owner: false,
        };
        copy_sources(
            &from,
            &["bin".into()],
            "/b/",
            &RootDir::open(rootfs.path()).unwrap(),
            &CopyOptions::default(),
        )
        .unwrap();
        assert!(rootfs.path().join("b/start").exists());
        assert!(!rootfs.path().join("b/sub").exists());
        let err = copy_sources(
            &from,
            &["a.md".into()],
            "/",
            &RootDir::open(rootfs.path()).unwrap(),
            &CopyOptions::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains(".dockerignore"), "{err}");
    }

    #[test]
    fn chown_and_chmod_apply_to_copied_files() {
        let ctx = context();
        let rootfs = tempfile::tempdir().unwrap();
        let from = SourceRoot {
            dir: ctx.path(),
            ignore: None,
            origin: "build context".into(),
            keep_owner: false,
        };
        let opts = CopyOptions {
            chown: Some((1000, 1001)),
            chmod: Some(0o600),
            ..CopyOptions::default()
        };
        let root = RootDir::open(rootfs.path()).unwrap();
        copy_sources(&from, &["config.txt".into()], "/c/", &root, &opts).unwrap();
        let meta = fs::metadata(rootfs.path().join("c/config.txt")).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (1000, 1001, 0o600)
        );
    }
}
