//! Destinations & outputs flags: where the image goes and in which form.

use anyhow::{bail, Result};
use clap::{ArgAction, Args, ValueEnum};
use ocibuild_core::{BuildOptions, Compression, ImageFormat};
use std::path::PathBuf;

/// Where the image is pushed or written, and how its layers and manifest are made.
#[derive(Args, Debug)]
#[command(next_help_heading = "Destinations & outputs")]
pub struct OutputFlags {
    /// Registry reference to push to, which also names the image in --tar-path and
    /// --oci-layout-path; repeat for several.
    #[arg(
        short = 'd',
        long = "destination",
        visible_short_alias = 't',
        visible_alias = "tag",
        value_name = "REF"
    )]
    pub destinations: Vec<String>,
    /// Build without pushing (the destinations still name the --tar-path and
    /// --oci-layout-path outputs).
    #[arg(long)]
    pub no_push: bool,
    /// Do not check before building that every destination can be pushed to (an upload
    /// started and cancelled there, as kaniko does).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false", action = ArgAction::Set)]
    pub skip_push_permission_check: bool,
    /// Write the image as a `docker save`-style tarball to this path.
    #[arg(long, alias = "tarPath", value_name = "PATH")]
    tar_path: Option<PathBuf>,
    /// Write the pushed manifest digest to this file.
    #[arg(long, value_name = "PATH")]
    digest_file: Option<PathBuf>,
    /// Also write the image as an OCI image layout into this directory (an existing layout
    /// gets the image added), one index entry named after each destination's tag.
    #[arg(long, value_name = "DIR")]
    oci_layout_path: Option<PathBuf>,
    /// Write `REGISTRY/REPO@DIGEST` for each destination to this file.
    #[arg(long, value_name = "PATH")]
    image_name_with_digest_file: Option<PathBuf>,
    /// Write `REGISTRY/REPO:TAG@DIGEST` for each destination to this file.
    #[arg(long, value_name = "PATH")]
    image_name_tag_with_digest_file: Option<PathBuf>,
    /// Annotation `KEY=VALUE` on the image manifest; repeatable.
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    annotations: Vec<String>,
    /// Manifest and config media types (default: those of the base image; OCI for scratch).
    #[arg(long, value_enum, value_name = "FORMAT")]
    image_format: Option<ImageFormatArg>,
    /// Layer compression.
    #[arg(long, value_enum, default_value = "gzip")]
    compression: CompressionArg,
    /// Compression level (gzip 1-9, default 6; zstd 1-22, default 3).
    #[arg(long, value_name = "N")]
    compression_level: Option<i32>,
    /// Set every timestamp to the epoch so equal inputs give equal digests.
    #[arg(long)]
    reproducible: bool,
    /// Print the build plan (stages, bases, steps, what the target needs) and exit.
    #[arg(long, alias = "dry-run")]
    pub dryrun: bool,
}

/// `--image-format`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum ImageFormatArg {
    Docker,
    Oci,
}

/// `--compression`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum CompressionArg {
    Gzip,
    Zstd,
    Uncompressed,
}

impl OutputFlags {
    /// Refuses a build that would leave no image: no destination, no `--no-push`, and no
    /// `--dryrun`.
    pub fn check_destination(&self) -> Result<()> {
        if self.destinations.is_empty() && !self.no_push && !self.dryrun {
            bail!("no --destination given: pass --destination (or -t) REGISTRY/REPO:TAG, or --no-push (with --tar-path to keep the image)");
        }
        Ok(())
    }

    /// Sets the destinations, output files, annotations, formats and compression.
    pub fn apply(&self, opts: &mut BuildOptions) -> Result<()> {
        opts.destinations = self.destinations.clone();
        opts.no_push = self.no_push;
        opts.tar_path = self.tar_path.clone();
        opts.digest_file = self.digest_file.clone();
        opts.oci_layout_path = self.oci_layout_path.clone();
        opts.image_name_with_digest_file = self.image_name_with_digest_file.clone();
        opts.image_name_tag_with_digest_file = self.image_name_tag_with_digest_file.clone();
        opts.annotations = ocibuild_core::parse_annotations(&self.annotations)?;
        opts.image_format = self.image_format.map(|f| match f {
            ImageFormatArg::Docker => ImageFormat::Docker,
            ImageFormatArg::Oci => ImageFormat::Oci,
        });
        opts.compression = self.compression()?;
        opts.reproducible = self.reproducible;
        Ok(())
    }

    /// `--compression` at `--compression-level` (checked for gzip).
    fn compression(&self) -> Result<Compression> {
        Ok(match (self.compression, self.compression_level) {
            (CompressionArg::Gzip, level) => {
                let level = level.unwrap_or(6);
                if !(1..=9).contains(&level) {
                    bail!("--compression-level {level}: gzip takes 1 to 9");
                }
                Compression::Gzip {
                    level: level as u32,
                }
            }
            (CompressionArg::Zstd, level) => Compression::Zstd {
                level: level.unwrap_or(3),
            },
            (CompressionArg::Uncompressed, _) => Compression::None,
        })
    }
}
