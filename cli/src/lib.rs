//! Shared pieces of the mosix command-line tools.
