//! podinit: PID 1 of every pvecri pod CT.
fn main() {}
