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

#[cfg(test)]
mod tests {
    use super::*;

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
