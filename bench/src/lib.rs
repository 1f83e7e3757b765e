//! Benchmarks that print figures, each as a ratio against a reference
//! measured in the same run (DESIGN.md section 10).
