//! The build flags of `build` and `executor`, in groups that `--help` shows under their
//! own headings. Each group sets its part of [`BuildOptions`] (`apply`), starting from
//! `BuildOptions::default()`.

pub mod cache;
pub mod ignored;
pub mod logging;
pub mod outputs;
pub mod registry;
pub mod root;
pub mod run;
pub mod source;

use anyhow::Result;
use clap::Args;
use ocibuild_core::BuildOptions;

/// Which command line the build flags came from: their defaults differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `ocibuild build`.
    Build,
    /// `ocibuild executor` (kaniko's defaults: `/workspace/` context, no COPY layer
    /// caching, `/kaniko/.docker` credentials, building in `/` inside a container).
    Executor,
}

/// Every flag of a build.
#[derive(Args, Debug)]
pub struct BuildFlags {
    /// Context & Dockerfile.
    #[command(flatten)]
    pub source: source::SourceFlags,
    /// Destinations & outputs.
    #[command(flatten)]
    pub outputs: outputs::OutputFlags,
    /// Registry & TLS.
    #[command(flatten)]
    pub registry: registry::RegistryFlags,
    /// Cache.
    #[command(flatten)]
    pub cache: cache::CacheFlags,
    /// Isolation & RUN.
    #[command(flatten)]
    pub run: run::RunFlags,
    /// Building in `/` (kaniko mode).
    #[command(flatten)]
    pub root: root::RootFlags,
    /// Logging.
    #[command(flatten)]
    pub logging: logging::LoggingFlags,
    /// kaniko flags accepted but changing nothing.
    #[command(flatten)]
    pub ignored: ignored::IgnoredFlags,
}

impl BuildFlags {
    /// The build options of these flags (the context is `.` until it has been prepared).
    pub fn options(&self, mode: Mode) -> Result<BuildOptions> {
        self.outputs.check_destination()?;
        let mut opts = BuildOptions::default();
        self.source.apply(&mut opts)?;
        self.outputs.apply(&mut opts)?;
        self.registry.apply(&mut opts, mode)?;
        self.cache.apply(&mut opts, mode)?;
        self.run.apply(&mut opts, mode)?;
        self.root.apply(&mut opts);
        Ok(opts)
    }
}
