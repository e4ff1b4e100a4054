//! ferray example: `run(n)` fans out `n` `heavy-compute` tasks and gathers their results, like
//! `ray.get([heavy_compute.remote(i) for i in range(n)])`.
//!
//! `ferray run squares.wasm run 10` prints `[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]`.

wit_bindgen::generate!({ path: "wit", world: "squares" });

struct Squares;

impl Guest for Squares {
    fn heavy_compute(x: i64) -> i64 {
        x * x
    }

    fn run(n: u32) -> Vec<i64> {
        let refs: Vec<_> = (0..n)
            .map(|i| ferray_sdk::remote("heavy-compute", &(i64::from(i),)))
            .collect();
        ferray_sdk::get_all(&refs).expect("heavy-compute tasks failed")
    }
}

export!(Squares);
