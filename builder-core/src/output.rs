//! kaniko-compatible outputs of a build, written at the end of a build: the image
//! as an OCI image layout (`--oci-layout-path`), the digest files (`--digest-file`,
//! `--image-name-with-digest-file`, `--image-name-tag-with-digest-file`), manifest
//! annotations (`--annotation`), and the plan printed by `--dryrun`.

use crate::error::{BuildError, Result};
use crate::image::{BlobStore, Image, ImageFormat, Manifested};
use ocibuild_dockerfile::plan::{Plan, StageBase};
use ocibuild_image::atomic::{temp_sibling, write_atomic};
use ocibuild_image::layout::{self, add_to_index};
use ocibuild_image::manifest::{index_json, Descriptor};
use ocibuild_registry::reference::DOCKER_HUB;
use ocibuild_registry::{Client, Reference};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

pub use ocibuild_image::layout::{OCI_LAYOUT_FILE, REF_NAME_ANNOTATION};

/// Parses one `--annotation KEY=VALUE` (the value may be empty and may contain `=`).
pub fn parse_annotation(spec: &str) -> Result<(String, String)> {
    match spec.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(BuildError::Options(format!(
            "--annotation {spec:?}: expected KEY=VALUE"
        ))),
    }
}

/// Parses every `--annotation KEY=VALUE` into the sorted map of
/// [`BuildOptions::annotations`](crate::BuildOptions::annotations); a key given twice keeps
/// its last value.
pub fn parse_annotations<S: AsRef<str>>(specs: &[S]) -> Result<BTreeMap<String, String>> {
    specs.iter().map(|s| parse_annotation(s.as_ref())).collect()
}

/// Fails early when `--image-format docker` is asked for with zstd layer compression,
/// which Docker schema 2 cannot describe (the manifest would fail at the end of the build).
pub fn check_image_format(
    format: Option<ImageFormat>,
    compression: ocibuild_snapshot::Compression,
) -> Result<()> {
    match (format, compression) {
        (Some(ImageFormat::Docker), ocibuild_snapshot::Compression::Zstd { .. }) => {
            Err(BuildError::Options(
                "zstd layers need --image-format oci (Docker schema 2 has no zstd layer type): \
                 drop --image-format docker or use --compression gzip"
                    .into(),
            ))
        }
        _ => Ok(()),
    }
}

/// The `org.opencontainers.image.ref.name`s of the layout entries: the tag of each
/// destination that has one, each once, in the order given (buildah and skopeo name a
/// layout entry by its tag; one entry per name).
pub fn layout_ref_names(destinations: &[Reference]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for tag in destinations.iter().filter_map(|d| d.tag.clone()) {
        if !names.contains(&tag) {
            names.push(tag);
        }
    }
    names
}

