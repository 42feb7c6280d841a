//! WebSocket transports: the `channel.k8s.io` family (each message is a channel byte and its
//! data; `v5` adds a half-close signal `[255, channel]`; the `base64.` variants send text
//! with an ASCII channel digit and base64 data) and the SPDY tunnel
//! (`SPDY/3.1+portforward.k8s.io`: binary messages carry a SPDY byte stream).

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;

use super::mux::{Activity, WriteCmd};

pub const V5_CHANNEL: &str = "v5.channel.k8s.io";
pub const V4_CHANNEL: &str = "v4.channel.k8s.io";
pub const V4_BASE64_CHANNEL: &str = "v4.base64.channel.k8s.io";
pub const CHANNEL: &str = "channel.k8s.io";
pub const BASE64_CHANNEL: &str = "base64.channel.k8s.io";
pub const SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

/// The v5 half-close signal's first byte.
const STREAM_CLOSE: u8 = 255;
const WRITE_QUEUE: usize = 256;
const STREAM_QUEUE: usize = 64;

/// How a negotiated subprotocol frames channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framing {
    pub base64: bool,
    /// `v5`: the client may half-close a channel.
    pub close_signal: bool,
    /// `v4` and later: the error channel carries a JSON `metav1.Status`.
    pub json_status: bool,
}

impl Framing {
    /// The framing of a `channel.k8s.io`-family subprotocol (`""` is plain binary).
    pub fn of(protocol: &str) -> Option<Self> {
        let f = |base64, close_signal, json_status| {
            Some(Self {
                base64,
                close_signal,
                json_status,
            })
        };
        match protocol {
            V5_CHANNEL => f(false, true, true),
            V4_CHANNEL => f(false, false, true),
            V4_BASE64_CHANNEL => f(true, false, true),
            CHANNEL | "" => f(false, false, false),
            BASE64_CHANNEL => f(true, false, false),
            _ => None,
        }
    }
}

/// The first subprotocol the client offers that is in `supported`; `Some("")` when it offers
/// none (the Kubernetes servers then use plain binary channels).
pub fn negotiate<'a>(offered: &[String], supported: &[&'a str]) -> Option<&'a str> {
    if offered.is_empty() {
        return Some("");
    }
    offered
        .iter()
        .find_map(|o| supported.iter().find(|s| **s == o.as_str()).copied())
}

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20))
}

/// A running channel connection.
pub struct ChannelConn {
    /// Per channel: its input, for channels the client writes.
    pub inputs: Vec<Option<mpsc::Receiver<Bytes>>>,
    pub writer: mpsc::Sender<WriteCmd>,
    pub closed: CancellationToken,
    writer_task: tokio::task::JoinHandle<()>,
}

impl ChannelConn {
    /// Serves a channel protocol on an upgraded connection; `readable[i]` says whether the
    /// client may write channel `i`.
    pub async fn serve<T>(io: T, framing: Framing, readable: &[bool], idle: Duration) -> Self
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config())).await;
        let (sink, stream) = ws.split();
        let closed = CancellationToken::new();
        let activity = Activity::default();
        activity.touch();
        activity.clone().watch(idle, closed.clone());
        let mut senders = Vec::new();
        let mut inputs = Vec::new();
        for r in readable {
            if *r {
                let (tx, rx) = mpsc::channel(STREAM_QUEUE);
                senders.push(Some(tx));
                inputs.push(Some(rx));
            } else {
                senders.push(None);
                inputs.push(None);
            }
        }
        let (wtx, wrx) = mpsc::channel(WRITE_QUEUE);
        tokio::spawn(channel_reader(
            stream,
            senders,
            framing,
            activity.clone(),
            closed.clone(),
        ));
        let writer_task =
            tokio::spawn(channel_writer(sink, wrx, framing, activity, closed.clone()));
        Self {
            inputs,
            writer: wtx,
            closed,
            writer_task,
        }
    }

    /// Sends a normal close and lets the writer finish.
    pub async fn shutdown(self) {
        let _ = self.writer.send(WriteCmd::Close).await;
        drop(self.writer);
        tokio::select! {
            _ = self.writer_task => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        self.closed.cancel();
    }
}

type WsStream<T> = futures::stream::SplitStream<WebSocketStream<T>>;
type WsSink<T> = futures::stream::SplitSink<WebSocketStream<T>, Message>;

