//! Builds ferray data's built-in operators (`guest/`, the component that
//! `groupby().aggregate()`, `sort` and `random_shuffle` run as tasks) for
//! wasm32-wasip2 into `$OUT_DIR/ferray_data_ops.wasm`, which the crate
//! embeds.

use std::env;
use std::path::PathBuf;

use ferray_guest_build::{build_workspace, component_path, rerun_if_changed, watch_workspace};

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let root = manifest.join("../..");
    for p in ["sdk/Cargo.toml", "sdk/src"] {
        rerun_if_changed(&root.join(p));
    }
    let ws = manifest.join("guest");
    watch_workspace(&ws);
    let target_dir = out_dir.join("guests");
    build_workspace(&ws, &target_dir, &[]);
    let path = component_path(&target_dir, "ferray-data-ops");
    std::fs::copy(&path, out_dir.join("ferray_data_ops.wasm"))
        .expect("copying ferray_data_ops.wasm");
}
