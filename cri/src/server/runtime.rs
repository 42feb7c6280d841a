//! The CRI RuntimeService: gRPC wiring. Each RPC converts the request, calls the daemon's
//! logic and converts the answer; RPCs not built yet answer `Unimplemented`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_cri::v1::runtime_service_server::RuntimeService;
use k8s_cri::v1::*;
use tonic::{Request, Response, Status};

use crate::cni;
use crate::config::CgroupDriver as ConfigCgroupDriver;
use crate::daemon::Daemon;
use crate::runtime::pods::RUNTIME_HANDLER;
use crate::runtime::records::{ContainerRecord, PodRecord};
use crate::runtime::{Runtime, labels_match};
use crate::stats;
use podinit::api::ContainerState as PiState;

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

    fn rt(&self) -> Result<&Runtime, Status> {
        Ok(&self.daemon.runtime)
    }

    async fn status_response(&self, verbose: bool) -> Result<StatusResponse, Status> {
        let host_down = self.daemon.runtime.pod_host_unavailable().await;
        let runtime_ready = match (&self.daemon.runtime.podinit, host_down) {
            (Some(_), None) => RuntimeCondition {
                r#type: "RuntimeReady".into(),
                status: true,
                reason: String::new(),
                message: String::new(),
            },
            (Some(_), Some(why)) => RuntimeCondition {
                r#type: "RuntimeReady".into(),
                status: false,
                reason: "PodHostUnavailable".into(),
                message: why,
            },
            (None, _) => RuntimeCondition {
                r#type: "RuntimeReady".into(),
                status: false,
                reason: "PodinitNotFound".into(),
                message: "the podinit binary was not found; set podinit_path in the config".into(),
            },
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
            let config = serde_json::to_string(&self.daemon.config.redacted())
                .map_err(|e| Status::internal(format!("encoding the config: {e}")))?;
            info.insert("config".to_string(), config);
            if let Some(pool) = self.daemon.runtime.warm.get() {
                let s = pool.stats();
                let stats = serde_json::json!({
                    "size": pool.size(),
                    "ready": s.ready,
                    "taken": s.taken,
                    "made": s.made,
                    "failed": s.failed,
                });
                info.insert("warmPool".to_string(), stats.to_string());
            }
        }
        Ok(StatusResponse {
            status: Some(RuntimeStatus {
                conditions: vec![runtime_ready, network_ready],
            }),
            info,
            // One handler, the default, also under its RuntimeClass name; features are
            // claimed only once they work.
            runtime_handlers: [String::new(), RUNTIME_HANDLER.to_string()]
                .into_iter()
                .map(|name| RuntimeHandler {
                    name,
                    features: Some(RuntimeHandlerFeatures {
                        recursive_read_only_mounts:
                            crate::runtime::mounts::kernel_has_mount_setattr(),
                        // hostUsers: false pods: unprivileged CTs with the kubelet's ID
                        // map, image files idmapped or shifted to it, volumes idmapped.
                        user_namespaces: self.daemon.runtime.pod_host.supports_user_namespaces(),
                    }),
                })
                .collect(),
            features: Some(RuntimeFeatures {
                supplemental_groups_policy: true,
            }),
        })
    }
}