/// Writes `image` into the OCI image layout `dir` (created if missing), following the
/// OCI image-layout specification:
///
/// - `oci-layout`: `{"imageLayoutVersion":"1.0.0"}` (an existing one is kept);
/// - `blobs/<alg>/<hex>`: the config, the manifest and every layer; layers are copied
///   from their files on disk (base image layers are fetched through `blobs` first), and
///   blobs already present with the right size are not written again;
/// - `index.json`: an image index whose `manifests` holds the manifest descriptor once per
///   name of `ref_names` (with `org.opencontainers.image.ref.name` set to it), or once
///   unnamed when `ref_names` is empty, each with the platform of the image config.
///
/// Writing into an existing layout adds the image: an entry with the same ref name (or,
/// without a ref name, an unnamed entry with the same digest) is replaced, every other
/// entry and field of `index.json` is kept. Blobs go first and `index.json` is replaced
/// atomically last, so an interrupted write leaves the previous index valid.
/// `skopeo copy oci:DIR[:REF] …` and `umoci unpack --image DIR[:REF]` read the result
/// (umoci only reads OCI manifests: use `--image-format oci` for a Docker base).
pub async fn write_oci_layout(
    image: &Image,
    manifested: &Manifested,
    dir: &Path,
    ref_names: &[&str],
    blobs: &BlobStore,
    pull_client: &Client,
) -> Result<()> {
    for name in ref_names {
        check_ref_name(name)?;
    }
    fs::create_dir_all(dir).map_err(BuildError::io(dir))?;
    write_layout_marker(dir)?;
    for layer in &image.layers {
        let target = blob_path(dir, layer.digest())?;
        if has_blob(&target, layer.size()) {
            continue;
        }
        let source = blobs.local_file(pull_client, layer).await?;
        crate::blocking::in_place(|| copy_blob(&source, &target))?;
    }
    write_blob(dir, &manifested.config_digest, &manifested.config)?;
    let manifest = &manifested.manifest;
    write_blob(dir, &manifest.digest, &manifest.bytes)?;
    let index_path = dir.join("index.json");
    let index = match fs::read(&index_path) {
        Ok(bytes) => layout::parse_index(&bytes).map_err(|why| {
            BuildError::Options(format!(
                "{}: not a valid OCI image index ({why}); remove it or choose another --oci-layout-path",
                index_path.display()
            ))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => layout::empty_index(),
        Err(e) => return Err(BuildError::io(&index_path)(e)),
    };
    let named: Vec<Option<&str>> = match ref_names {
        [] => vec![None],
        names => names.iter().map(|n| Some(*n)).collect(),
    };
    let index = named.into_iter().fold(index, |index, name| {
        add_to_index(index, manifest_descriptor(image, manifested, name), name)
    });
    write_atomically(&index_path, &index_json(&index))
}

/// The index entry of the manifest: its descriptor, with the platform of the image config
/// and the ref name.
fn manifest_descriptor(
    image: &Image,
    manifested: &Manifested,
    ref_name: Option<&str>,
) -> Descriptor {
    let mut descriptor = manifested.manifest.descriptor();
    descriptor.set_platform(image.config.platform());
    if let Some(name) = ref_name {
        let annotations = [(REF_NAME_ANNOTATION.to_string(), name.to_string())];
        descriptor.set_annotations(Some(annotations.into()));
    }
    descriptor
}

/// Writes `oci-layout` unless the directory already is a layout (an unreadable marker is
/// an error: the directory is something else).
fn write_layout_marker(dir: &Path) -> Result<()> {
    let path = dir.join("oci-layout");
    match fs::read(&path) {
        Ok(bytes) if ocibuild_image::layout::is_layout_marker(&bytes) => Ok(()),
        Ok(_) => Err(BuildError::Options(format!(
            "{}: not an OCI layout marker (expected {OCI_LAYOUT_FILE})",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_atomically(&path, OCI_LAYOUT_FILE.as_bytes())
        }
        Err(e) => Err(BuildError::io(&path)(e)),
    }
}

/// `dir/blobs/<alg>/<encoded>` for `digest`, refusing digests that are not
/// `algorithm:encoded` with the characters the OCI spec allows (no path separators).
fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf> {
    let bad = || BuildError::Options(format!("invalid blob digest {digest:?}"));
    let path = ocibuild_image::layout::blob_path(dir, digest).ok_or_else(bad)?;
    ocibuild_registry::reference::validate_digest(digest).map_err(|_| bad())?;
    Ok(path)
}

/// Whether `path` is already a file of `size` bytes (blobs are content addressed).
fn has_blob(path: &Path, size: u64) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == size)
}

/// Writes a small blob (config, manifest) unless it is there.
fn write_blob(dir: &Path, digest: &str, bytes: &[u8]) -> Result<()> {
    let path = blob_path(dir, digest)?;
    if has_blob(&path, bytes.len() as u64) {
        return Ok(());
    }
    create_parent(&path)?;
    write_atomically(&path, bytes)
}

/// Streams the file `from` into the blob `to` through a temporary file and a rename.
fn copy_blob(from: &Path, to: &Path) -> Result<()> {
    create_parent(to)?;
    let tmp = temp_sibling(to);
    let result = fs::copy(from, &tmp)
        .map_err(BuildError::io(from))
        .and_then(|_| {
            fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(BuildError::io(&tmp))
        })
        .and_then(|_| fs::rename(&tmp, to).map_err(BuildError::io(to)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => {
            fs::create_dir_all(parent).map_err(BuildError::io(parent))
        }
        _ => Ok(()),
    }
}

/// Writes `bytes` to a temporary file next to `path`, syncs it and renames it over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(&temp_sibling(path), path, bytes).map_err(|e| BuildError::io(path)(e.source))
}

/// Refuses ref names the OCI image-layout spec does not allow (components of letters and
/// digits separated by `-._:@+/` or `--`).
fn check_ref_name(name: &str) -> Result<()> {
    if ocibuild_image::layout::is_valid_ref_name(name) {
        Ok(())
    } else {
        Err(BuildError::Options(format!(
            "{name:?} is not a valid OCI layout reference name"
        )))
    }
}

/// The digest files a build writes (kaniko's flags); `None` writes nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct DigestFiles<'a> {
    /// `--digest-file`: the manifest digest `sha256:<hex>`, no newline.
    pub digest_file: Option<&'a Path>,
    /// `--image-name-with-digest-file`: `<registry>/<repository>@sha256:<hex>` and a
    /// newline, one line per destination.
    pub image_name_with_digest_file: Option<&'a Path>,
    /// `--image-name-tag-with-digest-file`: `<registry>/<repository>:<tag>@sha256:<hex>`
    /// and a newline, one line per destination.
    pub image_name_tag_with_digest_file: Option<&'a Path>,
}

impl DigestFiles<'_> {
    /// Fails when a file listing destinations is asked for without any destination, as
    /// kaniko does before building ("you must provide --destination").
    pub fn check(&self, destinations: &[String]) -> Result<()> {
        let flags = [
            (
                self.image_name_with_digest_file,
                "--image-name-with-digest-file",
            ),
            (
                self.image_name_tag_with_digest_file,
                "--image-name-tag-with-digest-file",
            ),
        ];
        for (path, flag) in flags {
            if path.is_some() && destinations.is_empty() {
                return Err(BuildError::Options(format!(
                    "{flag} needs a --destination: the file lists the image name of each destination"
                )));
            }
        }
        Ok(())
    }
}

