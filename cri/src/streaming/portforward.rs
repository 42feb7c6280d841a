//! Port forwarding (`portforward.k8s.io`): each forwarded connection is a pair of client
//! streams, `data` and `error`, tied by a `requestid` and naming the `port`; the data stream
//! carries the connection's bytes both ways and the error stream a message if it fails. Over
//! WebSocket without the SPDY tunnel, each port of the request is a pair of channels whose
//! first message is the port (little-endian u16).

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::backend::Backend;
use super::mux::{Outlet, WriteCmd};
use super::spdy::frame::{RST_PROTOCOL_ERROR, header};
use super::spdy::{self, NewStream};
use super::ws;

pub const SPDY_PROTOCOLS: &[&str] = &["portforward.k8s.io"];
pub const WS_PROTOCOLS: &[&str] = &[ws::V4_CHANNEL, ws::V4_BASE64_CHANNEL, ""];
/// How long the second stream of a pair may take (the kubelet's stream creation timeout).
const PAIR_TIMEOUT: Duration = super::remotecommand::STREAM_CREATION_TIMEOUT;
/// After the pod's side ended, how long the client's side may take.
const CLIENT_LINGER: Duration = Duration::from_secs(1);
const READ_CHUNK: usize = 64 * 1024;

#[derive(Default)]
struct Pair {
    port: u16,
    data: Option<NewStream>,
    error: Option<NewStream>,
    since: Option<Instant>,
}

/// Serves forwarded connections on a SPDY connection until the client closes it.
pub async fn serve_spdy<B: Backend>(backend: Arc<B>, pod_id: String, mut conn: spdy::Connection) {
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let s = tokio::select! {
            s = conn.incoming.recv() => match s { Some(s) => s, None => break },
            _ = conn.closed.cancelled() => break,
            _ = tick.tick() => {
                expire_pairs(&mut pairs, &conn.writer).await;
                continue;
            }
        };
        let port = header(&s.headers, "port").and_then(|p| p.parse::<u16>().ok());
        let kind = header(&s.headers, "streamtype").map(str::to_string);
        let (Some(port), Some(kind)) = (port.filter(|p| *p > 0), kind) else {
            tracing::debug!(
                stream = s.id,
                "port-forward stream without a valid port or type"
            );
            let _ = conn
                .writer
                .send(WriteCmd::Reset {
                    id: s.id,
                    status: RST_PROTOCOL_ERROR,
                })
                .await;
            continue;
        };
        if kind != "data" && kind != "error" {
            let _ = conn
                .writer
                .send(WriteCmd::Reset {
                    id: s.id,
                    status: RST_PROTOCOL_ERROR,
                })
                .await;
            continue;
        }
        let _ = conn.writer.send(WriteCmd::Reply { id: s.id }).await;
        // Old clients send no request id; their streams come as consecutive odd ids.
        let request = header(&s.headers, "requestid")
            .map(str::to_string)
            .unwrap_or_else(|| {
                let base = if kind == "error" {
                    s.id
                } else {
                    s.id.saturating_sub(2)
                };
                base.to_string()
            });
        let pair = pairs.entry(request.clone()).or_default();
        pair.port = port;
        pair.since.get_or_insert_with(Instant::now);
        let slot = if kind == "data" {
            &mut pair.data
        } else {
            &mut pair.error
        };
        if slot.is_some() {
            let msg = format!(
                "error processing stream for request {request}: {kind} stream already assigned"
            );
            Outlet::new(s.id, conn.writer.clone())
                .send(Bytes::from(msg))
                .await;
            continue;
        }
        *slot = Some(s);
        if pair.data.is_some()
            && pair.error.is_some()
            && let Some(p) = pairs.remove(&request)
            && let (Some(data), Some(error)) = (p.data, p.error)
        {
            let (b, pod, w) = (backend.clone(), pod_id.clone(), conn.writer.clone());
            tokio::spawn(async move {
                forward(
                    &*b,
                    &pod,
                    p.port,
                    data.data,
                    Outlet::new(data.id, w.clone()),
                    Outlet::new(error.id, w),
                )
                .await;
            });
        }
    }
    conn.shutdown().await;
}