use crate::events::{self, EventStream};

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
            self.status_response(request.get_ref().verbose)
                .await
                .map(Response::new)
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

        async fn run_pod_sandbox(
            &self,
            request: Request<RunPodSandboxRequest>,
        ) -> Result<Response<RunPodSandboxResponse>, Status> {
            let req = request.into_inner();
            let config = req
                .config
                .ok_or_else(|| Status::invalid_argument("RunPodSandbox without a config"))?;
            let rt = self.rt()?;
            let id = rt.run_pod_sandbox(config, req.runtime_handler).await?;
            events::emit(rt, &id, &id, ContainerEventType::ContainerCreatedEvent).await;
            events::emit(rt, &id, &id, ContainerEventType::ContainerStartedEvent).await;
            Ok(Response::new(RunPodSandboxResponse { pod_sandbox_id: id }))
        }

        async fn stop_pod_sandbox(
            &self,
            request: Request<StopPodSandboxRequest>,
        ) -> Result<Response<StopPodSandboxResponse>, Status> {
            let rt = self.rt()?;
            let query = request.into_inner().pod_sandbox_id;
            rt.stop_pod_sandbox(&query).await?;
            if let Ok(pod) = rt.find_pod(&query) {
                events::pod_stopped(rt, &pod).await;
            }
            Ok(Response::new(StopPodSandboxResponse {}))
        }

        async fn remove_pod_sandbox(
            &self,
            request: Request<RemovePodSandboxRequest>,
        ) -> Result<Response<RemovePodSandboxResponse>, Status> {
            let rt = self.rt()?;
            let query = request.into_inner().pod_sandbox_id;
            let before = rt.find_pod(&query).ok();
            let ctrs: Vec<String> = rt
                .containers()?
                .into_iter()
                .filter(|c| before.as_ref().is_some_and(|p| p.id == c.pod_id))
                .map(|c| c.id)
                .collect();
            rt.remove_pod_sandbox(&query).await?;
            if let Some(pod) = before {
                events::pod_removed(rt, &pod, &ctrs).await;
            }
            Ok(Response::new(RemovePodSandboxResponse {}))
        }

        async fn pod_sandbox_status(
            &self,
            request: Request<PodSandboxStatusRequest>,
        ) -> Result<Response<PodSandboxStatusResponse>, Status> {
            let req = request.into_inner();
            let rt = self.rt()?;
            let pod = rt.find_pod(&req.pod_sandbox_id)?;
            let state = rt.pod_state(&pod).await;
            let mut info = HashMap::new();
            if req.verbose {
                let verbose = serde_json::json!({
                    "pod_dir": rt.pod_dir(&pod.id),
                    "pod_host": rt.pod_host.driver(),
                    "init_pid": pod.init_pid,
                    "host_network": pod.host_network,
                    "ips": pod.ips,
                    "config": pod.config,
                });
                info.insert("info".to_string(), verbose.to_string());
            }
            Ok(Response::new(PodSandboxStatusResponse {
                status: Some(pod_status(&pod, state)),
                info,
                containers_statuses: vec![],
                timestamp: crate::runtime::now_ns(),
            }))
        }

        async fn list_pod_sandbox(
            &self,
            request: Request<ListPodSandboxRequest>,
        ) -> Result<Response<ListPodSandboxResponse>, Status> {
            let filter = request.into_inner().filter.unwrap_or_default();
            let rt = self.rt()?;
            let mut items = Vec::new();
            for pod in rt.pods()? {
                if pod.state == crate::runtime::records::PodState::Creating {
                    continue;
                }
                if !filter.id.is_empty() && !pod.id.starts_with(&filter.id) {
                    continue;
                }
                if !labels_match(&filter.label_selector, &pod.config.labels) {
                    continue;
                }
                let state = rt.pod_state(&pod).await;
                if let Some(want) = &filter.state
                    && want.state != state as i32
                {
                    continue;
                }
                let m = pod.config.metadata.clone();
                items.push(PodSandbox {
                    id: pod.id.clone(),
                    metadata: m,
                    state: state as i32,
                    created_at: pod.created_at_ns,
                    labels: pod.config.labels.clone(),
                    annotations: pod.config.annotations.clone(),
                    runtime_handler: pod.runtime_handler.clone(),
                });
            }
            Ok(Response::new(ListPodSandboxResponse { items }))
        }

        async fn create_container(
            &self,
            request: Request<CreateContainerRequest>,
        ) -> Result<Response<CreateContainerResponse>, Status> {
            let req = request.into_inner();
            let config = req
                .config
                .ok_or_else(|| Status::invalid_argument("CreateContainer without a config"))?;
            let rt = self.rt()?;
            let id = rt
                .create_container(&req.pod_sandbox_id, config, req.sandbox_config)
                .await?;
            events::container_created(rt, &id).await;
            Ok(Response::new(CreateContainerResponse { container_id: id }))
        }

        async fn start_container(
            &self,
            request: Request<StartContainerRequest>,
        ) -> Result<Response<StartContainerResponse>, Status> {
            let rt = self.rt()?;
            let query = request.into_inner().container_id;
            rt.start_container(&query).await?;
            events::container_event(rt, &query, ContainerEventType::ContainerStartedEvent).await;
            Ok(Response::new(StartContainerResponse {}))
        }

        async fn stop_container(
            &self,
            request: Request<StopContainerRequest>,
        ) -> Result<Response<StopContainerResponse>, Status> {
            let req = request.into_inner();
            let timeout = Duration::from_secs(u64::try_from(req.timeout).unwrap_or(0));
            let rt = self.rt()?;
            rt.stop_container(&req.container_id, timeout).await?;
            events::container_event(rt, &req.container_id, ContainerEventType::ContainerStoppedEvent)
                .await;
            Ok(Response::new(StopContainerResponse {}))
        }

        async fn remove_container(
            &self,
            request: Request<RemoveContainerRequest>,
        ) -> Result<Response<RemoveContainerResponse>, Status> {
            let rt = self.rt()?;
            let query = request.into_inner().container_id;
            let before = rt.find_container(&query).ok();
            rt.remove_container(&query).await?;
            if let Some(c) = before {
                events::emit(rt, &c.pod_id, &c.id, ContainerEventType::ContainerDeletedEvent).await;
            }
            Ok(Response::new(RemoveContainerResponse {}))
        }

        async fn list_containers(
            &self,
            request: Request<ListContainersRequest>,
        ) -> Result<Response<ListContainersResponse>, Status> {
            let filter = request.into_inner().filter.unwrap_or_default();
            let rt = self.rt()?;
            let mut containers = Vec::new();
            for c in rt.containers()? {
                if c.creating
                    || (!filter.id.is_empty() && !c.id.starts_with(&filter.id))
                    || (!filter.pod_sandbox_id.is_empty() && !c.pod_id.starts_with(&filter.pod_sandbox_id))
                    || !labels_match(&filter.label_selector, &c.config.labels)
                {
                    continue;
                }
                let st = rt.observed_status(&c).await;
                let state = cri_state(st.state);
                if let Some(want) = &filter.state
                    && want.state != state as i32
                {
                    continue;
                }
                containers.push(Container {
                    id: c.id.clone(),
                    pod_sandbox_id: c.pod_id.clone(),
                    metadata: c.config.metadata.clone(),
                    image: c.config.image.clone(),
                    image_ref: c.image_ref.clone(),
                    state: state as i32,
                    created_at: c.created_at_ns,
                    labels: c.config.labels.clone(),
                    annotations: c.config.annotations.clone(),
                    image_id: c.image_id.clone(),
                });
            }
            Ok(Response::new(ListContainersResponse { containers }))
        }

        async fn container_status(
            &self,
            request: Request<ContainerStatusRequest>,
        ) -> Result<Response<ContainerStatusResponse>, Status> {
            let req = request.into_inner();
            let rt = self.rt()?;
            let c = rt.find_container(&req.container_id)?;
            let st = rt.observed_status(&c).await;
            let mut info = HashMap::new();
            if req.verbose {
                // podinit knows the pid in the CT's namespace; tools (`crictl inspect`,
                // nsenter -t) want the host's, as containerd gives.
                let pid = match (st.pid, rt.find_pod(&c.pod_id).ok().and_then(|p| p.init_pid)) {
                    (Some(pid), Some(init)) => pve::process::host_pid_in(init, pid),
                    _ => None,
                };
                let verbose = serde_json::json!({
                    "pod_sandbox_id": c.pod_id,
                    "pid": pid,
                    "bundle": rt.ctr_dir(&c.pod_id, &c.id),
                    "mounts": c.mounts,
                    "start_error": st.start_error,
                    "lost": st.lost,
                });
                info.insert("info".to_string(), verbose.to_string());
            }
            Ok(Response::new(ContainerStatusResponse {
                status: Some(container_status(&c, &st)),
                info,
            }))
        }

        async fn exec_sync(
            &self,
            request: Request<ExecSyncRequest>,
        ) -> Result<Response<ExecSyncResponse>, Status> {
            let req = request.into_inner();
            let timeout = Duration::from_secs(u64::try_from(req.timeout).unwrap_or(0));
            let r = self.rt()?.exec_sync(&req.container_id, req.cmd.clone(), timeout).await?;
            if r.timed_out {
                // The kubelet reads DeadlineExceeded as a probe timeout.
                return Err(Status::deadline_exceeded(format!(
                    "command {:?} timed out after {}s",
                    req.cmd.join(" "),
                    req.timeout
                )));
            }
            Ok(Response::new(ExecSyncResponse {
                stdout: r.stdout,
                stderr: r.stderr,
                exit_code: r.exit_code,
            }))
        }

        async fn reopen_container_log(
            &self,
            request: Request<ReopenContainerLogRequest>,
        ) -> Result<Response<ReopenContainerLogResponse>, Status> {
            self.rt()?.reopen_container_log(&request.into_inner().container_id).await?;
            Ok(Response::new(ReopenContainerLogResponse {}))
        }

        async fn update_runtime_config(
            &self,
            request: Request<UpdateRuntimeConfigRequest>,
        ) -> Result<Response<UpdateRuntimeConfigResponse>, Status> {
            // The only field is the node's pod CIDR, for runtimes that template their CNI
            // config from it; pvecri uses the CNI config as written (as CRI-O does).
            let cidr = request
                .into_inner()
                .runtime_config
                .and_then(|c| c.network_config)
                .map(|n| n.pod_cidr)
                .unwrap_or_default();
            tracing::info!(pod_cidr = %cidr, "runtime config update from the kubelet (no change needed)");
            Ok(Response::new(UpdateRuntimeConfigResponse {}))
        }

        async fn update_container_resources(
            &self,
            request: Request<UpdateContainerResourcesRequest>,
        ) -> Result<Response<UpdateContainerResourcesResponse>, Status> {
            let req = request.into_inner();
            self.rt()?
                .update_container_resources(&req.container_id, req.linux)
                .await?;
            Ok(Response::new(UpdateContainerResourcesResponse {}))
        }

        async fn container_stats(
            &self,
            request: Request<ContainerStatsRequest>,
        ) -> Result<Response<ContainerStatsResponse>, Status> {
            let stats =
                stats::service::container_stats(self.rt()?, &request.into_inner().container_id)
                    .await?;
            Ok(Response::new(ContainerStatsResponse { stats: Some(stats) }))
        }

        async fn list_container_stats(
            &self,
            request: Request<ListContainerStatsRequest>,
        ) -> Result<Response<ListContainerStatsResponse>, Status> {
            let filter = request.into_inner().filter.unwrap_or_default();
            let stats = stats::service::list_container_stats(self.rt()?, filter).await?;
            Ok(Response::new(ListContainerStatsResponse { stats }))
        }

        async fn pod_sandbox_stats(
            &self,
            request: Request<PodSandboxStatsRequest>,
        ) -> Result<Response<PodSandboxStatsResponse>, Status> {
            let stats =
                stats::service::pod_sandbox_stats(self.rt()?, &request.into_inner().pod_sandbox_id)
                    .await?;
            Ok(Response::new(PodSandboxStatsResponse { stats: Some(stats) }))
        }

        async fn list_pod_sandbox_stats(
            &self,
            request: Request<ListPodSandboxStatsRequest>,
        ) -> Result<Response<ListPodSandboxStatsResponse>, Status> {
            let filter = request.into_inner().filter.unwrap_or_default();
            let stats = stats::service::list_pod_sandbox_stats(self.rt()?, filter).await?;
            Ok(Response::new(ListPodSandboxStatsResponse { stats }))
        }

        async fn list_metric_descriptors(
            &self,
            _request: Request<ListMetricDescriptorsRequest>,
        ) -> Result<Response<ListMetricDescriptorsResponse>, Status> {
            Ok(Response::new(ListMetricDescriptorsResponse {
                descriptors: stats::cadvisor::descriptors(),
            }))
        }

        async fn list_pod_sandbox_metrics(
            &self,
            _request: Request<ListPodSandboxMetricsRequest>,
        ) -> Result<Response<ListPodSandboxMetricsResponse>, Status> {
            let pod_metrics = stats::service::list_pod_sandbox_metrics(self.rt()?).await?;
            Ok(Response::new(ListPodSandboxMetricsResponse { pod_metrics }))
        }

        async fn exec(
            &self,
            request: Request<ExecRequest>,
        ) -> Result<Response<ExecResponse>, Status> {
            let mut req = request.into_inner();
            let c = self.rt()?.streamable_container(&req.container_id).await?;
            req.container_id = c.id;
            let url = self.daemon.streaming.exec_url(req)?;
            Ok(Response::new(ExecResponse { url }))
        }

        async fn attach(
            &self,
            request: Request<AttachRequest>,
        ) -> Result<Response<AttachResponse>, Status> {
            let mut req = request.into_inner();
            let c = self.rt()?.streamable_container(&req.container_id).await?;
            req.container_id = c.id;
            let url = self.daemon.streaming.attach_url(req)?;
            Ok(Response::new(AttachResponse { url }))
        }

        async fn port_forward(
            &self,
            request: Request<PortForwardRequest>,
        ) -> Result<Response<PortForwardResponse>, Status> {
            let mut req = request.into_inner();
            let pod = self.rt()?.forwardable_pod(&req.pod_sandbox_id).await?;
            req.pod_sandbox_id = pod.id;
            let url = self.daemon.streaming.port_forward_url(req)?;
            Ok(Response::new(PortForwardResponse { url }))
        }

        type GetContainerEventsStream = EventStream;

        async fn get_container_events(
            &self,
            _request: Request<GetEventsRequest>,
        ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
            Ok(Response::new(self.rt()?.events.subscribe()))
        }
    }
    not_built_yet {
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse;
    }
}

