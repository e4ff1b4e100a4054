//! Guests are untrusted: limits on time, memory, fuel and stack; no ambient
//! files or environment; a failing guest never hurts the runtime.

use std::time::Duration;

use ferray::Error;

use crate::{builder, fx, load, runtime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_is_stopped_while_other_tasks_go_on() {
    let rt = runtime().await;
    let m = load(&rt, fx::MISBEHAVE).await;
    let squares = load(&rt, fx::SQUARES).await;
    let spin = m
        .task("spin")
        .timeout(Duration::from_millis(500))
        .submit()
        .unwrap();
    // Other work runs meanwhile on the other CPU, and afterwards.
    let r = squares.call("run", (20u32,)).unwrap();
    assert_eq!(rt.get::<Vec<i64>>(&r).await.unwrap().len(), 20);
    let err = rt.get::<u64>(&spin).await.unwrap_err();
    assert!(
        matches!(err, Error::TimeLimit(ref m) if m.contains("500ms")),
        "{err}"
    );
    let r = squares.call("heavy-compute", (12i64,)).unwrap();
    assert_eq!(rt.get::<i64>(&r).await.unwrap(), 144);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growing_memory_past_the_limit_fails_cleanly() {
    let rt = builder().memory_limit(64 << 20).build().await.unwrap();
    let m = load(&rt, fx::MISBEHAVE).await;
    let err = rt
        .get::<u32>(&m.call("hog", (512u32,)).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::MemoryLimit(ref m) if m.contains("64 MiB")),
        "{err}"
    );
    // Within the limit it works, on the same runtime.
    assert_eq!(
        rt.get::<u32>(&m.call("hog", (16u32,)).unwrap())
            .await
            .unwrap(),
        16
    );
    // A per-task memory demand is also the task's cap.
    let err = rt
        .get::<u32>(
            &m.task("hog")
                .arg(&40u32)
                .unwrap()
                .memory(16 << 20)
                .submit()
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::MemoryLimit(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_limits_computation() {
    let rt = builder().fuel(u64::MAX).build().await.unwrap();
    let m = load(&rt, fx::MISBEHAVE).await;
    let err = rt
        .get::<u64>(&m.task("spin").fuel(1_000_000).submit().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::OutOfFuel(_)), "{err}");
    assert_eq!(
        rt.get::<u64>(
            &m.task("leaf")
                .arg(&1u64)
                .unwrap()
                .fuel(10_000_000)
                .submit()
                .unwrap()
        )
        .await
        .unwrap(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_overflow_is_a_trap_not_a_crash() {
    let rt = runtime().await;
    let m = load(&rt, fx::MISBEHAVE).await;
    let err = rt
        .get::<u64>(&m.call("stack-overflow", (1u64,)).unwrap())
        .await
        .unwrap_err();
    // Rust keeps its stack in linear memory: running off it is an
    // out-of-bounds access (or wasm's own call-stack limit); either way a
    // trap with the guest's backtrace, and the runtime goes on.
    assert!(
        matches!(err, Error::Trap(ref m) if m.contains("recurse")),
        "{err}"
    );
    assert_eq!(
        rt.get::<u64>(&m.call("leaf", (1u64,)).unwrap())
            .await
            .unwrap(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_cannot_open_host_files_it_was_not_granted() {
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "secret").unwrap();
    let path = secret.path().to_str().unwrap().to_string();
    let rt = runtime().await;
    let m = load(&rt, fx::MISBEHAVE).await;
    let got: Result<String, String> = rt
        .get(&m.call("read-file", (path.clone(),)).unwrap())
        .await
        .unwrap();
    assert!(got.is_err(), "read a file it was not granted: {got:?}");
    let got: Result<String, String> = rt
        .get(&m.call("read-file", ("/etc/passwd",)).unwrap())
        .await
        .unwrap();
    assert!(got.is_err());
    // Granting the directory makes it readable at the guest path.
    let dir = secret.path().parent().unwrap();
    let name = secret.path().file_name().unwrap().to_str().unwrap();
    let rt = builder().dir(dir, "/granted").build().await.unwrap();
    let m = load(&rt, fx::MISBEHAVE).await;
    let got: Result<String, String> = rt
        .get(&m.call("read-file", (format!("/granted/{name}"),)).unwrap())
        .await
        .unwrap();
    assert_eq!(got, Ok("secret".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_is_empty_unless_granted() {
    let rt = runtime().await;
    let m = load(&rt, fx::MISBEHAVE).await;
    let got: Option<String> = rt
        .get(&m.call("env-var", ("HOME",)).unwrap())
        .await
        .unwrap();
    assert_eq!(got, None);
    let rt = builder().env("GREETING", "hi").build().await.unwrap();
    let m = load(&rt, fx::MISBEHAVE).await;
    let got: Option<String> = rt
        .get(&m.call("env-var", ("GREETING",)).unwrap())
        .await
        .unwrap();
    assert_eq!(got, Some("hi".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_has_no_network() {
    // A listener on loopback that the guest tries to reach.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let rt = runtime().await;
    let m = load(&rt, fx::MISBEHAVE).await;
    let got: Result<(), String> = rt.get(&m.call("connect", (addr,)).unwrap()).await.unwrap();
    assert!(got.is_err(), "the guest reached the network");
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "a connection arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_a_guest_can_make_the_host_buffer_is_bounded() {
    let rt = builder().max_output_bytes(1000).build().await.unwrap();
    let m = load(&rt, fx::MISBEHAVE).await;
    let big = "x".repeat(10_000);
    let r = m.call("shout", (big,)).unwrap();
    assert_eq!(rt.get::<String>(&r).await.unwrap().len(), 10_000);
    let kept: usize = rt
        .take_output()
        .iter()
        .filter(|l| l.stream == ferray::Stream::Stdout)
        .map(|l| l.line.len())
        .sum();
    assert!(kept <= 1000, "kept {kept} bytes of stdout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_from_the_embedder_are_errors() {
    let rt = runtime().await;
    let squares = load(&rt, fx::SQUARES).await;
    // A string where an s64 is expected.
    let err = rt
        .get::<i64>(&squares.call("heavy-compute", ("seven",)).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument(ref m) if m.contains("heavy-compute: func(x: s64) -> s64")),
        "{err}"
    );
    let err = squares.call("nope", ()).unwrap_err();
    assert!(matches!(err, Error::NotFound(_)));
    let err = rt.load_bytes(b"\0asm\x01\0\0\0").await.err().unwrap();
    assert!(matches!(err, Error::InvalidArgument(ref m) if m.contains("core WebAssembly module")));
}