async fn expire_pairs(pairs: &mut HashMap<String, Pair>, writer: &mpsc::Sender<WriteCmd>) {
    let late: Vec<String> = pairs
        .iter()
        .filter(|(_, p)| p.since.is_some_and(|t| t.elapsed() >= PAIR_TIMEOUT))
        .map(|(k, _)| k.clone())
        .collect();
    for k in late {
        if let Some(p) = pairs.remove(&k)
            && let Some(e) = p.error
        {
            let out = Outlet::new(e.id, writer.clone());
            out.send(Bytes::from(format!(
                "timed out waiting for the streams of request {k}"
            )))
            .await;
            out.finish().await;
        }
    }
}

/// Serves the ports of a WebSocket channel connection (`2i` data, `2i + 1` error).
pub async fn serve_ws<B: Backend>(
    backend: Arc<B>,
    pod_id: String,
    ports: Vec<u16>,
    mut conn: ws::ChannelConn,
) {
    let mut tasks = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let data_ch = 2 * i as u32;
        let data_out = Outlet::new(data_ch, conn.writer.clone());
        let err_out = Outlet::new(data_ch + 1, conn.writer.clone());
        let prefix = Bytes::copy_from_slice(&port.to_le_bytes());
        for o in [&data_out, &err_out] {
            o.send(prefix.clone()).await;
        }
        let Some(rx) = conn.inputs.get_mut(2 * i).and_then(Option::take) else {
            continue;
        };
        let (b, pod, port) = (backend.clone(), pod_id.clone(), *port);
        tasks.push(tokio::spawn(async move {
            forward(&*b, &pod, port, rx, data_out, err_out).await;
        }));
    }
    let all = async {
        for t in tasks {
            let _ = t.await;
        }
    };
    tokio::select! {
        _ = all => {}
        _ = conn.closed.cancelled() => {}
    }
    conn.shutdown().await;
}

/// Copies one connection both ways between the client's data stream and the pod's port.
async fn forward<B: Backend>(
    backend: &B,
    pod_id: &str,
    port: u16,
    mut from_client: mpsc::Receiver<Bytes>,
    to_client: Outlet,
    errors: Outlet,
) {
    let failure = match backend.port_forward(pod_id, port).await {
        Err(e) => Some(e.message),
        Ok(sock) => {
            let _ = sock.set_nodelay(true);
            let (mut rd, mut wr) = sock.into_split();
            let up = async move {
                while let Some(b) = from_client.recv().await {
                    wr.write_all(&b).await?;
                }
                // The client is done sending: the pod sees the end of its input.
                wr.shutdown().await?;
                Ok::<(), io::Error>(())
            };
            let down = async {
                let mut buf = BytesMut::with_capacity(READ_CHUNK);
                loop {
                    buf.reserve(READ_CHUNK);
                    if rd.read_buf(&mut buf).await? == 0 {
                        return Ok::<(), io::Error>(());
                    }
                    if !to_client.send(buf.split().freeze()).await {
                        return Ok(());
                    }
                }
            };
            tokio::pin!(up);
            tokio::pin!(down);
            let mut up_r = None;
            let down_r = loop {
                tokio::select! {
                    d = &mut down => break d,
                    u = &mut up, if up_r.is_none() => up_r = Some(u),
                }
            };
            // The pod closed: the client gets its end now; what it still sends has a moment
            // to arrive.
            let up_r = match up_r {
                Some(u) => u,
                None => tokio::time::timeout(CLIENT_LINGER, &mut up)
                    .await
                    .unwrap_or(Ok(())),
            };
            [down_r, up_r]
                .into_iter()
                .filter_map(Result::err)
                .find(|e| {
                    !matches!(
                        e.kind(),
                        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                    )
                })
                .map(|e| e.to_string())
        }
    };
    to_client.finish().await;
    if let Some(msg) = failure {
        tracing::info!(pod = pod_id, port, error = %msg, "port forward failed");
        errors
            .send(Bytes::from(format!(
                "error forwarding port {port} to pod {pod_id}: {msg}"
            )))
            .await;
    }
    errors.finish().await;
}
