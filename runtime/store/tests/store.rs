use std::fs;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use ferray_core::{Error, ObjectId};
use ferray_store::{ObjectStore, StoreConfig, StoreStats};

const KIB: usize = 1024;
const MIB: u64 = 1024 * 1024;

/// Deterministic bytes, distinct for distinct seeds.
fn data(seed: u64, len: usize) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    out.extend_from_slice(&seed.to_le_bytes());
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len.max(8));
    Bytes::from(out)
}

fn store_in(dir: &Path, cap: u64) -> ObjectStore {
    ObjectStore::new(StoreConfig {
        memory_capacity: cap,
        spill_dir: Some(dir.to_path_buf()),
        ..StoreConfig::default()
    })
    .expect("store")
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn equal_bytes_are_stored_once_with_two_references() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store_in(dir.path(), MIB);
    let a = s.put(Bytes::from_static(b"hello world"));
    let b = s.put(Bytes::from(b"hello world".to_vec()));
    assert_eq!(a, b);
    assert_eq!(a, ObjectId::of(b"hello world"));
    assert_eq!(s.ref_count(&a), Some(2));
    let stats = s.stats();
    assert_eq!(stats.objects, 1);
    assert_eq!(stats.bytes_in_memory, 11);

    assert!(!s.decref(&a));
    assert!(s.contains(&a));
    assert_eq!(s.get(&a).expect("get"), Bytes::from_static(b"hello world"));
    assert!(s.decref(&a));
    assert!(!s.contains(&a));
    assert_eq!(s.stats(), StoreStats::default());
    assert!(matches!(s.get(&a), Err(Error::ObjectLost(_))));
    // Unknown ids: decref is a no-op, incref an error.
    assert!(!s.decref(&a));
    assert!(matches!(s.incref(&a), Err(Error::ObjectLost(_))));
}

#[test]
fn incref_and_put_with_id_add_references() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store_in(dir.path(), MIB);
    let bytes = data(1, 1000);
    let id = ObjectId::of(&bytes);
    s.put_with_id(id, bytes.clone()).expect("matching id");
    s.incref(&id).expect("incref");
    assert_eq!(s.put(bytes.clone()), id);
    assert_eq!(s.ref_count(&id), Some(3));
    assert_eq!(s.stats().objects, 1);
    assert!(!s.decref(&id));
    assert!(!s.decref(&id));
    assert!(s.decref(&id));
    assert_eq!(s.stats(), StoreStats::default());
}

#[test]
fn put_with_id_rejects_bytes_that_do_not_match() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store_in(dir.path(), MIB);
    let wrong = ObjectId::of(b"something else");
    match s.put_with_id(wrong, Bytes::from_static(b"payload")) {
        Err(Error::Corrupt { id }) => assert_eq!(id, wrong.to_hex()),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(!s.contains(&wrong));
    assert!(!s.contains(&ObjectId::of(b"payload")));
    assert_eq!(s.stats(), StoreStats::default());
}

#[test]
fn spills_to_disk_under_a_small_cap_and_reads_back_exact_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store_in(dir.path(), MIB);
    let objects: Vec<(ObjectId, Bytes)> = (0..10)
        .map(|i| {
            let bytes = data(i, 300 * KIB);
            (s.put(bytes.clone()), bytes)
        })
        .collect();
    let stats = s.stats();
    assert_eq!(stats.objects, 10);
    assert!(stats.spilled_objects >= 7, "{stats:?}");
    assert!(stats.bytes_in_memory <= MIB, "{stats:?}");
    assert_eq!(
        stats.bytes_in_memory + stats.bytes_spilled,
        10 * 300 * KIB as u64
    );
    assert_eq!(files_in(dir.path()).len() as u64, stats.spilled_objects);
    // The oldest went first.
    assert!(s.spill_path(&objects[0].0).is_some());
    assert!(s.spill_path(&objects[9].0).is_none());

    for _round in 0..2 {
        for (id, bytes) in &objects {
            assert_eq!(&s.get(id).expect("get"), bytes);
            let stats = s.stats();
            assert!(stats.bytes_in_memory <= MIB, "{stats:?}");
        }
    }
    let stats = s.stats();
    assert!(stats.restores_total >= 10, "{stats:?}");
    assert_eq!(files_in(dir.path()).len() as u64, stats.spilled_objects);

    for (id, _) in &objects {
        assert!(s.decref(id));
    }
    let stats = s.stats();
    assert_eq!(
        (
            stats.objects,
            stats.bytes_in_memory,
            stats.bytes_spilled,
            stats.spilled_objects
        ),
        (0, 0, 0, 0)
    );
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn least_recently_used_objects_are_spilled_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Low water is 15/16 of the cap: 3000 bytes.
    let s = store_in(dir.path(), 3200);
    let a = s.put(data(1, 1000));
    let b = s.put(data(2, 1000));
    let c = s.put(data(3, 1000));
    assert_eq!(s.stats().spilled_objects, 0);
    s.get(&a).expect("get a");
    let d = s.put(data(4, 1000));
    assert!(s.spill_path(&b).is_some(), "b was the least recently used");
    for id in [a, c, d] {
        assert!(s.spill_path(&id).is_none());
    }
    assert_eq!(s.stats().spilled_objects, 1);
}

