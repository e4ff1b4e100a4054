//! The operator's ceilings on what one task or actor may use: a guest may
//! ask for less, never more.

use std::time::Duration;

use crate::{Error, Resources};

/// The most memory, wall-clock time and fuel one task attempt or actor
/// instance may have, set by whoever runs the node (`ferray start`,
/// `ferray run`, `RuntimeBuilder`). `None`: no ceiling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ceilings {
    pub memory: Option<u64>,
    pub timeout: Option<Duration>,
    pub fuel: Option<u64>,
}

impl Ceilings {
    /// Refuse what asks for more than a ceiling (`invalid-argument`).
    pub fn check(
        &self,
        resources: &Resources,
        timeout: Option<Duration>,
        fuel: Option<u64>,
    ) -> Result<(), Error> {
        let over = |what: &str, asked: String, ceiling: String| {
            Err(Error::InvalidArgument(format!(
                "asks for {asked} of {what}, over this node's ceiling of {ceiling}"
            )))
        };
        if let Some(max) = self.memory
            && resources.memory() > max
        {
            return over(
                "memory",
                format!("{} bytes", resources.memory()),
                format!("{max} bytes"),
            );
        }
        if let (Some(max), Some(t)) = (self.timeout, timeout)
            && t > max
        {
            return over("time", format!("{t:?}"), format!("{max:?}"));
        }
        if let (Some(max), Some(f)) = (self.fuel, fuel)
            && f > max
        {
            return over("fuel", f.to_string(), max.to_string());
        }
        Ok(())
    }

    /// A default capped by its ceiling: what a task that asks for nothing gets.
    pub fn cap<T: Ord + Copy>(default: Option<T>, ceiling: Option<T>) -> Option<T> {
        match (default, ceiling) {
            (Some(d), Some(c)) => Some(d.min(c)),
            (d, c) => d.or(c),
        }
    }
}

/// What one job may hold, set by whoever runs the node or the cluster
/// (`--max-job-*`, `RuntimeBuilder::job_caps`). `None`: no cap. Past a cap,
/// the submission, actor or put that would cross it is refused with
/// `invalid-argument`; the job's other work goes on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobCaps {
    /// Tasks and actor calls submitted and not yet finished.
    pub tasks: Option<u64>,
    /// Actors created and not yet dead.
    pub actors: Option<u64>,
    /// Bytes of objects put over the job's life.
    pub put_bytes: Option<u64>,
    /// Bytes of the job's log the head keeps (the oldest lines go first).
    pub log_bytes: Option<u64>,
}

impl JobCaps {
    /// Refuse one more task or actor call while `in_flight` are.
    pub fn check_task(&self, in_flight: u64) -> Result<(), Error> {
        match self.tasks {
            Some(cap) if in_flight >= cap => Err(Error::InvalidArgument(format!(
                "the job has {in_flight} tasks and actor calls in flight, its cap \
                 (`--max-job-tasks`); wait for some to finish"
            ))),
            _ => Ok(()),
        }
    }

    /// Refuse one more actor while `live` are.
    pub fn check_actor(&self, live: u64) -> Result<(), Error> {
        match self.actors {
            Some(cap) if live >= cap => Err(Error::InvalidArgument(format!(
                "the job has {live} live actors, its cap (`--max-job-actors`); kill some first"
            ))),
            _ => Ok(()),
        }
    }

    /// Refuse `more` bytes of puts after `so_far`.
    pub fn check_put(&self, so_far: u64, more: u64) -> Result<(), Error> {
        match self.put_bytes {
            Some(cap) if so_far.saturating_add(more) > cap => Err(Error::InvalidArgument(format!(
                "putting {more} bytes more would take the job past its {cap} bytes of puts \
                 (`--max-job-put-bytes`); it has put {so_far}"
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_caps_refuse_what_crosses_them() {
        let caps = JobCaps {
            tasks: Some(2),
            actors: Some(1),
            put_bytes: Some(100),
            log_bytes: None,
        };
        assert!(caps.check_task(1).is_ok());
        assert!(
            matches!(caps.check_task(2), Err(Error::InvalidArgument(m)) if m.contains("2 tasks"))
        );
        assert!(caps.check_actor(0).is_ok());
        assert!(caps.check_actor(1).is_err());
        assert!(caps.check_put(60, 40).is_ok());
        assert!(caps.check_put(60, 41).is_err());
        let none = JobCaps::default();
        assert!(none.check_task(u64::MAX).is_ok());
        assert!(none.check_actor(u64::MAX).is_ok());
        assert!(none.check_put(u64::MAX, u64::MAX).is_ok());
    }

    #[test]
    fn asking_for_more_than_a_ceiling_is_refused() {
        let c = Ceilings {
            memory: Some(64 << 20),
            timeout: Some(Duration::from_secs(10)),
            fuel: Some(1_000),
        };
        let ok = Resources::default().with_memory(64 << 20);
        assert!(
            c.check(&ok, Some(Duration::from_secs(10)), Some(1_000))
                .is_ok()
        );
        assert!(c.check(&Resources::default(), None, None).is_ok());
        let err = c
            .check(&Resources::default().with_memory(65 << 20), None, None)
            .expect_err("memory");
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains("memory")),
            "{err}"
        );
        let err = c
            .check(&ok, Some(Duration::from_secs(11)), None)
            .expect_err("time");
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains("time")),
            "{err}"
        );
        let err = c.check(&ok, None, Some(1_001)).expect_err("fuel");
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains("fuel")),
            "{err}"
        );
        assert!(
            Ceilings::default()
                .check(&ok, Some(Duration::MAX), Some(u64::MAX))
                .is_ok()
        );
    }

    #[test]
    fn defaults_are_capped() {
        assert_eq!(Ceilings::cap(Some(5), Some(3)), Some(3));
        assert_eq!(Ceilings::cap(Some(2), Some(3)), Some(2));
        assert_eq!(Ceilings::cap(None, Some(3)), Some(3));
        assert_eq!(Ceilings::cap(Some(5), None), Some(5));
        assert_eq!(Ceilings::cap::<u64>(None, None), None);
    }
}
