//! SPDY/3.1 as the Kubernetes clients speak it (moby/spdystream): the client opens streams
//! (odd IDs) with a `streamtype` header, the server accepts each with SYN_REPLY, data flows
//! in DATA frames and each side ends its half with FIN. No flow control, no server pushes.
//!
//! No maintained crate implements SPDY (it was superseded by HTTP/2 before Rust had one), so
//! the framing is here; the header compression is zlib with the SPDY dictionary (flate2).

pub mod dictionary;
pub mod frame;

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::mux::{Activity, WriteCmd};
use frame::{Decoder, Encoder, FLAG_FIN, Frame, Headers, RST_PROTOCOL_ERROR, RST_REFUSED_STREAM};

/// Data frames queued per stream before the connection's reader waits for its consumer.
const STREAM_QUEUE: usize = 64;
const WRITE_QUEUE: usize = 256;
const READ_CHUNK: usize = 64 * 1024;

/// A stream the client opened.
#[derive(Debug)]
pub struct NewStream {
    pub id: u32,
    pub headers: Headers,
    /// Its data; ends with the client's FIN (or RST, or the connection's end).
    pub data: mpsc::Receiver<Bytes>,
}

/// A running SPDY server connection.
pub struct Connection {
    /// Streams the client opens, in order. Each must be answered with
    /// [`WriteCmd::Reply`] (or refused with [`WriteCmd::Reset`]).
    pub incoming: mpsc::Receiver<NewStream>,
    pub writer: mpsc::Sender<WriteCmd>,
    /// Cancelled when the connection ends (client gone, protocol error, idle timeout).
    pub closed: CancellationToken,
    reader: tokio::task::JoinHandle<()>,
    writer_task: tokio::task::JoinHandle<()>,
}

