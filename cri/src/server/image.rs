//! The CRI ImageService: gRPC wiring over the image service.

use std::collections::HashMap;
use std::sync::Arc;

use imageservice::auth::Credentials;
use imageservice::record::{ImageRecord, ImageUser};
use k8s_cri::v1::image_service_server::ImageService;
use k8s_cri::v1::*;
use tonic::{Request, Response, Status};

use crate::daemon::Daemon;
use crate::runtime::error::RuntimeError;

pub struct ImageApi {
    daemon: Arc<Daemon>,
}

impl ImageApi {
    pub fn new(daemon: Arc<Daemon>) -> Self {
        Self { daemon }
    }
}

fn status(e: imageservice::error::ImageError) -> Status {
    RuntimeError::from(e).into()
}

fn image_spec_name(spec: Option<ImageSpec>, rpc: &str) -> Result<String, Status> {
    spec.map(|s| s.image)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Status::invalid_argument(format!("{rpc}: no image given")))
}

fn to_cri(image: &ImageRecord) -> Image {
    let (uid, username) = match image.user() {
        ImageUser::None => (None, String::new()),
        ImageUser::Uid(u) => (Some(Int64Value { value: u }), String::new()),
        ImageUser::Name(n) => (None, n),
    };
    Image {
        id: image.id.clone(),
        repo_tags: image.repo_tags.clone(),
        repo_digests: image.repo_digests.clone(),
        size: image.size,
        uid,
        username,
        spec: Some(ImageSpec {
            image: image.id.clone(),
            ..Default::default()
        }),
        pinned: image.pinned,
    }
}

fn credentials(auth: Option<AuthConfig>) -> Option<Credentials> {
    auth.map(|a| Credentials {
        username: a.username,
        password: a.password,
        auth: a.auth,
        identity_token: a.identity_token,
        registry_token: a.registry_token,
    })
}

#[tonic::async_trait]
impl ImageService for ImageApi {
    async fn list_images(
        &self,
        request: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let filter = request
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|s| !s.is_empty());
        let images = &self.daemon.images;
        let list: Vec<Image> = match filter {
            Some(q) => images.get(&q).map_err(status)?.iter().map(to_cri).collect(),
            None => images.list().map_err(status)?.iter().map(to_cri).collect(),
        };
        Ok(Response::new(ListImagesResponse { images: list }))
    }

    async fn image_status(
        &self,
        request: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        let req = request.into_inner();
        let name = image_spec_name(req.image, "ImageStatus")?;
        // An unknown image is an empty answer, not an error: the kubelet pulls on it.
        let Some(image) = self.daemon.images.get(&name).map_err(status)? else {
            return Ok(Response::new(ImageStatusResponse::default()));
        };
        let mut info = HashMap::new();
        if req.verbose {
            let verbose = serde_json::json!({
                "imageSpec": image.config,
                "layers": image.layers,
                "pulledAt": image.pulled_at_ns,
            });
            info.insert("info".to_string(), verbose.to_string());
        }
        Ok(Response::new(ImageStatusResponse {
            image: Some(to_cri(&image)),
            info,
        }))
    }

    async fn pull_image(
        &self,
        request: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        let req = request.into_inner();
        let name = image_spec_name(req.image, "PullImage")?;
        let creds = credentials(req.auth);
        let image = self
            .daemon
            .images
            .pull(&name, creds.as_ref())
            .await
            .map_err(status)?;
        tracing::info!(image = %name, id = %image.id, "pulled");
        Ok(Response::new(PullImageResponse {
            image_ref: image.id,
        }))
    }

    async fn remove_image(
        &self,
        request: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        let name = image_spec_name(request.into_inner().image, "RemoveImage")?;
        self.daemon.images.remove(&name).await.map_err(status)?;
        Ok(Response::new(RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _request: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        let images = self.daemon.images.clone();
        let usage = tokio::task::spawn_blocking(move || images.usage())
            .await
            .map_err(|e| Status::internal(format!("usage task: {e}")))?
            .map_err(status)?;
        let fs = FilesystemUsage {
            timestamp: crate::runtime::now_ns(),
            fs_id: Some(FilesystemIdentifier {
                mountpoint: usage.mountpoint.display().to_string(),
            }),
            used_bytes: Some(UInt64Value {
                value: usage.used_bytes,
            }),
            inodes_used: Some(UInt64Value {
                value: usage.used_inodes,
            }),
        };
        // Container writable layers live in the same store.
        Ok(Response::new(ImageFsInfoResponse {
            image_filesystems: vec![fs.clone()],
            container_filesystems: vec![fs],
        }))
    }
}
