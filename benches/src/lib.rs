//! Criterion benchmarks of ferray: `cargo bench -p ferray-benches`.
//!
//! - `codec`: the canonical value encoding (large `list<u8>`, lists of
//!   integers, records) in both directions.
//! - `store`: object store put/get of small and large objects, next to
//!   blake3 alone.
//!
//! The runtime's end-to-end figures (tasks, actors, put/get per second) come
//! from `ferray microbenchmark`.
