/// Why an operation of the runtime failed. The variants match the WIT
/// `ferray:runtime/types.error` variant one to one (plus host-only ones).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The guest trapped (a panic, `unreachable`, an out-of-bounds access,
    /// a stack overflow): the message and the guest's backtrace.
    #[error("guest trapped: {0}")]
    Trap(String),
    /// The attempt ran past its wall-clock limit.
    #[error("time limit exceeded: {0}")]
    TimeLimit(String),
    /// The guest tried to grow its memory past its cap.
    #[error("memory limit exceeded: {0}")]
    MemoryLimit(String),
    /// The guest used up the fuel it was given.
    #[error("fuel exhausted: {0}")]
    OutOfFuel(String),
    /// A task failed because a task it depends on failed, or for another
    /// reason that the message gives.
    #[error("task failed: {0}")]
    TaskFailed(String),
    #[error("actor died: {0}")]
    ActorDied(String),
    #[error("cancelled: {0}")]
    Cancelled(String),
    #[error("object lost: {0}")]
    ObjectLost(String),
    #[error("infeasible: {0}")]
    Infeasible(String),
    #[error("timed out")]
    Timeout,
    /// A fault of the system rather than the application: retried within
    /// `max_retries`.
    #[error("system error: {0}")]
    System(String),
    /// The object's bytes do not hash to its id.
    #[error("corrupt object {id}: bytes do not match their id")]
    Corrupt { id: String },
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Whether `max_retries` covers this failure without `retry_exceptions`:
    /// faults of the system, not of the guest.
    pub fn is_system(&self) -> bool {
        matches!(
            self,
            Error::System(_) | Error::ObjectLost(_) | Error::Corrupt { .. }
        )
    }

    /// Whether the failure belongs to the application (retried only with
    /// `retry_exceptions`).
    pub fn is_application(&self) -> bool {
        matches!(
            self,
            Error::Trap(_) | Error::TimeLimit(_) | Error::MemoryLimit(_) | Error::OutOfFuel(_)
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
