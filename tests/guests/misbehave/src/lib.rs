//! ferray test guest: exports that loop, hog memory, trap, fail, use WASI, nest tasks, crash
//! actors and round-trip rich WIT types. Built by `ferray-test-fixtures` as `MISBEHAVE`.

use std::cell::Cell;
use std::hint::black_box;

use exports::ferray_tests::misbehave::actors::{Guest as ActorsGuest, GuestTally};
use ferray_sdk::Actor;

wit_bindgen::generate!({ path: "wit", world: "misbehave" });

struct Component;

struct Tally {
    value: Cell<i64>,
    held: std::cell::RefCell<Vec<Vec<u8>>>,
}

impl GuestTally for Tally {
    fn new(start: i64) -> Self {
        Tally {
            value: Cell::new(start),
            held: Default::default(),
        }
    }

    fn incr(&self, by: i64) -> i64 {
        let v = self.value.get() + by;
        self.value.set(v);
        v
    }

    fn crash(&self) -> i64 {
        panic!("tally crashed on purpose at {}", self.value.get())
    }

    fn value(&self) -> i64 {
        self.value.get()
    }

    fn hold(&self, mib: u32) -> u32 {
        // One byte per page is enough to make the memory resident.
        let mut block = vec![0u8; mib as usize * (1 << 20)];
        for page in block.chunks_mut(4096) {
            page[0] = black_box(1);
        }
        let mut held = self.held.borrow_mut();
        held.push(block);
        held.iter().map(|b| (b.len() >> 20) as u32).sum()
    }
}

impl ActorsGuest for Component {
    type Tally = Tally;
}

/// Recursion the optimizer cannot turn into a loop: each frame keeps a buffer alive across the
/// call.
fn recurse(depth: u64) -> u64 {
    let mut frame = [0u8; 256];
    black_box(&mut frame);
    if black_box(true) {
        recurse(depth + 1).wrapping_add(u64::from(frame[0]))
    } else {
        depth
    }
}

impl Guest for Component {
    fn spin() -> u64 {
        let mut i = 0u64;
        loop {
            i = black_box(i.wrapping_add(1));
            if black_box(false) {
                return i;
            }
        }
    }

    fn hog(mib: u32) -> u32 {
        const MIB: usize = 1 << 20;
        let len = mib as usize * MIB;
        let mut block: Vec<u8> = Vec::with_capacity(len);
        block.resize(len, 1);
        // Touch every page again through black_box so none of it is optimized away.
        let mut touched = 0usize;
        for page in block.chunks_mut(4096) {
            page[0] = black_box(page[0]).wrapping_add(1);
            touched += page.len();
        }
        black_box(&block);
        (touched / MIB) as u32
    }

