//! ferray example: a trainable for `ferray tune`. Each trial runs gradient
//! descent with momentum on f(w) = (w - 3)^2 from w = 0, so its loss after
//! any iteration follows from its config alone:
//!
//! ```text
//! ferray tune tune_quadratic.wasm --space space.toml --metric loss --mode min \
//!     --scheduler asha --max-t 20 --num-samples 8
//! ```

use std::cell::Cell;

use exports::ferray_examples::tune_quadratic::trainable::{Config, Guest, GuestTrial, Metrics};

wit_bindgen::generate!({ path: "wit", world: "tune-quadratic" });

struct Component;

/// One trial's state.
struct Trial {
    config: Config,
    iteration: Cell<u32>,
    w: Cell<f64>,
    velocity: Cell<f64>,
    restores: Cell<u32>,
    restored: Cell<bool>,
}

impl Trial {
    fn advance(&self) -> Metrics {
        let c = &self.config;
        let grad = 2.0 * (self.w.get() - 3.0);
        let v = c.momentum * self.velocity.get() - c.lr * grad;
        self.velocity.set(v);
        self.w.set(self.w.get() + v);
        self.iteration.set(self.iteration.get() + 1);
        Metrics {
            loss: loss(c, self.w.get()),
            w: self.w.get(),
            restores: self.restores.get(),
        }
    }
}

fn loss(c: &Config, w: f64) -> f64 {
    let width = f64::from(c.width) - 32.0;
    (w - 3.0).powi(2) + width * width / 1000.0
}

impl GuestTrial for Trial {
    fn new(config: Config) -> Self {
        Trial {
            config,
            iteration: Cell::new(0),
            w: Cell::new(0.0),
            velocity: Cell::new(0.0),
            restores: Cell::new(0),
            restored: Cell::new(false),
        }
    }

    fn step(&self) -> Metrics {
        if let Some(at) = self.config.crash_at
            && self.iteration.get() + 1 == at
            && !self.restored.get()
        {
            panic!("crash-at {at}: failing as asked");
        }
        if let Some(ms) = self.config.step_ms {
            std::thread::sleep(std::time::Duration::from_millis(ms.into()));
        }
        self.advance()
    }

    fn save(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24);
        out.extend_from_slice(&self.iteration.get().to_le_bytes());
        out.extend_from_slice(&self.w.get().to_le_bytes());
        out.extend_from_slice(&self.velocity.get().to_le_bytes());
        out.extend_from_slice(&self.restores.get().to_le_bytes());
        out
    }

    fn restore(&self, checkpoint: Vec<u8>) {
        let (Some(it), Some(w), Some(v), Some(r), 24) = (
            checkpoint.get(0..4).and_then(|b| b.try_into().ok()),
            checkpoint.get(4..12).and_then(|b| b.try_into().ok()),
            checkpoint.get(12..20).and_then(|b| b.try_into().ok()),
            checkpoint.get(20..24).and_then(|b| b.try_into().ok()),
            checkpoint.len(),
        ) else {
            panic!("a checkpoint of {} bytes, not 24", checkpoint.len());
        };
        self.iteration.set(u32::from_le_bytes(it));
        self.w.set(f64::from_le_bytes(w));
        self.velocity.set(f64::from_le_bytes(v));
        self.restores.set(u32::from_le_bytes(r) + 1);
        self.restored.set(true);
    }
}

impl Guest for Component {
    type Trial = Trial;

    fn evaluate(config: Config) -> Metrics {
        let t = Trial::new(config);
        let mut m = Metrics {
            loss: loss(&t.config, 0.0),
            w: 0.0,
            restores: 0,
        };
        for _ in 0..20 {
            m = t.advance();
        }
        m
    }
}

export!(Component);