/// A destination's name as kaniko (go-containerregistry) spells it: the registry, with
/// Docker Hub written `index.docker.io`, then the repository (with `library/` for official
/// images).
fn kaniko_repository_name(destination: &Reference) -> String {
    let registry = if destination.registry == DOCKER_HUB {
        "index.docker.io"
    } else {
        destination.registry.as_str()
    };
    format!("{registry}/{}", destination.repository)
}

/// The text of `--image-name-with-digest-file`: for each destination in order,
/// `<registry>/<repository>@<digest>\n` (e.g. `127.0.0.1:5000/app@sha256:…`), Docker Hub
/// spelled `index.docker.io` as kaniko writes it.
pub fn image_name_with_digest(manifest_digest: &str, destinations: &[Reference]) -> String {
    destinations
        .iter()
        .map(|d| format!("{}@{manifest_digest}\n", kaniko_repository_name(d)))
        .collect()
}

/// The text of `--image-name-tag-with-digest-file`, exactly as kaniko writes it (its README
/// documents the flag only as "the image name w/ image tag w/ digest"; kaniko writes plain
/// lines, not JSON): for each destination in order,
/// `<registry>/<repository>:<tag>@<digest>\n` (e.g. `127.0.0.1:5000/app:1@sha256:…`); a
/// destination without a tag is written `latest`, as parsing gives it, and one pinned by
/// digest only has no `:<tag>`.
pub fn image_name_tag_with_digest(manifest_digest: &str, destinations: &[Reference]) -> String {
    destinations
        .iter()
        .map(|d| {
            let tag = d.tag.as_ref().map(|t| format!(":{t}")).unwrap_or_default();
            format!("{}{tag}@{manifest_digest}\n", kaniko_repository_name(d))
        })
        .collect()
}

