//! Test bodies shared by the test files that run them with different pod hosts and stores
//! (`pods.rs`, `pods_cri.rs` and `pve.rs` each include this module).

// Each including test file runs only some of the bodies.
#![allow(dead_code)]

pub mod host_namespaces;
pub mod pods;
pub mod pods_cri;
pub mod user_namespaces;