fn cri_state(s: PiState) -> ContainerState {
    match s {
        PiState::Created => ContainerState::ContainerCreated,
        PiState::Running => ContainerState::ContainerRunning,
        PiState::Exited => ContainerState::ContainerExited,
    }
}

pub(crate) fn pod_status(pod: &PodRecord, state: PodSandboxState) -> PodSandboxStatus {
    let ns = pod
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone());
    PodSandboxStatus {
        id: pod.id.clone(),
        metadata: pod.config.metadata.clone(),
        state: state as i32,
        created_at: pod.created_at_ns,
        network: Some(PodSandboxNetworkStatus {
            ip: pod.ips.first().cloned().unwrap_or_default(),
            additional_ips: pod
                .ips
                .iter()
                .skip(1)
                .map(|ip| PodIp { ip: ip.clone() })
                .collect(),
        }),
        linux: Some(LinuxPodSandboxStatus {
            namespaces: Some(Namespace { options: ns }),
        }),
        labels: pod.config.labels.clone(),
        annotations: pod.config.annotations.clone(),
        runtime_handler: pod.runtime_handler.clone(),
    }
}

/// CRI's reasons: `Completed` for exit 0, `OOMKilled`, else `Error`.
pub(crate) fn container_status(
    c: &ContainerRecord,
    st: &podinit::api::ContainerStatus,
) -> ContainerStatus {
    let state = cri_state(st.state);
    let exit_code = st.exit_code.unwrap_or(0);
    let (reason, message) = if state == ContainerState::ContainerExited {
        let reason = if st.oom_killed {
            "OOMKilled"
        } else if exit_code == 0 {
            "Completed"
        } else {
            "Error"
        };
        let message = if let Some(e) = &st.start_error {
            e.clone()
        } else if st.lost {
            "the pod's CT stopped; the exit status is unknown".to_string()
        } else {
            String::new()
        };
        (reason.to_string(), message)
    } else {
        (String::new(), String::new())
    };
    ContainerStatus {
        id: c.id.clone(),
        metadata: c.config.metadata.clone(),
        state: state as i32,
        created_at: c.created_at_ns,
        started_at: st.started_ns,
        finished_at: st.finished_ns,
        exit_code,
        image: c.config.image.clone(),
        image_ref: c.image_ref.clone(),
        reason,
        message,
        labels: c.config.labels.clone(),
        annotations: c.config.annotations.clone(),
        mounts: c
            .mounts
            .iter()
            .map(|m| Mount {
                container_path: m.container_path.clone(),
                host_path: m.host_path.clone(),
                readonly: m.readonly,
                recursive_read_only: m.recursive_read_only,
                propagation: m.propagation,
                ..Default::default()
            })
            .collect(),
        log_path: c.log_path.clone(),
        resources: crate::runtime::resources::status(c),
        image_id: c.image_id.clone(),
        // As the spec gives it, which is what podinit applies to the first process.
        user: c.user.as_ref().map(|u| ContainerUser {
            linux: Some(LinuxContainerUser {
                uid: i64::from(u.uid),
                gid: i64::from(u.gid),
                supplemental_groups: u.additional_gids.iter().map(|g| i64::from(*g)).collect(),
            }),
        }),
    }
}
