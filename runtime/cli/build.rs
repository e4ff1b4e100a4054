//! Builds the guest that `ferray microbenchmark` measures (`guest-examples/bench`, a Rust
//! guest made with the SDK) into `$OUT_DIR`, so the binary carries it (`bench.wasm`).

use std::env;
use std::path::PathBuf;

use ferray_guest_build::{build_workspace, component_path, rerun_if_changed, watch_workspace};

fn main() {
    let root = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    for p in ["sdk/Cargo.toml", "sdk/src", "wit"] {
        rerun_if_changed(&root.join(p));
    }
    let ws = root.join("guest-examples");
    watch_workspace(&ws);
    let target_dir = out_dir.join("guests");
    build_workspace(&ws, &target_dir, &["bench"]);
    let path = component_path(&target_dir, "bench");
    std::fs::copy(&path, out_dir.join("bench.wasm")).expect("copying bench.wasm");
}