#[test]
fn object_larger_than_the_cap_goes_straight_to_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store_in(dir.path(), 64 * KIB as u64);
    let small = s.put(data(1, KIB));
    let big_bytes = data(2, 100 * KIB);
    let big = s.put(big_bytes.clone());
    let path = s.spill_path(&big).expect("on disk");
    assert_eq!(path, dir.path().join(big.to_hex()));
    assert_eq!(fs::read(&path).expect("read"), big_bytes);
    assert!(
        s.spill_path(&small).is_none(),
        "the small one was not evicted for it"
    );
    let stats = s.stats();
    assert_eq!(
        (stats.bytes_in_memory, stats.bytes_spilled),
        (KIB as u64, 100 * KIB as u64)
    );
    // Reading it does not pull it into memory: it can never fit.
    assert_eq!(s.get(&big).expect("get"), big_bytes);
    assert!(s.spill_path(&big).is_some());
    assert_eq!(s.stats().restores_total, 0);
    // No temporary files are left behind.
    assert_eq!(files_in(dir.path()), vec![big.to_hex()]);
    assert!(s.decref(&big));
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn corrupted_spill_file_is_an_error_never_the_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store_in(dir.path(), MIB);
    let bytes = data(9, 10 * KIB);
    let id = s.put(bytes.clone());
    assert!(s.spill_now(&id).expect("spill"));
    assert!(!s.spill_now(&id).expect("already spilled"));
    let path = s.spill_path(&id).expect("spilled");

    let mut on_disk = fs::read(&path).expect("read");
    on_disk[5000] ^= 0x01;
    fs::write(&path, &on_disk).expect("write");
    for _ in 0..2 {
        match s.get(&id) {
            Err(Error::Corrupt { id: hex }) => assert_eq!(hex, id.to_hex()),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
    // A truncated file is corrupt too.
    fs::write(&path, &bytes[..100]).expect("write");
    assert!(matches!(s.get(&id), Err(Error::Corrupt { .. })));

    // Putting the good bytes again does not hide the problem, and the
    // object is freed (file included) with its references.
    assert_eq!(s.put(bytes), id);
    assert!(!s.decref(&id));
    assert!(s.decref(&id));
    assert!(!path.exists());
    assert_eq!(s.stats().spilled_objects, 0);
}

#[test]
fn missing_spill_file_is_object_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store_in(dir.path(), MIB);
    let id = s.put(data(3, 4 * KIB));
    assert!(s.spill_now(&id).expect("spill"));
    fs::remove_file(s.spill_path(&id).expect("spilled")).expect("remove");
    assert!(matches!(s.get(&id), Err(Error::ObjectLost(_))));
    assert!(s.decref(&id));
    assert_eq!(
        s.stats(),
        StoreStats {
            spills_total: 1,
            ..StoreStats::default()
        }
    );
}

#[test]
fn spill_now_and_restore_keep_the_counters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store_in(dir.path(), MIB);
    let bytes = data(4, 2 * KIB);
    let id = s.put(bytes.clone());
    assert!(s.spill_path(&id).is_none());
    assert!(s.spill_now(&id).expect("spill"));
    let stats = s.stats();
    assert_eq!(
        (
            stats.bytes_in_memory,
            stats.bytes_spilled,
            stats.spilled_objects,
            stats.spills_total
        ),
        (0, 2048, 1, 1)
    );
    assert_eq!(s.get(&id).expect("get"), bytes);
    let stats = s.stats();
    assert_eq!(
        (
            stats.bytes_in_memory,
            stats.bytes_spilled,
            stats.spilled_objects,
            stats.restores_total
        ),
        (2048, 0, 0, 1)
    );
    assert!(
        files_in(dir.path()).is_empty(),
        "restored objects give their file up"
    );
    assert!(matches!(
        s.spill_now(&ObjectId::of(b"nope")),
        Err(Error::ObjectLost(_))
    ));
}