async fn channel_reader<T: AsyncRead + AsyncWrite + Unpin>(
    mut stream: WsStream<T>,
    mut senders: Vec<Option<mpsc::Sender<Bytes>>>,
    framing: Framing,
    activity: Activity,
    closed: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            m = stream.next() => m,
            _ = closed.cancelled() => break,
        };
        let data: Bytes = match msg {
            Some(Ok(Message::Binary(b))) if !framing.base64 => b,
            Some(Ok(Message::Text(t))) if framing.base64 => {
                let t = t.as_str().as_bytes();
                if t.is_empty() {
                    continue;
                }
                let ch = t[0].wrapping_sub(b'0');
                let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(&t[1..]) else {
                    tracing::debug!("bad base64 on channel {ch}; closing");
                    break;
                };
                let mut v = Vec::with_capacity(decoded.len() + 1);
                v.push(ch);
                v.extend_from_slice(&decoded);
                Bytes::from(v)
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                activity.touch();
                continue;
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => {
                tracing::debug!("unexpected WebSocket message type; closing");
                break;
            }
        };
        activity.touch();
        if data.is_empty() {
            continue;
        }
        let ch = usize::from(data[0]);
        if framing.close_signal && data[0] == STREAM_CLOSE {
            if data.len() != 2 {
                tracing::debug!("malformed stream close signal; closing");
                break;
            }
            if let Some(s) = senders.get_mut(usize::from(data[1])) {
                *s = None;
            }
            continue;
        }
        let payload = data.slice(1..);
        let Some(Some(tx)) = senders.get(ch) else {
            continue;
        };
        if payload.is_empty() {
            continue;
        }
        let ok = tokio::select! {
            r = tx.send(payload) => r.is_ok(),
            _ = closed.cancelled() => break,
        };
        if !ok {
            senders[ch] = None;
        }
    }
    closed.cancel();
}

async fn channel_writer<T: AsyncRead + AsyncWrite + Unpin>(
    mut sink: WsSink<T>,
    mut rx: mpsc::Receiver<WriteCmd>,
    framing: Framing,
    activity: Activity,
    closed: CancellationToken,
) {
    loop {
        // What is queued goes out before a cancellation is noticed (a GOAWAY, say).
        let cmd = tokio::select! {
            biased;
            c = rx.recv() => c,
            _ = closed.cancelled() => None,
        };
        let msg = match cmd {
            Some(WriteCmd::Data { id, data }) => {
                let ch = u8::try_from(id).unwrap_or(u8::MAX);
                if framing.base64 {
                    let mut t = String::with_capacity(1 + data.len() * 4 / 3 + 4);
                    t.push(char::from(b'0'.wrapping_add(ch)));
                    base64::engine::general_purpose::STANDARD.encode_string(&data, &mut t);
                    Message::Text(t.into())
                } else {
                    let mut v = Vec::with_capacity(1 + data.len());
                    v.push(ch);
                    v.extend_from_slice(&data);
                    Message::Binary(v.into())
                }
            }
            Some(WriteCmd::Close) => {
                let _ = sink
                    .send(Message::Close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "".into(),
                    })))
                    .await;
                let _ = sink.close().await;
                return;
            }
            Some(_) => continue,
            None => break,
        };
        if sink.send(msg).await.is_err() {
            break;
        }
        activity.touch();
    }
    let _ = sink.close().await;
    closed.cancel();
}

/// Turns a WebSocket carrying a byte stream in binary messages (the SPDY tunnel) into a
/// plain byte stream.
pub async fn tunnel<T>(io: T, idle: Duration) -> tokio::io::DuplexStream
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config())).await;
    let (mut sink, mut stream) = ws.split();
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (mut rd, mut wr) = tokio::io::split(ours);
    let closed = CancellationToken::new();
    let activity = Activity::default();
    activity.touch();
    activity.clone().watch(idle, closed.clone());
    let (c1, a1) = (closed.clone(), activity.clone());
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                m = stream.next() => m,
                _ = c1.cancelled() => break,
            };
            match msg {
                Some(Ok(Message::Binary(b))) => {
                    a1.touch();
                    if wr.write_all(&b).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => a1.touch(),
                _ => break,
            }
        }
        let _ = wr.shutdown().await;
        c1.cancel();
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = tokio::select! {
                r = rd.read(&mut buf) => r,
                _ = closed.cancelled() => break,
            };
            match n {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    activity.touch();
                    if sink
                        .send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
        let _ = sink.close().await;
        closed.cancel();
    });
    theirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subprotocols() {
        let offered = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let sup = [V5_CHANNEL, V4_CHANNEL, CHANNEL];
        assert_eq!(
            negotiate(&offered(&["v5.channel.k8s.io", "v4.channel.k8s.io"]), &sup),
            Some(V5_CHANNEL)
        );
        assert_eq!(
            negotiate(&offered(&["v4.channel.k8s.io", "v5.channel.k8s.io"]), &sup),
            Some(V4_CHANNEL),
            "the client's order wins"
        );
        assert_eq!(negotiate(&offered(&["x"]), &sup), None);
        assert_eq!(negotiate(&[], &sup), Some(""));
        assert!(Framing::of(V5_CHANNEL).is_some_and(|f| f.close_signal && f.json_status));
        assert!(Framing::of(V4_BASE64_CHANNEL).is_some_and(|f| f.base64 && !f.close_signal));
        assert!(Framing::of(CHANNEL).is_some_and(|f| !f.json_status));
        assert_eq!(Framing::of(SPDY_TUNNEL), None);
    }
}
