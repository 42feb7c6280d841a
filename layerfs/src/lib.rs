//! pvecri's layer store: OCI layer application and the zfs and overlay drivers.
