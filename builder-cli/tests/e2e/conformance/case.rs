//! A conformance case: `testdata/conformance/<name>/` with a Dockerfile, its context and an
//! optional `case.conf` of `key = value` lines (`#` starts a comment line):
//!
//! | key | meaning |
//! | --- | --- |
//! | `build_args = K=V K2=V2` | extra `--build-arg`s for both builders |
//! | `target = NAME` | `--target` for both builders |
//! | `dockerfile = NAME` | the Dockerfile's name in the case directory (default `Dockerfile`) |
//! | `buildah = skip: REASON` | buildah cannot build it; the `expect_*` lines are checked instead |
//! | `allow = KEY: REASON` | a difference buildah gets wrong, Docker's documented behaviour wins |
//! | `expect_file = /PATH = CONTENT` | the image has a file with CONTENT (`\n`, `\t`, `\\` escapes) |
//! | `expect_config = FIELD = JSON` | the config field (as compared, see `config_fields`) equals JSON |
//! | `hardlink = EXISTING NEW` | made in the copy of the context (git keeps no hard links) |
//! | `mkdir = PATH` | made in the copy of the context (git keeps no empty directories) |
//! | `chmod = MODE PATH` | set (octal) in the copy of the context (git keeps no directory modes) |

use std::path::{Path, PathBuf};

/// One parsed case.
#[derive(Debug, Default)]
pub struct Case {
    pub name: String,
    pub dir: PathBuf,
    pub dockerfile: String,
    pub build_args: Vec<String>,
    pub target: Option<String>,
    pub buildah_skip: Option<String>,
    pub allow: Vec<(String, String)>,
    pub expect_files: Vec<(String, String)>,
    pub expect_config: Vec<(String, String)>,
    pub hardlinks: Vec<(String, String)>,
    pub mkdirs: Vec<String>,
    pub chmods: Vec<(u32, String)>,
}

/// Reads every case under `root`, sorted by name.
pub fn load_all(root: &Path) -> Vec<Case> {
    let mut cases: Vec<Case> = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("reading {}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|dir| load(&dir))
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    cases
}

fn load(dir: &Path) -> Case {
    let mut case = Case {
        name: dir.file_name().unwrap().to_string_lossy().into_owned(),
        dir: dir.to_path_buf(),
        dockerfile: "Dockerfile".to_string(),
        ..Case::default()
    };
    let conf = dir.join("case.conf");
    let text = std::fs::read_to_string(&conf).unwrap_or_default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || panic!("{}:{}: cannot parse {line:?}", conf.display(), n + 1);
        let Some((key, value)) = line.split_once(" = ") else {
            bad()
        };
        let value = value.trim();
        match key.trim() {
            "build_args" => case
                .build_args
                .extend(value.split_whitespace().map(str::to_string)),
            "target" => case.target = Some(value.to_string()),
            "dockerfile" => case.dockerfile = value.to_string(),
            "buildah" => match value.strip_prefix("skip:") {
                Some(reason) => case.buildah_skip = Some(reason.trim().to_string()),
                None => bad(),
            },
            "allow" => match value.split_once(": ") {
                Some((k, reason)) => case.allow.push((k.to_string(), reason.to_string())),
                None => bad(),
            },
            "expect_file" => match value.split_once(" = ") {
                Some((path, content)) => case
                    .expect_files
                    .push((path.to_string(), unescape(content))),
                None => bad(),
            },
            "expect_config" => match value.split_once(" = ") {
                Some((field, json)) => case
                    .expect_config
                    .push((field.to_string(), json.to_string())),
                None => bad(),
            },
            "hardlink" => match value.split_once(' ') {
                Some((from, to)) => case
                    .hardlinks
                    .push((from.to_string(), to.trim().to_string())),
                None => bad(),
            },
            "mkdir" => case.mkdirs.push(value.to_string()),
            "chmod" => match value.split_once(' ') {
                Some((mode, path)) => match u32::from_str_radix(mode, 8) {
                    Ok(mode) => case.chmods.push((mode, path.trim().to_string())),
                    Err(_) => bad(),
                },
                None => bad(),
            },
            _ => bad(),
        }
    }
    assert!(
        dir.join(&case.dockerfile).is_file(),
        "{}: no {}",
        dir.display(),
        case.dockerfile
    );
    if case.buildah_skip.is_some() {
        assert!(
            !case.expect_files.is_empty() || !case.expect_config.is_empty(),
            "{}: `buildah = skip` needs expect_file or expect_config lines",
            conf.display()
        );
    }
    case
}

fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

impl Case {
    /// Copies the case into `dest` as the build context: without `case.conf`, with the
    /// hard links and empty directories git cannot store.
    pub fn prepare_context(&self, dest: &Path) {
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(&self.dir)
            .arg(dest)
            .status()
            .expect("running cp");
        assert!(status.success(), "cp -a {} failed", self.dir.display());
        let _ = std::fs::remove_file(dest.join("case.conf"));
        for dir in &self.mkdirs {
            std::fs::create_dir_all(dest.join(dir)).unwrap();
        }
        for (from, to) in &self.hardlinks {
            let to = dest.join(to);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::hard_link(dest.join(from), to).unwrap();
        }
        for (mode, path) in &self.chmods {
            use std::os::unix::fs::PermissionsExt;
            let perms = std::fs::Permissions::from_mode(*mode);
            std::fs::set_permissions(dest.join(path), perms).unwrap();
        }
    }

    /// The reason buildah's difference `key` is accepted for this case, if any. A key in
    /// `case.conf` ending in `*` matches every difference key starting with the rest.
    pub fn allowed(&self, key: &str) -> Option<&str> {
        self.allow.iter().find_map(|(k, reason)| {
            let hit = match k.strip_suffix('*') {
                Some(prefix) => key.starts_with(prefix),
                None => k == key,
            };
            hit.then_some(reason.as_str())
        })
    }
}
