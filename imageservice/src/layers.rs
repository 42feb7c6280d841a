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
use oci_client::errors::OciDistributionError;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::error::{ErrorKind, ImageError, SharedError};
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

type LayerFuture = Shared<BoxFuture<'static, Result<(), SharedError>>>;

/// The work that brings one layer into the store, shared by every pull that wants it.
#[derive(Clone)]
struct LayerWork {
    /// Resolves once the layer holds a download slot, was found in the store, or gave up.
    /// A child takes a slot only after its parent has one: children holding every slot
    /// while their parent waits for one would wait for each other (the overlay store makes
    /// a child wait for its parent's files).
    started: Shared<BoxFuture<'static, ()>>,
    /// Resolves `true` once the store reads the layer (its application has begun there)
    /// or found it present, `false` if the layer ended before that. On a store that
    /// applies children in parallel, a child's application begins only after this: the
    /// store then reports the parent's failure to the child instead of making it wait for
    /// a parent nobody applies.
    applying: Shared<BoxFuture<'static, bool>>,
    done: LayerFuture,
}

pub struct LayerFetcher {
    store: Arc<dyn LayerStore>,
    spool_dir: PathBuf,
    downloads: Arc<Semaphore>,
    inflight: Mutex<HashMap<Digest, LayerWork>>,
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
    ///
    /// Every layer settles before this returns, so a failed pull leaves no work behind in
    /// the store (the layers above a failed one are stopped). The first failure in chain
    /// order is reported: the layers above it failed because of it.
    pub async fn fetch_all(
        self: &Arc<Self>,
        source: &Source,
        plans: &[LayerPlan],
    ) -> Result<(), ImageError> {
        let mut done = Vec::with_capacity(plans.len());
        let mut parent: Option<LayerWork> = None;
        for plan in plans {
            let work = self.layer_work(source, plan, parent.take())?;
            done.push(work.done.clone());
            parent = Some(work);
        }
        for result in futures::future::join_all(done).await {
            result.map_err(ImageError::Shared)?;
        }
        Ok(())
    }

    /// The one piece of work that brings `plan` into the store. It runs as its own task so
    /// that a cancelled request does not abandon a download other pulls are waiting for.
    fn layer_work(
        self: &Arc<Self>,
        source: &Source,
        plan: &LayerPlan,
        parent: Option<LayerWork>,
    ) -> Result<LayerWork, ImageError> {
        let mut inflight = self
            .inflight
            .lock()
            .map_err(|_| ImageError::Internal("layer map poisoned".into()))?;
        if let Some(w) = inflight.get(&plan.chain_id) {
            return Ok(w.clone());
        }
        let (started_tx, started_rx) = oneshot::channel::<()>();
        let started = async move {
            // A dropped sender means the layer gave up before it started: also a start.
            let _ = started_rx.await;
        }
        .boxed()
        .shared();
        let (applying_tx, applying_rx) = oneshot::channel::<()>();
        let applying = async move { applying_rx.await.is_ok() }.boxed().shared();
        let this = self.clone();
        let (source, plan_owned) = (source.clone(), plan.clone());
        let signals = Signals {
            started: started_tx,
            applying: applying_tx,
        };
        let task = tokio::spawn(async move {
            let result = this.bring(&source, &plan_owned, parent, signals).await;
            if let Ok(mut m) = this.inflight.lock() {
                m.remove(&plan_owned.chain_id);
            }
            result.map_err(|e| SharedError::from(&e))
        });
        let done: LayerFuture = async move {
            task.await.unwrap_or_else(|e| {
                Err(SharedError {
                    message: format!("layer task failed: {e}"),
                    kind: ErrorKind::Internal,
                })
            })
        }
        .boxed()
        .shared();
        let work = LayerWork {
            started,
            applying,
            done,
        };
        inflight.insert(plan.chain_id.clone(), work.clone());
        Ok(work)
    }

    async fn bring(
        &self,
        source: &Source,
        plan: &LayerPlan,
        parent: Option<LayerWork>,
        signals: Signals,
    ) -> Result<(), ImageError> {
        let store = self.store.clone();
        let chain = plan.chain_id.clone();
        let present = tokio::task::spawn_blocking(move || store.layer(&chain))
            .await
            .map_err(|e| ImageError::Internal(format!("layer lookup task: {e}")))?
            .map_err(ImageError::Store)?;
        if present.is_some() {
            let _ = signals.applying.send(());
            self.metrics.layers_reused.inc();
            return Ok(());
        }
        if let Some(p) = &parent {
            p.started.clone().await;
        }
        let _permit = self
            .downloads
            .acquire()
            .await
            .map_err(|_| ImageError::Internal("download limiter closed".into()))?;
        let _ = signals.started.send(());
        self.download_and_apply(source, plan, parent, signals.applying)
            .await?;
        self.metrics.layers_fetched.inc();
        Ok(())
    }

