//! pvecri's pod host: where a pod's CT is defined and started (drivers lxc and pve).
