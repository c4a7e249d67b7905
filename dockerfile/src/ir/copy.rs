//! `COPY` and `ADD` to [`CopyOp`].

use super::{check_heredoc_name, KeyValue, LowerReason, Scope};
use crate::parser::{CopyArgs, Heredoc};
use std::collections::BTreeMap;

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
    /// `--chmod`.
    pub chmod: Option<Chmod>,
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
    /// Heredoc sources (`<<NAME`) as parsed, names checked.
    pub heredocs: Vec<Heredoc>,
    /// The file each heredoc becomes: its body, expanded unless the delimiter was quoted
    /// (quotes and backslashes stay as written, as BuildKit does).
    pub heredoc_contents: Vec<String>,
    /// The variables the heredoc bodies were expanded with (empty without heredocs): a
    /// cache-key input.
    pub heredoc_vars: BTreeMap<String, String>,
}

/// `--chmod=`: permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chmod {
    /// The bits.
    pub bits: u32,
    /// The value as written (expanded): a cache-key input.
    pub text: String,
}

impl CopyOp {
    /// The cache-key kind: `ADD` or `COPY`.
    pub fn key_kind(&self) -> &'static str {
        if self.add {
            "ADD"
        } else {
            "COPY"
        }
    }

    /// The cache-key fields, in order. The engine supplies `content` (a digest of the
    /// sources in the context, or the `--from` stage's key or image's identity) and `nonce`
    /// (non-empty when the step must never be reused: a URL without `--checksum`).
    pub fn key_fields(&self, content: String, nonce: String) -> Vec<(&'static str, KeyValue)> {
        let chmod = self.chmod.as_ref().map(|c| c.text.clone());
        let mut flags = Vec::new();
        for (name, value) in [
            ("chown", &self.chown),
            ("chmod", &chmod),
            ("from", &self.from),
            ("checksum", &self.checksum),
        ] {
            if let Some(v) = value {
                flags.push(format!("{name}={v}"));
            }
        }
        flags.push(format!(
            "parents={} link={} add={} unpack={:?} keep_git_dir={:?}",
            self.parents, self.link, self.add, self.unpack, self.keep_git_dir
        ));
        let heredocs: Vec<String> = self
            .heredocs
            .iter()
            .map(|d| format!("{}\0{}\0{}", d.name, d.expand, d.content))
            .collect();
        let vars = if heredocs.is_empty() {
            String::new()
        } else {
            format!("{:?}", self.heredoc_vars)
        };
        vec![
            ("sources", KeyValue::List(self.sources.clone())),
            ("dest", KeyValue::Text(self.dest_abs.clone())),
            ("flags", KeyValue::List(flags)),
            ("exclude", KeyValue::List(self.exclude.clone())),
            ("content", KeyValue::Text(content)),
            ("heredocs", KeyValue::List(heredocs)),
            ("vars", KeyValue::Text(vars)),
            ("nonce", KeyValue::Text(nonce)),
        ]
    }
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
    let optional = |v: &Option<String>| v.as_deref().map(|v| scope.expand(v)).transpose();
    let chmod = match optional(&args.chmod)? {
        Some(text) => Some(Chmod {
            bits: u32::from_str_radix(&text, 8).map_err(|_| LowerReason::Chmod(text.clone()))?,
            text,
        }),
        None => None,
    };
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
        checksum: optional(&args.checksum)?,
        unpack: args.unpack,
        keep_git_dir: args.keep_git_dir,
        heredocs: args.heredocs.clone(),
        heredoc_contents: heredoc_contents(&args.heredocs, scope)?,
        heredoc_vars: if args.heredocs.is_empty() {
            BTreeMap::new()
        } else {
            scope.vars()
        },
    })
}

/// The heredoc bodies, expanded when the delimiter was not quoted (quotes and
/// backslashes stay as written, as BuildKit does); checks their names.
fn heredoc_contents(docs: &[Heredoc], scope: &Scope) -> Result<Vec<String>, LowerReason> {
    let mut contents = Vec::new();
    for doc in docs {
        check_heredoc_name(&doc.name)?;
        if !doc.expand {
            contents.push(doc.content.clone());
            continue;
        }
        let mut raw = String::with_capacity(doc.content.len());
        for c in doc.content.chars() {
            if c == '\'' || c == '"' || c == scope.escape {
                raw.push(scope.escape);
            }
            raw.push(c);
        }
        contents.push(scope.expand(&raw)?);
    }
    Ok(contents)
}
