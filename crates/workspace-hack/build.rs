//! Empty: it exists so that cargo resolves `[build-dependencies]` (see Cargo.toml).

fn main() {}
