//! CRI clients (k8s-cri's generated tonic clients) over the daemon's Unix socket.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context;
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tokio::runtime::Runtime;
use tonic::transport::{Channel, Endpoint, Uri};

pub type RuntimeClient = RuntimeServiceClient<Channel>;
pub type ImageClient = ImageServiceClient<Channel>;

/// The runtime that drives every client connection's background tasks.
///
/// tonic runs a channel's connection in tasks spawned where the channel is made. Made on a
/// test's own runtime, those tasks stall whenever the test blocks its thread (as `Daemon`'s
/// drop does while it waits for the daemon to exit), so the connection never answers the
/// daemon's GOAWAY and the daemon's graceful shutdown waits for it. On this runtime they
/// keep running.
fn connection_runtime() -> anyhow::Result<&'static Runtime> {
    static RUNTIME: OnceLock<std::io::Result<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("e2e-cri-conn")
                .enable_all()
                .build()
        })
        .as_ref()
        .map_err(|e| anyhow::anyhow!("cannot start the CRI client runtime: {e}"))
}

/// A gRPC channel to the Unix socket at `socket`; usable from any runtime.
pub async fn connect(socket: &Path) -> anyhow::Result<Channel> {
    let path: PathBuf = socket.to_owned();
    let connecting = connection_runtime()?.spawn(async move {
        // tonic's connector API is URI-based; the URI is a placeholder the connector ignores.
        Endpoint::from_static("http://pvecri.invalid")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move { UnixStream::connect(path).await.map(TokioIo::new) }
            }))
            .await
    });
    connecting
        .await
        .context("CRI connection task failed")?
        .with_context(|| format!("cannot connect to the CRI socket {}", socket.display()))
}

/// One HTTP/2 connection to the CRI socket with nothing of tonic's channel around it.
///
/// tonic's channel enforces a request's `grpc-timeout` itself and answers for the server
/// when it passes; a client on this connection sends the header and waits for what the
/// server answers, as a grpc-go client (the kubelet, crictl, critest) may get it.
#[derive(Clone)]
pub struct DirectConnection(hyper::client::conn::http2::SendRequest<tonic::body::Body>);

impl tower::Service<http::Request<tonic::body::Body>> for DirectConnection {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(req))
    }
}

/// An image client on a [`DirectConnection`].
pub async fn direct_image_client(
    socket: &Path,
) -> anyhow::Result<ImageServiceClient<DirectConnection>> {
    let stream = UnixStream::connect(socket)
        .await
        .with_context(|| format!("cannot connect to the CRI socket {}", socket.display()))?;
    let (send, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .context("HTTP/2 handshake on the CRI socket")?;
    connection_runtime()?.spawn(connection);
    Ok(ImageServiceClient::with_origin(
        DirectConnection(send),
        Uri::from_static("http://pvecri.invalid"),
    ))
}

pub async fn runtime_client(socket: &Path) -> anyhow::Result<RuntimeClient> {
    Ok(RuntimeServiceClient::new(connect(socket).await?))
}

pub async fn image_client(socket: &Path) -> anyhow::Result<ImageClient> {
    Ok(ImageServiceClient::new(connect(socket).await?))
}

/// Stops and removes every pod the runtime at `socket` lists, as a test's clean-up does.
/// A failed stop is left to the removal, which reports it.
pub async fn remove_all_pods(socket: &Path) -> anyhow::Result<()> {
    use k8s_cri::v1::{ListPodSandboxRequest, RemovePodSandboxRequest, StopPodSandboxRequest};
    let mut rt = runtime_client(socket).await?;
    let pods = rt
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await?
        .into_inner()
        .items;
    for p in pods {
        let _ = rt
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: p.id.clone(),
            })
            .await;
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: p.id.clone(),
        })
        .await
        .with_context(|| format!("removing pod {}", p.id))?;
    }
    Ok(())
}
