//! Fetching layers: concurrently, each streamed from the registry straight into the layer
//! store, once per layer however many pulls want it.
//!
//! A store that applies a child only on top of its complete parent (zfs: a child is a clone
//! of the parent's snapshot) would serialise the downloads too. Instead every download
//! starts at once; until its parent is complete a layer's bytes go to a spool file, and when
//! the parent is done the store reads the spool and then the rest of the live stream. The
//! first layer, and every layer on a store that applies in parallel (overlay), streams
//! without touching the spool.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use futures::future::{BoxFuture, FutureExt, Shared};
use layerfs::{Compression, Digest, LayerRequest, LayerStore};
use oci_client::client::BlobResponse;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, mpsc};

use crate::error::{ErrorKind, ImageError};
use crate::manifest::Descriptor;
use crate::metrics::PullMetrics;
use crate::registry::{Source, classify};

/// How often a broken download is resumed from where it stopped before the pull fails.
const RESUMES: u32 = 3;

/// One layer of an image, with where it sits in the chain.
#[derive(Debug, Clone)]
pub struct LayerPlan {
    pub desc: Descriptor,
    pub compression: Compression,
    pub diff_id: Digest,
    pub chain_id: Digest,
    pub parent: Option<Digest>,
}

/// A failure shared with every pull waiting on the same layer.
#[derive(Debug, Clone)]
pub struct SharedError {
    pub message: String,
    pub kind: ErrorKind,
}

impl From<&ImageError> for SharedError {
    fn from(e: &ImageError) -> Self {
        Self {
            message: e.to_string(),
            kind: e.kind(),
        }
    }
}

type LayerFuture = Shared<BoxFuture<'static, Result<(), SharedError>>>;

pub struct LayerFetcher {
    store: Arc<dyn LayerStore>,
    spool_dir: PathBuf,
    downloads: Arc<Semaphore>,
    inflight: Mutex<HashMap<Digest, LayerFuture>>,
    metrics: PullMetrics,
}

