//! End-to-end test harness for pvecri.
