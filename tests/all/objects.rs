//! The object store through the runtime: put/get, spill to disk and back,
//! corruption detected, objects freed when unreferenced.

// The scenarios are plain `async fn`s, run by `both.rs`'s tests: unwrap as
// in a `#[test]`.
#![allow(clippy::unwrap_used)]

use ferray::{Error, Runtime};

use crate::both::scenarios;
use crate::{builder, fx, load};

// Both embedded and on a cluster (`both.rs`). Spilling and corruption need
// the embedded store's settings and files: those tests run embedded only.
scenarios![
    put_and_get_round_trip_and_ids_are_blake3,
    a_put_object_is_a_task_argument,
    unreferenced_objects_are_freed,
    guests_put_and_get_objects,
];

async fn put_and_get_round_trip_and_ids_are_blake3(rt: &Runtime) {
    let r = rt.put(&vec![1u8, 2, 3]).await.unwrap();
    assert!(r.is_ready());
    assert_eq!(rt.get::<Vec<u8>>(&r).await.unwrap(), vec![1, 2, 3]);
    // list<u8> encodes as its length and the raw bytes.
    assert_eq!(r.content_id().unwrap(), ferray::ObjectId::of(&[3, 1, 2, 3]));
}

/// A put too large to travel inside a task's submission: the task reads it
/// from the store (on a cluster, pulled from where it is kept).
async fn a_put_object_is_a_task_argument(rt: &Runtime) {
    let m = load(rt, fx::MISBEHAVE).await;
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 256) as u8).collect();
    let put = rt.put(&big).await.unwrap();
    let r = m.task("measure").arg_ref(&put).submit().unwrap();
    let want = big.iter().map(|b| u64::from(*b)).sum::<u64>();
    assert_eq!(
        rt.get::<(u32, u64)>(&r).await.unwrap(),
        (big.len() as u32, want)
    );
    // Read again by another task. (Not `echo-bytes`: a result equal to a
    // put outlives its job on a cluster at times, a known bug; see
    // `both::a_result_equal_to_a_put_is_freed_when_its_job_ends`.)
    let r = m.task("measure").arg_ref(&put).submit().unwrap();
    assert_eq!(
        rt.get::<(u32, u64)>(&r).await.unwrap(),
        (big.len() as u32, want)
    );
}

/// Embedded only: the store's memory cap and spill directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_spill_to_disk_and_come_back() {
    let spill = tempfile::tempdir().unwrap();
    let rt = builder()
        .object_store_memory(1 << 20)
        .spill_dir(spill.path())
        .build()
        .await
        .unwrap();
    let values: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 300 << 10]).collect();
    let mut refs = Vec::new();
    for v in &values {
        refs.push(rt.put(v).await.unwrap());
    }
    let stats = rt.stats().store;
    assert!(stats.spilled_objects > 0, "{stats:?}");
    assert!(stats.bytes_in_memory <= 1 << 20, "{stats:?}");
    for (r, v) in refs.iter().zip(&values) {
        assert_eq!(&rt.get::<Vec<u8>>(r).await.unwrap(), v);
    }
    // A task reads a spilled object as its argument.
    let m = load(&rt, fx::MISBEHAVE).await;
    let echoed = m.task("echo-bytes").arg_ref(&refs[0]).submit().unwrap();
    assert_eq!(rt.get::<Vec<u8>>(&echoed).await.unwrap(), values[0]);
}

/// Embedded only: damages a file of the embedded store's spill directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_spilled_bytes_are_detected_not_returned() {
    let spill = tempfile::tempdir().unwrap();
    let rt = builder().spill_dir(spill.path()).build().await.unwrap();
    let r = rt.put(&vec![7u8; 4096]).await.unwrap();
    let id = r.content_id().unwrap();
    assert!(rt.object_store().spill_now(&id).unwrap());
    let path = rt.object_store().spill_path(&id).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let err = rt.get::<Vec<u8>>(&r).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

async fn unreferenced_objects_are_freed(rt: &Runtime) {
    let squares = load(rt, fx::SQUARES).await;
    for round in 0..5i64 {
        let refs = (0..200)
            .map(|i| squares.call("heavy-compute", (round * 1000 + i,)))
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let _: Vec<i64> = rt.get_all(&refs).await.unwrap();
        let r = rt.put(&vec![round as u8; 10_000]).await.unwrap();
        drop(r);
    }
    // Every reference is gone: so are the objects, once the finished tasks
    // have dropped their own handles (a moment after their results resolve).
    let mut stats = rt.stats().store;
    for _ in 0..500 {
        if stats.objects == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        stats = rt.stats().store;
    }
    assert_eq!(stats.objects, 0, "{stats:?}");
    assert_eq!(stats.bytes_in_memory, 0, "{stats:?}");
}

async fn guests_put_and_get_objects(rt: &Runtime) {
    // wordcount's driver puts its chunks and passes them as dependencies.
    let wc = load(rt, fx::WORDCOUNT).await;
    let text = "a b c a b a ".repeat(100);
    let r = wc.call("run", (text, 4u32, 3u32)).unwrap();
    let top: Vec<(String, u32)> = rt.get(&r).await.unwrap();
    assert_eq!(
        top,
        vec![("a".into(), 300), ("b".into(), 200), ("c".into(), 100)]
    );
}
