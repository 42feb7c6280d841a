//! pvecri, the daemon: CRI over gRPC on a Unix socket.
