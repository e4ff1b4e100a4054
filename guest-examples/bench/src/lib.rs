//! ferray example: the tasks and the actor that `ferray microbenchmark` measures, a real
//! Rust guest (std, WASI, the SDK) rather than a hand-written component.
//!
//! `ferray run bench.wasm fan-in 100` prints `700`.

use std::cell::Cell;

use exports::ferray_examples::bench::api::{Guest as ApiGuest, GuestCounter};

wit_bindgen::generate!({ path: "wit", world: "bench" });

struct Component;

struct Counter {
    value: Cell<i64>,
}

impl GuestCounter for Counter {
    fn new(start: i64) -> Self {
        Counter {
            value: Cell::new(start),
        }
    }

    fn small_value(&self) -> u32 {
        7
    }

    fn incr(&self, by: i64) -> i64 {
        let v = self.value.get() + by;
        self.value.set(v);
        v
    }
}

impl ApiGuest for Component {
    type Counter = Counter;
}

impl Guest for Component {
    fn small_value() -> u32 {
        7
    }

    fn fan_in(n: u32) -> u64 {
        let refs: Vec<_> = (0..n)
            .map(|_| ferray_sdk::remote("small-value", &()))
            .collect();
        let values: Vec<u32> = ferray_sdk::get_all(&refs).expect("small-value tasks failed");
        values.iter().map(|v| u64::from(*v)).sum()
    }
}

export!(Component);
