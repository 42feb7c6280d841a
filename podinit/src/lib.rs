//! podinit: PID 1 of every pvecri pod CT, and the client side of its API.
//!
//! The daemon prepares the pod directory (seen inside the CT at `/pvecri`), writes each
//! container's OCI spec to `ctrs/<id>/config.json` and drives podinit over
//! `<pod dir>/podinit.sock` with [`client::Client`]. podinit runs each container in its own
//! mount namespace (and PID namespace when asked) and child cgroup, writes its output as CRI log
//! lines, reaps every process of the pod and records exits in `ctrs/<id>/status.json`
//! ([`status::read_status`] reads it when podinit is gone).

pub mod api;
pub mod caps;
pub mod cgroup;
pub mod cgroupmount;
pub mod client;
pub mod crilog;
pub mod devices;
pub mod lost_signal;
pub mod mountopts;
pub mod rootfs;
pub mod seccomp;
pub mod server;
pub mod signals;
pub mod spawn;
pub mod spec;
pub mod status;
pub mod sys;
pub mod syscalls;
pub mod timefmt;

pub use api::{ApiError, ErrorKind, ExecRequest, ExecResult, Request};
pub use client::{Client, ClientError};
pub use status::{ContainerState, ContainerStatus, read_status};
