//! pvecri's image service: references, pulls with oci-client into layerfs, image metadata, auth, registry hosts.
