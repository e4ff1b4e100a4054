//! ferray example: saxpy (y = a * x + y) on the GPU.
//!
//! `ferray run --allow-software-gpu gpu_saxpy.wasm run 1000` prints `0` (the largest difference
//! from the CPU's result).

use ferray_sdk::gpu::{Buffer, Kernel, workgroups};
use ferray_sdk::{Options, Task};

wit_bindgen::generate!({ path: "wit", world: "gpu-saxpy" });

/// One invocation per element, 64 per workgroup; `a` comes in a uniform `vec4` (uniforms are
/// 16-byte aligned).
const SAXPY: &str = r#"
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> a: vec4<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i < arrayLength(&y)) {
        y[i] = a.x * x[i] + y[i];
    }
}
"#;

struct Component;

fn gpu_saxpy(a: f32, x: &[f32], y: &[f32]) -> ferray_sdk::gpu::Result<Vec<f32>> {
    if y.is_empty() {
        return Ok(Vec::new());
    }
    let bx = Buffer::from_slice(x)?;
    let by = Buffer::from_slice(y)?;
    let ba = Buffer::uniform(&[a, 0.0, 0.0, 0.0])?;
    let kernel = Kernel::new(SAXPY, "main")?;
    kernel.dispatch(&[&bx, &by, &ba], [workgroups(y.len(), 64), 1, 1])?;
    by.read::<f32>()
}

impl Guest for Component {
    fn saxpy(a: f32, x: Vec<f32>, y: Vec<f32>) -> Vec<f32> {
        assert_eq!(x.len(), y.len(), "saxpy: x and y differ in length");
        gpu_saxpy(a, &x, &y).unwrap_or_else(|e| panic!("saxpy on the GPU failed: {e}"))
    }

    fn run(n: u32) -> f64 {
        let a = 2.5f32;
        let x: Vec<f32> = (0..n).map(|i| (i % 97) as f32 * 0.25).collect();
        let y: Vec<f32> = (0..n).map(|i| (i % 13) as f32 - 6.0).collect();
        let r = Task::new("saxpy")
            .args(&(a, &x, &y))
            .options(Options::new().num_gpus(1.0))
            .submit()
            .expect("cannot submit saxpy");
        let got: Vec<f32> = ferray_sdk::get(&r).expect("the saxpy task failed");
        assert_eq!(got.len(), y.len(), "saxpy returned the wrong length");
        x.iter()
            .zip(&y)
            .zip(&got)
            .map(|((x, y), g)| f64::from((a * x + y - g).abs()))
            .fold(0.0, f64::max)
    }
}

export!(Component);
