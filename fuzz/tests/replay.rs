//! The fuzz corpus as ordinary tests: every file of `corpus/<target>/` and
//! `regressions/<target>/` goes through its target once, on stable. A
//! target without a corpus is a failure, not a skip.

use std::path::{Path, PathBuf};

use ferray_fuzz::TARGETS;

fn dir(kind: &str, target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(kind)
        .join(target)
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| {
                e.unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                    .path()
            })
            .filter(|p| p.is_file())
            .collect(),
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    files.sort();
    files
}

fn replay(target: &str, f: fn(&[u8]), path: &Path) {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let outcome = std::panic::catch_unwind(|| f(&data));
    assert!(outcome.is_ok(), "{target}: {} panicked", path.display());
}

#[test]
fn every_target_replays_its_corpus() {
    for &(target, f) in TARGETS {
        let corpus = files(&dir("corpus", target));
        assert!(
            !corpus.is_empty(),
            "{target}: no corpus in {}",
            dir("corpus", target).display()
        );
        for path in &corpus {
            replay(target, f, path);
        }
    }
}

#[test]
fn every_crash_found_stays_fixed() {
    for &(target, f) in TARGETS {
        let regressions = dir("regressions", target);
        if !regressions.exists() {
            continue; // no crash found in this target
        }
        for path in files(&regressions) {
            replay(target, f, &path);
        }
    }
}

#[test]
fn the_guest_components_load() {
    // Too large for the checked-in corpus, so replayed from the fixtures.
    for (name, path) in ferray_test_fixtures::all() {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{name}: {path}: {e}"));
        ferray_fuzz::component(&bytes);
        assert!(ferray_codec::ComponentInfo::read(&bytes).is_ok(), "{name}");
    }
}

/// Nothing in `corpus/` but a directory per target.
#[test]
fn the_corpus_names_the_targets() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let entries = std::fs::read_dir(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
            .path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        assert!(
            path.is_dir() && TARGETS.iter().any(|(t, _)| *t == name),
            "{}: not a target's corpus",
            path.display()
        );
    }
}

/// Writes seed inputs for the targets into `$FERRAY_FUZZ_SEEDS/<target>/`
/// (then `cargo xtask fuzz` grows them and `cargo fuzz cmin` keeps the
/// corpus small): `FERRAY_FUZZ_SEEDS=/tmp/seeds cargo test -p ferray-fuzz
/// --test replay -- --ignored write_seeds`.
#[test]
#[ignore = "writes seed files; run by hand"]
fn write_seeds() {
    let Some(out) = std::env::var_os("FERRAY_FUZZ_SEEDS") else {
        panic!("set FERRAY_FUZZ_SEEDS to a directory");
    };
    let out = PathBuf::from(out);
    let write = |target: &str, name: String, data: &[u8]| {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir).expect("seed dir");
        std::fs::write(dir.join(name), data).expect("seed file");
    };
    seeds::values(
        &mut |name, data| write("codec", name, data),
        &mut |name, data| write("wave", name, data),
    );
    for (i, data) in seeds::pulls().into_iter().enumerate() {
        write("pull_frames", format!("seed-{i}"), &data);
    }
    for (i, data) in seeds::components().into_iter().enumerate() {
        write("component", format!("seed-{i}"), &data);
    }
    for (i, data) in seeds::events().into_iter().enumerate() {
        write("head_state", format!("seed-{i}"), &data);
    }
}

mod seeds {
    use bytes::Bytes;
    use ferray_codec::codec::{self, Checked};
    use ferray_core::ObjectId;
    use ferray_fuzz::{Input, gen_type, pull_object};
    use prost::Message;
    use wasm_wave::value::Value;

