//! With the `tch` feature, binaries and tests find libtorch's shared libraries through an rpath to `$LIBTORCH/lib`
//! (set `LIBTORCH` to the folder `cargo xtask libtorch` prints).

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if std::env::var_os("CARGO_FEATURE_TCH").is_some()
        && let Some(dir) = std::env::var_os("LIBTORCH")
    {
        let lib = std::path::Path::new(&dir).join("lib");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
}
