//! ferray example: Monte Carlo pi. The driver submits `batch` tasks and collects them with
//! `wait` as they complete, as `ray.wait(refs, num_returns=1)`; each batch submits nested
//! `sample` tasks and gathers them with `get_all`. Deterministic for given arguments.
//!
//! `ferray run pi.wasm estimate 1000000 8` prints a number close to 3.14159.

use ferray_sdk::ObjectRef;

wit_bindgen::generate!({ path: "wit", world: "pi" });

/// Nested `sample` tasks per `batch`.
const PARTS: u32 = 4;

struct Component;

/// splitmix64: a small, fast, well-mixed PRNG (one u64 of state).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), from the top 53 bits.
    fn next_f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A seed for the `i`-th sub-task of a task seeded with `seed`.
fn child_seed(seed: u64, i: u64) -> u64 {
    SplitMix64(seed ^ i.wrapping_mul(0xD6E8_FEB8_6659_FD93)).next()
}

/// `total` split into `n` shares differing by at most one.
fn share(total: u64, n: u32, i: u32) -> u64 {
    let n = u64::from(n);
    let i = u64::from(i);
    total / n + u64::from(i < total % n)
}

impl Guest for Component {
    fn estimate(samples: u64, tasks: u32) -> f64 {
        assert!(samples > 0, "estimate: samples must be at least 1");
        let tasks = tasks.max(1);
        let mut pending: Vec<ObjectRef> = (0..tasks)
            .map(|t| {
                ferray_sdk::remote(
                    "batch",
                    &(
                        child_seed(0x5EED, u64::from(t)),
                        share(samples, tasks, t),
                        PARTS,
                    ),
                )
            })
            .collect();
        let mut inside = 0u64;
        while !pending.is_empty() {
            let (mut ready, _) = ferray_sdk::wait(&pending, 1, None);
            if ready.is_empty() {
                // Without a timeout the host returns at least one; never spin if it does not.
                ready.push(0);
            }
            // Highest index first, so that removing one leaves the others' indexes valid.
            for &i in ready.iter().rev() {
                let done = pending.remove(i);
                inside += ferray_sdk::get::<u64>(&done).expect("batch task failed");
            }
        }
        4.0 * inside as f64 / samples as f64
    }

    fn batch(seed: u64, samples: u64, parts: u32) -> u64 {
        let parts = parts.max(1);
        let refs: Vec<ObjectRef> = (0..parts)
            .map(|p| {
                ferray_sdk::remote(
                    "sample",
                    &(child_seed(seed, u64::from(p)), share(samples, parts, p)),
                )
            })
            .collect();
        let counts: Vec<u64> = ferray_sdk::get_all(&refs).expect("sample tasks failed");
        counts.iter().sum()
    }

    fn sample(seed: u64, n: u64) -> u64 {
        let mut rng = SplitMix64(seed);
        let mut inside = 0;
        for _ in 0..n {
            let x = rng.next_f64();
            let y = rng.next_f64();
            if x * x + y * y <= 1.0 {
                inside += 1;
            }
        }
        inside
    }
}

export!(Component);