impl Connection {
    /// Starts serving the server side of a connection on `io`.
    pub fn serve<T>(io: T, idle_timeout: Duration) -> Self
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (wtx, wrx) = mpsc::channel(WRITE_QUEUE);
        let (itx, irx) = mpsc::channel(16);
        let closed = CancellationToken::new();
        let activity = Activity::default();
        activity.touch();
        activity.clone().watch(idle_timeout, closed.clone());
        let reader = tokio::spawn(read_loop(
            rd,
            itx,
            wtx.clone(),
            activity.clone(),
            closed.clone(),
        ));
        let writer_task = tokio::spawn(write_loop(wr, wrx, activity, closed.clone()));
        Self {
            incoming: irx,
            writer: wtx,
            closed,
            reader,
            writer_task,
        }
    }

    /// Sends GOAWAY, lets the writer drain, and waits (briefly) for the client to hang up,
    /// so that nothing it has not read yet is lost to a reset.
    pub async fn shutdown(self) {
        let Self {
            incoming,
            writer,
            closed,
            reader,
            writer_task,
        } = self;
        drop(incoming);
        let _ = writer.send(WriteCmd::Close).await;
        drop(writer);
        let linger = async {
            let _ = writer_task.await;
            let _ = reader.await;
        };
        tokio::select! {
            _ = linger => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        closed.cancel();
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    incoming: mpsc::Sender<NewStream>,
    writer: mpsc::Sender<WriteCmd>,
    activity: Activity,
    closed: CancellationToken,
) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut dec = Decoder::new();
    let mut streams: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    let mut last_id = 0u32;
    let mut going_away = false;
    loop {
        let frame = loop {
            match dec.decode(&mut buf) {
                Ok(Some(f)) => break Some(f),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "SPDY protocol error; closing");
                    let _ = writer
                        .send(WriteCmd::Reset {
                            id: 0,
                            status: RST_PROTOCOL_ERROR,
                        })
                        .await;
                    break None;
                }
            }
            buf.reserve(READ_CHUNK);
            let n = tokio::select! {
                r = rd.read_buf(&mut buf) => r,
                _ = closed.cancelled() => break None,
            };
            match n {
                Ok(0) | Err(_) => break None,
                Ok(_) => activity.touch(),
            }
        };
        let Some(frame) = frame else { break };
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
                ..
            } => {
                // Client streams are odd and increasing.
                if stream_id % 2 == 0 || stream_id <= last_id {
                    let _ = writer
                        .send(WriteCmd::Reset {
                            id: stream_id,
                            status: RST_PROTOCOL_ERROR,
                        })
                        .await;
                    continue;
                }
                last_id = stream_id;
                if going_away {
                    let _ = writer
                        .send(WriteCmd::Reset {
                            id: stream_id,
                            status: RST_REFUSED_STREAM,
                        })
                        .await;
                    continue;
                }
                let (tx, rx) = mpsc::channel(STREAM_QUEUE);
                if flags & FLAG_FIN == 0 {
                    streams.insert(stream_id, tx);
                }
                let s = NewStream {
                    id: stream_id,
                    headers,
                    data: rx,
                };
                if incoming.send(s).await.is_err() {
                    streams.remove(&stream_id);
                    let _ = writer
                        .send(WriteCmd::Reset {
                            id: stream_id,
                            status: RST_REFUSED_STREAM,
                        })
                        .await;
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if !data.is_empty()
                    && let Some(tx) = streams.get(&stream_id)
                {
                    let sent = tokio::select! {
                        r = tx.send(data) => r.is_ok(),
                        _ = closed.cancelled() => break,
                    };
                    if !sent {
                        streams.remove(&stream_id);
                    }
                }
                if flags & FLAG_FIN != 0 {
                    streams.remove(&stream_id);
                }
            }
            Frame::Headers {
                stream_id, flags, ..
            } => {
                if flags & FLAG_FIN != 0 {
                    streams.remove(&stream_id);
                }
            }
            Frame::RstStream { stream_id, .. } => {
                streams.remove(&stream_id);
            }
            Frame::Ping { id } => {
                // Odd IDs are the client's: echo them. Even ones would answer ours (none sent).
                if id % 2 == 1 {
                    let _ = writer.send(WriteCmd::Pong { id }).await;
                }
            }
            Frame::GoAway { .. } => going_away = true,
            Frame::SynReply { .. }
            | Frame::Settings
            | Frame::WindowUpdate { .. }
            | Frame::Unknown { .. } => {}
        }
    }
    // Ends every stream's data and tells the handlers.
    drop(streams);
    closed.cancel();
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<WriteCmd>,
    activity: Activity,
    closed: CancellationToken,
) {
    let mut enc = Encoder::new();
    let mut out = BytesMut::with_capacity(READ_CHUNK + 64);
    let mut last_seen = 0u32;
    'outer: loop {
        // What is queued goes out before a cancellation is noticed (a GOAWAY, say).
        let cmd = tokio::select! {
            biased;
            c = rx.recv() => c,
            _ = closed.cancelled() => None,
        };
        let Some(mut cmd) = cmd else { break };
        // Write everything queued in one go.
        loop {
            let frame = match cmd {
                WriteCmd::Data { id, data } => Frame::Data {
                    stream_id: id,
                    flags: 0,
                    data,
                },
                WriteCmd::Fin { id } => Frame::Data {
                    stream_id: id,
                    flags: FLAG_FIN,
                    data: Bytes::new(),
                },
                WriteCmd::Reply { id } => {
                    last_seen = last_seen.max(id);
                    Frame::SynReply {
                        stream_id: id,
                        flags: 0,
                        headers: Vec::new(),
                    }
                }
                WriteCmd::Reset { id: 0, status } => {
                    // Connection-level protocol error.
                    let _ = enc.encode(
                        &Frame::GoAway {
                            last_good: last_seen,
                            status,
                        },
                        &mut out,
                    );
                    let _ = wr.write_all(&out).await;
                    break 'outer;
                }
                WriteCmd::Reset { id, status } => Frame::RstStream {
                    stream_id: id,
                    status,
                },
                WriteCmd::Pong { id } => Frame::Ping { id },
                WriteCmd::Close => {
                    let _ = enc.encode(
                        &Frame::GoAway {
                            last_good: last_seen,
                            status: 0,
                        },
                        &mut out,
                    );
                    let _ = wr.write_all(&out).await;
                    let _ = wr.flush().await;
                    let _ = wr.shutdown().await;
                    return;
                }
            };
            if let Err(e) = enc.encode(&frame, &mut out) {
                tracing::debug!(error = %e, "encoding a SPDY frame");
            }
            if out.len() >= READ_CHUNK {
                break;
            }
            match rx.try_recv() {
                Ok(next) => cmd = next,
                Err(_) => break,
            }
        }
        if wr.write_all(&out).await.is_err() || wr.flush().await.is_err() {
            break;
        }
        out.clear();
        activity.touch();
    }
    closed.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal client speaking to [`Connection`] over an in-memory pipe.
    struct TestClient {
        io: tokio::io::DuplexStream,
        enc: Encoder,
        dec: Decoder,
        buf: BytesMut,
    }

    impl TestClient {
        async fn send(&mut self, f: Frame) {
            let mut b = BytesMut::new();
            self.enc.encode(&f, &mut b).unwrap();
            self.io.write_all(&b).await.unwrap();
        }
        async fn recv(&mut self) -> Option<Frame> {
            loop {
                if let Some(f) = self.dec.decode(&mut self.buf).unwrap() {
                    return Some(f);
                }
                if self.io.read_buf(&mut self.buf).await.unwrap() == 0 {
                    return None;
                }
            }
        }
    }

    fn pair() -> (Connection, TestClient) {
        let (a, b) = tokio::io::duplex(1 << 20);
        (
            Connection::serve(a, Duration::from_secs(60)),
            TestClient {
                io: b,
                enc: Encoder::new(),
                dec: Decoder::new(),
                buf: BytesMut::new(),
            },
        )
    }

    #[tokio::test]
    async fn streams_open_carry_data_and_finish() {
        let (mut conn, mut client) = pair();
        client
            .send(Frame::SynStream {
                stream_id: 1,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: vec![("streamtype".into(), "stdin".into())],
            })
            .await;
        let mut s = conn.incoming.recv().await.unwrap();
        assert_eq!(frame::header(&s.headers, "streamtype"), Some("stdin"));
        conn.writer.send(WriteCmd::Reply { id: 1 }).await.unwrap();
        assert!(matches!(
            client.recv().await,
            Some(Frame::SynReply { stream_id: 1, .. })
        ));
        client
            .send(Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"abc"),
            })
            .await;
        assert_eq!(s.data.recv().await.as_deref(), Some(&b"abc"[..]));
        assert_eq!(s.data.recv().await, None, "FIN ends the data");
        // Pings are echoed.
        client.send(Frame::Ping { id: 5 }).await;
        assert_eq!(client.recv().await, Some(Frame::Ping { id: 5 }));
        // Even stream ids are the server's: refused.
        client
            .send(Frame::SynStream {
                stream_id: 2,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: vec![],
            })
            .await;
        assert!(matches!(
            client.recv().await,
            Some(Frame::RstStream { stream_id: 2, .. })
        ));
        conn.writer
            .send(WriteCmd::Data {
                id: 1,
                data: Bytes::from_static(b"out"),
            })
            .await
            .unwrap();
        assert!(
            matches!(client.recv().await, Some(Frame::Data { stream_id: 1, data, .. }) if data == "out")
        );
        // Shutdown sends GOAWAY, ends the connection's write side, and is over as soon as
        // the client hangs up (not after its 5 s linger).
        let t0 = std::time::Instant::now();
        let shutdown = tokio::spawn(conn.shutdown());
        assert!(matches!(client.recv().await, Some(Frame::GoAway { .. })));
        assert_eq!(client.recv().await, None);
        drop(client);
        shutdown.await.unwrap();
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    }

    #[tokio::test]
    async fn garbage_ends_the_connection() {
        let (conn, mut client) = pair();
        client
            .io
            .write_all(&[0x80, 2, 0, 1, 0, 0, 0, 0])
            .await
            .unwrap();
        conn.closed.cancelled().await;
        assert!(matches!(
            client.recv().await,
            Some(Frame::GoAway { status: 1, .. })
        ));
    }

    #[tokio::test]
    async fn idle_connections_are_closed() {
        let (a, _b) = tokio::io::duplex(1024);
        let conn = Connection::serve(a, Duration::from_millis(100));
        tokio::time::timeout(Duration::from_secs(5), conn.closed.cancelled())
            .await
            .expect("closed when idle");
    }
}
