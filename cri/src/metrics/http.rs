//! `GET /metrics` over plain HTTP/1.1 (hyper), in the Prometheus text format.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus::Encoder;
use tokio::net::TcpListener;

use crate::daemon::Daemon;

/// Serves until `shutdown` completes.
pub async fn serve(daemon: Arc<Daemon>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let addr = listener.local_addr().ok();
    tracing::info!(address = ?addr, "serving Prometheus metrics on /metrics");
    // One refresh at a time: two scrapes at once would race on the gauges.
    let lock = Arc::new(tokio::sync::Mutex::new(()));
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a metrics connection");
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let daemon = daemon.clone();
        let lock = lock.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let daemon = daemon.clone();
                let lock = lock.clone();
                async move { Ok::<_, Infallible>(handle(req, &daemon, &lock).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(error = %e, "metrics connection");
            }
        });
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r
}

async fn handle(
    req: Request<Incoming>,
    daemon: &Daemon,
    lock: &tokio::sync::Mutex<()>,
) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return text(
            StatusCode::NOT_FOUND,
            "not found; metrics are at /metrics\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n");
    }
    let _one = lock.lock().await;
    daemon.runtime_metrics.state.refresh(daemon).await;
    let encoder = prometheus::TextEncoder::new();
    let mut buf = Vec::new();
    if let Err(e) = encoder.encode(&daemon.metrics.gather(), &mut buf) {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("encoding metrics: {e}\n"),
        );
    }
    let mut r = Response::new(Full::new(Bytes::from(buf)));
    if let Ok(v) = encoder.format_type().parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}
