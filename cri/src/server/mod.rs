//! The gRPC server on the CRI socket.

pub mod deadline;
pub mod image;
pub mod runtime;
pub mod socket;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use tokio_stream::wrappers::UnixListenerStream;

use crate::daemon::Daemon;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("metrics endpoint {address}: {error}")]
    Metrics {
        address: String,
        error: std::io::Error,
    },
}

/// Serves both CRI services on `listener` (bound with [`socket::bind`] at `socket_path`)
/// until `shutdown` completes. The socket file is removed on the way out so that the next
/// start finds nothing stale.
pub async fn serve(
    daemon: Arc<Daemon>,
    listener: tokio::net::UnixListener,
    socket_path: &Path,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    tracing::info!(socket = %socket_path.display(), "serving CRI");
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let metrics = match daemon.config.metrics.address.as_str() {
        "" => None,
        address => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|error| ServeError::Metrics {
                    address: address.to_string(),
                    error,
                })?;
            let mut stopped = stopped.clone();
            Some(tokio::spawn(crate::metrics::http::serve(
                daemon.clone(),
                listener,
                async move {
                    let _ = stopped.wait_for(|s| *s).await;
                },
            )))
        }
    };
    let shutdown = async move {
        shutdown.await;
        let _ = stopping.send(true);
    };
    let exits = tokio::spawn(crate::events::watch_exits(daemon.clone()));
    daemon.streaming.start(daemon.clone());
    let result = tonic::transport::Server::builder()
        .layer(daemon.runtime_metrics.grpc.layer())
        .layer(deadline::DeadlineLayer)
        .add_service(RuntimeServiceServer::new(runtime::RuntimeApi::new(
            daemon.clone(),
        )))
        .add_service(ImageServiceServer::new(image::ImageApi::new(daemon)))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    exits.abort();
    if let Some(m) = metrics {
        let _ = m.await;
    }
    if let Err(e) = std::fs::remove_file(socket_path) {
        tracing::warn!(socket = %socket_path.display(), error = %e, "removing socket");
    }
    result.map_err(ServeError::from)
}
