//! PID 1 of every pvecri pod CT, and the client side of its API.
