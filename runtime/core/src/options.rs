use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Resources};

/// Options of one task, as Ray's `.options(...)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskOptions {
    /// What the task holds while it runs (default: 1 CPU).
    pub resources: Resources,
    /// Retries after system failures; traps and guest errors only with
    /// `retry_exceptions`. Default 3, as in Ray.
    pub max_retries: u32,
    pub retry_exceptions: bool,
    /// Wall-clock limit of one attempt; `None` is the runtime's default.
    pub timeout: Option<Duration>,
    /// Fuel for one attempt; `None` is the runtime's default.
    pub fuel: Option<u64>,
    /// Where a cluster places the task (the embedded runtime has one node).
    pub strategy: Strategy,
}

/// Placement across a cluster's nodes, as Ray's scheduling strategies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Strategy {
    /// The node that holds most of the arguments' bytes, else the least
    /// loaded node that has the resources free.
    #[default]
    Default,
    /// Spread tasks over the nodes, round robin among those with room.
    Spread,
    /// Only this node; with `soft`, elsewhere when it is gone or too small.
    Node { node: u64, soft: bool },
}

impl Default for TaskOptions {
    fn default() -> Self {
        Self {
            resources: Resources::cpus(1.0),
            max_retries: 3,
            retry_exceptions: false,
            timeout: None,
            fuel: None,
            strategy: Strategy::Default,
        }
    }
}

/// Options of an actor, as Ray's actor `.options(...)`. The default holds
/// nothing (Ray's actors hold 0 CPUs once placed) and never restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActorOptions {
    /// What the actor holds for its whole life (default: nothing, as Ray's
    /// actors hold 0 CPUs once placed).
    pub resources: Resources,
    /// Restarts after a crash (constructor re-run). Default 0, as in Ray.
    pub max_restarts: u32,
    /// Wall-clock limit of one method call.
    pub timeout: Option<Duration>,
    pub fuel: Option<u64>,
    /// Where a cluster places the actor (once; it stays there).
    pub strategy: Strategy,
    /// Its place in a group of workers that all-reduce together (`ferray
    /// train`): what the guest's `collective` imports see. `None`: a group
    /// of one.
    #[serde(default)]
    pub group: Option<GroupMember>,
}

/// An actor's membership of a collective group (Ray's
/// `init_collective_group(world_size, rank, group_name)`): a group is named
/// within its job, and its `world_size` members, ranks `0..world_size`,
/// all-reduce together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    pub group: String,
    pub rank: u32,
    pub world_size: u32,
}

impl GroupMember {
    /// The longest group name.
    pub const MAX_NAME: usize = 256;
    /// The most members of a group.
    pub const MAX_WORLD: u32 = 4096;

    /// A member, checked: a name of 1 to [`Self::MAX_NAME`] bytes, a world
    /// of 1 to [`Self::MAX_WORLD`], and a rank below it.
    pub fn new(group: impl Into<String>, rank: u32, world_size: u32) -> Result<Self, Error> {
        let m = GroupMember {
            group: group.into(),
            rank,
            world_size,
        };
        m.check()?;
        Ok(m)
    }

    pub fn check(&self) -> Result<(), Error> {
        if self.group.is_empty() || self.group.len() > Self::MAX_NAME {
            return Err(Error::InvalidArgument(format!(
                "a group's name must be 1 to {} bytes long",
                Self::MAX_NAME
            )));
        }
        if self.world_size == 0 || self.world_size > Self::MAX_WORLD {
            return Err(Error::InvalidArgument(format!(
                "a group's world size must be 1 to {}, not {}",
                Self::MAX_WORLD,
                self.world_size
            )));
        }
        if self.rank >= self.world_size {
            return Err(Error::InvalidArgument(format!(
                "rank {} is not below the group's world size {}",
                self.rank, self.world_size
            )));
        }
        Ok(())
    }
}

/// One report of a training worker (`ferray:runtime/train.report`, Ray's
/// `train.report(metrics, checkpoint=..)`): its metrics, and a checkpoint
/// when it gives one. The host holds at most one per worker until the run's
/// driver takes it; [`Report::check`] bounds what that holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub metrics: Vec<(String, f64)>,
    pub checkpoint: Option<Vec<u8>>,
}

impl Report {
    /// The most metrics one report has.
    pub const MAX_METRICS: usize = 1024;
    /// The longest metric name.
    pub const MAX_NAME: usize = 256;
    /// The largest checkpoint (128 MiB): it is held by the host until the
    /// driver takes it, and within this a guest's list passes its store's
    /// hostcall fuel.
    pub const MAX_CHECKPOINT: usize = 1 << 27;

