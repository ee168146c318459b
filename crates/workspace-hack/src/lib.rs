//! Feature unification for the workspace (see `Cargo.toml`): no code, only dependencies whose
//! features every command of `make test` then shares, so that they are compiled once.
