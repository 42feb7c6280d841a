//! The HTTP side: `/exec/TOKEN`, `/attach/TOKEN`, `/portforward/TOKEN`; the token is taken,
//! the connection upgraded to SPDY/3.1 or to a WebSocket, and the session started.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::backend::{AttachTarget, Backend, ExecTarget};
use super::cache::Pending;
use super::remotecommand::{self, Command};
use super::{Shared, portforward, spdy, ws};

type Resp = Response<Full<Bytes>>;

/// Serves HTTP/1.1 on one client connection (upgrades included).
pub async fn serve_conn<I, B>(io: I, shared: Arc<Shared>, backend: Arc<B>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: Backend,
{
    let svc = hyper::service::service_fn(move |req| {
        let (shared, backend) = (shared.clone(), backend.clone());
        async move { Ok::<_, Infallible>(handle(req, shared, backend)) }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades()
        .await
    {
        tracing::debug!(error = %e, "streaming HTTP connection");
    }
}

fn text(code: StatusCode, msg: impl Into<String>) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(msg.into() + "\n")));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn header_has(h: &HeaderMap, name: header::HeaderName, needle: &str) -> bool {
    h.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|p| p.trim().eq_ignore_ascii_case(needle)))
    })
}

/// All values of a comma-separated, possibly repeated header.
fn header_list(h: &HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn is_websocket(h: &HeaderMap) -> bool {
    header_has(h, header::UPGRADE, "websocket") && header_has(h, header::CONNECTION, "upgrade")
}

fn is_spdy(h: &HeaderMap) -> bool {
    header_has(h, header::UPGRADE, "spdy/3.1") && header_has(h, header::CONNECTION, "upgrade")
}

fn handle<B: Backend>(mut req: Request<Incoming>, shared: Arc<Shared>, backend: Arc<B>) -> Resp {
    if req.method() != Method::GET && req.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET or POST");
    }
    let path = req.uri().path();
    let Some(rest) = path.strip_prefix(shared.base_path.as_str()) else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    let mut parts = rest.trim_start_matches('/').split('/');
    let (Some(kind), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    if !matches!(kind, "exec" | "attach" | "portforward") {
        return text(StatusCode::NOT_FOUND, "not found");
    }
    // Single use: taken now, whatever happens next.
    let pending = match (kind, shared.cache.consume(token)) {
        (k, Some(p)) => match (k, p) {
            ("exec", p @ Pending::Exec(_))
            | ("attach", p @ Pending::Attach(_))
            | ("portforward", p @ Pending::PortForward(_)) => p,
            _ => return text(StatusCode::NOT_FOUND, "not found"),
        },
        (_, None) => return text(StatusCode::NOT_FOUND, "not found"),
    };
    let query_ports = query_ports(req.uri().query());
    let idle = shared.idle;
    let headers = req.headers().clone();
    if is_websocket(&headers) {
        let offered = header_list(&headers, "sec-websocket-protocol");
        let supported: &[&str] = match pending {
            Pending::PortForward(_) => &[ws::SPDY_TUNNEL, ws::V4_CHANNEL, ws::V4_BASE64_CHANNEL],
            _ => remotecommand::WS_PROTOCOLS,
        };
        let Some(protocol) = ws::negotiate(&offered, supported) else {
            return text(
                StatusCode::FORBIDDEN,
                format!(
                    "unable to upgrade: requested protocol(s) {offered:?} are not supported: {supported:?}"
                ),
            );
        };
        let Some(key) = headers.get("sec-websocket-key") else {
            return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
        };
        if headers
            .get("sec-websocket-version")
            .is_none_or(|v| v.as_bytes() != b"13")
        {
            return text(
                StatusCode::BAD_REQUEST,
                "Sec-WebSocket-Version 13 is required",
            );
        }
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let upgrade = hyper::upgrade::on(&mut req);
        let protocol = protocol.to_string();
        let proto_for_task = protocol.clone();
        tokio::spawn(async move {
            match upgrade.await {
                Ok(up) => {
                    let io = TokioIo::new(up);
                    ws_session(io, &proto_for_task, pending, query_ports, idle, backend).await
                }
                Err(e) => tracing::debug!(error = %e, "WebSocket upgrade"),
            }
        });
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(v) = HeaderValue::from_str(&accept) {
            h.insert("sec-websocket-accept", v);
        }
        if !protocol.is_empty()
            && let Ok(v) = HeaderValue::from_str(&protocol)
        {
            h.insert("sec-websocket-protocol", v);
        }
        return r;
    }
    if !is_spdy(&headers) {
        return text(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request (SPDY/3.1 or websocket)",
        );
    }
    let offered = header_list(&headers, "x-stream-protocol-version");
    if offered.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: X-Stream-Protocol-Version is required",
        );
    }
    let supported: &[&str] = match pending {
        Pending::PortForward(_) => portforward::SPDY_PROTOCOLS,
        _ => remotecommand::SPDY_PROTOCOLS,
    };
    let Some(protocol) = offered
        .iter()
        .find_map(|o| supported.iter().find(|s| **s == o.as_str()).copied())
    else {
        let mut r = text(
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {supported:?}"
            ),
        );
        for s in supported {
            r.headers_mut().append(
                "x-accepted-stream-protocol-versions",
                HeaderValue::from_static(s),
            );
        }
        return r;
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(up) => spdy_session(up, protocol, pending, idle, backend).await,
            Err(e) => tracing::debug!(error = %e, "SPDY upgrade"),
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    h.insert(
        "x-stream-protocol-version",
        HeaderValue::from_static(protocol),
    );
    r
}

