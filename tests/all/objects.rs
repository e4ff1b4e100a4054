//! The object store through the runtime: put/get, spill to disk and back,
//! corruption detected, objects freed when unreferenced.

use ferray::Error;

use crate::{builder, fx, load, runtime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_and_get_round_trip_and_ids_are_blake3() {
    let rt = runtime().await;
    let r = rt.put(&vec![1u8, 2, 3]).await.unwrap();
    assert!(r.is_ready());
    assert_eq!(rt.get::<Vec<u8>>(&r).await.unwrap(), vec![1, 2, 3]);
    // list<u8> encodes as its length and the raw bytes.
    assert_eq!(r.content_id().unwrap(), ferray::ObjectId::of(&[3, 1, 2, 3]));
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreferenced_objects_are_freed() {
    let rt = runtime().await;
    let squares = load(&rt, fx::SQUARES).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_put_and_get_objects() {
    // wordcount's driver puts its chunks and passes them as dependencies.
    let rt = runtime().await;
    let wc = load(&rt, fx::WORDCOUNT).await;
    let text = "a b c a b a ".repeat(100);
    let r = wc.call("run", (text, 4u32, 3u32)).unwrap();
    let top: Vec<(String, u32)> = rt.get(&r).await.unwrap();
    assert_eq!(
        top,
        vec![("a".into(), 300), ("b".into(), 200), ("c".into(), 100)]
    );
}
