//! The upload queue: pushes that overlap the build. With destinations to push to, the
//! stages hand every layer of the image that will be pushed to [`Uploads`] as soon as the
//! layer exists (a step committed it, the layer cache had it, or it is a base image's),
//! and its blob starts uploading to every destination in the background while the next
//! step runs, a few blobs at a time. At the end, [`Uploads::push`] waits until every blob
//! is confirmed (the destination had it, mounted it or took the upload), then pushes the
//! config and the manifest. A blob that failed fails the build with its error, and no
//! manifest is pushed anywhere, so no tag ever points at an image with a missing layer.
//!
//! Only the stages whose layers the pushed image carries queue their layers (the target
//! stage and the stages it is built `FROM`, known from the plan before anything runs): a
//! stage that other stages only copy from is never pushed.

use crate::cancel::CancelToken;
use crate::error::{BuildError, Result};
use crate::events::{BuildEvent, Events};
use crate::image::{self, BlobReports, BlobStore, Image, Layer, Manifested};
use ocibuild_dockerfile::plan::{Plan, StageBase};
use ocibuild_registry::{Client, Reference};
use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;
use tokio::task::{JoinError, JoinSet};

/// How many blob uploads (one blob to one destination) run at once by default.
pub(crate) const CONCURRENT_UPLOADS: usize = 3;

/// Blob uploads to a set of destinations, started as layers are handed over and awaited
/// by [`Uploads::push`]. Dropping it stops the uploads still running.
pub(crate) struct Uploads {
    /// What the upload tasks share.
    target: Arc<Target>,
    /// The stages whose layers the pushed image carries.
    stages: BTreeSet<usize>,
    /// The blobs queued so far and their upload tasks.
    queue: Mutex<Queue>,
}

/// Where the blobs go and what the upload tasks share.
struct Target {
    destinations: Vec<Reference>,
    push_client: Client,
    pull_client: Client,
    blobs: BlobStore,
    /// One permit per upload running.
    permits: Semaphore,
    cancel: CancelToken,
    /// Where the uploads are recorded until the build reports them.
    reports: BlobReports,
}

#[derive(Default)]
struct Queue {
    /// The digests queued, each uploaded once to every destination.
    queued: HashSet<String>,
    /// One task per blob and destination.
    tasks: JoinSet<Result<()>>,
}

impl Uploads {
    /// A queue pushing to `destinations` (none: every hand-over is a no-op) with `clients`
    /// (the push and the pull client), taking layer files from `blobs`; uploads are
    /// recorded in `reports` and stop when `cancel` is cancelled. No stage's layers are
    /// queued before [`Uploads::for_target`] names them.
    pub fn new(
        destinations: Vec<Reference>,
        clients: (Client, Client),
        blobs: BlobStore,
        cancel: CancelToken,
        reports: BlobReports,
    ) -> Uploads {
        let (push_client, pull_client) = clients;
        Uploads {
            target: Arc::new(Target {
                destinations,
                push_client,
                pull_client,
                blobs,
                permits: Semaphore::new(CONCURRENT_UPLOADS),
                cancel,
                reports,
            }),
            stages: BTreeSet::new(),
            queue: Mutex::default(),
        }
    }

    /// The queue, taking the layers of the stages that the image of stage `target` of
    /// `plan` carries.
    pub fn for_target(self, plan: &Plan, target: usize) -> Uploads {
        Uploads {
            stages: image_stages(plan, target),
            ..self
        }
    }

    /// The queue, running at most `limit` uploads at once (at least one); no effect once
    /// uploads have started.
    #[cfg(test)]
    pub fn with_limit(mut self, limit: usize) -> Uploads {
        if let Some(target) = Arc::get_mut(&mut self.target) {
            target.permits = Semaphore::new(limit.max(1));
        }
        self
    }

    /// Hands over the layers of stage `stage` (all of them so far; those queued before
    /// are skipped): queued when the pushed image carries that stage's layers.
    pub fn offer_stage(&self, stage: usize, layers: &[Layer]) -> Result<()> {
        if self.stages.contains(&stage) {
            self.offer(layers)
        } else {
            Ok(())
        }
    }

