//! The image service: pull, list, status, remove, usage, and garbage collection of layers.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures::future::{BoxFuture, FutureExt, Shared};
use layerfs::{Compression, Digest, LayerStore, RemoveOutcome, Usage, chain_ids};

use crate::auth::Credentials;
use crate::error::{ErrorKind, ImageError, SharedError};
use crate::hosts::RegistriesConfig;
use crate::layers::{LayerFetcher, LayerPlan};
use crate::manifest::Platform;
use crate::metrics::PullMetrics;
use crate::record::{ImageCatalog, ImageIndex, ImageRecord, LayerRecord, Matched};
use crate::reference::{ImageRef, validate_digest};
use crate::registry::{Registries, classify};

/// An image config larger than this is not an image config.
const MAX_CONFIG_BYTES: usize = 16 << 20;

pub struct ImageServiceConfig {
    pub registries: RegistriesConfig,
    /// Where downloads wait for their parent layer; emptied at start.
    pub spool_dir: PathBuf,
    pub max_concurrent_downloads: usize,
    pub platform: Platform,
}

type PullFuture = Shared<BoxFuture<'static, Result<ImageRecord, SharedError>>>;
type ConfigFuture = Shared<BoxFuture<'static, Result<(serde_json::Value, u64), SharedError>>>;

pub struct ImageService {
    registries: Registries,
    fetcher: Arc<LayerFetcher>,
    store: Arc<dyn LayerStore>,
    catalog: Arc<dyn ImageCatalog>,
    index: RwLock<ImageIndex>,
    pulls: Mutex<HashMap<String, PullFuture>>,
    /// Config fetches by digest: pulls of one image under different names (a tag and a
    /// digest) fetch its config once.
    configs: Mutex<HashMap<String, ConfigFuture>>,
    /// Pulls hold it shared, removal and garbage collection exclusively, so that a layer a
    /// pull has just found present is not collected before its image is recorded.
    layer_lock: tokio::sync::RwLock<()>,
    metrics: PullMetrics,
}

impl ImageService {
    pub fn new(
        config: ImageServiceConfig,
        store: Arc<dyn LayerStore>,
        catalog: Arc<dyn ImageCatalog>,
        metrics: PullMetrics,
    ) -> Result<Arc<Self>, ImageError> {
        std::fs::create_dir_all(&config.spool_dir).map_err(|e| {
            ImageError::Internal(format!("spool dir {}: {e}", config.spool_dir.display()))
        })?;
        clear_dir(&config.spool_dir);
        let records = catalog.load()?;
        Ok(Arc::new(Self {
            registries: Registries::new(config.registries, config.platform)?,
            fetcher: Arc::new(LayerFetcher::new(
                store.clone(),
                config.spool_dir,
                config.max_concurrent_downloads,
                metrics.clone(),
            )),
            store,
            catalog,
            index: RwLock::new(ImageIndex::new(records)),
            pulls: Mutex::new(HashMap::new()),
            configs: Mutex::new(HashMap::new()),
            layer_lock: tokio::sync::RwLock::new(()),
            metrics,
        }))
    }

