//! A build script is required for cargo to consider the hack's build dependencies.
fn main() {}
