//! What the suite compares of an image: its file tree (read from a umoci-unpacked rootfs)
//! and the config fields a Dockerfile can set.

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// One path of the tree; mtimes are deliberately absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Files only.
    pub size: Option<u64>,
    /// Files only: sha256, plus the text itself when it is short and printable.
    pub content: Option<String>,
    /// Symlinks only.
    pub target: Option<String>,
    /// The other paths sharing this file's inode, sorted and comma-separated ("" if none).
    pub links: String,
}

impl Entry {
    /// `(field, value)` pairs in a fixed order, for field-by-field comparison.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
        vec![
            ("type", self.kind.to_string()),
            ("mode", format!("{:04o}", self.mode)),
            ("uid", self.uid.to_string()),
            ("gid", self.gid.to_string()),
            ("size", self.size.map_or("-".to_string(), |s| s.to_string())),
            ("content", opt(&self.content)),
            ("target", opt(&self.target)),
            ("links", self.links.clone()),
        ]
    }

    /// A one-line description, for paths only one image has.
    pub fn describe(&self) -> String {
        self.fields()
            .into_iter()
            .filter(|(_, v)| v != "-" && !v.is_empty())
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Every path under `root` ("/" for the root itself) with its entry.
pub fn tree(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<String>> = HashMap::new();
    walk(root, "/", &mut out, &mut inodes);
    for paths in inodes.values().filter(|p| p.len() > 1) {
        for path in paths {
            let mut others: Vec<&str> = paths
                .iter()
                .filter(|p| *p != path)
                .map(String::as_str)
                .collect();
            others.sort_unstable();
            out.get_mut(path).unwrap().links = others.join(",");
        }
    }
    out
}

fn walk(
    path: &Path,
    name: &str,
    out: &mut BTreeMap<String, Entry>,
    inodes: &mut HashMap<(u64, u64), Vec<String>>,
) {
    let meta = std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        "file"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else {
        "socket"
    };
    let mut entry = Entry {
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        size: None,
        content: None,
        target: None,
        links: String::new(),
    };
    if ft.is_file() {
        let data = std::fs::read(path).unwrap();
        entry.size = Some(data.len() as u64);
        entry.content = Some(content_summary(&data));
        if meta.nlink() > 1 {
            inodes
                .entry((meta.dev(), meta.ino()))
                .or_default()
                .push(name.to_string());
        }
    } else if ft.is_symlink() {
        let target = std::fs::read_link(path).unwrap();
        entry.target = Some(target.to_string_lossy().into_owned());
    }
    out.insert(name.to_string(), entry);
    if ft.is_dir() {
        for child in std::fs::read_dir(path).unwrap() {
            let child = child.unwrap();
            let child_name = child.file_name().to_string_lossy().into_owned();
            let full = if name == "/" {
                format!("/{child_name}")
            } else {
                format!("{name}/{child_name}")
            };
            walk(&child.path(), &full, out, inodes);
        }
    }
}

pub fn content_summary(data: &[u8]) -> String {
    let digest = hex::encode(Sha256::digest(data));
    match std::str::from_utf8(data) {
        Ok(text) if data.len() <= 120 && !text.contains('\0') => {
            format!("sha256:{} {:?}", &digest[..12], text)
        }
        _ => format!("sha256:{}", &digest[..12]),
    }
}

/// The config fields compared, in print order. `Author` is the top-level field MAINTAINER
/// sets; the others live under `config`.
pub const CONFIG_FIELDS: &[&str] = &[
    "Env",
    "Entrypoint",
    "Cmd",
    "User",
    "WorkingDir",
    "Labels",
    "ExposedPorts",
    "Volumes",
    "StopSignal",
    "Healthcheck",
    "OnBuild",
    "Shell",
    "Author",
];

/// The compared config fields of an image config (as `skopeo inspect --config --raw` gives
/// it). Absent, `null`, `""`, `[]` and `{}` all mean "not set" and are dropped, as are
/// zero durations in `Healthcheck` (Docker's types omit them: zero means "inherit the
/// default"); what is left is compared as JSON.
pub fn config_fields(config: &Value) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for field in CONFIG_FIELDS {
        let value = if *field == "Author" {
            config.get("author")
        } else {
            config.get("config").and_then(|c| c.get(*field))
        };
        let Some(value) = value else { continue };
        let mut value = value.clone();
        if *field == "Healthcheck" {
            if let Some(map) = value.as_object_mut() {
                map.retain(|_, v| v.as_i64() != Some(0));
            }
        }
        let empty = match &value {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            _ => false,
        };
        if !empty {
            out.insert(field.to_string(), value);
        }
    }
    out
}
