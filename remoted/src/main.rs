//! `remoted`: the remote daemon (being written).
fn main() {}
