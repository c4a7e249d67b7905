//! Reading the Dockerfile and the `.dockerignore` files without leaving the build context.
//!
//! The context is untrusted (a pull request can change it): a `Dockerfile` or
//! `.dockerignore` in it that is a symlink to a host file (say the CI runner's registry
//! credentials) must not be read, or its contents could end up in the build log. So a file
//! whose path lies in the context is read only when its real path (symlinks resolved) is
//! in the context too, and only when it is a regular file of reasonable size. A Dockerfile
//! the user named outside the context with `-f` is trusted as given.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// The largest Dockerfile or `.dockerignore` read, in bytes.
pub const MAX_FILE_SIZE: u64 = 16 << 20;

/// Why a Dockerfile or `.dockerignore` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ContextFileError {
    /// The path is in the context but a symlink leads out of it.
    #[error(
        "{}: leads outside the build context (to {}); refusing to read it",
        path.display(),
        target.display()
    )]
    OutsideContext {
        /// The path as looked up.
        path: PathBuf,
        /// Where its symlinks lead.
        target: PathBuf,
    },
    /// The path is a directory, device, FIFO or socket.
    #[error("{}: not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The file is larger than [`MAX_FILE_SIZE`].
    #[error("{}: larger than {MAX_FILE_SIZE} bytes", path.display())]
    TooLarge {
        /// The path.
        path: PathBuf,
    },
    /// The file is not UTF-8 text.
    #[error("{}: not UTF-8 text", path.display())]
    NotText {
        /// The path.
        path: PathBuf,
    },
    /// The file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl ContextFileError {
    /// True when the file does not exist (a missing `.dockerignore` is not an error).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ContextFileError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Where the Dockerfile is and whether it belongs to the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerfileLocation {
    /// The Dockerfile's path.
    pub path: PathBuf,
    /// True when the path lies in the context: it is then read only if it stays there.
    pub in_context: bool,
}

/// Finds the Dockerfile: `context/Dockerfile` when `given` is empty; a relative `given`
/// that exists relative to the working directory as given, else relative to `context`;
/// an absolute `given` as given. `context` must be canonical; `context_as_given` is the
/// context path before that (a path under either counts as in the context).
pub fn locate_dockerfile(
    given: &Path,
    context: &Path,
    context_as_given: &Path,
) -> DockerfileLocation {
    let path = if given.as_os_str().is_empty() {
        context.join("Dockerfile")
    } else if given.is_relative() && given.symlink_metadata().is_err() {
        context.join(given)
    } else {
        lexical_absolute(given)
    };
    let in_context =
        path.starts_with(context) || path.starts_with(lexical_absolute(context_as_given));
    DockerfileLocation { path, in_context }
}