    fn read_index(&self) -> Result<std::sync::RwLockReadGuard<'_, ImageIndex>, ImageError> {
        self.index
            .read()
            .map_err(|_| ImageError::Internal("image index poisoned".into()))
    }

    fn write_index(&self) -> Result<std::sync::RwLockWriteGuard<'_, ImageIndex>, ImageError> {
        self.index
            .write()
            .map_err(|_| ImageError::Internal("image index poisoned".into()))
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        Ok(self.read_index()?.all().cloned().collect())
    }

    /// By ID, ID prefix, tag or digest reference.
    pub fn get(&self, query: &str) -> Result<Option<ImageRecord>, ImageError> {
        Ok(self.read_index()?.resolve(query).cloned())
    }

    pub fn usage(&self) -> Result<Usage, ImageError> {
        self.store.usage().map_err(ImageError::Store)
    }

    pub fn store(&self) -> &Arc<dyn LayerStore> {
        &self.store
    }

    /// Pulls `reference`; concurrent pulls of one reference with the same credentials share
    /// one pull. Returns the image record (its ID is the config digest).
    pub async fn pull(
        self: &Arc<Self>,
        reference: &str,
        credentials: Option<&Credentials>,
    ) -> Result<ImageRecord, ImageError> {
        let image = ImageRef::parse(reference)?;
        let credentials = match credentials.filter(|c| !c.is_empty()) {
            Some(c) => c.clone(),
            None => self
                .registries
                .configured_credentials(image.registry())
                .cloned()
                .unwrap_or_default(),
        };
        let auth = credentials.resolve()?;
        let key = format!("{image}|{}", hex::encode(auth.fingerprint()));
        let fut = {
            let mut pulls = self
                .pulls
                .lock()
                .map_err(|_| ImageError::Internal("pull map poisoned".into()))?;
            match pulls.get(&key) {
                Some(f) => f.clone(),
                None => {
                    let this = self.clone();
                    let key_owned = key.clone();
                    let task = tokio::spawn(async move {
                        let started = Instant::now();
                        let result = this.pull_now(&image, &auth).await;
                        let label = if result.is_ok() { "success" } else { "failure" };
                        this.metrics.pulls.with_label_values(&[label]).inc();
                        if let Err(e) = &result {
                            this.metrics.pull_failed(e.kind());
                        }
                        if result.is_ok() {
                            this.metrics
                                .pull_duration
                                .observe(started.elapsed().as_secs_f64());
                        }
                        if let Ok(mut p) = this.pulls.lock() {
                            p.remove(&key_owned);
                        }
                        result.map_err(|e| SharedError::from(&e))
                    });
                    let f: PullFuture = async move {
                        task.await.unwrap_or_else(|e| {
                            Err(SharedError {
                                message: format!("pull task failed: {e}"),
                                kind: ErrorKind::Internal,
                            })
                        })
                    }
                    .boxed()
                    .shared();
                    pulls.insert(key, f.clone());
                    f
                }
            }
        };
        fut.await.map_err(ImageError::Shared)
    }

    async fn pull_now(
        self: &Arc<Self>,
        image: &ImageRef,
        auth: &crate::auth::Auth,
    ) -> Result<ImageRecord, ImageError> {
        let _shared = self.layer_lock.read().await;
        let resolved = match self.registries.resolve(image, auth).await {
            Err(ImageError::Unauthorized {
                reference,
                host,
                detail,
            }) if *auth == crate::auth::Auth::Anonymous => Err(ImageError::Unauthorized {
                reference,
                host,
                detail: format!(
                    "the pull carried no credentials and none are configured for {}: {detail}",
                    image.registry()
                ),
            }),
            other => other,
        }?;
        let source = &resolved.source;
        let name = image.to_string();

        let config_desc = &resolved.manifest.config;
        if config_desc.size as u64 > MAX_CONFIG_BYTES as u64 {
            return Err(ImageError::Config {
                reference: name,
                digest: config_desc.digest.clone(),
                detail: format!(
                    "{} bytes is too large for an image config",
                    config_desc.size
                ),
            });
        }
        let _forget = ForgetConfig {
            configs: &self.configs,
            digest: &config_desc.digest,
        };
        let (config, config_size) = self.config(source, &name, config_desc).await?;
        let config_err = |detail: String| ImageError::Config {
            reference: name.clone(),
            digest: config_desc.digest.clone(),
            detail,
        };
        let diff_ids: Vec<Digest> = config
            .pointer("/rootfs/diff_ids")
            .and_then(|v| v.as_array())
            .ok_or_else(|| config_err("no rootfs.diff_ids".into()))?
            .iter()
            .map(|v| {
                let s = v
                    .as_str()
                    .ok_or_else(|| config_err("a diff_id is not a string".into()))?;
                validate_digest(s).map_err(&config_err)?;
                Digest::parse(s).map_err(|e| config_err(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        let layers = &resolved.manifest.layers;
        if diff_ids.len() != layers.len() {
            return Err(config_err(format!(
                "{} diff_ids for {} layers in the manifest",
                diff_ids.len(),
                layers.len()
            )));
        }
        let chains = chain_ids(&diff_ids);
        let mut plans = Vec::with_capacity(layers.len());
        for (i, desc) in layers.iter().enumerate() {
            let compression = Compression::from_media_type(&desc.media_type).map_err(|e| {
                ImageError::Manifest {
                    reference: name.clone(),
                    host: source.host().to_string(),
                    error: crate::manifest::ManifestError::Descriptor(e.to_string()),
                }
            })?;
            plans.push(LayerPlan {
                desc: desc.clone(),
                compression,
                diff_id: diff_ids[i].clone(),
                chain_id: chains[i].clone(),
                parent: i.checked_sub(1).map(|p| chains[p].clone()),
            });
        }
        self.fetcher.fetch_all(source, &plans).await?;

        let layer_bytes: u64 = layers.iter().map(|l| l.size.max(0) as u64).sum();
        let record = ImageRecord {
            id: config_desc.digest.clone(),
            repo_tags: image.tagged().into_iter().collect(),
            repo_digests: vec![image.with_digest(&resolved.pulled_digest)],
            size: resolved.manifest_bytes + config_size + layer_bytes,
            layers: plans
                .iter()
                .map(|p| LayerRecord {
                    digest: p.desc.digest.clone(),
                    diff_id: p.diff_id.to_string(),
                    chain_id: p.chain_id.to_string(),
                    size: p.desc.size.max(0) as u64,
                    media_type: p.desc.media_type.clone(),
                })
                .collect(),
            config,
            pinned: false,
            pulled_at_ns: now_ns(),
        };
        self.record(record)
    }

    /// The config `desc` names: from the image's record when the image is known (a second
    /// pull of it, under another tag or by digest, fetches only the manifest), else fetched
    /// once however many pulls want it. A fetch stays shared until the pull that started
    /// it ends ([`ForgetConfig`]), by which time the image is recorded; both are looked at
    /// under one lock, so a pull in between sees one or the other.
    async fn config(
        self: &Arc<Self>,
        source: &crate::registry::Source,
        name: &str,
        desc: &crate::manifest::Descriptor,
    ) -> Result<(serde_json::Value, u64), ImageError> {
        let fut = {
            let mut configs = self
                .configs
                .lock()
                .map_err(|_| ImageError::Internal("config map poisoned".into()))?;
            if let Some(known) = self.read_index()?.get(&desc.digest) {
                return Ok((known.config.clone(), desc.size.max(0) as u64));
            }
            match configs.get(&desc.digest) {
                Some(f) => f.clone(),
                None => {
                    let this = self.clone();
                    let (source, name, owned) = (source.clone(), name.to_string(), desc.clone());
                    let task = tokio::spawn(async move {
                        let desc = owned;
                        this.fetch_config(&source, &name, &desc)
                            .await
                            .map_err(|e| SharedError::from(&e))
                    });
                    let f: ConfigFuture = async move {
                        task.await.unwrap_or_else(|e| {
                            Err(SharedError {
                                message: format!("config fetch task failed: {e}"),
                                kind: ErrorKind::Internal,
                            })
                        })
                    }
                    .boxed()
                    .shared();
                    configs.insert(desc.digest.clone(), f.clone());
                    f
                }
            }
        };
        fut.await.map_err(ImageError::Shared)
    }

    /// Fetches and parses an image config (oci-client checks its digest).
    async fn fetch_config(
        &self,
        source: &crate::registry::Source,
        name: &str,
        desc: &crate::manifest::Descriptor,
    ) -> Result<(serde_json::Value, u64), ImageError> {
        let mut bytes: Vec<u8> = Vec::with_capacity(desc.size.max(0) as usize);
        source
            .client
            .pull_blob(&source.reference, desc.digest.as_str(), &mut bytes)
            .await
            .map_err(|e| classify(&desc.digest, source.host(), e))?;
        self.metrics.bytes_pulled.inc_by(bytes.len() as u64);
        let config = serde_json::from_slice(&bytes).map_err(|e| ImageError::Config {
            reference: name.to_string(),
            digest: desc.digest.clone(),
            detail: format!("not JSON: {e}"),
        })?;
        Ok((config, bytes.len() as u64))
    }

    /// Stores `fresh`, merged with what is known of the same image, and moves its tags away
    /// from images that held them before.
    fn record(&self, fresh: ImageRecord) -> Result<ImageRecord, ImageError> {
        let mut index = self.write_index()?;
        let merged = match index.get(&fresh.id) {
            Some(old) => {
                let mut m = fresh.clone();
                m.repo_tags = union(&old.repo_tags, &fresh.repo_tags);
                m.repo_digests = union(&old.repo_digests, &fresh.repo_digests);
                m.pinned = old.pinned;
                m
            }
            None => fresh.clone(),
        };
        let mut changed = Vec::new();
        for tag in &fresh.repo_tags {
            for holder in index.holders_of_tag(tag, &fresh.id) {
                let mut h = holder.clone();
                h.repo_tags.retain(|t| t != tag);
                changed.push(h);
            }
        }
        self.catalog.save(&merged)?;
        index.insert(merged.clone());
        for h in changed {
            self.catalog.save(&h)?;
            index.insert(h);
        }
        Ok(merged)
    }

    /// Removes an image by ID, tag or digest. Naming one of several tags only untags. An
    /// unknown image is not an error (CRI's RemoveImage is idempotent). Layers nobody uses
    /// any more are freed.
    pub async fn remove(&self, query: &str) -> Result<(), ImageError> {
        let _exclusive = self.layer_lock.write().await;
        let removed = {
            let mut index = self.write_index()?;
            let Some((image, matched)) = index.resolve_how(query).map(|(i, m)| (i.clone(), m))
            else {
                return Ok(());
            };
            let tag = match matched {
                Matched::Tag(t) => Some(t),
                Matched::Id | Matched::Digest => None,
            };
            match tag {
                Some(t) if image.repo_tags.len() > 1 => {
                    let mut untagged = image.clone();
                    untagged.repo_tags.retain(|x| *x != t);
                    self.catalog.save(&untagged)?;
                    index.insert(untagged);
                    return Ok(());
                }
                _ => {
                    self.catalog.delete(&image.id)?;
                    index.remove(&image.id);
                    image
                }
            }
        };
        tracing::info!(image = %removed.id, "image removed");
        self.free_layers(
            removed
                .layers
                .iter()
                .rev()
                .map(|l| l.chain_id.clone())
                .collect(),
        )
        .await
    }

    /// Frees every layer in the store that no image record uses (a layer a container
    /// rootfs still depends on stays: the store says it is in use).
    pub async fn collect_garbage(&self) -> Result<(), ImageError> {
        let _exclusive = self.layer_lock.write().await;
        let store = self.store.clone();
        let layers = tokio::task::spawn_blocking(move || store.layers())
            .await
            .map_err(|e| ImageError::Internal(format!("layer list task: {e}")))?
            .map_err(ImageError::Store)?;
        let used: BTreeSet<String> = {
            let index = self.read_index()?;
            index
                .all()
                .flat_map(|i| i.layers.iter().map(|l| l.chain_id.clone()))
                .collect()
        };
        // Children before parents: a layer's depth in its chain orders them.
        let parents: HashMap<String, Option<String>> = layers
            .iter()
            .map(|l| {
                (
                    l.chain_id.to_string(),
                    l.parent.as_ref().map(ToString::to_string),
                )
            })
            .collect();
        let depth = |id: &str| {
            let mut d = 0;
            let mut cur = parents.get(id).cloned().flatten();
            while let Some(p) = cur {
                d += 1;
                cur = parents.get(&p).cloned().flatten();
                if d > 10_000 {
                    break;
                }
            }
            d
        };
        let mut unused: Vec<(usize, String)> = layers
            .iter()
            .map(|l| l.chain_id.to_string())
            .filter(|c| !used.contains(c))
            .map(|c| (depth(&c), c))
            .collect();
        unused.sort_by_key(|u| std::cmp::Reverse(u.0));
        self.free_layers(unused.into_iter().map(|(_, c)| c).collect())
            .await
    }

    /// Tries to remove each layer (children first) unless an image still uses it.
    async fn free_layers(&self, chain_ids: Vec<String>) -> Result<(), ImageError> {
        let candidates: Vec<String> = {
            let index = self.read_index()?;
            chain_ids
                .into_iter()
                .filter(|c| !index.layer_in_use(c, ""))
                .collect()
        };
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || -> Result<(), ImageError> {
            for chain in candidates {
                let digest =
                    Digest::parse(&chain).map_err(|e| ImageError::Internal(e.to_string()))?;
                match store.remove_layer(&digest).map_err(ImageError::Store)? {
                    RemoveOutcome::Removed => tracing::debug!(layer = %chain, "layer freed"),
                    RemoveOutcome::NotFound => {}
                    RemoveOutcome::InUse => {
                        tracing::debug!(layer = %chain, "layer still in use; kept");
                    }
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| ImageError::Internal(format!("layer removal task: {e}")))?
    }
}

/// Ends the sharing of a config fetch when the pull that may have started it ends.
struct ForgetConfig<'a> {
    configs: &'a Mutex<HashMap<String, ConfigFuture>>,
    digest: &'a str,
}

impl Drop for ForgetConfig<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.configs.lock() {
            m.remove(self.digest);
        }
    }
}

fn union(a: &[String], b: &[String]) -> Vec<String> {
    let mut out = a.to_vec();
    for x in b {
        if !out.contains(x) {
            out.push(x.clone());
        }
    }
    out
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Leftover spool files belong to pulls that died with the daemon.
fn clear_dir(dir: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