    /// Starts uploading each of `layers` not queued yet to every destination. Fails with
    /// the error of an upload that has already failed, so that a build stops at its next
    /// step rather than at the end.
    pub fn offer(&self, layers: &[Layer]) -> Result<()> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(done) = queue.tasks.try_join_next() {
            joined(done)?;
        }
        for layer in layers {
            if self.target.destinations.is_empty()
                || !queue.queued.insert(layer.digest().to_string())
            {
                continue;
            }
            for dest in 0..self.target.destinations.len() {
                let (target, layer) = (self.target.clone(), layer.clone());
                queue
                    .tasks
                    .spawn(async move { target.upload(&layer, dest).await });
            }
        }
        Ok(())
    }

    /// Pushes `image` (serialised as `manifested`) to every destination: queues its layers
    /// not queued yet, waits until every queued blob is confirmed (reporting the uploads to
    /// `events` as they finish), then pushes the config and the manifest to each
    /// destination, reporting [`BuildEvent::Pushed`]. Returns the manifest digest pushed to
    /// each destination. An upload that failed is the error, and no manifest is pushed.
    pub async fn push(
        &mut self,
        image: &Image,
        manifested: &Manifested,
        events: Events<'_>,
    ) -> Result<Vec<String>> {
        self.offer(&image.layers)?;
        self.wait(events).await?;
        let target = &self.target;
        let mut digests = Vec::new();
        for dest in &target.destinations {
            target.cancel.check()?;
            let digest =
                image::push_config_and_manifest(manifested, dest, &target.push_client, events)
                    .await?;
            events(BuildEvent::Pushed {
                destination: dest.to_string(),
                digest: digest.clone(),
            });
            digests.push(digest);
        }
        Ok(digests)
    }

    /// Waits until every queued upload is done; the first failure is the error.
    async fn wait(&mut self, events: Events<'_>) -> Result<()> {
        let queue = self.queue.get_mut().unwrap_or_else(|e| e.into_inner());
        let target = &self.target;
        loop {
            let next = tokio::select! {
                next = queue.tasks.join_next() => next,
                () = target.cancel.cancelled() => return Err(BuildError::Cancelled),
            };
            target.reports.report_to(events);
            match next {
                Some(done) => joined(done)?,
                None => return Ok(()),
            }
        }
    }
}

impl Target {
    /// Makes sure destination `dest` has the blob of `layer` (see [`image::push_layer`]),
    /// holding a permit while it works; stops when the build is cancelled.
    async fn upload(&self, layer: &Layer, dest: usize) -> Result<()> {
        let dest = &self.destinations[dest];
        let work = async {
            let _permit = self
                .permits
                .acquire()
                .await
                .map_err(|_| BuildError::Cancelled)?;
            let clients = (&self.push_client, &self.pull_client);
            if let Some(bytes) = image::push_layer(layer, dest, clients, &self.blobs).await? {
                self.reports.pushed(dest, layer.digest(), bytes);
            }
            Ok(())
        };
        tokio::select! {
            done = work => done,
            () = self.cancel.cancelled() => Err(BuildError::Cancelled),
        }
    }
}

/// The result of a finished upload task: a panic resumes on the caller, a task the
/// runtime dropped (it is shutting down) ends as [`BuildError::Cancelled`].
fn joined(done: std::result::Result<Result<()>, JoinError>) -> Result<()> {
    match done {
        Ok(result) => result,
        Err(e) => match e.try_into_panic() {
            Ok(payload) => std::panic::resume_unwind(payload),
            Err(_) => Err(BuildError::Cancelled),
        },
    }
}

