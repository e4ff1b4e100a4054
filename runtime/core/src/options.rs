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
}
