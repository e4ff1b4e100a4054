//! ferray example: an actor — the exported WIT resource `api.counter` — whose state many tasks
//! update through its id, as a Ray actor handle passed to tasks.
//!
//! `ferray run counter.wasm run 10` prints `55`.

use std::cell::Cell;

use exports::ferray_examples::counter::api::{Guest as ApiGuest, GuestCounter};
use ferray_sdk::Actor;

wit_bindgen::generate!({ path: "wit", world: "counter" });

struct Component;

/// The actor's state. Each actor is its own instance, so a `Cell` is enough.
struct Counter {
    value: Cell<i64>,
}

impl GuestCounter for Counter {
    fn new(start: i64) -> Self {
        Counter {
            value: Cell::new(start),
        }
    }

    fn incr(&self, by: i64) -> i64 {
        let v = self.value.get() + by;
        self.value.set(v);
        v
    }

    fn value(&self) -> i64 {
        self.value.get()
    }
}

impl ApiGuest for Component {
    type Counter = Counter;
}

impl Guest for Component {
    fn bump(actor: u64, by: i64) -> i64 {
        let r = Actor::from_id(actor)
            .call("incr", &(by,))
            .expect("submitting counter.incr");
        ferray_sdk::get(&r).expect("counter.incr failed")
    }

    fn run(tasks: u32) -> i64 {
        let counter = Actor::create("api.counter", &(0i64,)).expect("creating the counter actor");
        let bumps: Vec<_> = (0..tasks)
            .map(|i| ferray_sdk::remote("bump", &(counter.id(), i64::from(i) + 1)))
            .collect();
        let _seen: Vec<i64> = ferray_sdk::get_all(&bumps).expect("bump tasks failed");
        let value = counter
            .call("value", &())
            .expect("submitting counter.value");
        let value: i64 = ferray_sdk::get(&value).expect("counter.value failed");
        // The result is in hand; an error here only means the actor is already gone.
        let _ = counter.kill();
        value
    }
}

export!(Component);