impl LayerFetcher {
    pub fn new(
        store: Arc<dyn LayerStore>,
        spool_dir: PathBuf,
        max_concurrent_downloads: usize,
        metrics: PullMetrics,
    ) -> Self {
        Self {
            store,
            spool_dir,
            downloads: Arc::new(Semaphore::new(max_concurrent_downloads.max(1))),
            inflight: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Makes every layer of `plans` (in chain order) present in the store.
    pub async fn fetch_all(
        self: &Arc<Self>,
        source: &Source,
        plans: &[LayerPlan],
    ) -> Result<(), ImageError> {
        let mut futures = Vec::with_capacity(plans.len());
        let mut parent: Option<LayerFuture> = None;
        for plan in plans {
            let fut = self.layer_future(source, plan, parent.take())?;
            parent = Some(fut.clone());
            futures.push((plan.desc.digest.clone(), fut));
        }
        for (blob, fut) in futures {
            fut.await.map_err(|e| ImageError::LayerShared {
                blob,
                detail: e.message,
                kind: e.kind,
            })?;
        }
        Ok(())
    }

    /// The one future that brings `plan` into the store, shared by every pull that wants it.
    /// It runs as its own task so that a cancelled request does not abandon a download
    /// other pulls are waiting for.
    fn layer_future(
        self: &Arc<Self>,
        source: &Source,
        plan: &LayerPlan,
        parent: Option<LayerFuture>,
    ) -> Result<LayerFuture, ImageError> {
        let mut inflight = self
            .inflight
            .lock()
            .map_err(|_| ImageError::Internal("layer map poisoned".into()))?;
        if let Some(f) = inflight.get(&plan.chain_id) {
            return Ok(f.clone());
        }
        let this = self.clone();
        let (source, plan_owned) = (source.clone(), plan.clone());
        let task = tokio::spawn(async move {
            let result = this.bring(&source, &plan_owned, parent).await;
            if let Ok(mut m) = this.inflight.lock() {
                m.remove(&plan_owned.chain_id);
            }
            result.map_err(|e| SharedError::from(&e))
        });
        let fut: LayerFuture = async move {
            task.await.unwrap_or_else(|e| {
                Err(SharedError {
                    message: format!("layer task failed: {e}"),
                    kind: ErrorKind::Internal,
                })
            })
        }
        .boxed()
        .shared();
        inflight.insert(plan.chain_id.clone(), fut.clone());
        Ok(fut)
    }

    async fn bring(
        &self,
        source: &Source,
        plan: &LayerPlan,
        parent: Option<LayerFuture>,
    ) -> Result<(), ImageError> {
        let store = self.store.clone();
        let chain = plan.chain_id.clone();
        let present = tokio::task::spawn_blocking(move || store.layer(&chain))
            .await
            .map_err(|e| ImageError::Internal(format!("layer lookup task: {e}")))?
            .map_err(ImageError::Store)?;
        if present.is_some() {
            self.metrics.layers_reused.inc();
            return Ok(());
        }
        let _permit = self
            .downloads
            .acquire()
            .await
            .map_err(|_| ImageError::Internal("download limiter closed".into()))?;
        let wait_for = if self.store.parallel_apply() {
            None
        } else {
            parent
        };
        self.download_and_apply(source, plan, wait_for).await?;
        self.metrics.layers_fetched.inc();
        Ok(())
    }

    async fn download_and_apply(
        &self,
        source: &Source,
        plan: &LayerPlan,
        mut parent: Option<LayerFuture>,
    ) -> Result<(), ImageError> {
        let mut blob = BlobStream::open(source, &plan.desc, self.metrics.clone()).await?;
        let mut spool: Option<Spool> = None;
        let mut downloaded_all = false;

        // Until the parent is complete, the bytes wait in a spool file.
        while let Some(p) = parent.as_mut() {
            tokio::select! {
                biased;
                done = p => {
                    done.map_err(|e| ImageError::LayerShared {
                        blob: plan.desc.digest.clone(),
                        detail: format!("its parent layer failed: {}", e.message),
                        kind: e.kind,
                    })?;
                    parent = None;
                }
                chunk = blob.next(), if !downloaded_all => match chunk? {
                    Some(bytes) => {
                        if spool.is_none() {
                            spool = Some(Spool::create(&self.spool_dir, &plan.desc.digest).await?);
                        }
                        if let Some(s) = spool.as_mut() {
                            s.write(&bytes).await?;
                        }
                    }
                    None => downloaded_all = true,
                }
            }
        }

        let prefix = match spool {
            Some(s) => Some(s.into_reader().await?),
            None => None,
        };
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(32);
        let request = LayerRequest {
            chain_id: plan.chain_id.clone(),
            parent: plan.parent.clone(),
            diff_id: plan.diff_id.clone(),
            compressed_digest: Some(
                Digest::parse(&plan.desc.digest)
                    .map_err(|e| ImageError::Internal(e.to_string()))?,
            ),
            compression: plan.compression,
        };
        let store = self.store.clone();
        let apply = tokio::task::spawn_blocking(move || {
            let mut reader = ChannelReader {
                prefix,
                rx,
                current: Bytes::new(),
            };
            store.apply_layer(&request, &mut reader)
        });
        let mut download_error = None;
        if !downloaded_all {
            loop {
                match blob.next().await {
                    Ok(Some(bytes)) => {
                        if tx.send(Ok(bytes)).await.is_err() {
                            break; // the store stopped reading: its error says why
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                        download_error = Some(e);
                        break;
                    }
                }
            }
        }
        drop(tx);
        let applied = apply
            .await
            .map_err(|e| ImageError::Internal(format!("layer apply task: {e}")))?;
        if let Some(e) = download_error {
            return Err(e);
        }
        applied.map_err(|error| ImageError::Layer {
            blob: plan.desc.digest.clone(),
            error,
        })?;
        Ok(())
    }
}

/// A blob download that resumes after a broken connection and never yields more bytes than
/// the descriptor announced.
struct BlobStream {
    source: Source,
    digest: String,
    size: u64,
    received: u64,
    resumes: u32,
    /// Bytes to drop from a response that restarted at 0 although we asked to resume.
    skip: u64,
    stream: futures::stream::BoxStream<'static, std::io::Result<Bytes>>,
    metrics: PullMetrics,
}

impl BlobStream {
    async fn open(
        source: &Source,
        desc: &Descriptor,
        metrics: PullMetrics,
    ) -> Result<Self, ImageError> {
        let mut s = Self {
            source: source.clone(),
            digest: desc.digest.clone(),
            size: u64::try_from(desc.size).unwrap_or(0),
            received: 0,
            resumes: 0,
            skip: 0,
            stream: futures::stream::empty().boxed(),
            metrics,
        };
        s.connect().await?;
        Ok(s)
    }

    async fn connect(&mut self) -> Result<(), ImageError> {
        // A ranged request (even from 0) gets the unverified stream: the layer store hashes
        // the compressed bytes itself, so hashing them here too would be wasted work.
        let response = self
            .source
            .client
            .pull_blob_stream_partial(
                &self.source.reference,
                self.digest.as_str(),
                self.received,
                None,
            )
            .await
            .map_err(|e| classify(&self.digest, self.source.host(), e))?;
        let (stream, restarted) = match response {
            BlobResponse::Partial(s) => (s, false),
            BlobResponse::Full(s) => (s, true),
        };
        self.skip = if restarted { self.received } else { 0 };
        self.stream = stream.stream;
        Ok(())
    }

    fn download_error(&self, detail: String) -> ImageError {
        ImageError::BlobDownload {
            blob: self.digest.clone(),
            host: self.source.host().to_string(),
            detail,
        }
    }

    async fn next(&mut self) -> Result<Option<Bytes>, ImageError> {
        loop {
            match self.stream.next().await {
                Some(Ok(mut bytes)) => {
                    if self.skip > 0 {
                        let drop = self.skip.min(bytes.len() as u64) as usize;
                        self.skip -= drop as u64;
                        bytes = bytes.slice(drop..);
                        if bytes.is_empty() {
                            continue;
                        }
                    }
                    self.received += bytes.len() as u64;
                    if self.received > self.size {
                        return Err(ImageError::BlobDigest {
                            blob: self.digest.clone(),
                            host: self.source.host().to_string(),
                            detail: format!(
                                "more than the {} bytes its descriptor announces",
                                self.size
                            ),
                        });
                    }
                    self.metrics.bytes_pulled.inc_by(bytes.len() as u64);
                    return Ok(Some(bytes));
                }
                Some(Err(e)) if self.resumes < RESUMES => {
                    self.resumes += 1;
                    tracing::warn!(blob = %self.digest, host = %self.source.host(), at = self.received,
                        error = %e, "download broke; resuming");
                    self.connect().await?;
                }
                Some(Err(e)) => return Err(self.download_error(e.to_string())),
                None if self.received < self.size => {
                    return Err(self.download_error(format!(
                        "stream ended after {} of {} bytes",
                        self.received, self.size
                    )));
                }
                None => return Ok(None),
            }
        }
    }
}

/// Bytes that arrived before the store could take them.
struct Spool {
    path: PathBuf,
    file: tokio::fs::File,
}

impl Spool {
    async fn create(dir: &std::path::Path, digest: &str) -> Result<Self, ImageError> {
        let name = format!(
            "{}-{}.spool",
            digest.trim_start_matches("sha256:"),
            rand_suffix()
        );
        let path = dir.join(name);
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| ImageError::Internal(format!("spool file {}: {e}", path.display())))?;
        Ok(Self { path, file })
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ImageError> {
        self.file
            .write_all(bytes)
            .await
            .map_err(|e| ImageError::Internal(format!("spool file {}: {e}", self.path.display())))
    }

    /// The spool for reading; its name is gone at once, so nothing outlives the pull.
    async fn into_reader(mut self) -> Result<std::fs::File, ImageError> {
        let err = |e: std::io::Error| ImageError::Internal(format!("spool file: {e}"));
        self.file.flush().await.map_err(err)?;
        let reader = std::fs::File::open(&self.path).map_err(err)?;
        let _ = std::fs::remove_file(&self.path);
        Ok(reader)
    }
}

fn rand_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

/// The blocking store's view of the download: the spool first, then the live chunks.
struct ChannelReader {
    prefix: Option<std::fs::File>,
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(f) = self.prefix.as_mut() {
            let n = f.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            self.prefix = None;
        }
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn channel_reader_reads_the_spool_then_the_channel() {
        let mut spool = tempfile::tempfile().unwrap();
        spool.write_all(b"hello ").unwrap();
        use std::io::Seek;
        spool.rewind().unwrap();
        let (tx, rx) = mpsc::channel(4);
        tx.blocking_send(Ok(Bytes::from_static(b"wor"))).unwrap();
        tx.blocking_send(Ok(Bytes::from_static(b"ld"))).unwrap();
        drop(tx);
        let mut r = ChannelReader {
            prefix: Some(spool),
            rx,
            current: Bytes::new(),
        };
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello world");
    }

    #[test]
    fn channel_reader_passes_errors_on() {
        let (tx, rx) = mpsc::channel(4);
        tx.blocking_send(Ok(Bytes::from_static(b"ab"))).unwrap();
        tx.blocking_send(Err(std::io::Error::other("cut"))).unwrap();
        let mut r = ChannelReader {
            prefix: None,
            rx,
            current: Bytes::new(),
        };
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(e.to_string(), "cut");
        assert_eq!(out, b"ab");
    }
}
