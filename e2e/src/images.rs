//! Test images built from Debian's busybox-static in Rust (tar + gzip/zstd, no docker) and
//! pushed to a [`crate::registry::Registry`] with oci-client.
//!
//! - [`LayerBuilder`]: hand-made layers, including malicious ones.
//! - [`one_layer`], [`multi_layer`] (in every [`ImageFormat`]), [`config_image`],
//!   [`index_image`], [`umoci_image`]: small images built in milliseconds.
//! - [`large_image`]: a few hundred MB in 4 layers from files on the machine, cached.

mod catalog;
mod image;
mod large;
mod layer;

pub use catalog::*;
pub use image::*;
pub use large::*;
pub use layer::*;