#[test]
fn freed_objects_remove_their_spill_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store_in(dir.path(), 100 * KIB as u64);
    let ids: Vec<ObjectId> = (0..20).map(|i| s.put(data(i, 20 * KIB))).collect();
    let spilled: Vec<_> = ids.iter().filter_map(|id| s.spill_path(id)).collect();
    assert!(spilled.len() >= 15, "{}", spilled.len());
    assert!(spilled.iter().all(|p| p.is_file()));
    for id in &ids {
        assert!(s.decref(id));
    }
    assert!(spilled.iter().all(|p| !p.exists()));
    assert!(files_in(dir.path()).is_empty());
    let stats = s.stats();
    assert_eq!(
        (
            stats.objects,
            stats.bytes_in_memory,
            stats.bytes_spilled,
            stats.spilled_objects
        ),
        (0, 0, 0, 0)
    );
}

#[test]
fn given_spill_dir_is_kept_but_emptied_on_drop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spill = dir.path().join("nested").join("spill");
    let s = store_in(&spill, 10 * KIB as u64);
    for i in 0..10 {
        s.put(data(i, 4 * KIB));
    }
    assert!(!files_in(&spill).is_empty());
    drop(s);
    assert!(spill.is_dir());
    assert!(files_in(&spill).is_empty());
}

#[test]
fn long_put_decref_sequence_leaves_nothing_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store_in(dir.path(), 64 * KIB as u64);
    let mut live: Vec<ObjectId> = Vec::new();
    for i in 0..5000u64 {
        let len = 1 + (i as usize * 7919) % (24 * KIB);
        live.push(s.put(data(i % 700, len)));
        if i % 3 == 0 {
            let id = live[(i as usize / 3) % live.len()];
            assert!(s.get(&id).is_ok());
        }
        if live.len() > 16 {
            let id = live.remove(0);
            s.decref(&id);
        }
        let stats = s.stats();
        assert!(stats.bytes_in_memory <= 64 * KIB as u64, "{stats:?}");
        assert!(stats.objects <= 17, "{stats:?}");
    }
    for id in live.drain(..) {
        s.decref(&id);
    }
    let stats = s.stats();
    assert_eq!(
        (
            stats.objects,
            stats.bytes_in_memory,
            stats.bytes_spilled,
            stats.spilled_objects
        ),
        (0, 0, 0, 0)
    );
    assert!(
        stats.spills_total > 0 && stats.restores_total > 0,
        "{stats:?}"
    );
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn concurrent_puts_and_gets_from_threads() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Small enough that the threads spill and restore each other's objects.
    let s = store_in(dir.path(), 256 * KIB as u64);
    const THREADS: u64 = 8;
    const ROUNDS: u64 = 300;
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let s = &s;
            scope.spawn(move || {
                let mut mine = Vec::new();
                for r in 0..ROUNDS {
                    // Shared objects: every thread puts the same bytes.
                    let shared = data(1_000_000 + r % 10, 8 * KIB);
                    let sid = s.put(shared.clone());
                    // Private ones.
                    let own = data(t * 10_000 + r, 1 + (r as usize * 131) % (16 * KIB));
                    let oid = s.put(own.clone());
                    mine.push((oid, own));
                    assert_eq!(s.get(&sid).expect("shared get"), shared);
                    let (id, bytes) = &mine[(r as usize * 7) % mine.len()];
                    assert_eq!(&s.get(id).expect("own get"), bytes);
                    s.decref(&sid);
                    if mine.len() > 20 {
                        let (id, _) = mine.remove(0);
                        assert!(s.decref(&id));
                    }
                }
                for (id, bytes) in &mine {
                    assert_eq!(&s.get(id).expect("final get"), bytes);
                }
                for (id, _) in mine {
                    assert!(s.decref(&id));
                }
            });
        }
    });
    let stats = s.stats();
    assert_eq!(
        (
            stats.objects,
            stats.bytes_in_memory,
            stats.bytes_spilled,
            stats.spilled_objects
        ),
        (0, 0, 0, 0)
    );
    assert!(stats.spills_total > 0, "{stats:?}");
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn shared_behind_an_arc_across_tokio_tasks() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .expect("runtime");
    let store = Arc::new(ObjectStore::new(StoreConfig::default()).expect("store"));
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..100u64 {
                    let bytes = data(i % 50, 64);
                    let id = store.put(bytes.clone());
                    assert_eq!(store.get(&id).expect("get"), bytes);
                    ids.push(id);
                    tokio::task::yield_now().await;
                }
                ids
            }));
        }
        for task in tasks {
            for id in task.await.expect("task") {
                store.decref(&id);
            }
        }
    });
    let stats = store.stats();
    assert_eq!(stats, StoreStats::default());
}
