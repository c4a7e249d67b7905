//! The [`CacheStore`] trait, its implementations for the three stores, and [`LayerCache`],
//! which uses several stores together.

use std::fmt::Debug;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use super::{CacheError, CacheHit, CachedLayer, LayoutCache, LocalCache, RegistryCache};

/// The future a [`CacheStore`] method returns: boxed, so that stores can be used as
/// `Box<dyn CacheStore>`.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A place where step layers are kept under their step keys.
///
/// The cache is a hint: any read failure degrades to a miss with a warning. A store reports
/// an entry it cannot use (missing, corrupt, expired or malformed) as `Ok(None)` and pushes
/// a warning naming the key; an `Err` from [`CacheStore::lookup`] (the store itself could
/// not be read: an unreachable registry, an unreadable layout) is turned into a miss with a
/// warning by [`LayerCache`]. The one exception is a store whose
/// [`CacheStore::lookup_errors_are_fatal`] is true (the local directory, which the build
/// also uses for base-image blobs): its lookup errors stop the build, except those of a
/// failing disk (`EIO`), which are a miss with a warning there too. Storing never stops a
/// build either: [`LayerCache::put`] returns failures as warnings.
pub trait CacheStore: Debug + Send + Sync {
    /// What the store is called in warnings: "storing KEY in the NAME layer cache failed".
    fn name(&self) -> &'static str;

    /// Looks `key` up: the cached layer, or `None` for a miss. Unusable entries are a miss
    /// with a warning pushed to `warnings`.
    fn lookup<'a>(
        &'a self,
        key: &'a str,
        warnings: &'a mut Vec<String>,
    ) -> StoreFuture<'a, Result<Option<CacheHit>, CacheError>>;

    /// Stores the layer blob `file`, described by `layer`, under `key`.
    fn insert<'a>(
        &'a self,
        key: &'a str,
        layer: &'a CachedLayer,
        file: &'a Path,
    ) -> StoreFuture<'a, Result<(), CacheError>>;

    /// Whether an `Err` from [`CacheStore::lookup`] stops the build instead of being a miss
    /// with a warning. False unless a store says otherwise.
    fn lookup_errors_are_fatal(&self) -> bool {
        false
    }
}

impl CacheStore for LocalCache {
    fn name(&self) -> &'static str {
        "local"
    }

    fn lookup<'a>(
        &'a self,
        key: &'a str,
        warnings: &'a mut Vec<String>,
    ) -> StoreFuture<'a, Result<Option<CacheHit>, CacheError>> {
        file_lookup(self, key, warnings, LocalCache::get)
    }

    fn insert<'a>(
        &'a self,
        key: &'a str,
        layer: &'a CachedLayer,
        file: &'a Path,
    ) -> StoreFuture<'a, Result<(), CacheError>> {
        file_insert(self, key, layer, file, LocalCache::put)
    }

    /// The local directory is the build's own: failing to read it stops the build.
    fn lookup_errors_are_fatal(&self) -> bool {
        true
    }
}

impl CacheStore for LayoutCache {
    fn name(&self) -> &'static str {
        "OCI layout"
    }

    fn lookup<'a>(
        &'a self,
        key: &'a str,
        warnings: &'a mut Vec<String>,
    ) -> StoreFuture<'a, Result<Option<CacheHit>, CacheError>> {
        file_lookup(self, key, warnings, LayoutCache::get)
    }

    fn insert<'a>(
        &'a self,
        key: &'a str,
        layer: &'a CachedLayer,
        file: &'a Path,
    ) -> StoreFuture<'a, Result<(), CacheError>> {
        file_insert(self, key, layer, file, LayoutCache::put)
    }
}

impl CacheStore for RegistryCache {
    fn name(&self) -> &'static str {
        "registry"
    }

    fn lookup<'a>(
        &'a self,
        key: &'a str,
        warnings: &'a mut Vec<String>,
    ) -> StoreFuture<'a, Result<Option<CacheHit>, CacheError>> {
        Box::pin(async move {
            let Some(layer) = self.get(key, warnings).await? else {
                return Ok(None);
            };
            let repository = self.reference(key)?;
            Ok(Some(CacheHit::Registry { layer, repository }))
        })
    }

    fn insert<'a>(
        &'a self,
        key: &'a str,
        layer: &'a CachedLayer,
        file: &'a Path,
    ) -> StoreFuture<'a, Result<(), CacheError>> {
        Box::pin(self.put(key, layer, file))
    }
}

/// A future already resolved to `value`.
fn ready<'a, T: Send + 'a>(value: T) -> StoreFuture<'a, T> {
    Box::pin(async move { value })
}

/// The found entry of a store keeping blob files (the local directory, the OCI layout)
/// and its blob.
type FileEntry = Option<(CachedLayer, PathBuf)>;

