//! ferray example: a tiled matrix product in WGSL (`matmul.wgsl`, 16 x 16 tiles in workgroup
//! memory), checked against the CPU, and split over several GPU tasks.
//!
//! `ferray run --allow-software-gpu gpu_matmul.wasm run 256 4` prints the largest difference
//! between the GPU's and the CPU's product (about 1e-5).

use std::time::Instant;

use ferray_sdk::gpu::{Buffer, Kernel};
use ferray_sdk::{ObjectRef, Options, Task};

wit_bindgen::generate!({ path: "wit", world: "gpu-matmul" });

/// The kernel, shared with the native benchmark.
pub const MATMUL_WGSL: &str = include_str!("matmul.wgsl");
const TILE: u32 = 16;

struct Component;

/// splitmix64, for matrices that every task can rebuild from a seed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn next_f32(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// `len` values from `seed`.
fn matrix(seed: u64, len: usize) -> Vec<f32> {
    let mut rng = SplitMix64(seed);
    (0..len).map(|_| rng.next_f32()).collect()
}

/// A (n x n) and B (n x n) of a seed.
fn inputs(n: u32, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let len = n as usize * n as usize;
    (matrix(seed, len), matrix(seed ^ 0xB0B0_B0B0, len))
}

/// C = A (m x k) * B (k x n) on the CPU, accumulating in f64.
fn cpu_matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut c = vec![0f64; m * n];
    for i in 0..m {
        for p in 0..k {
            let av = f64::from(a[i * k + p]);
            let row = &b[p * n..(p + 1) * n];
            for (cv, bv) in c[i * n..(i + 1) * n].iter_mut().zip(row) {
                *cv += av * f64::from(*bv);
            }
        }
    }
    c.into_iter().map(|v| v as f32).collect()
}

/// The GPU's operands and kernel, ready to dispatch (again).
struct GpuMatmul {
    a: Buffer,
    b: Buffer,
    c: Buffer,
    params: Buffer,
    kernel: Kernel,
    groups: [u32; 3],
}

impl GpuMatmul {
    fn new(a: &[f32], b: &[f32], m: u32, k: u32, n: u32) -> ferray_sdk::gpu::Result<Self> {
        Ok(GpuMatmul {
            a: Buffer::from_slice(a)?,
            b: Buffer::from_slice(b)?,
            c: Buffer::zeroed::<f32>(m as usize * n as usize)?,
            params: Buffer::uniform(&[m, n, k, 0])?,
            kernel: Kernel::new(MATMUL_WGSL, "main")?,
            groups: [n.div_ceil(TILE).max(1), m.div_ceil(TILE).max(1), 1],
        })
    }

    fn dispatch(&self) -> ferray_sdk::gpu::Result<()> {
        self.kernel
            .dispatch(&[&self.a, &self.b, &self.c, &self.params], self.groups)
    }
}

fn max_diff(x: &[f32], y: &[f32]) -> f64 {
    assert_eq!(x.len(), y.len(), "results differ in length");
    x.iter()
        .zip(y)
        .map(|(x, y)| f64::from((x - y).abs()))
        .fold(0.0, f64::max)
}

fn gpu<T>(r: ferray_sdk::gpu::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("GPU call failed: {e}"))
}

impl Guest for Component {
    fn matmul(n: u32, seed: u64) -> f64 {
        let (a, b) = inputs(n, seed);
        let m = gpu(GpuMatmul::new(&a, &b, n, n, n));
        gpu(m.dispatch());
        let got: Vec<f32> = gpu(m.c.read());
        let want = cpu_matmul(&a, &b, n as usize, n as usize, n as usize);
        max_diff(&got, &want)
    }

    fn block(n: u32, seed: u64, row0: u32, rows: u32) -> Vec<f32> {
        let (a, b) = inputs(n, seed);
        let (nn, r0) = (n as usize, row0 as usize);
        let rows = rows.min(n.saturating_sub(row0));
        let a_rows = &a[r0 * nn..(r0 + rows as usize) * nn];
        if rows == 0 {
            return Vec::new();
        }
        let m = gpu(GpuMatmul::new(a_rows, &b, rows, n, n));
        gpu(m.dispatch());
        gpu(m.c.read())
    }

    fn run(n: u32, tiles: u32) -> f64 {
        let tiles = tiles.clamp(1, n.max(1));
        let seed = 42;
        let per = n.div_ceil(tiles);
        let refs: Vec<ObjectRef> = (0..tiles)
            .map(|t| {
                Task::new("block")
                    .args(&(n, seed, t * per, per))
                    .options(Options::new().num_gpus(0.5))
                    .submit()
                    .expect("cannot submit a block")
            })
            .collect();
        let blocks: Vec<Vec<f32>> = ferray_sdk::get_all(&refs).expect("a block task failed");
        let got: Vec<f32> = blocks.concat();
        let (a, b) = inputs(n, seed);
        let want = cpu_matmul(&a, &b, n as usize, n as usize, n as usize);
        max_diff(&got, &want)
    }

    fn matmul_gflops(n: u32, reps: u32) -> f64 {
        let reps = reps.max(1);
        let (a, b) = inputs(n, 7);
        let m = gpu(GpuMatmul::new(&a, &b, n, n, n));
        gpu(m.dispatch());
        gpu(ferray_sdk::gpu::finish());
        let start = Instant::now();
        for _ in 0..reps {
            gpu(m.dispatch());
        }
        gpu(ferray_sdk::gpu::finish());
        let secs = start.elapsed().as_secs_f64();
        2.0 * f64::from(n).powi(3) * f64::from(reps) / secs / 1e9
    }

    fn cpu_matmul_gflops(n: u32) -> f64 {
        let (a, b) = inputs(n, 7);
        let nn = n as usize;
        let start = Instant::now();
        // The same product in f32 (i-k-j order, as a plain CPU version would do it).
        let mut c = vec![0f32; nn * nn];
        for i in 0..nn {
            for p in 0..nn {
                let av = a[i * nn + p];
                let row = &b[p * nn..(p + 1) * nn];
                for (cv, bv) in c[i * nn..(i + 1) * nn].iter_mut().zip(row) {
                    *cv += av * bv;
                }
            }
        }
        let secs = start.elapsed().as_secs_f64();
        std::hint::black_box(&c);
        2.0 * f64::from(n).powi(3) / secs / 1e9
    }
}

export!(Component);
