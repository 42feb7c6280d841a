//! pvecri, the daemon: a Kubernetes CRI runtime for Proxmox VE nodes, serving gRPC on a
//! Unix socket.

pub mod cni;
pub mod config;
pub mod daemon;
pub mod metadata;
pub mod server;
