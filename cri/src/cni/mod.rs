//! CNI: the network configuration and (later) the plugin invoker.

pub mod config;
pub mod invoke;
