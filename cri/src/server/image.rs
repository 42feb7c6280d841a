//! The CRI ImageService: gRPC wiring. RPCs not built yet answer `Unimplemented`.

use std::sync::Arc;

use k8s_cri::v1::image_service_server::ImageService;
use k8s_cri::v1::*;
use tonic::{Request, Response, Status};

use crate::daemon::Daemon;

pub struct ImageApi {
    #[allow(dead_code)] // used once the image RPCs are built
    daemon: Arc<Daemon>,
}

impl ImageApi {
    pub fn new(daemon: Arc<Daemon>) -> Self {
        Self { daemon }
    }
}

macro_rules! image_service {
    (not_built_yet { $($rpc:ident($req:ty) -> $resp:ty;)* }) => {
        #[tonic::async_trait]
        impl ImageService for ImageApi {
            $(
                async fn $rpc(&self, _: Request<$req>) -> Result<Response<$resp>, Status> {
                    Err(Status::unimplemented(concat!(
                        "pvecri: ", stringify!($rpc), " is not built yet"
                    )))
                }
            )*
        }
    };
}

image_service! {
    not_built_yet {
        list_images(ListImagesRequest) -> ListImagesResponse;
        image_status(ImageStatusRequest) -> ImageStatusResponse;
        pull_image(PullImageRequest) -> PullImageResponse;
        remove_image(RemoveImageRequest) -> RemoveImageResponse;
        image_fs_info(ImageFsInfoRequest) -> ImageFsInfoResponse;
    }
}
