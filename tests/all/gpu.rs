//! GPU compute on the software driver (Mesa's llvmpipe, counted with `allow_software_gpu`):
//! results against the CPU, shader errors, limits, freeing on traps, isolation between tasks,
//! and `num_gpus` scheduling. In CI (`CI=true`) a missing adapter fails; elsewhere these tests
//! print "skipped: no GPU adapter" and return.

use ferray::{Error, GpuLimits, Runtime};

use crate::{builder, fx, load};

/// Whether a GPU adapter (software ones included) is there; fails in CI when not.
pub(crate) fn have_adapter() -> bool {
    let found = !ferray_gpu::detect(true).is_empty();
    if !found {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(
            !ci,
            "no GPU adapter in CI: install mesa-vulkan-drivers and libvulkan1 (.ci/run does)"
        );
        eprintln!("skipped: no GPU adapter");
    }
    found
}

pub(crate) async fn gpu_runtime(num_gpus: f64) -> Runtime {
    builder()
        .num_cpus(4.0)
        .num_gpus(num_gpus)
        .allow_software_gpu(true)
        .build()
        .await
        .expect("runtime")
}

async fn call_gpu<T: serde::de::DeserializeOwned>(
    rt: &Runtime,
    comp: &ferray::Component,
    function: &str,
    args: impl serde::Serialize,
    gpus: f64,
) -> Result<T, Error> {
    let r = comp
        .task(function)
        .args(&args)?
        .num_gpus(gpus)?
        .max_retries(0)
        .submit()?;
    rt.get::<T>(&r).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saxpy_matches_the_cpu_on_and_off_the_workgroup_size() {
    if !have_adapter() {
        return;
    }
    let rt = gpu_runtime(1.0).await;
    let saxpy = load(&rt, fx::GPU_SAXPY).await;
    for n in [64u32, 70, 1, 1000] {
        let r = saxpy.call("run", (n,)).unwrap();
        let diff: f64 = rt.get(&r).await.unwrap();
        assert!(diff < 1e-5, "n = {n}: max diff {diff}");
    }
    // Direct call with values.
    let y: Vec<f32> = call_gpu(
        &rt,
        &saxpy,
        "saxpy",
        (2.0f32, vec![1.0f32, 2.0, 3.0], vec![10.0f32, 20.0, 30.0]),
        1.0,
    )
    .await
    .unwrap();
    assert_eq!(y, vec![12.0, 24.0, 36.0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matmul_matches_the_cpu_on_and_off_the_tile_size() {
    if !have_adapter() {
        return;
    }
    let rt = gpu_runtime(1.0).await;
    let mm = load(&rt, fx::GPU_MATMUL).await;
    for n in [64u32, 70, 16, 5] {
        let diff: f64 = call_gpu(&rt, &mm, "matmul", (n, 9u64), 1.0).await.unwrap();
        assert!(diff < 1e-3, "n = {n}: max diff {diff}");
    }
    // Split into row blocks over GPU tasks of 0.5 GPU each, gathered by a driver.
    for (n, tiles) in [(64u32, 4u32), (70, 3)] {
        let r = mm.call("run", (n, tiles)).unwrap();
        let diff: f64 = rt.get(&r).await.unwrap();
        assert!(diff < 1e-3, "n = {n}, tiles = {tiles}: max diff {diff}");
    }
    let gpu = rt.stats().gpu.expect("gpu stats");
    assert!(gpu.pipeline_cache_hits > 0, "{gpu:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_wgsl_is_an_error_with_the_line() {
    if !have_adapter() {
        return;
    }
    let rt = gpu_runtime(1.0).await;
    let probe = load(&rt, fx::GPU_PROBE).await;
    let bad = "@compute @workgroup_size(1)\nfn main() {\n    let x: u32 = 1.5 +;\n}\n";
    let msg: String = call_gpu(&rt, &probe, "compile", (bad, "main"), 1.0)
        .await
        .unwrap();
    assert!(msg.starts_with("invalid shader"), "{msg}");
    assert!(msg.contains("line 3"), "{msg}");
    // A type error found by validation, not parsing.
    let bad = "@group(0) @binding(0) var<storage, read_write> v: array<u32>;\n\
               @compute @workgroup_size(1)\nfn main() {\n    v[0] = 1.5;\n}\n";
    let msg: String = call_gpu(&rt, &probe, "compile", (bad, "main"), 1.0)
        .await
        .unwrap();
    assert!(msg.starts_with("invalid shader"), "{msg}");
    assert!(msg.contains("line 4"), "{msg}");
    // A missing entry point.
    let good = "@compute @workgroup_size(1)\nfn main() {}\n";
    let msg: String = call_gpu(&rt, &probe, "compile", (good, "other"), 1.0)
        .await
        .unwrap();
    assert!(msg.contains("no entry point `other`"), "{msg}");
    let msg: String = call_gpu(&rt, &probe, "compile", (good, "main"), 1.0)
        .await
        .unwrap();
    assert!(msg.starts_with("ok"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_limit_buffers_and_dispatches_are_refused() {
    if !have_adapter() {
        return;
    }
    let rt = builder()
        .num_gpus(1.0)
        .allow_software_gpu(true)
        .gpu_limits(GpuLimits {
            max_buffer_size: 1 << 20,
            max_task_memory: 1 << 20,
            ..GpuLimits::default()
        })
        .build()
        .await
        .unwrap();
    let probe = load(&rt, fx::GPU_PROBE).await;
    let msg: String = call_gpu(&rt, &probe, "alloc", (1u64 << 20,), 1.0)
        .await
        .unwrap();
    assert!(msg.starts_with("ok"), "{msg}");
    let msg: String = call_gpu(&rt, &probe, "alloc", ((1u64 << 20) + 1,), 1.0)
        .await
        .unwrap();
    assert!(msg.starts_with("GPU limit"), "{msg}");
    let msg: String = call_gpu(&rt, &probe, "alloc", (u64::MAX,), 1.0)
        .await
        .unwrap();
    assert!(msg.starts_with("GPU limit"), "{msg}");
    // Total memory per task: two buffers of 600 KiB do not fit in 1 MiB.
    let err = call_gpu::<()>(&rt, &probe, "alloc-and-trap", (2u32, 600u64 << 10), 1.0)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("over its limit"), "{err}");
    // Workgroup counts are checked against the device.
    let msg: String = call_gpu(&rt, &probe, "dispatch", (u32::MAX, 1u32, 1u32), 1.0)
        .await
        .unwrap();
    assert!(msg.starts_with("GPU limit"), "{msg}");
    let msg: String = call_gpu(&rt, &probe, "dispatch", (0u32, 1u32, 1u32), 1.0)
        .await
        .unwrap();
    assert!(msg.starts_with("invalid argument"), "{msg}");
    let msg: String = call_gpu(&rt, &probe, "dispatch", (3u32, 1u32, 1u32), 1.0)
        .await
        .unwrap();
    assert_eq!(msg, "ok: [2, 4, 6]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapped_tasks_buffers_are_freed() {
    if !have_adapter() {
        return;
    }
    let rt = gpu_runtime(1.0).await;
    let probe = load(&rt, fx::GPU_PROBE).await;
    // Open the device first.
    let _: String = call_gpu(&rt, &probe, "adapter", (), 1.0).await.unwrap();
    let before = rt.stats().gpu.expect("gpu stats");
    let err = call_gpu::<()>(&rt, &probe, "alloc-and-trap", (4u32, 1u64 << 20), 1.0)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("trapping with 4 buffers"), "{err}");
    let after = rt.stats().gpu.expect("gpu stats");
    assert_eq!(after.live_bytes, before.live_bytes, "{after:?}");
    assert_eq!(after.live_buffers, before.live_buffers, "{after:?}");
    assert_eq!(after.sessions, 0, "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_cannot_reach_another_tasks_buffer() {
    if !have_adapter() {
        return;
    }
    let rt = gpu_runtime(1.0).await;
    let probe = load(&rt, fx::GPU_PROBE).await;
    let handle: u64 = call_gpu(&rt, &probe, "make-buffer", (7u32,), 1.0)
        .await
        .unwrap();
    let msg: String = call_gpu(&rt, &probe, "read-handle", (handle,), 1.0)
        .await
        .unwrap();
    assert!(msg.starts_with("not found"), "{msg}");
    let msg: String = call_gpu(&rt, &probe, "read-handle", (handle + 1,), 1.0)
        .await
        .unwrap();
    assert!(msg.starts_with("not found"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_without_num_gpus_gets_a_clear_error() {
    if !have_adapter() {
        return;
    }
    let rt = gpu_runtime(1.0).await;
    let probe = load(&rt, fx::GPU_PROBE).await;
    let msg: String = call_gpu(&rt, &probe, "adapter", (), 0.0).await.unwrap();
    assert!(
        msg.contains("this task did not ask for a GPU: submit it with num_gpus > 0"),
        "{msg}"
    );
    let msg: String = call_gpu(&rt, &probe, "adapter", (), 1.0).await.unwrap();
    assert!(msg.starts_with("ok"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn num_gpus_schedules_whole_and_fractional_gpus() {
    if !have_adapter() {
        return;
    }
    let rt = gpu_runtime(1.0).await;
    let probe = load(&rt, fx::GPU_PROBE).await;
    let spans = |gpus: f64| {
        let probe = probe.clone();
        let rt = rt.clone();
        async move {
            let refs: Vec<_> = (0..2)
                .map(|_| {
                    probe
                        .task("busy")
                        .arg(&300u32)
                        .unwrap()
                        .num_gpus(gpus)
                        .unwrap()
                        .submit()
                        .unwrap()
                })
                .collect();
            rt.get_all::<(u64, u64)>(&refs).await.unwrap()
        }
    };
    // One GPU, two tasks of 1 GPU each: one after the other.
    let s = spans(1.0).await;
    let (first, second) = if s[0].0 <= s[1].0 {
        (s[0], s[1])
    } else {
        (s[1], s[0])
    };
    assert!(second.0 >= first.1, "tasks of 1 GPU overlapped: {s:?}");
    // Two tasks of 0.5 GPU each: together.
    let s = spans(0.5).await;
    let overlap = s[0].1.min(s[1].1) as i64 - s[0].0.max(s[1].0) as i64;
    assert!(overlap > 100, "tasks of 0.5 GPU did not overlap: {s:?}");
    // Two GPUs on a node of one: infeasible at once.
    let err = probe
        .task("busy")
        .arg(&1u32)
        .unwrap()
        .num_gpus(2.0)
        .unwrap()
        .submit()
        .unwrap_err();
    assert!(
        matches!(err, Error::Infeasible(ref m) if m.contains("GPU")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn software_adapters_count_only_when_allowed() {
    let software = ferray_gpu::detect(true).len();
    let hardware = ferray_gpu::detect(false).len();
    let rt = builder().build().await.unwrap();
    assert_eq!(rt.stats().resources_total.num_gpus(), hardware as f64);
    let rt = builder().allow_software_gpu(true).build().await.unwrap();
    assert_eq!(rt.stats().resources_total.num_gpus(), software as f64);
}

#[test]
fn inspect_shows_the_gpu_import() {
    let out = crate::ferray_ok(&["inspect", fx::GPU_SAXPY]);
    assert!(out.contains("ferray:runtime/gpu"), "{out}");
    assert!(out.contains("gpu: yes"), "{out}");
}

#[test]
fn cli_runs_saxpy_with_a_software_gpu() {
    if !have_adapter() {
        return;
    }
    let out = crate::ferray_ok(&["run", "--allow-software-gpu", fx::GPU_SAXPY, "run", "100"]);
    assert_eq!(out.trim(), "0");
}

/// The function the command line calls holds what `--entrypoint-num-gpus`
/// asks for (Ray's entrypoint options), so a driver that computes on the GPU
/// itself runs; without it, the error says what to ask for.
#[test]
fn cli_entrypoint_num_gpus_lets_the_driver_use_the_gpu() {
    if !have_adapter() {
        return;
    }
    let err = crate::ferray_err(&[
        "run",
        "--allow-software-gpu",
        "--num-gpus",
        "1",
        fx::GPU_MATMUL,
        "matmul",
        "64",
        "7",
    ]);
    assert!(err.contains("did not ask for a GPU"), "{err}");
    let out = crate::ferray_ok(&[
        "run",
        "--allow-software-gpu",
        "--num-gpus",
        "1",
        "--entrypoint-num-gpus",
        "1",
        fx::GPU_MATMUL,
        "matmul",
        "64",
        "7",
    ]);
    let diff: f64 = out.trim().parse().expect("a number");
    assert!(diff < 1e-3, "GPU and CPU differ by {diff}");
    // More than the node has: refused at once, naming the shortfall.
    let err = crate::ferray_err(&[
        "run",
        "--allow-software-gpu",
        "--num-gpus",
        "1",
        "--entrypoint-num-gpus",
        "2",
        fx::GPU_MATMUL,
        "matmul",
        "64",
        "7",
    ]);
    assert!(err.contains("GPU"), "{err}");
}
