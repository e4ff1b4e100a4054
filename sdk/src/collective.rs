//! Collective communication among the workers of a group, as Ray's `ray.util.collective` and
//! `ray.train`'s context: what a `ferray train` worker uses to learn its place and to all-reduce
//! its gradients.
//!
//! ```no_run
//! use ferray_sdk::collective;
//!
//! fn step(grad: &mut [f32], samples: usize) -> ferray_sdk::Result<()> {
//!     // Every worker sums the same vectors, in the same order.
//!     collective::all_reduce(grad)?;
//!     let total = collective::all_reduce_sum(samples as f64)?;
//!     for g in grad.iter_mut() {
//!         *g /= total as f32;
//!     }
//!     Ok(())
//! }
//! ```
//!
//! An actor that is not part of a group (and any task) is a group of one: rank 0, world size 1,
//! and an all-reduce leaves its data as it is, so the same code runs alone.

use crate::bindings::ferray::runtime::collective as wit;

/// This worker's rank in its group, from 0 (`ray.train.get_context().get_world_rank()`).
pub fn rank() -> u32 {
    wit::rank()
}

/// How many workers its group has (`get_world_size()`).
pub fn world_size() -> u32 {
    wit::world_size()
}

/// Replace `data` by its element-wise sum over every worker of the group. Every worker must call
/// it the same number of times, in the same order, with slices of the same length; it returns
/// once all have. Fails when a worker of the group died or gave another length: the group is
/// then broken, and the worker's call should fail too (`ferray train` restarts the group from its
/// last checkpoint).
pub fn all_reduce(data: &mut [f32]) -> crate::Result<()> {
    let sum = all_reduced(data)?;
    data.copy_from_slice(&sum);
    Ok(())
}

/// [`all_reduce`], the sum as a new vector (one copy of the list fewer, for lists too large to
/// copy needlessly).
pub fn all_reduced(data: &[f32]) -> crate::Result<Vec<f32>> {
    let sum = wit::all_reduce(data)?;
    if sum.len() != data.len() {
        return Err(crate::Error::Other(format!(
            "an all-reduce of {} numbers gave back {}",
            data.len(),
            sum.len()
        )));
    }
    Ok(sum)
}

/// The sum of one number over the group (a count of samples, a loss), through an all-reduce.
/// `f32` precision: exact for counts up to 2^24.
pub fn all_reduce_sum(x: f64) -> crate::Result<f64> {
    let mut v = [x as f32];
    all_reduce(&mut v)?;
    Ok(f64::from(v[0]))
}