    /// Codec inputs that decode (types from random bytes, values from
    /// random bytes), and the same values as WAVE text for the WAVE target.
    pub fn values(
        codec_seed: &mut dyn FnMut(String, &[u8]),
        wave_seed: &mut dyn FnMut(String, &[u8]),
    ) {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200_000 {
            let len = (next() % 24) as usize + 1;
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let mut input = Input::new(&data[1..]);
            let ty = gen_type(&mut input);
            let head = &data[1..data.len() - input.rest().len()];
            let Ok(vals) =
                codec::decode_all::<Checked<Value>>(std::slice::from_ref(&ty), input.rest())
            else {
                continue;
            };
            let name = codec::type_name(&ty);
            if !seen.insert(name) || seen.len() > 300 {
                continue;
            }
            let mut c = vec![0u8];
            c.extend_from_slice(&data[1..]);
            codec_seed(format!("seed-{}", seen.len()), &c);
            let text = codec::to_wave(&vals[0]).expect("prints");
            let mut w = head.to_vec();
            w.extend_from_slice(text.as_bytes());
            wave_seed(format!("seed-{}", seen.len()), &w);
        }
    }

    /// Pull streams of the expected objects, in one to three chunks each.
    pub fn pulls() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for which in 0..4u8 {
            let object = pull_object(which).expect("an object");
            let id = ObjectId::of(&object);
            for parts in 1..=3usize {
                let step = object.len().div_ceil(parts).max(1);
                let mut wire = vec![which, 0x34, 0x12];
                let mut offset = 0;
                loop {
                    let end = (offset + step).min(object.len());
                    let chunk = ferray_proto::v1::Chunk {
                        id: Bytes::copy_from_slice(id.as_bytes()),
                        total: object.len() as u64,
                        offset: offset as u64,
                        data: object.slice(offset..end),
                    };
                    wire.push(0);
                    wire.extend_from_slice(&(chunk.encoded_len() as u32).to_be_bytes());
                    chunk.encode(&mut wire).expect("encodes");
                    offset = end;
                    if offset >= object.len() {
                        break;
                    }
                }
                out.push(wire);
            }
        }
        out
    }

    /// Event sequences for the head's state machine: random bytes of a few
    /// lengths (each byte picks an event or one of its parts).
    pub fn events() -> Vec<Vec<u8>> {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        [20usize, 60, 150, 300, 600]
            .iter()
            .cycle()
            .take(40)
            .map(|&len| (0..len).map(|_| next() as u8).collect())
            .collect()
    }

    /// Small components, as binaries and as text.
    pub fn components() -> Vec<Vec<u8>> {
        let texts = [
            "(component)",
            r#"(component
                (core module $m
                    (memory (export "memory") 1)
                    (func (export "f") (param i32 i32 i32 i64) (result i32) i32.const 0)
                    (func (export "realloc") (param i32 i32 i32 i32) (result i32) i32.const 8))
                (core instance $i (instantiate $m))
                (type $r (record (field "name" string) (field "count" u32)))
                (export $re "r" (type $r))
                (type $v (variant (case "a" u8) (case "b")))
                (export $ve "v" (type $v))
                (func (export "f") (param "x" $re) (param "n" s64) (result (result u32 (error $ve)))
                    (canon lift (core func $i "f") (memory (core memory $i "memory"))
                        (realloc (core func $i "realloc")))))"#,
            r#"(component
                (import "ferray:runtime/objects" (instance
                    (export "get" (func (param "x" u64) (result u64)))))
                (core module $m
                    (func (export "g") (param i32) (result i32) local.get 0))
                (core instance $i (instantiate $m))
                (func $g (param "x" u32) (result u32) (canon lift (core func $i "g")))
                (instance $api (export "g" (func $g)))
                (export "my:pkg/api" (instance $api)))"#,
            r#"(component
                (core module $m
                    (func (export "f") (param i32 i32 i32 i32))
                    (func (export "realloc") (param i32 i32 i32 i32) (result i32) i32.const 8)
                    (memory (export "memory") 1))
                (core instance $i (instantiate $m))
                (type $e (enum "red" "green"))
                (export $ee "e" (type $e))
                (type $fl (flags "read" "write"))
                (export $fe "fl" (type $fl))
                (func (export "f") (param "e" $ee) (param "f" $fe) (param "l" (list u8))
                    (canon lift (core func $i "f") (memory (core memory $i "memory"))
                        (realloc (core func $i "realloc")))))"#,
        ];
        let mut out = Vec::new();
        for text in texts {
            let binary = wat::parse_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            ferray_codec::ComponentInfo::read(&binary).unwrap_or_else(|e| panic!("{text}: {e}"));
            out.push(binary);
            out.push(text.as_bytes().to_vec());
        }
        out
    }
}