/// A lookup of a store keeping blob files, as a [`CacheHit::Local`]. `get` reads the entry
/// and verifies its blob (a hash of the whole file), so it runs with a clone of the store
/// on tokio's blocking thread pool, not on the async runtime's threads.
fn file_lookup<'a, S>(
    store: &S,
    key: &'a str,
    warnings: &'a mut Vec<String>,
    get: fn(&S, &str, &mut Vec<String>) -> Result<FileEntry, CacheError>,
) -> StoreFuture<'a, Result<Option<CacheHit>, CacheError>>
where
    S: Clone + Send + 'static,
{
    let (store, owned_key) = (store.clone(), key.to_string());
    Box::pin(async move {
        let (found, found_warnings) = on_blocking_pool(PathBuf::from(key), move || {
            let mut warnings = Vec::new();
            let found = get(&store, &owned_key, &mut warnings);
            (found, warnings)
        })
        .await?;
        warnings.extend(found_warnings);
        Ok(found?.map(|(layer, path)| CacheHit::Local { layer, path }))
    })
}

/// Stores a layer in a store keeping blob files: `put` hashes, copies and syncs the file,
/// so it runs with a clone of the store on tokio's blocking thread pool.
fn file_insert<'a, S>(
    store: &S,
    key: &'a str,
    layer: &'a CachedLayer,
    file: &'a Path,
    put: fn(&S, &str, &CachedLayer, &Path) -> Result<(), CacheError>,
) -> StoreFuture<'a, Result<(), CacheError>>
where
    S: Clone + Send + 'static,
{
    let (store, key, layer) = (store.clone(), key.to_string(), layer.clone());
    let file = file.to_path_buf();
    Box::pin(async move {
        on_blocking_pool(file.clone(), move || put(&store, &key, &layer, &file)).await?
    })
}

/// Runs `work` on tokio's blocking thread pool. A panic resumes on the caller; a task the
/// runtime dropped (it is shutting down) is an error about `path`.
async fn on_blocking_pool<T: Send + 'static>(
    path: PathBuf,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, CacheError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => Ok(value),
        Err(e) => match e.try_into_panic() {
            Ok(payload) => std::panic::resume_unwind(payload),
            Err(_) => Err(CacheError::Io {
                action: "finish the work on",
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::Interrupted,
                    "the async runtime is shutting down",
                ),
            }),
        },
    }
}

/// A store that is looked up but never written to (`--no-push-cache`).
#[derive(Debug)]
pub struct ReadOnly<S>(pub S);

impl<S: CacheStore> CacheStore for ReadOnly<S> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn lookup<'a>(
        &'a self,
        key: &'a str,
        warnings: &'a mut Vec<String>,
    ) -> StoreFuture<'a, Result<Option<CacheHit>, CacheError>> {
        self.0.lookup(key, warnings)
    }

    /// Does nothing.
    fn insert<'a>(
        &'a self,
        _key: &'a str,
        _layer: &'a CachedLayer,
        _file: &'a Path,
    ) -> StoreFuture<'a, Result<(), CacheError>> {
        ready(Ok(()))
    }

    fn lookup_errors_are_fatal(&self) -> bool {
        self.0.lookup_errors_are_fatal()
    }
}

/// Several stores used together: lookups try them in order (the builder puts the local
/// directory first, then the OCI layout or the registry), stores go to all of them.
#[derive(Debug, Default)]
pub struct LayerCache {
    stores: Vec<Box<dyn CacheStore>>,
}

impl LayerCache {
    /// A cache over `stores`, looked up in that order.
    pub fn new(stores: Vec<Box<dyn CacheStore>>) -> LayerCache {
        LayerCache { stores }
    }

    /// Whether no store is configured.
    pub fn is_empty(&self) -> bool {
        self.stores.is_empty()
    }

    /// Looks `key` up in each store in turn; the first hit wins. A store's lookup error
    /// becomes a warning and a miss, unless the store's lookup errors are fatal.
    pub async fn get(
        &self,
        key: &str,
        warnings: &mut Vec<String>,
    ) -> Result<Option<CacheHit>, CacheError> {
        for store in &self.stores {
            match store.lookup(key, warnings).await {
                Ok(Some(hit)) => return Ok(Some(hit)),
                Ok(None) => {}
                Err(e) if store.lookup_errors_are_fatal() => return Err(e),
                Err(e) => warnings.push(format!("layer cache lookup of {key} failed: {e}")),
            }
        }
        Ok(None)
    }

    /// Stores the layer `file` under `key` in every store. A failure does not stop the other
    /// stores; failures (a [`CacheError::NotStored`] among them) are returned as warnings.
    pub async fn put(&self, key: &str, layer: &CachedLayer, file: &Path) -> Vec<String> {
        let mut warnings = Vec::new();
        for store in &self.stores {
            match store.insert(key, layer, file).await {
                Ok(()) => {}
                Err(e) if e.is_not_stored() => warnings.push(e.to_string()),
                Err(e) => {
                    let name = store.name();
                    warnings.push(format!(
                        "storing {key} in the {name} layer cache failed: {e}"
                    ));
                }
            }
        }
        warnings
    }
}
