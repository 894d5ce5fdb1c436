//! Empty: the build script exists so that xtask's build-dependencies (feature unification, see Cargo.toml) take part
//! in every build that includes xtask.

fn main() {}
