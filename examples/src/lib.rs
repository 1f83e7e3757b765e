//! Test programs and the demo. The C test programs live in `examples/c/` and
//! are built by the test harness; this crate holds the Rust ones.