/// Writes the digest files `files` asks for (see [`DigestFiles`] for the formats; missing
/// parent directories are created, as kaniko does). Files are written in place, not
/// renamed over, so `/dev/termination-log` works as a target in Kubernetes.
pub fn write_digest_files(
    manifest_digest: &str,
    destinations: &[Reference],
    files: &DigestFiles<'_>,
) -> Result<()> {
    if let Some(path) = files.digest_file {
        write_in_place(path, manifest_digest.as_bytes())?;
    }
    if let Some(path) = files.image_name_with_digest_file {
        let text = image_name_with_digest(manifest_digest, destinations);
        write_in_place(path, text.as_bytes())?;
    }
    if let Some(path) = files.image_name_tag_with_digest_file {
        let text = image_name_tag_with_digest(manifest_digest, destinations);
        write_in_place(path, text.as_bytes())?;
    }
    Ok(())
}

fn write_in_place(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            fs::create_dir_all(parent).map_err(BuildError::io(parent))?;
        }
    }
    fs::write(path, bytes).map_err(BuildError::io(path))
}

/// What `--dryrun` prints: the Dockerfile, the target, and every stage with its name, its
/// base and its steps; the stages the target needs are marked `build` and their steps
/// numbered as the build would number them, the others are marked `skip`.
///
/// ```text
/// Dockerfile: /src/Dockerfile
/// target: stage 1 "app"; stages built: 0, 1 (4 steps)
///
/// stage 0 "builder" (build): FROM image busybox:latest
///   [1/4] FROM busybox AS builder
///   [2/4] RUN make
/// stage 1 "app" (build, target): FROM scratch
///   [3/4] FROM scratch AS app
///   [4/4] COPY --from=builder /out /
/// ```
pub fn describe_plan(plan: &Plan, target: usize) -> String {
    let needed = if target < plan.stages.len() {
        plan.needed_stages(target)
    } else {
        Default::default()
    };
    let total: usize = needed
        .iter()
        .map(|i| 1 + plan.stages[*i].instructions.len())
        .sum();
    let label = |i: usize| match plan.stages.get(i).and_then(|s| s.name.as_deref()) {
        Some(name) => format!("stage {i} {name:?}"),
        None => format!("stage {i}"),
    };
    let mut out = String::new();
    let _ = writeln!(out, "Dockerfile: {}", plan.file.display());
    let built: Vec<String> = needed.iter().map(usize::to_string).collect();
    let _ = writeln!(
        out,
        "target: {}; stages built: {} ({total} steps)",
        label(target),
        built.join(", ")
    );
    if !plan.global_args.is_empty() {
        let args: Vec<String> = plan
            .global_args
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            })
            .collect();
        let _ = writeln!(out, "global args: {}", args.join(" "));
    }
    let mut step = 0;
    for stage in &plan.stages {
        let build = needed.contains(&stage.index);
        let role = match (build, stage.index == target) {
            (true, true) => "build, target",
            (true, false) => "build",
            _ => "skip: the target does not need it",
        };
        let base = match &stage.base {
            StageBase::Scratch => "scratch".to_string(),
            StageBase::Stage(i) => format!("the result of {}", label(*i)),
            StageBase::Image(name) => format!("image {name}"),
        };
        let platform = stage
            .platform
            .as_deref()
            .map(|p| format!(" (platform {p})"))
            .unwrap_or_default();
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{} ({role}): FROM {base}{platform}",
            label(stage.index)
        );
        for ins in std::iter::once(&stage.from).chain(&stage.instructions) {
            let text = ins.original.lines().next().unwrap_or_default().trim();
            if build {
                step += 1;
                let _ = writeln!(out, "  [{step}/{total}] {text}");
            } else {
                let _ = writeln!(out, "  - {text}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(names: &[&str]) -> Vec<Reference> {
        names.iter().map(|n| Reference::parse(n).unwrap()).collect()
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn every_destination_tag_names_a_layout_entry_once() {
        let dests = refs(&["reg/a:1", "reg/b:latest", "reg/c:1", "reg/d:2"]);
        assert_eq!(layout_ref_names(&dests), ["1", "latest", "2"]);
        let by_digest = refs(&[&format!("reg/x@{D}")]);
        assert!(layout_ref_names(&by_digest).is_empty());
    }

    #[test]
    fn name_files_have_one_line_per_destination_as_kaniko_writes_them() {
        let dests = refs(&["127.0.0.1:5000/app:1", "busybox", "ghcr.io/o/app"]);
        assert_eq!(
            image_name_with_digest(D, &dests),
            format!(
                "127.0.0.1:5000/app@{D}\nindex.docker.io/library/busybox@{D}\nghcr.io/o/app@{D}\n"
            )
        );
        assert_eq!(
            image_name_tag_with_digest(D, &dests),
            format!(
                "127.0.0.1:5000/app:1@{D}\nindex.docker.io/library/busybox:latest@{D}\nghcr.io/o/app:latest@{D}\n"
            )
        );
    }

    #[test]
    fn digest_files_are_written_with_parents_and_name_files_need_destinations() {
        let dir = tempfile::tempdir().unwrap();
        let digest = dir.path().join("a/b/digest");
        let names = dir.path().join("names");
        let files = DigestFiles {
            digest_file: Some(&digest),
            image_name_with_digest_file: Some(&names),
            image_name_tag_with_digest_file: None,
        };
        write_digest_files(D, &refs(&["r.io/x:1"]), &files).unwrap();
        assert_eq!(fs::read_to_string(&digest).unwrap(), D);
        assert_eq!(fs::read_to_string(&names).unwrap(), format!("r.io/x@{D}\n"));
        assert!(files.check(&[]).is_err());
        assert!(files.check(&["r.io/x:1".into()]).is_ok());
        assert!(DigestFiles::default().check(&[]).is_ok());
    }

    #[test]
    fn annotations_parse_and_refuse_missing_keys() {
        let map = parse_annotations(&["b=2", "a=x=y", "e="]).unwrap();
        assert_eq!(
            map.into_iter().collect::<Vec<_>>(),
            vec![
                ("a".to_string(), "x=y".to_string()),
                ("b".into(), "2".into()),
                ("e".into(), "".into())
            ]
        );
        assert!(parse_annotation("novalue").is_err());
        assert!(parse_annotation("=v").is_err());
    }

    #[test]
    fn blob_paths_also_need_a_well_formed_sha256_digest() {
        let dir = Path::new("/l");
        assert!(blob_path(dir, D).is_ok());
        for bad in ["sha256:abc", "sha256:../../etc"] {
            assert!(blob_path(dir, bad).is_err(), "{bad}");
        }
        assert!(check_ref_name("a b").is_err());
    }

    #[test]
    fn the_plan_lists_stages_bases_steps_and_what_is_built() {
        let text = "ARG V=1\nFROM busybox AS builder\nRUN make\n\
                    FROM scratch AS unused\nCOPY a /a\n\
                    FROM scratch AS app\nCOPY --from=builder /out /\n";
        let df = ocibuild_dockerfile::parser::parse(text, Path::new("Dockerfile")).unwrap();
        let plan = Plan::new(&df, &Default::default(), BTreeMap::new()).unwrap();
        let out = describe_plan(&plan, 2);
        assert!(
            out.contains("target: stage 2 \"app\"; stages built: 0, 2 (4 steps)"),
            "{out}"
        );
        assert!(out.contains("global args: V=1"), "{out}");
        assert!(
            out.contains("stage 0 \"builder\" (build): FROM image busybox"),
            "{out}"
        );
        assert!(out.contains("  [2/4] RUN make"), "{out}");
        assert!(
            out.contains("stage 1 \"unused\" (skip: the target does not need it)"),
            "{out}"
        );
        assert!(out.contains("  - COPY a /a"), "{out}");
        assert!(
            out.contains("stage 2 \"app\" (build, target): FROM scratch"),
            "{out}"
        );
        assert!(out.contains("  [4/4] COPY --from=builder /out /"), "{out}");
        assert!(describe_plan(&plan, 7).contains("stages built:  (0 steps)"));
    }
}
