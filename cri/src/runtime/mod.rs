//! Pods and containers: the logic behind the RuntimeService.

pub mod ids;
pub mod podfiles;
pub mod spec;
pub mod user;
