//! `COPY` and `ADD` to [`CopyOp`].

use super::{check_heredoc_name, LowerReason, Scope};
use crate::parser::{CopyArgs, Heredoc};

/// `COPY` or `ADD`, with every path and flag expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOp {
    /// ADD (archives extracted, URLs and git sources fetched) rather than COPY.
    pub add: bool,
    /// The sources (heredoc `<<NAME` sources excluded).
    pub sources: Vec<String>,
    /// The destination as written (expanded).
    pub dest: String,
    /// The destination made absolute against WORKDIR; ends with `/` when the written
    /// destination names a directory (`dir/` or `.`).
    pub dest_abs: String,
    /// `--from`: a stage name or index, or an image.
    pub from: Option<String>,
    /// `--chown`, a user spec resolved in the image when copying.
    pub chown: Option<String>,
    /// `--chmod`, as permission bits.
    pub chmod: Option<u32>,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
    /// `--parents`.
    pub parents: bool,
    /// `--link`.
    pub link: bool,
    /// ADD `--checksum`.
    pub checksum: Option<String>,
    /// ADD `--unpack`.
    pub unpack: Option<bool>,
    /// ADD `--keep-git-dir`.
    pub keep_git_dir: Option<bool>,
    /// Heredoc sources, named by file name, bodies expanded unless the delimiter was
    /// quoted.
    pub heredocs: Vec<Heredoc>,
}

pub(super) fn lower_copy(args: &CopyArgs, add: bool, scope: &Scope) -> Result<CopyOp, LowerReason> {
    let mut sources = Vec::new();
    for s in args.sources.iter().filter(|s| !s.starts_with("<<")) {
        sources.push(scope.expand(s)?);
    }
    let dest = scope.expand(&args.dest)?;
    let mut dest_abs = if dest.starts_with('/') {
        dest.clone()
    } else {
        format!("{}/{dest}", scope.cwd().trim_end_matches('/'))
    };
    if (dest.ends_with('/') || dest == ".") && !dest_abs.ends_with('/') {
        dest_abs.push('/');
    }
    let chmod = match &args.chmod {
        Some(bits) => {
            Some(u32::from_str_radix(bits, 8).map_err(|_| LowerReason::Chmod(bits.clone()))?)
        }
        None => None,
    };
    let optional = |v: &Option<String>| v.as_deref().map(|v| scope.expand(v)).transpose();
    let mut exclude = Vec::new();
    for e in &args.exclude {
        exclude.push(scope.expand(e)?);
    }
    Ok(CopyOp {
        add,
        sources,
        dest,
        dest_abs,
        from: optional(&args.from)?,
        chown: optional(&args.chown)?,
        chmod,
        exclude,
        parents: args.parents,
        link: args.link,
        checksum: args.checksum.clone(),
        unpack: args.unpack,
        keep_git_dir: args.keep_git_dir,
        heredocs: lower_heredocs(&args.heredocs, scope)?,
    })
}

/// Expands unquoted heredoc bodies (quotes and backslashes stay as written, as BuildKit
/// does).
fn lower_heredocs(docs: &[Heredoc], scope: &Scope) -> Result<Vec<Heredoc>, LowerReason> {
    let mut lowered = Vec::new();
    for doc in docs {
        check_heredoc_name(&doc.name)?;
        let content = if doc.expand {
            let mut raw = String::with_capacity(doc.content.len());
            for c in doc.content.chars() {
                if c == '\'' || c == '"' || c == scope.escape {
                    raw.push(scope.escape);
                }
                raw.push(c);
            }
            scope.expand(&raw)?
        } else {
            doc.content.clone()
        };
        lowered.push(Heredoc {
            content,
            expand: false,
            ..doc.clone()
        });
    }
    Ok(lowered)
}
