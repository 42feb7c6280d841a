//! The CRI RuntimeService: gRPC wiring. Each RPC converts the request, calls the daemon's
//! logic and converts the answer; RPCs not built yet answer `Unimplemented`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use k8s_cri::v1::runtime_service_server::RuntimeService;
use k8s_cri::v1::*;
use tonic::{Request, Response, Status};

use crate::cni;
use crate::config::CgroupDriver as ConfigCgroupDriver;
use crate::daemon::Daemon;

/// The kubelet's CRI API version this runtime speaks.
const KUBELET_API_VERSION: &str = "0.1.0";
pub const RUNTIME_NAME: &str = "pvecri";
pub const RUNTIME_API_VERSION: &str = "v1";

pub struct RuntimeApi {
    daemon: Arc<Daemon>,
}

impl RuntimeApi {
    pub fn new(daemon: Arc<Daemon>) -> Self {
        Self { daemon }
    }

    fn status_response(&self, verbose: bool) -> Result<StatusResponse, Status> {
        let runtime_ready = RuntimeCondition {
            r#type: "RuntimeReady".into(),
            status: true,
            reason: String::new(),
            message: String::new(),
        };
        let network_ready = match cni::config::load_network(&self.daemon.config.cni.conf_dir) {
            Ok(_) => RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: true,
                reason: String::new(),
                message: String::new(),
            },
            Err(e) => RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: false,
                reason: "NetworkPluginNotReady".into(),
                message: format!("Network plugin returns error: cni plugin not initialized: {e}"),
            },
        };
        let mut info = HashMap::new();
        if verbose {
            let config = serde_json::to_string(&self.daemon.config)
                .map_err(|e| Status::internal(format!("encoding the config: {e}")))?;
            info.insert("config".to_string(), config);
        }
        Ok(StatusResponse {
            status: Some(RuntimeStatus {
                conditions: vec![runtime_ready, network_ready],
            }),
            info,
            // One handler, the default; features are claimed only once they work.
            runtime_handlers: vec![RuntimeHandler {
                name: String::new(),
                features: Some(RuntimeHandlerFeatures {
                    recursive_read_only_mounts: false,
                    user_namespaces: false,
                }),
            }],
            features: Some(RuntimeFeatures {
                supplemental_groups_policy: false,
            }),
        })
    }
}

type EventStream =
    Pin<Box<dyn futures::Stream<Item = Result<ContainerEventResponse, Status>> + Send>>;

/// Emits the whole `impl` so that async_trait sees the generated methods too.
macro_rules! runtime_service {
    (
        { $($real:item)* }
        not_built_yet { $($rpc:ident($req:ty) -> $resp:ty;)* }
    ) => {
        #[tonic::async_trait]
        impl RuntimeService for RuntimeApi {
            $($real)*
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

runtime_service! {
    {
        async fn version(
            &self,
            _request: Request<VersionRequest>,
        ) -> Result<Response<VersionResponse>, Status> {
            Ok(Response::new(VersionResponse {
                version: KUBELET_API_VERSION.into(),
                runtime_name: RUNTIME_NAME.into(),
                runtime_version: env!("CARGO_PKG_VERSION").into(),
                runtime_api_version: RUNTIME_API_VERSION.into(),
            }))
        }

        async fn status(
            &self,
            request: Request<StatusRequest>,
        ) -> Result<Response<StatusResponse>, Status> {
            self.status_response(request.get_ref().verbose).map(Response::new)
        }

        async fn runtime_config(
            &self,
            _request: Request<RuntimeConfigRequest>,
        ) -> Result<Response<RuntimeConfigResponse>, Status> {
            let driver = match self.daemon.config.cgroup_driver {
                ConfigCgroupDriver::Cgroupfs => CgroupDriver::Cgroupfs,
                ConfigCgroupDriver::Systemd => CgroupDriver::Systemd,
            };
            Ok(Response::new(RuntimeConfigResponse {
                linux: Some(LinuxRuntimeConfiguration {
                    cgroup_driver: driver as i32,
                }),
            }))
        }

        type GetContainerEventsStream = EventStream;

        async fn get_container_events(
            &self,
            _request: Request<GetEventsRequest>,
        ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
            Err(Status::unimplemented(
                "pvecri: get_container_events is not built yet; use the generic PLEG",
            ))
        }
    }
    not_built_yet {
        run_pod_sandbox(RunPodSandboxRequest) -> RunPodSandboxResponse;
        stop_pod_sandbox(StopPodSandboxRequest) -> StopPodSandboxResponse;
        remove_pod_sandbox(RemovePodSandboxRequest) -> RemovePodSandboxResponse;
        pod_sandbox_status(PodSandboxStatusRequest) -> PodSandboxStatusResponse;
        list_pod_sandbox(ListPodSandboxRequest) -> ListPodSandboxResponse;
        create_container(CreateContainerRequest) -> CreateContainerResponse;
        start_container(StartContainerRequest) -> StartContainerResponse;
        stop_container(StopContainerRequest) -> StopContainerResponse;
        remove_container(RemoveContainerRequest) -> RemoveContainerResponse;
        list_containers(ListContainersRequest) -> ListContainersResponse;
        container_status(ContainerStatusRequest) -> ContainerStatusResponse;
        update_container_resources(UpdateContainerResourcesRequest) -> UpdateContainerResourcesResponse;
        reopen_container_log(ReopenContainerLogRequest) -> ReopenContainerLogResponse;
        exec_sync(ExecSyncRequest) -> ExecSyncResponse;
        exec(ExecRequest) -> ExecResponse;
        attach(AttachRequest) -> AttachResponse;
        port_forward(PortForwardRequest) -> PortForwardResponse;
        container_stats(ContainerStatsRequest) -> ContainerStatsResponse;
        list_container_stats(ListContainerStatsRequest) -> ListContainerStatsResponse;
        pod_sandbox_stats(PodSandboxStatsRequest) -> PodSandboxStatsResponse;
        list_pod_sandbox_stats(ListPodSandboxStatsRequest) -> ListPodSandboxStatsResponse;
        update_runtime_config(UpdateRuntimeConfigRequest) -> UpdateRuntimeConfigResponse;
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse;
        list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse;
        list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse;
    }
}
