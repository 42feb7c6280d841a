//! pvecri's image service: references, pulls with oci-client into layerfs, image metadata,
//! auth, registry hosts.

pub mod auth;
pub mod hosts;
pub mod manifest;
pub mod record;
pub mod reference;