/// The stages whose layers the image of stage `target` carries: the target and the
/// stages it is built `FROM`, transitively (not those it only copies from).
fn image_stages(plan: &Plan, target: usize) -> BTreeSet<usize> {
    let mut stages = BTreeSet::new();
    let mut next = Some(target);
    while let Some(index) = next.filter(|i| *i < plan.stages.len()) {
        if !stages.insert(index) {
            break;
        }
        next = match plan.stages[index].base {
            StageBase::Stage(parent) => Some(parent),
            _ => None,
        };
    }
    stages
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{ImageFormat, LayerBlob};
    use ocibuild_image::config::ImageConfig;
    use ocibuild_registry::ClientOptions;
    use ocibuild_snapshot::{Compression, LayerInfo};
    use std::path::Path;

    fn plan(text: &str) -> Plan {
        let parsed = ocibuild_dockerfile::parse(text, Path::new("Dockerfile")).unwrap();
        Plan::new(&parsed, &Default::default(), Default::default()).unwrap()
    }

    #[test]
    fn an_image_carries_the_layers_of_the_stages_it_is_built_from_not_those_it_copies_from() {
        let plan = plan(
            "FROM scratch AS tools\nCOPY a /a\n\
             FROM scratch AS base\nCOPY b /b\n\
             FROM base AS app\nCOPY --from=tools /a /a\n\
             FROM app\nCOPY c /c\n\
             FROM scratch AS other\n",
        );
        assert_eq!(image_stages(&plan, 3), BTreeSet::from([1, 2, 3]));
        assert_eq!(image_stages(&plan, 2), BTreeSet::from([1, 2]));
        assert_eq!(image_stages(&plan, 0), BTreeSet::from([0]));
        assert_eq!(image_stages(&plan, 4), BTreeSet::from([4]));
    }

    /// A layer the build made: `bytes` in a file under `dir`.
    fn local_layer(dir: &Path, bytes: &[u8]) -> Layer {
        let digest = image::sha256_digest(bytes);
        let path = dir.join(digest.replace(':', "-"));
        std::fs::write(&path, bytes).unwrap();
        Layer {
            diff_id: digest.clone(),
            blob: LayerBlob::Local(LayerInfo {
                digest,
                diff_id: image::sha256_digest(bytes),
                size: bytes.len() as u64,
                path,
                compression: Compression::None,
            }),
        }
    }

    /// A queue to `destinations`, with clients that try once.
    fn queue(dir: &Path, destinations: &[&str], cancel: CancelToken) -> Uploads {
        let client = Client::new(ClientOptions {
            retries: 0,
            push_retries: Some(0),
            insecure_all: true,
            ..Default::default()
        })
        .unwrap();
        let destinations = destinations
            .iter()
            .map(|d| Reference::parse(d).unwrap())
            .collect();
        let blobs = BlobStore::new(dir.join("blobs"), None).unwrap();
        let reports = BlobReports::default();
        Uploads::new(
            destinations,
            (client.clone(), client),
            blobs,
            cancel,
            reports,
        )
    }

    fn image_of(layers: Vec<Layer>) -> Image {
        Image {
            config: ImageConfig::scratch("linux", "amd64", None),
            layers,
            format: ImageFormat::Oci,
        }
    }

    /// A port nothing listens on: connections to it are refused.
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn a_failed_blob_upload_fails_the_push_before_any_manifest_and_the_next_hand_over() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = format!("127.0.0.1:{}/app:1", closed_port());
        let mut uploads = queue(tmp.path(), &[&dest], CancelToken::new()).with_limit(1);
        let image = image_of(vec![local_layer(tmp.path(), b"one")]);
        uploads.offer(&image.layers).unwrap();
        let manifested = image.manifest().unwrap();
        let mut events = Vec::new();
        let err = uploads
            .push(&image, &manifested, &mut |e| events.push(e))
            .await
            .unwrap_err();
        let text = crate::error_chain(&err);
        assert!(
            text.contains(&format!("pushing to {dest}: layer sha256:")),
            "{text}"
        );
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, BuildEvent::Pushed { .. })),
            "{events:?}"
        );

        let uploads = queue(tmp.path(), &[&dest], CancelToken::new());
        uploads.offer(&image.layers).unwrap();
        let mut failed = None;
        for _ in 0..200 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            if let Err(e) = uploads.offer(&[]) {
                failed = Some(e);
                break;
            }
        }
        let err = failed.expect("the next hand-over reports the failed upload");
        assert!(err.to_string().contains("pushing to"), "{err}");
    }

    #[tokio::test]
    async fn nothing_is_queued_without_destinations_or_for_other_stages() {
        let tmp = tempfile::tempdir().unwrap();
        let plan = plan("FROM scratch AS a\nCOPY a /a\nFROM scratch\nCOPY --from=a /a /b\n");
        let dest = format!("127.0.0.1:{}/app:1", closed_port());
        let uploads = queue(tmp.path(), &[&dest], CancelToken::new()).for_target(&plan, 1);
        let layers = [local_layer(tmp.path(), b"stage a")];
        uploads.offer_stage(0, &layers).unwrap();
        assert!(uploads.queue.lock().unwrap().queued.is_empty());
        uploads.offer_stage(1, &layers).unwrap();
        assert_eq!(uploads.queue.lock().unwrap().queued.len(), 1);

        let mut none = queue(tmp.path(), &[], CancelToken::new());
        let image = image_of(layers.to_vec());
        none.offer(&image.layers).unwrap();
        let manifested = image.manifest().unwrap();
        assert!(none
            .push(&image, &manifested, &mut |_| {})
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn a_cancelled_build_stops_waiting_for_uploads() {
        let tmp = tempfile::tempdir().unwrap();
        // A server that accepts connections and never answers: the upload hangs.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dest = format!("{}/app:1", silent.local_addr().unwrap());
        let cancel = CancelToken::new();
        let mut uploads = queue(tmp.path(), &[&dest], cancel.clone());
        let image = image_of(vec![local_layer(tmp.path(), b"one")]);
        let manifested = image.manifest().unwrap();
        let canceller = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            cancel.cancel();
        });
        let pushed = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            uploads.push(&image, &manifested, &mut |_| {}),
        )
        .await
        .expect("the push stops when cancelled");
        assert!(matches!(pushed, Err(BuildError::Cancelled)), "{pushed:?}");
        canceller.await.unwrap();
    }
}
