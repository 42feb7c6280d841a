//! pvecri, the daemon: a Kubernetes CRI runtime for Proxmox VE nodes, serving gRPC on a
//! Unix socket.

pub mod catalog;
pub mod cni;
pub mod config;
pub mod config_reference;
pub mod daemon;
pub mod events;
pub mod metadata;
pub mod metrics;
pub mod node;
pub mod runtime;
pub mod server;
pub mod stats;
pub mod streaming;
