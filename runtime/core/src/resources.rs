use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Resource amounts are fixed point with four decimals, as in Ray, so that
/// fractional demands (0.5 GPU) add up exactly.
const UNIT: f64 = 10_000.0;

fn to_units(name: &str, amount: f64) -> Result<u64> {
    if !amount.is_finite() || amount < 0.0 {
        return Err(Error::InvalidArgument(format!(
            "resource `{name}` must be a finite amount >= 0, got {amount}"
        )));
    }
    let units = (amount * UNIT).round();
    if units > u64::MAX as f64 / 2.0 {
        return Err(Error::InvalidArgument(format!(
            "resource `{name}` amount {amount} is too large"
        )));
    }
    Ok(units as u64)
}

/// A demand or a capacity: CPUs, GPUs, memory bytes and custom resources.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    cpus: u64,
    gpus: u64,
    memory: u64,
    custom: BTreeMap<String, u64>,
}

impl Resources {
    pub fn cpus(n: f64) -> Self {
        Self {
            cpus: (n.max(0.0) * UNIT).round() as u64,
            ..Self::default()
        }
    }
    /// Set CPUs (fractional allowed).
    pub fn with_cpus(mut self, n: f64) -> Result<Self> {
        self.cpus = to_units("num_cpus", n)?;
        Ok(self)
    }
    pub fn with_gpus(mut self, n: f64) -> Result<Self> {
        self.gpus = to_units("num_gpus", n)?;
        Ok(self)
    }
    pub fn with_memory(mut self, bytes: u64) -> Self {
        self.memory = bytes;
        self
    }
    pub fn with_custom(mut self, name: &str, amount: f64) -> Result<Self> {
        let units = to_units(name, amount)?;
        if units == 0 {
            self.custom.remove(name);
        } else {
            self.custom.insert(name.to_string(), units);
        }
        Ok(self)
    }
    pub fn num_cpus(&self) -> f64 {
        self.cpus as f64 / UNIT
    }
    pub fn num_gpus(&self) -> f64 {
        self.gpus as f64 / UNIT
    }
    pub fn memory(&self) -> u64 {
        self.memory
    }
    pub fn custom(&self) -> impl Iterator<Item = (&str, f64)> {
        self.custom
            .iter()
            .map(|(k, v)| (k.as_str(), *v as f64 / UNIT))
    }
    /// The same demand without its CPUs (what a blocked task keeps).
    pub fn without_cpus(&self) -> Self {
        Self {
            cpus: 0,
            ..self.clone()
        }
    }
    /// Only the CPUs of this demand.
    pub fn cpus_only(&self) -> Self {
        Self {
            cpus: self.cpus,
            ..Self::default()
        }
    }
    pub fn is_empty(&self) -> bool {
        self.cpus == 0 && self.gpus == 0 && self.memory == 0 && self.custom.is_empty()
    }

    /// Whether `self` (a capacity) can ever hold `demand`.
    pub fn covers(&self, demand: &Resources) -> bool {
        demand.cpus <= self.cpus
            && demand.gpus <= self.gpus
            && demand.memory <= self.memory
            && demand
                .custom
                .iter()
                .all(|(k, v)| self.custom.get(k).is_some_and(|have| have >= v))
    }

    /// The first resource of `demand` that `self` cannot ever hold, for messages.
    pub fn shortfall(&self, demand: &Resources) -> Option<String> {
        if demand.cpus > self.cpus {
            return Some(format!(
                "{} CPUs (the node has {})",
                demand.num_cpus(),
                self.num_cpus()
            ));
        }
        if demand.gpus > self.gpus {
            return Some(format!(
                "{} GPUs (the node has {})",
                demand.num_gpus(),
                self.num_gpus()
            ));
        }
        if demand.memory > self.memory {
            return Some(format!(
                "{} bytes of memory (the node has {})",
                demand.memory, self.memory
            ));
        }
        for (k, v) in &demand.custom {
            let have = self.custom.get(k).copied().unwrap_or(0);
            if *v > have {
                return Some(format!(
                    "{} of resource `{k}` (the node has {})",
                    *v as f64 / UNIT,
                    have as f64 / UNIT
                ));
            }
        }
        None
    }

    fn sub_assign(&mut self, demand: &Resources) {
        self.cpus -= demand.cpus;
        self.gpus -= demand.gpus;
        self.memory -= demand.memory;
        for (k, v) in &demand.custom {
            if let Some(have) = self.custom.get_mut(k) {
                *have -= v;
            }
        }
    }

    fn add_assign(&mut self, demand: &Resources) {
        self.cpus += demand.cpus;
        self.gpus += demand.gpus;
        self.memory += demand.memory;
        for (k, v) in &demand.custom {
            *self.custom.entry(k.clone()).or_insert(0) += v;
        }
    }
}

impl fmt::Debug for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{CPU: {}, GPU: {}, memory: {}",
            self.num_cpus(),
            self.num_gpus(),
            self.memory
        )?;
        for (k, v) in self.custom() {
            write!(f, ", {k}: {v}")?;
        }
        f.write_str("}")
    }
}

/// A node's capacity and what is free of it. No locking: the scheduler
/// owns it.
#[derive(Debug, Clone)]
pub struct ResourceSet {
    total: Resources,
    free: Resources,
}

impl ResourceSet {
    pub fn new(total: Resources) -> Self {
        Self {
            free: total.clone(),
            total,
        }
    }
    pub fn total(&self) -> &Resources {
        &self.total
    }
    pub fn free(&self) -> &Resources {
        &self.free
    }
    /// Take `demand` if it is free now.
    pub fn try_acquire(&mut self, demand: &Resources) -> bool {
        if self.free.covers(demand) {
            self.free.sub_assign(demand);
            true
        } else {
            false
        }
    }
    /// Give back what `try_acquire` took.
    pub fn release(&mut self, demand: &Resources) {
        self.free.add_assign(demand);
        debug_assert!(self.total.covers(&self.free));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractional_demands_add_up_exactly() {
        let mut set = ResourceSet::new(Resources::cpus(1.0).with_gpus(1.0).unwrap());
        let half = Resources::cpus(0.0).with_gpus(0.5).unwrap();
        assert!(set.try_acquire(&half));
        assert!(set.try_acquire(&half));
        assert!(!set.try_acquire(&half));
        set.release(&half);
        assert!(set.try_acquire(&half));
    }

    #[test]
    fn custom_resources_and_shortfall() {
        let cap = Resources::cpus(2.0).with_custom("tpu", 1.0).unwrap();
        let demand = Resources::cpus(1.0).with_custom("tpu", 2.0).unwrap();
        assert!(!cap.covers(&demand));
        assert!(cap.shortfall(&demand).unwrap().contains("tpu"));
        assert!(Resources::cpus(0.0).with_cpus(-1.0).is_err());
    }
}
