//! ferray example: the tasks and the actor that `ferray microbenchmark` measures, a real
//! Rust guest (std, WASI, the SDK) rather than a hand-written component.
//!
//! `ferray run bench.wasm fan-in 100` prints `700`; `chain 2000` prints `2000`; `tree 5 4`
//! prints `1365`.

use std::cell::Cell;

use exports::ferray_examples::bench::api::{Guest as ApiGuest, GuestCounter, GuestReducer};
use ferray_sdk::Task;

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

struct Reducer;

impl GuestReducer for Reducer {
    fn new() -> Self {
        Reducer
    }

    fn all_reduce(&self, n: u32, reps: u32) -> Result<f64, String> {
        let mut data = vec![(ferray_sdk::collective::rank() + 1) as f32; n as usize];
        for _ in 0..reps {
            data = ferray_sdk::collective::all_reduced(&data).map_err(|e| e.to_string())?;
        }
        Ok(data.first().copied().map_or(0.0, f64::from))
    }

    fn part(&self, n: u32) -> Vec<f32> {
        vec![(ferray_sdk::collective::rank() + 1) as f32; n as usize]
    }

    fn sum2(&self, a: Vec<f32>, b: Vec<f32>) -> f64 {
        sum(&[a, b])
    }

    fn sum4(&self, a: Vec<f32>, b: Vec<f32>, c: Vec<f32>, d: Vec<f32>) -> f64 {
        sum(&[a, b, c, d])
    }
}

/// The element-wise sum of `lists`; its first number.
fn sum(lists: &[Vec<f32>]) -> f64 {
    let Some((first, rest)) = lists.split_first() else {
        return 0.0;
    };
    let mut out = first.clone();
    for l in rest {
        for (o, x) in out.iter_mut().zip(l) {
            *o += x;
        }
    }
    out.first().copied().map_or(0.0, f64::from)
}

impl ApiGuest for Component {
    type Counter = Counter;
    type Reducer = Reducer;
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

    fn add_one(x: u64) -> u64 {
        x + 1
    }

    fn chain(n: u32) -> u64 {
        if n == 0 {
            return 0;
        }
        let mut last = ferray_sdk::remote("add-one", &(0u64,));
        for _ in 1..n {
            last = Task::new("add-one")
                .arg_ref(&last)
                .submit()
                .expect("add-one submission failed");
        }
        ferray_sdk::get(&last).expect("the chain failed")
    }

    fn tree(depth: u32, width: u32) -> u64 {
        if depth == 0 {
            return 1;
        }
        let children: Vec<_> = (0..width)
            .map(|_| ferray_sdk::remote("tree", &(depth - 1, width)))
            .collect();
        let counts: Vec<u64> = ferray_sdk::get_all(&children).expect("a subtree failed");
        1 + counts.iter().sum::<u64>()
    }
}

export!(Component);
