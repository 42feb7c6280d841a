//! pvecri's image service: references, pulls with oci-client into layerfs, image metadata,
//! auth, registry hosts.
//!
//! - [`reference`]: image references, normalised as the kubelet does.
//! - [`hosts`] and [`registry`]: which endpoints serve a registry, and talking to them.
//! - [`auth`]: credentials from CRI and the config file.
//! - [`manifest`]: manifests and indexes, platform selection.
//! - [`layers`]: concurrent, deduplicated layer fetches streamed into the layer store.
//! - [`record`]: image records and lookups; [`service`]: the operations CRI needs.

pub mod auth;
pub mod error;
pub mod hosts;
pub mod layers;
pub mod manifest;
pub mod metrics;
pub mod record;
pub mod reference;
pub mod registry;
pub mod service;
