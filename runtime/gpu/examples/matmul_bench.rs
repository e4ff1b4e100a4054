//! GFLOP/s of the tiled matrix product `guest-examples/gpu-matmul/src/matmul.wgsl` at
//! n = 256, 512, 1024: through ferray (the `gpu-matmul` guest's `matmul-gflops`, a task with
//! num_gpus = 1), the same WGSL run by this native wgpu program, and the guest's CPU version.
//!
//! ```text
//! cargo run --release -p ferray-gpu --example matmul_bench [-- --allow-software-gpu] [REPS]
//! ```

use std::time::Instant;

/// The one kernel source, shared with the guest example.
const MATMUL_WGSL: &str = include_str!("../../../guest-examples/gpu-matmul/src/matmul.wgsl");

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

/// The same adapter choice as ferray's: hardware first, a software one only if allowed.
fn native_device(allow_software: bool) -> (wgpu::Device, wgpu::Queue, String) {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::PRIMARY;
    let instance = wgpu::Instance::new(desc);
    let adapter = block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY))
        .into_iter()
        .filter(|a| allow_software || a.get_info().device_type != wgpu::DeviceType::Cpu)
        .min_by_key(|a| match a.get_info().device_type {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Other => 3,
            wgpu::DeviceType::Cpu => 4,
        })
        .expect("no GPU adapter (try --allow-software-gpu)");
    let info = adapter.get_info();
    let (device, queue) = block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .expect("request device");
    (
        device,
        queue,
        format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type),
    )
}

fn bytes_of(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// GFLOP/s of `reps` dispatches of the kernel on n x n matrices, after a warm-up.
fn native_gflops(device: &wgpu::Device, queue: &wgpu::Queue, n: u32, reps: u32) -> f64 {
    use wgpu::util::DeviceExt;
    let len = (n * n) as usize;
    let a: Vec<f32> = (0..len).map(|i| (i % 7) as f32 * 0.1).collect();
    let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
    let ba = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: &bytes_of(&a),
        usage: storage,
    });
    let bb = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: &bytes_of(&a),
        usage: storage,
    });
    let bc = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: (len * 4) as u64,
        usage: storage | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let params: Vec<u8> = [n, n, n, 0].iter().flat_map(|x| x.to_le_bytes()).collect();
    let bp = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: &params,
        usage: wgpu::BufferUsages::UNIFORM,
    });
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(MATMUL_WGSL.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: None,
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[&ba, &bb, &bc, &bp]
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect::<Vec<_>>(),
    });
    let groups = n.div_ceil(16);
    let dispatch = || {
        let mut enc = device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(groups, groups, 1);
        }
        queue.submit([enc.finish()]);
    };
    let wait = || {
        device
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("poll");
    };
    dispatch();
    wait();
    let start = Instant::now();
    for _ in 0..reps {
        dispatch();
    }
    wait();
    let secs = start.elapsed().as_secs_f64();
    2.0 * f64::from(n).powi(3) * f64::from(reps) / secs / 1e9
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let allow_software = args.iter().any(|a| a == "--allow-software-gpu");
    let reps: u32 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(5);
    let (device, queue, adapter) = native_device(allow_software);
    println!("adapter: {adapter}");
    println!("reps per size: {reps}");

    let exec = tokio::runtime::Runtime::new().expect("tokio");
    let rt = exec
        .block_on(
            ferray::Runtime::builder()
                .num_gpus(1.0)
                .allow_software_gpu(allow_software)
                .build(),
        )
        .expect("ferray runtime");
    let comp = exec
        .block_on(
            rt.load_file(
                std::env::var("GPU_MATMUL_WASM")
                    .unwrap_or_else(|_| ferray_test_fixtures::GPU_MATMUL.to_string()),
            ),
        )
        .expect("load gpu-matmul");
    let run = |f: &str, n: u32, gpus: f64| -> f64 {
        let r = comp
            .task(f)
            .args(&(n, reps))
            .and_then(|t| t.num_gpus(gpus))
            .and_then(|t| t.submit())
            .expect("submit");
        exec.block_on(rt.get::<f64>(&r)).expect(f)
    };
    println!(
        "{:>6} {:>16} {:>16} {:>8} {:>16}",
        "n", "ferray_gflops", "native_gflops", "ratio", "cpu_guest_gflops"
    );
    for n in [256u32, 512, 1024] {
        let native = native_gflops(&device, &queue, n, reps);
        let through = run("matmul-gflops", n, 1.0);
        let cpu = {
            let r = comp
                .task("cpu-matmul-gflops")
                .arg(&n)
                .and_then(|t| t.submit())
                .expect("submit");
            exec.block_on(rt.get::<f64>(&r)).expect("cpu")
        };
        println!(
            "{n:>6} {through:>16.2} {native:>16.2} {:>7.0}% {cpu:>16.2}",
            through / native * 100.0
        );
    }
}