    /// Checked: at most [`Self::MAX_METRICS`] metrics, each named by 1 to
    /// [`Self::MAX_NAME`] bytes, and a checkpoint of at most
    /// [`Self::MAX_CHECKPOINT`] bytes.
    pub fn check(&self) -> Result<(), Error> {
        if self.metrics.len() > Self::MAX_METRICS {
            return Err(Error::InvalidArgument(format!(
                "a report has at most {} metrics, not {}",
                Self::MAX_METRICS,
                self.metrics.len()
            )));
        }
        if let Some((name, _)) = self
            .metrics
            .iter()
            .find(|(n, _)| n.is_empty() || n.len() > Self::MAX_NAME)
        {
            return Err(Error::InvalidArgument(format!(
                "a metric's name must be 1 to {} bytes long, not {}",
                Self::MAX_NAME,
                name.len()
            )));
        }
        if let Some(c) = &self.checkpoint
            && c.len() > Self::MAX_CHECKPOINT
        {
            return Err(Error::InvalidArgument(format!(
                "a checkpoint is at most {} bytes, not {}",
                Self::MAX_CHECKPOINT,
                c.len()
            )));
        }
        Ok(())
    }
}

/// How one attempt of a task ended, as the retry policy sees it.
#[derive(Debug, Clone, Copy)]
pub enum AttemptEnd<'a> {
    /// It returned a value that is not an `err(..)`.
    Value,
    /// It returned `err(..)` (a `result` whose error case was taken).
    ErrValue,
    /// It failed.
    Failed(&'a Error),
}

impl TaskOptions {
    /// Ray's retry policy, the one place it is written (the embedded runtime
    /// and the head both ask it): after `attempts` attempts (1 for the first),
    /// the last of which ended as `end`, whether to try again. System faults
    /// are retried within `max_retries`; traps, limits and `err(..)` values
    /// only with `retry_exceptions`.
    pub fn should_retry(&self, attempts: u32, end: AttemptEnd<'_>) -> bool {
        attempts <= self.max_retries
            && match end {
                AttemptEnd::Value => false,
                AttemptEnd::ErrValue => self.retry_exceptions,
                AttemptEnd::Failed(e) => {
                    e.is_system() || (self.retry_exceptions && e.is_application())
                }
            }
    }
}

/// The wait before retry number `retry` (1 for the first): 10 ms, doubling
/// to 640 ms, so that a passing fault of a node can clear first.
pub fn retry_backoff(retry: u32) -> Duration {
    Duration::from_millis(10 << retry.saturating_sub(1).min(6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_bounded() {
        let r = |n: usize, name: &str, ckpt: usize| Report {
            metrics: (0..n).map(|i| (format!("{name}{i}"), 1.0)).collect(),
            checkpoint: Some(vec![0; ckpt]),
        };
        assert!(r(Report::MAX_METRICS, "m", 1 << 10).check().is_ok());
        let e = r(Report::MAX_METRICS + 1, "m", 0).check().unwrap_err();
        assert!(e.to_string().contains("at most 1024 metrics"), "{e}");
        let long = "x".repeat(Report::MAX_NAME);
        let e = r(1, &long, 0).check().unwrap_err();
        assert!(e.to_string().contains("1 to 256 bytes"), "{e}");
        let empty = Report {
            metrics: vec![(String::new(), 0.0)],
            checkpoint: None,
        };
        assert!(empty.check().is_err());
        let e = r(1, "m", Report::MAX_CHECKPOINT + 1).check().unwrap_err();
        assert!(e.to_string().contains("checkpoint is at most"), "{e}");
    }

    #[test]
    fn retry_policy_follows_ray() {
        let o = TaskOptions::default();
        let sys = Error::System("node lost".into());
        let trap = Error::Trap("boom".into());
        assert!(o.should_retry(1, AttemptEnd::Failed(&sys)));
        assert!(o.should_retry(3, AttemptEnd::Failed(&sys)));
        assert!(
            !o.should_retry(4, AttemptEnd::Failed(&sys)),
            "max_retries = 3"
        );
        assert!(!o.should_retry(1, AttemptEnd::Failed(&trap)));
        assert!(!o.should_retry(1, AttemptEnd::ErrValue));
        assert!(!o.should_retry(1, AttemptEnd::Value));
        let o = TaskOptions {
            retry_exceptions: true,
            ..TaskOptions::default()
        };
        assert!(o.should_retry(1, AttemptEnd::Failed(&trap)));
        assert!(o.should_retry(1, AttemptEnd::ErrValue));
        assert!(!o.should_retry(1, AttemptEnd::Value));
        let bad = Error::InvalidArgument("no".into());
        assert!(!o.should_retry(1, AttemptEnd::Failed(&bad)));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(retry_backoff(1), Duration::from_millis(10));
        assert_eq!(retry_backoff(2), Duration::from_millis(20));
        assert_eq!(retry_backoff(7), Duration::from_millis(640));
        assert_eq!(retry_backoff(100), Duration::from_millis(640));
    }
}
