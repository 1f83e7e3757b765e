//! `homed`: the home daemon (being written).
fn main() {}
