//! What the protocol handlers share across transports: a stream's way out (an [`Outlet`] into
//! the connection's writer task) and the idle clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Commands for a connection's writer task. WebSocket writers ignore the SPDY-only ones.
#[derive(Debug)]
pub enum WriteCmd {
    /// Bytes on a stream (SPDY stream id, or WebSocket channel).
    Data { id: u32, data: Bytes },
    /// This side is done with the stream (SPDY FIN).
    Fin { id: u32 },
    /// Accept a stream the client opened (SPDY SYN_REPLY).
    Reply { id: u32 },
    /// Refuse or abort a stream (SPDY RST_STREAM).
    Reset { id: u32, status: u32 },
    /// Answer a client's PING.
    Pong { id: u32 },
    /// End the connection cleanly: SPDY GOAWAY, or a WebSocket close frame; then shut down
    /// the write side.
    Close,
}

/// A handle for writing one stream.
#[derive(Clone, Debug)]
pub struct Outlet {
    id: u32,
    tx: mpsc::Sender<WriteCmd>,
}

impl Outlet {
    pub fn new(id: u32, tx: mpsc::Sender<WriteCmd>) -> Self {
        Self { id, tx }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    /// Queues `data`; `false` once the connection is gone.
    pub async fn send(&self, data: Bytes) -> bool {
        if data.is_empty() {
            return true;
        }
        self.tx
            .send(WriteCmd::Data { id: self.id, data })
            .await
            .is_ok()
    }

    /// Ends this side of the stream.
    pub async fn finish(&self) {
        let _ = self.tx.send(WriteCmd::Fin { id: self.id }).await;
    }
}

/// When a connection last moved a frame, for the idle timeout.
#[derive(Clone, Debug)]
pub struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Activity {
    pub fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    pub fn idle_for(&self) -> Duration {
        let now = self.start.elapsed();
        now.saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }

    /// Cancels `closed` once nothing moved for `limit`.
    pub fn watch(self, limit: Duration, closed: CancellationToken) {
        tokio::spawn(async move {
            let step = (limit / 4).clamp(Duration::from_millis(50), Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = closed.cancelled() => return,
                    _ = tokio::time::sleep(step) => {}
                }
                if self.idle_for() >= limit {
                    tracing::info!(idle = ?limit, "closing an idle streaming connection");
                    closed.cancel();
                    return;
                }
            }
        });
    }
}
