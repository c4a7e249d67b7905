//! `docker save`-style tarballs (`manifest.json`, the config and one file per layer), which
//! `skopeo copy docker-archive:PATH` and `docker load` read.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::atomic::IoError;

/// What a docker archive holds: the config blob and the layer files, in order.
#[derive(Debug, Clone, Copy)]
pub struct Archive<'a> {
    /// `sha256:` of the config.
    pub config_digest: &'a str,
    /// The config JSON.
    pub config: &'a [u8],
    /// The names the image is loaded as (`RepoTags`).
    pub repo_tags: &'a [String],
    /// Each layer's digest and the file holding its blob.
    pub layers: &'a [(String, PathBuf)],
}

/// Writes `archive` to `path` through `path.tar.partial`, renamed into place once synced.
pub fn write(archive: &Archive<'_>, path: &Path) -> Result<(), IoError> {
    let tmp = path.with_extension("tar.partial");
    let out = File::create(&tmp).map_err(IoError::at("create", &tmp))?;
    write_entries(archive, BufWriter::new(out)).map_err(IoError::at("write", &tmp))?;
    fs::rename(&tmp, path).map_err(IoError::at("rename into place", path))
}

/// The tar entries: the config, the layers, then `manifest.json`.
fn write_entries(archive: &Archive<'_>, out: BufWriter<File>) -> std::io::Result<()> {
    let hex = |digest: &str| digest.trim_start_matches("sha256:").to_string();
    let config_name = format!("{}.json", hex(archive.config_digest));
    let layer_names: Vec<String> = archive
        .layers
        .iter()
        .map(|(digest, _)| format!("{}.tar.gz", hex(digest)))
        .collect();
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": archive.repo_tags,
        "Layers": layer_names,
    }]);
    let mut tar = tar::Builder::new(out);
    append_bytes(&mut tar, &config_name, archive.config)?;
    for (name, (_, file)) in layer_names.iter().zip(archive.layers) {
        let mut f = File::open(file)?;
        let mut header = tar::Header::new_ustar();
        header.set_size(f.metadata()?.len());
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, &mut f)?;
    }
    append_bytes(&mut tar, "manifest.json", manifest.to_string().as_bytes())?;
    tar.into_inner()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    bytes: &[u8],
) -> std::io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, name, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_holds_the_config_the_layers_and_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("layer");
        fs::write(&layer, b"layer bytes").unwrap();
        let layers = [("sha256:ab".to_string(), layer)];
        let tags = ["app:1".to_string()];
        let archive = Archive {
            config_digest: "sha256:cd",
            config: b"{}",
            repo_tags: &tags,
            layers: &layers,
        };
        let path = dir.path().join("out.tar");
        write(&archive, &path).unwrap();
        let mut names = Vec::new();
        let mut reader = tar::Archive::new(File::open(&path).unwrap());
        for entry in reader.entries().unwrap() {
            names.push(entry.unwrap().path().unwrap().display().to_string());
        }
        assert_eq!(names, ["cd.json", "ab.tar.gz", "manifest.json"]);
        assert!(!path.with_extension("tar.partial").exists());
    }
}