/// `path` made absolute against the working directory, with `.` and `..` removed without
/// looking at the filesystem.
pub fn lexical_absolute(path: &Path) -> PathBuf {
    let joined = match std::env::current_dir() {
        Ok(cwd) if path.is_relative() => cwd.join(path),
        _ => path.to_path_buf(),
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Reads the Dockerfile found by [`locate_dockerfile`], refusing a path in the context
/// whose symlinks lead out of it.
pub fn read_dockerfile(
    location: &DockerfileLocation,
    context: &Path,
) -> Result<String, ContextFileError> {
    if location.in_context {
        read_in_context(&location.path, context)
    } else {
        read_text(&location.path)
    }
}

/// Reads `path`, which lies in `context` (canonical), after checking that its real path
/// is in `context` too.
pub fn read_in_context(path: &Path, context: &Path) -> Result<String, ContextFileError> {
    let real = path.canonicalize().map_err(|source| ContextFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !real.starts_with(context) {
        return Err(ContextFileError::OutsideContext {
            path: path.to_path_buf(),
            target: real,
        });
    }
    read_text(&real).map_err(|e| e.with_path(path))
}

impl ContextFileError {
    fn with_path(self, shown: &Path) -> ContextFileError {
        let path = shown.to_path_buf();
        match self {
            ContextFileError::NotAFile { .. } => ContextFileError::NotAFile { path },
            ContextFileError::TooLarge { .. } => ContextFileError::TooLarge { path },
            ContextFileError::NotText { .. } => ContextFileError::NotText { path },
            ContextFileError::Io { source, .. } => ContextFileError::Io { path, source },
            other => other,
        }
    }
}

/// Reads a regular file of at most [`MAX_FILE_SIZE`] bytes as UTF-8 text. The last path
/// component must not be a symlink (callers pass resolved paths or trusted ones).
fn read_text(path: &Path) -> Result<String, ContextFileError> {
    let io = |source| ContextFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    if !file.metadata().map_err(io)?.is_file() {
        return Err(ContextFileError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    read_limited(file, path)
}

fn read_limited(file: File, path: &Path) -> Result<String, ContextFileError> {
    let mut bytes = Vec::new();
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| ContextFileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(ContextFileError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    String::from_utf8(bytes).map_err(|_| ContextFileError::NotText {
        path: path.to_path_buf(),
    })
}

/// Reads the ignore rules: `<Dockerfile>.dockerignore` next to the Dockerfile when it
/// exists (BuildKit's per-Dockerfile ignore file), else `.dockerignore` in the context
/// root. Files in the context must stay in it; none at all gives no rules.
pub fn read_dockerignore(
    dockerfile: &DockerfileLocation,
    context: &Path,
) -> Result<Option<String>, ContextFileError> {
    let mut specific = dockerfile.path.as_os_str().to_owned();
    specific.push(".dockerignore");
    let specific = PathBuf::from(specific);
    let candidates = [
        (specific, dockerfile.in_context),
        (context.join(".dockerignore"), true),
    ];
    for (path, in_context) in candidates {
        let read = if in_context {
            read_in_context(&path, context)
        } else {
            read_text(&path)
        };
        match read {
            Ok(text) => return Ok(Some(text)),
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const SECRET: &str = "{\"auths\":{\"r.example\":{\"auth\":\"c2VjcmV0OnNlY3JldA==\"}}}";

    /// A canonical context directory and a secret file outside it.
    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let context = root.join("ctx");
        std::fs::create_dir(&context).unwrap();
        let secret = root.join("config.json");
        std::fs::write(&secret, SECRET).unwrap();
        (dir, context, secret)
    }

    #[test]
    fn dockerfile_symlink_out_of_the_context_is_refused_without_its_contents() {
        let (_dir, context, secret) = setup();
        symlink(&secret, context.join("Dockerfile")).unwrap();
        let location = locate_dockerfile(Path::new(""), &context, &context);
        assert!(location.in_context);
        let err = read_dockerfile(&location, &context).unwrap_err();
        assert!(matches!(err, ContextFileError::OutsideContext { .. }));
        let text = err.to_string();
        assert!(text.contains("outside the build context"), "{text}");
        assert!(
            !text.contains("c2VjcmV0") && !text.contains("auths"),
            "{text}"
        );
    }

    #[test]
    fn symlinked_directory_out_of_the_context_is_refused() {
        let (_dir, context, secret) = setup();
        symlink(secret.parent().unwrap(), context.join("up")).unwrap();
        let location = locate_dockerfile(&context.join("up/config.json"), &context, &context);
        assert!(location.in_context);
        assert!(matches!(
            read_dockerfile(&location, &context),
            Err(ContextFileError::OutsideContext { .. })
        ));
        let dotdot = locate_dockerfile(&context.join("sub/../up/config.json"), &context, &context);
        assert!(read_dockerfile(&dotdot, &context).is_err());
    }

    #[test]
    fn symlink_inside_the_context_is_followed() {
        let (_dir, context, _) = setup();
        std::fs::write(context.join("real.Dockerfile"), "FROM scratch\n").unwrap();
        symlink("real.Dockerfile", context.join("Dockerfile")).unwrap();
        let location = locate_dockerfile(Path::new(""), &context, &context);
        assert_eq!(
            read_dockerfile(&location, &context).unwrap(),
            "FROM scratch\n"
        );
    }

    #[test]
    fn explicit_path_outside_the_context_is_trusted() {
        let (_dir, context, secret) = setup();
        let location = locate_dockerfile(&secret, &context, &context);
        assert!(!location.in_context);
        assert_eq!(read_dockerfile(&location, &context).unwrap(), SECRET);
    }

    #[test]
    fn relative_path_is_looked_up_in_the_context_when_missing_here() {
        let (_dir, context, _) = setup();
        let location = locate_dockerfile(
            Path::new("no-such-dir-here/Dockerfile.web"),
            &context,
            &context,
        );
        assert_eq!(
            location.path,
            context.join("no-such-dir-here/Dockerfile.web")
        );
        assert!(location.in_context);
    }

    #[test]
    fn fifo_and_directory_are_not_read() {
        let (_dir, context, _) = setup();
        std::fs::create_dir(context.join("Dockerfile")).unwrap();
        let location = locate_dockerfile(Path::new(""), &context, &context);
        assert!(matches!(
            read_dockerfile(&location, &context),
            Err(ContextFileError::NotAFile { .. })
        ));
        let fifo = context.join(".dockerignore");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(matches!(
            read_dockerignore(&location, &context),
            Err(ContextFileError::NotAFile { .. })
        ));
    }

    #[test]
    fn oversized_file_is_refused() {
        let (_dir, context, _) = setup();
        let file = File::create(context.join("Dockerfile")).unwrap();
        file.set_len(MAX_FILE_SIZE + 1).unwrap();
        let location = locate_dockerfile(Path::new(""), &context, &context);
        assert!(matches!(
            read_dockerfile(&location, &context),
            Err(ContextFileError::TooLarge { .. })
        ));
    }

    #[test]
    fn dockerignore_symlinks_out_of_the_context_are_refused() {
        let (_dir, context, secret) = setup();
        std::fs::write(context.join("Dockerfile"), "FROM scratch\n").unwrap();
        let location = locate_dockerfile(Path::new(""), &context, &context);
        assert_eq!(read_dockerignore(&location, &context).unwrap(), None);
        symlink(&secret, context.join(".dockerignore")).unwrap();
        let err = read_dockerignore(&location, &context).unwrap_err();
        assert!(!err.to_string().contains("c2VjcmV0"), "{err}");
        symlink(&secret, context.join("Dockerfile.dockerignore")).unwrap();
        assert!(matches!(
            read_dockerignore(&location, &context),
            Err(ContextFileError::OutsideContext { .. })
        ));
    }

    #[test]
    fn per_dockerfile_ignore_file_wins() {
        let (_dir, context, _) = setup();
        std::fs::write(context.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(context.join(".dockerignore"), "a\n").unwrap();
        std::fs::write(context.join("Dockerfile.dockerignore"), "b\n").unwrap();
        let location = locate_dockerfile(Path::new(""), &context, &context);
        assert_eq!(
            read_dockerignore(&location, &context).unwrap().as_deref(),
            Some("b\n")
        );
    }
}
