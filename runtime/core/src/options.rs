use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Resources;

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
}

impl Default for TaskOptions {
    fn default() -> Self {
        Self {
            resources: Resources::cpus(1.0),
            max_retries: 3,
            retry_exceptions: false,
            timeout: None,
            fuel: None,
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
}
