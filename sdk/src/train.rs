//! Reports of a training run, as Ray's `ray.train.report` and `ray.train.get_checkpoint`: what a
//! `ferray train` worker whose `train-loop` method runs the whole loop (Ray's
//! `train_loop_per_worker`) uses to hand its metrics and checkpoints to the run.
//!
//! ```no_run
//! use ferray_sdk::{collective, train};
//!
//! fn train_loop(epochs: u32) -> ferray_sdk::Result<()> {
//!     // Where the run starts: a checkpoint after a failure or on resume.
//!     let mut epoch = match train::checkpoint() {
//!         Some(c) => u32::from_le_bytes(c[..4].try_into().unwrap()),
//!         None => 0,
//!     };
//!     while epoch < epochs {
//!         let mut grad = vec![0.5f32; 8];
//!         collective::all_reduce(&mut grad)?;
//!         epoch += 1;
//!         let loss = 1.0 / f64::from(epoch);
//!         // Metrics every step, and a checkpoint (the state to go on from) every tenth.
//!         let ckpt = (epoch % 10 == 0).then(|| epoch.to_le_bytes().to_vec());
//!         train::report(&[("loss", loss), ("epoch", f64::from(epoch))], ckpt.as_deref())?;
//!     }
//!     Ok(())
//! }
//! ```
//!
//! Every worker of the group reports, as many times: rank 0's metrics make the run's curve and
//! rank 0's checkpoints are the ones kept. A report is a barrier, as Ray's: it returns once the
//! run's driver has taken this report of every worker, so no worker goes past a checkpoint
//! before it is kept. After a failure the whole group is made
//! again and each worker's `train-loop` starts over, with [`checkpoint`] giving the last
//! checkpoint reported; reports after it replace the ones the failed group made past it.

use crate::bindings::ferray::runtime::train as wit;

/// Hand the run this step's metrics (names and numbers) and, when given, a checkpoint: the bytes
/// a restarted worker gets from [`checkpoint`]. Returns once the run's driver has taken this
/// report of every worker of the group.
/// Fails (`InvalidArgument`) outside a training run, with more than 1,024 metrics, a name that is
/// empty or longer than 256 bytes, or a checkpoint over 128 MiB.
pub fn report(metrics: &[(&str, f64)], checkpoint: Option<&[u8]>) -> crate::Result<()> {
    let metrics: Vec<(String, f64)> = metrics.iter().map(|(n, v)| (n.to_string(), *v)).collect();
    Ok(wit::report(&metrics, checkpoint)?)
}

/// The checkpoint this worker's run (re)started from: the last one reported before the group
/// failed, or the one a resumed run found on disk; `None` on a fresh start and outside a run.
pub fn checkpoint() -> Option<Vec<u8>> {
    wit::checkpoint()
}
