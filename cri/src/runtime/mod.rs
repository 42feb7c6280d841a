//! Pods and containers: the logic behind the RuntimeService.

pub mod spec;
