//! The object store: put and get of small and large objects, next to blake3.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ferray_store::{ObjectStore, StoreConfig};

fn bench(c: &mut Criterion) {
    let store = ObjectStore::new(StoreConfig::default()).expect("store");
    let mut group = c.benchmark_group("store");
    for size in [8usize, 64 << 10, 16 << 20] {
        let data = Bytes::from((0..size).map(|i| (i * 31) as u8).collect::<Vec<u8>>());
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("blake3", size), &data, |b, d| {
            b.iter(|| blake3::hash(black_box(d)))
        });
        group.bench_with_input(BenchmarkId::new("put_decref", size), &data, |b, d| {
            b.iter(|| {
                let id = store.put(d.clone());
                store.decref(&id);
            })
        });
        let id = store.put(data.clone());
        group.bench_with_input(BenchmarkId::new("get", size), &id, |b, id| {
            b.iter(|| store.get(black_box(id)).expect("get"))
        });
        store.decref(&id);
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