/// `port=80&port=8080,9090` as the WebSocket port-forward clients send it.
fn query_ports(query: Option<&str>) -> Vec<u16> {
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "port")
        .flat_map(|(_, v)| v.split(','))
        .filter_map(|p| p.parse::<u16>().ok())
        .filter(|p| *p > 0)
        .collect()
}

fn exec_target(r: &k8s_cri::v1::ExecRequest) -> Command {
    Command::Exec(ExecTarget {
        container_id: r.container_id.clone(),
        cmd: r.cmd.clone(),
        tty: r.tty,
        stdin: r.stdin,
        stdout: r.stdout,
        stderr: r.stderr,
        term_size: None,
    })
}

fn attach_target(r: &k8s_cri::v1::AttachRequest) -> Command {
    Command::Attach(AttachTarget {
        container_id: r.container_id.clone(),
        stdin: r.stdin,
        stdout: r.stdout,
        stderr: r.stderr,
    })
}

async fn spdy_session<B: Backend>(
    up: Upgraded,
    protocol: &'static str,
    pending: Pending,
    idle: std::time::Duration,
    backend: Arc<B>,
) {
    let mut conn = spdy::Connection::serve(TokioIo::new(up), idle);
    match pending {
        Pending::PortForward(pf) => {
            portforward::serve_spdy(backend, pf.pod_sandbox_id, conn).await;
        }
        Pending::Exec(r) => {
            if let Some(s) =
                remotecommand::spdy_streams(&mut conn, protocol, r.stdin, r.stdout, r.stderr, r.tty)
                    .await
            {
                remotecommand::run(&*backend, exec_target(&r), s).await;
            }
            conn.shutdown().await;
        }
        Pending::Attach(r) => {
            if let Some(s) =
                remotecommand::spdy_streams(&mut conn, protocol, r.stdin, r.stdout, r.stderr, r.tty)
                    .await
            {
                remotecommand::run(&*backend, attach_target(&r), s).await;
            }
            conn.shutdown().await;
        }
    }
}

async fn ws_session<B: Backend>(
    io: TokioIo<Upgraded>,
    protocol: &str,
    pending: Pending,
    query_ports: Vec<u16>,
    idle: std::time::Duration,
    backend: Arc<B>,
) {
    match pending {
        Pending::PortForward(pf) if protocol == ws::SPDY_TUNNEL => {
            let conn = spdy::Connection::serve(ws::tunnel(io, idle).await, idle);
            portforward::serve_spdy(backend, pf.pod_sandbox_id, conn).await;
        }
        Pending::PortForward(pf) => {
            let Some(framing) = ws::Framing::of(protocol) else {
                return;
            };
            let mut ports: Vec<u16> = pf
                .port
                .iter()
                .filter_map(|p| u16::try_from(*p).ok())
                .filter(|p| *p > 0)
                .collect();
            if ports.is_empty() {
                ports = query_ports;
            }
            let readable: Vec<bool> = ports.iter().flat_map(|_| [true, false]).collect();
            let conn = ws::ChannelConn::serve(io, framing, &readable, idle).await;
            portforward::serve_ws(backend, pf.pod_sandbox_id, ports, conn).await;
        }
        Pending::Exec(r) => {
            let Some(framing) = ws::Framing::of(protocol) else {
                return;
            };
            let mut conn =
                ws::ChannelConn::serve(io, framing, &remotecommand::ws_readable(r.stdin), idle)
                    .await;
            let s = remotecommand::ws_streams(&mut conn, framing, r.stdout, r.stderr).await;
            remotecommand::run(&*backend, exec_target(&r), s).await;
            conn.shutdown().await;
        }
        Pending::Attach(r) => {
            let Some(framing) = ws::Framing::of(protocol) else {
                return;
            };
            let mut conn =
                ws::ChannelConn::serve(io, framing, &remotecommand::ws_readable(r.stdin), idle)
                    .await;
            let s = remotecommand::ws_streams(&mut conn, framing, r.stdout, r.stderr).await;
            remotecommand::run(&*backend, attach_target(&r), s).await;
            conn.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_from_the_query() {
        assert_eq!(
            query_ports(Some("port=80&port=8080,9090&x=1")),
            vec![80, 8080, 9090]
        );
        assert_eq!(
            query_ports(Some("port=0&port=70000&port=a")),
            Vec::<u16>::new()
        );
        assert!(query_ports(None).is_empty());
    }
}
