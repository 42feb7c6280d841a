//! Per-RPC latency and error counts: a tower layer around the CRI gRPC services.
//!
//! tonic answers an error with a "trailers-only" response whose `grpc-status` is a header;
//! a success carries its status in the trailers, so a response without the header is `OK`.
//! For the one streaming RPC (GetContainerEvents) the latency is the time to open the stream.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

pub struct GrpcMetrics {
    pub duration: HistogramVec,
    pub errors: IntCounterVec,
}

impl GrpcMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "pvecri_grpc_request_duration_seconds",
                    "Time to answer a CRI request, by method",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0, 60.0, 120.0,
                ]),
                &["method"],
            )?,
            errors: IntCounterVec::new(
                Opts::new(
                    "pvecri_grpc_errors_total",
                    "CRI requests that failed, by method and gRPC status code",
                ),
                &["method", "code"],
            )?,
        })
    }

    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.duration.clone()))?;
        registry.register(Box::new(self.errors.clone()))?;
        Ok(())
    }

    fn observe(&self, method: &str, seconds: f64, code: tonic::Code) {
        self.duration.with_label_values(&[method]).observe(seconds);
        if code != tonic::Code::Ok {
            self.errors
                .with_label_values(&[method, code_name(code)])
                .inc();
        }
    }

    pub fn layer(self: &Arc<Self>) -> GrpcMetricsLayer {
        GrpcMetricsLayer {
            metrics: self.clone(),
        }
    }
}

/// The method of a CRI request path; anything else is `other`, so that clients cannot make up
/// label values.
pub fn method_label(path: &str) -> &str {
    let Some(rest) = path
        .strip_prefix("/runtime.v1.RuntimeService/")
        .or_else(|| path.strip_prefix("/runtime.v1.ImageService/"))
    else {
        return "other";
    };
    if !rest.is_empty() && rest.len() <= 64 && rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        rest
    } else {
        "other"
    }
}

/// gRPC's canonical names (`NOT_FOUND`, ...).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

fn response_code<B>(res: &http::Response<B>) -> tonic::Code {
    res.headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(tonic::Code::from_i32)
        .unwrap_or(tonic::Code::Ok)
}

#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<GrpcMetrics>,
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: Arc<GrpcMetrics>,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for GrpcMetricsService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let method = method_label(req.uri().path()).to_string();
        let started = Instant::now();
        let fut = self.inner.call(req);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let res = fut.await;
            let code = match &res {
                Ok(r) => response_code(r),
                Err(_) => tonic::Code::Unknown,
            };
            metrics.observe(&method, started.elapsed().as_secs_f64(), code);
            res
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, Service, ServiceExt};

    #[test]
    fn method_labels_are_bounded() {
        assert_eq!(
            method_label("/runtime.v1.RuntimeService/ListPodSandbox"),
            "ListPodSandbox"
        );
        assert_eq!(
            method_label("/runtime.v1.ImageService/PullImage"),
            "PullImage"
        );
        assert_eq!(method_label("/grpc.health.v1.Health/Check"), "other");
        assert_eq!(method_label("/runtime.v1.RuntimeService/a/b"), "other");
        assert_eq!(method_label("/runtime.v1.RuntimeService/"), "other");
    }

    #[tokio::test]
    async fn errors_are_counted_by_code() {
        let m = Arc::new(GrpcMetrics::new().unwrap());
        let svc = tower::service_fn(|req: http::Request<()>| async move {
            let mut res = http::Response::new(());
            if req.uri().path().ends_with("Bad") {
                res.headers_mut()
                    .insert("grpc-status", "5".parse().unwrap());
            }
            Ok::<_, std::convert::Infallible>(res)
        });
        let mut svc = m.layer().layer(svc);
        for path in [
            "/runtime.v1.RuntimeService/Good",
            "/runtime.v1.RuntimeService/Bad",
            "/runtime.v1.RuntimeService/Bad",
        ] {
            let req = http::Request::builder().uri(path).body(()).unwrap();
            svc.ready().await.unwrap().call(req).await.unwrap();
        }
        assert_eq!(m.errors.with_label_values(&["Bad", "NOT_FOUND"]).get(), 2);
        assert_eq!(
            m.duration.with_label_values(&["Good"]).get_sample_count(),
            1
        );
        assert_eq!(m.errors.with_label_values(&["Good", "NOT_FOUND"]).get(), 0);
    }
}