    async fn download_and_apply(
        &self,
        source: &Source,
        plan: &LayerPlan,
        parent: Option<LayerWork>,
        applying: oneshot::Sender<()>,
    ) -> Result<(), ImageError> {
        let parent_failed = |e: SharedError| {
            ImageError::Shared(SharedError {
                message: format!(
                    "layer {}: not applied because a layer below it failed: {}",
                    plan.desc.digest, e.message
                ),
                kind: e.kind,
            })
        };
        // What the application waits for: the complete parent on a store that applies a
        // child on its parent, the beginning of the parent's application on one that
        // applies in parallel (which then watches the parent, to stop the child when the
        // parent fails).
        let (mut gate, mut watch): (Option<BoxFuture<'static, Result<(), SharedError>>>, _) =
            match parent {
                None => (None, None),
                Some(p) if self.store.parallel_apply() => {
                    let done = p.done.clone();
                    let gate =
                        async move { if p.applying.await { Ok(()) } else { done.await } }.boxed();
                    (Some(gate), Some(p.done))
                }
                Some(p) => (Some(p.done.boxed()), None),
            };
        let mut blob = BlobStream::open(source, &plan.desc, self.metrics.clone()).await?;
        let mut spool: Option<Spool> = None;
        let mut downloaded_all = false;

        // Until then, the bytes wait in a spool file.
        while let Some(g) = gate.as_mut() {
            tokio::select! {
                biased;
                done = g => {
                    done.map_err(parent_failed)?;
                    gate = None;
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
                first_read: Some(applying),
            };
            store.apply_layer(&request, &mut reader)
        });
        let mut failure = None;
        if !downloaded_all {
            loop {
                let chunk = tokio::select! {
                    biased;
                    done = settled(&mut watch) => {
                        watch = None;
                        match done {
                            Ok(()) => continue,
                            Err(e) => {
                                let _ = tx.send(Err(std::io::Error::other("a layer below failed"))).await;
                                failure = Some(parent_failed(e));
                                break;
                            }
                        }
                    }
                    chunk = blob.next() => chunk,
                };
                match chunk {
                    Ok(Some(bytes)) => {
                        if tx.send(Ok(bytes)).await.is_err() {
                            break; // the store stopped reading: its error says why
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                        failure = Some(e);
                        break;
                    }
                }
            }
        }
        drop(tx);
        let applied = apply
            .await
            .map_err(|e| ImageError::Internal(format!("layer apply task: {e}")))?;
        if let Some(e) = failure {
            return Err(e);
        }
        match applied {
            Ok(_) => Ok(()),
            Err(error) => Err(explain_apply_failure(source, plan, error).await),
        }
    }
}

/// Resolves when the watched layer settles; never when there is none.
async fn settled(layer: &mut Option<LayerFuture>) -> Result<(), SharedError> {
    match layer {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// A layer that cannot be read may be a blob that is not what its digest says (a registry
/// serving damaged content): the decompressor or the tar reader then fails before the
/// digest can be compared. Fetching the blob again, verified, tells the two apart, so that
/// the error names the real cause. This costs a second download, on failures only.
async fn explain_apply_failure(
    source: &Source,
    plan: &LayerPlan,
    error: layerfs::StoreError,
) -> ImageError {
    use layerfs::StoreError as S;
    let blob = plan.desc.digest.clone();
    if matches!(
        error,
        S::InvalidLayer { .. } | S::CompressionMismatch { .. } | S::UnsafeEntry { .. }
    ) {
        let check = source
            .client
            .pull_blob(&source.reference, blob.as_str(), tokio::io::sink())
            .await;
        match check {
            Err(OciDistributionError::DigestError(d)) => {
                return ImageError::BlobDigest {
                    blob,
                    host: source.host().to_string(),
                    detail: format!(
                        "content does not match its digest ({d}); reading it as a layer failed: {error}"
                    ),
                };
            }
            Ok(()) => {}
            Err(e) => {
                tracing::debug!(blob = %blob, error = %e, "could not fetch the blob again to check its digest");
            }
        }
    }
    ImageError::Layer { blob, error }
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

/// The signals a layer's work gives the layer above it.
struct Signals {
    started: oneshot::Sender<()>,
    applying: oneshot::Sender<()>,
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

    /// The spool for reading; its name is gone at once (on drop), so nothing outlives the
    /// pull.
    async fn into_reader(mut self) -> Result<std::fs::File, ImageError> {
        let err = |e: std::io::Error| ImageError::Internal(format!("spool file: {e}"));
        self.file.flush().await.map_err(err)?;
        std::fs::File::open(&self.path).map_err(err)
    }
}

/// A download that stops early (its parent failed, the registry broke off) leaves no
/// spool file behind.
impl Drop for Spool {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove a spool file");
        }
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
    /// Told when the store first reads: its application of the layer has begun.
    first_read: Option<oneshot::Sender<()>>,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(tx) = self.first_read.take() {
            let _ = tx.send(());
        }
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
            first_read: None,
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
            first_read: None,
        };
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(e.to_string(), "cut");
        assert_eq!(out, b"ab");
    }
}
