//! ferray test guest: GPU errors, limits, foreign handles, traps with buffers held, and GPU
//! scheduling. Built by `ferray-test-fixtures` as `GPU_PROBE`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferray_sdk::gpu::{self, Buffer, Kernel, Usage};

wit_bindgen::generate!({ path: "wit", world: "gpu-probe" });

struct Component;

const DOUBLE: &str = r#"
@group(0) @binding(0) var<storage, read_write> v: array<u32>;
@compute @workgroup_size(1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&v)) { v[id.x] = v[id.x] * 2u; }
}
"#;

fn text<T: std::fmt::Debug>(r: gpu::Result<T>) -> String {
    match r {
        Ok(v) => format!("ok: {v:?}"),
        Err(e) => e.to_string(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Guest for Component {
    fn adapter() -> String {
        text(gpu::adapter())
    }

    fn compile(wgsl: String, entry: String) -> String {
        text(Kernel::new(&wgsl, &entry).map(|_| ()))
    }

    fn alloc(size: u64) -> String {
        text(Buffer::zeroed_bytes(size, Usage::STORAGE).map(|b| b.size()))
    }

    fn alloc_and_trap(count: u32, size: u64) {
        let mut kept = Vec::new();
        for _ in 0..count {
            kept.push(Buffer::zeroed_bytes(size, Usage::STORAGE).expect("alloc"));
        }
        std::mem::forget(kept);
        panic!("trapping with {count} buffers held");
    }

    fn make_buffer(value: u32) -> u64 {
        let b = Buffer::from_slice(&[value]).expect("make buffer");
        let h = b.handle();
        std::mem::forget(b);
        h
    }

    fn read_handle(handle: u64) -> String {
        text(gpu::raw::read_buffer(handle).map_err(gpu::GpuError::from))
    }

    fn dispatch(x: u32, y: u32, z: u32) -> String {
        let run = || -> gpu::Result<Vec<u32>> {
            let b = Buffer::from_slice(&[1u32, 2, 3])?;
            let k = Kernel::new(DOUBLE, "main")?;
            k.dispatch(&[&b], [x, y, z])?;
            b.read::<u32>()
        };
        text(run())
    }

    fn busy(ms: u32) -> (u64, u64) {
        let start = now_ms();
        let b = Buffer::from_slice(&[1u32]).expect("buffer");
        std::thread::sleep(Duration::from_millis(u64::from(ms)));
        drop(b);
        (start, now_ms())
    }
}

export!(Component);
