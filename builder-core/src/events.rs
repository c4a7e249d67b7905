//! [`BuildEvent`]: the progress a build reports, and [`Events`], the sink it reports to.
//! A leaf module: the engine's modules report progress without importing the `build` module.

use std::time::Duration;

/// Progress of a build, for logs and UIs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum BuildEvent {
    /// A step starts: `number` of `total`, with the instruction text.
    Step {
        /// 1-based step number across the stages built.
        number: usize,
        /// Number of steps in the stages built.
        total: usize,
        /// The stage's name or index.
        stage: String,
        /// The instruction as written.
        instruction: String,
    },
    /// Output of a RUN command.
    Output(Vec<u8>),
    /// The current step finished.
    StepDone {
        /// Its number.
        number: usize,
        /// Time it took.
        elapsed: Duration,
        /// The layer it made: digest and compressed size.
        layer: Option<(String, u64)>,
    },
    /// A cacheable step's key was looked up in the layer cache.
    Cache {
        /// The step's key.
        key: String,
        /// Whether the layer came from the cache (the step did not run).
        hit: bool,
    },
    /// A base image manifest was resolved.
    Pulled {
        /// The reference as written.
        reference: String,
        /// Its manifest digest.
        digest: String,
    },
    /// A blob (a base image's layer, or a layer of the registry cache) was downloaded.
    BlobPulled {
        /// The repository it came from.
        reference: String,
        /// Its digest.
        digest: String,
        /// The bytes downloaded.
        bytes: u64,
    },
    /// A blob (a layer or the config) was uploaded while pushing the image; blobs the
    /// destination already had or mounted from the base repository are not reported.
    BlobPushed {
        /// Destination reference.
        destination: String,
        /// Its digest.
        digest: String,
        /// The bytes uploaded.
        bytes: u64,
    },
    /// The image was pushed.
    Pushed {
        /// Destination reference.
        destination: String,
        /// Manifest digest.
        digest: String,
    },
    /// Something the user should know but that does not stop the build.
    Warning(String),
    /// The snapshotter the build's stages use (see [`crate::SnapshotterChoice`]).
    Snapshotter {
        /// `overlay` or `walk`.
        name: String,
        /// Why: where the overlay works, or why it does not.
        reason: String,
    },
    /// A layer was extracted into the layer store (a rootfs needed it and the store did
    /// not hold it yet).
    Extracted {
        /// Its diff ID.
        diff_id: String,
        /// Its entries.
        entries: u64,
        /// The bytes it takes on disk.
        bytes: u64,
    },
    /// A stage's root filesystem was made, on its first step that needs files.
    Rootfs {
        /// The stage's name or index.
        stage: String,
        /// The snapshotter that holds it: `overlay` or `walk`.
        snapshotter: String,
        /// The layers it is made of.
        layers: usize,
    },
}

/// The event sink type: a callback the build reports progress to.
pub type Events<'a> = &'a mut (dyn FnMut(BuildEvent) + Send);
