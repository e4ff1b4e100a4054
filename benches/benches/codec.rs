//! The canonical value codec: WIT values to bytes and back.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ferray_host::codec::{self, Type, Val, Vals};

const TYPES_WAT: &str = r#"
(component
  (type $rec' (record (field "name" string) (field "count" u32) (field "tags" (list string))))
  (export $rec "rec" (type $rec'))
  (core module $m
    (memory (export "memory") 1)
    (func (export "f") (param i32 i32 i32 i32 i32 i32 i32 i32 i32))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) i32.const 0))
  (core instance $i (instantiate $m))
  (func (export "f")
    (param "bytes" (list u8)) (param "ints" (list s64)) (param "rec" $rec)
    (canon lift (core func $i "f") (memory (core memory $i "memory"))
      (realloc (core func $i "realloc"))))
)
"#;

/// The parameter types of `f`, as a node's host sees them.
fn types() -> Vec<Type> {
    use wasmtime::component::types::ComponentItem;
    let engine = wasmtime::Engine::default();
    let comp = wasmtime::component::Component::new(&engine, TYPES_WAT).expect("component");
    let ty = comp.component_type();
    let Some(ComponentItem::ComponentFunc(f)) = ty
        .exports(&engine)
        .find(|(n, _)| *n == "f")
        .map(|(_, e)| e.ty)
    else {
        panic!("the fixture exports `f`");
    };
    f.params().map(|(_, t)| t).collect()
}

fn bench(c: &mut Criterion) {
    let tys = types();
    let (bytes_ty, ints_ty, rec_ty) = (&tys[0], &tys[1], &tys[2]);

    let mut group = c.benchmark_group("list_u8");
    for size in [1usize << 10, 1 << 20, 16 << 20] {
        let val = Val::List((0..size).map(|i| Val::U8(i as u8)).collect());
        let mut encoded = Vec::new();
        codec::encode::<Vals>(&val, bytes_ty, &mut encoded).expect("encode");
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("encode", size), &val, |b, v| {
            b.iter(|| {
                let mut out = Vec::with_capacity(size + 8);
                codec::encode::<Vals>(black_box(v), bytes_ty, &mut out).expect("encode");
                out
            })
        });
        group.bench_with_input(BenchmarkId::new("decode", size), &encoded, |b, e| {
            b.iter(|| {
                codec::decode::<Vals>(bytes_ty, &mut black_box(e.as_slice())).expect("decode")
            })
        });
    }
    group.finish();

    let ints = Val::List(
        (0..100_000i64)
            .map(|i| Val::S64(i * 7919 - 50_000))
            .collect(),
    );
    let mut encoded = Vec::new();
    codec::encode::<Vals>(&ints, ints_ty, &mut encoded).expect("encode");
    let mut group = c.benchmark_group("list_s64_100k");
    group.throughput(Throughput::Elements(100_000));
    group.bench_function("encode", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            codec::encode::<Vals>(black_box(&ints), ints_ty, &mut out).expect("encode");
            out
        })
    });
    group.bench_function("decode", |b| {
        b.iter(|| {
            codec::decode::<Vals>(ints_ty, &mut black_box(encoded.as_slice())).expect("decode")
        })
    });
    group.finish();

    let rec: Val = codec::parse_wave(
        rec_ty,
        r#"{name: "ferray", count: 42, tags: ["a", "bb", "ccc"]}"#,
    )
    .expect("wave");
    let mut encoded = Vec::new();
    codec::encode::<Vals>(&rec, rec_ty, &mut encoded).expect("encode");
    c.bench_function("record/encode", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            codec::encode::<Vals>(black_box(&rec), rec_ty, &mut out).expect("encode");
            out
        })
    });
    c.bench_function("record/decode", |b| {
        b.iter(|| {
            codec::decode::<Vals>(rec_ty, &mut black_box(encoded.as_slice())).expect("decode")
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