    fn read_file(path: String) -> Result<String, String> {
        std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))
    }

    fn env_var(name: String) -> Option<String> {
        std::env::var(name).ok()
    }

    fn connect(addr: String) -> Result<(), String> {
        std::net::TcpStream::connect(addr.as_str())
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn shout(text: String) -> String {
        println!("{text}");
        eprintln!("{text}");
        text.to_uppercase()
    }

    fn trap(msg: String) -> u32 {
        panic!("{msg}")
    }

    fn fail(msg: String) -> Result<u32, String> {
        Err(msg)
    }

    fn flaky(tally: u64, fails: u32) -> u32 {
        let r = Actor::from_id(tally)
            .call("incr", &(1i64,))
            .expect("submitting tally.incr");
        let count: i64 = ferray_sdk::get(&r).expect("tally.incr failed");
        if count <= i64::from(fails) {
            panic!("flaky failure {count}");
        }
        u32::try_from(count).expect("tally count fits in u32")
    }

    fn echo_bytes(b: Vec<u8>) -> Vec<u8> {
        b
    }

    fn sum_list(xs: Vec<i64>) -> i64 {
        xs.iter().fold(0i64, |acc, x| acc.wrapping_add(*x))
    }

    fn nest(width: u32) -> u64 {
        let refs: Vec<_> = (0..width)
            .map(|i| ferray_sdk::remote("leaf", &(u64::from(i),)))
            .collect();
        let leaves: Vec<u64> = ferray_sdk::get_all(&refs).expect("leaf tasks failed");
        leaves.iter().sum()
    }

    fn wait_some(n: u32, k: u32) -> (u32, u32) {
        let refs: Vec<_> = (0..n)
            .map(|i| ferray_sdk::remote("leaf", &(u64::from(i),)))
            .collect();
        let _: Vec<u64> = ferray_sdk::get_all(&refs).expect("leaf tasks failed");
        let (ready, not_ready) = ferray_sdk::wait(&refs, k as usize, None);
        // Ready ones come first in the order given.
        assert!(ready.iter().copied().eq(0..ready.len()), "{ready:?}");
        (ready.len() as u32, not_ready.len() as u32)
    }

    fn leaf(i: u64) -> u64 {
        i + 1
    }

    fn hold_refs(n: u32) -> u32 {
        let refs: Vec<_> = (0..n).map(|i| ferray_sdk::put(&(i % 1000))).collect();
        let (ready, _) = ferray_sdk::wait(&refs, refs.len(), None);
        ready.len() as u32
    }

    fn stack_overflow(n: u64) -> u64 {
        recurse(n)
    }

    fn echo_types(r: Rec) -> Rec {
        r
    }

    fn slow_square(x: i64, ms: u32) -> i64 {
        let start = std::time::Instant::now();
        let mut spin = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(u64::from(ms)) {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        x * x
    }

    fn fan_out(n: u32, ms: u32) -> Vec<i64> {
        let refs: Vec<_> = (0..n)
            .map(|i| ferray_sdk::remote("slow-square", &(i64::from(i), ms)))
            .collect();
        ferray_sdk::get_all(&refs).expect("slow-square tasks failed")
    }

    fn actor_sum(n: u32, width: u32) -> i64 {
        let tally = Actor::create("tally", &(0i64,)).expect("creating the tally");
        let all: Vec<i64> = (1..=i64::from(n)).collect();
        for wave in all.chunks(width.max(1) as usize) {
            let refs: Vec<_> = wave
                .iter()
                .map(|i| tally.call("incr", &(*i,)).expect("submitting tally.incr"))
                .collect();
            let _: Vec<i64> = ferray_sdk::get_all(&refs).expect("tally.incr failed");
        }
        let value = tally.call("value", &()).expect("submitting tally.value");
        let value: i64 = ferray_sdk::get(&value).expect("tally.value failed");
        let _ = tally.kill();
        value
    }

    fn watched(n: u32, ms: u32) -> i64 {
        let tally = Actor::create("tally", &(0i64,)).expect("creating the tally");
        let mut value = 0;
        for wave in (0..n).collect::<Vec<_>>().chunks(2) {
            let refs: Vec<_> = wave
                .iter()
                .map(|i| ferray_sdk::remote("slow-square", &(i64::from(*i), ms)))
                .collect();
            let squares: Vec<i64> = ferray_sdk::get_all(&refs).expect("slow-square tasks failed");
            for (i, sq) in wave.iter().zip(squares) {
                let r = tally.call("incr", &(1i64,)).expect("submitting tally.incr");
                value = ferray_sdk::get(&r).expect("tally.incr failed");
                println!("task {i} squared to {sq}; {value} of {n} done");
            }
        }
        value
    }

    fn make_bytes(n: u32, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| ((u64::from(i) * 7 + u64::from(seed)) % 251) as u8)
            .collect()
    }

    fn measure(b: Vec<u8>) -> (u32, u64) {
        let sum = b
            .iter()
            .fold(0u64, |acc, x| acc.wrapping_add(u64::from(*x)));
        (b.len() as u32, sum)
    }

    fn kill_range(first: u64, count: u32) -> u32 {
        (first..first + u64::from(count))
            .filter(|id| Actor::from_id(*id).kill().is_ok())
            .count() as u32
    }

    fn poke(actor: u64) -> Result<i64, String> {
        let r = Actor::from_id(actor)
            .call("incr", &(1i64,))
            .map_err(|e| format!("{e:?}"))?;
        ferray_sdk::get(&r).map_err(|e| format!("{e:?}"))
    }
}

export!(Component);
