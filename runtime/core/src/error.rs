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

impl Error {
    /// The variant's name in snake case, as the cluster protocol carries it.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "not_found",
            Error::InvalidArgument(_) => "invalid_argument",
            Error::Trap(_) => "trap",
            Error::TimeLimit(_) => "time_limit",
            Error::MemoryLimit(_) => "memory_limit",
            Error::OutOfFuel(_) => "out_of_fuel",
            Error::TaskFailed(_) => "task_failed",
            Error::ActorDied(_) => "actor_died",
            Error::Cancelled(_) => "cancelled",
            Error::ObjectLost(_) => "object_lost",
            Error::Infeasible(_) => "infeasible",
            Error::Timeout => "timeout",
            Error::System(_) => "system",
            Error::Corrupt { .. } => "corrupt",
            Error::Other(_) => "other",
        }
    }

    /// The message without the variant's prefix (for [`Error::from_kind`]).
    pub fn message(&self) -> String {
        match self {
            Error::NotFound(m)
            | Error::InvalidArgument(m)
            | Error::Trap(m)
            | Error::TimeLimit(m)
            | Error::MemoryLimit(m)
            | Error::OutOfFuel(m)
            | Error::TaskFailed(m)
            | Error::ActorDied(m)
            | Error::Cancelled(m)
            | Error::ObjectLost(m)
            | Error::Infeasible(m)
            | Error::System(m)
            | Error::Other(m) => m.clone(),
            Error::Corrupt { id } => id.clone(),
            Error::Timeout => String::new(),
        }
    }

    /// The error that [`Error::kind`] and [`Error::message`] describe; an
    /// unknown kind (a newer peer) becomes `Other`.
    pub fn from_kind(kind: &str, message: String) -> Error {
        match kind {
            "not_found" => Error::NotFound(message),
            "invalid_argument" => Error::InvalidArgument(message),
            "trap" => Error::Trap(message),
            "time_limit" => Error::TimeLimit(message),
            "memory_limit" => Error::MemoryLimit(message),
            "out_of_fuel" => Error::OutOfFuel(message),
            "task_failed" => Error::TaskFailed(message),
            "actor_died" => Error::ActorDied(message),
            "cancelled" => Error::Cancelled(message),
            "object_lost" => Error::ObjectLost(message),
            "infeasible" => Error::Infeasible(message),
            "timeout" => Error::Timeout,
            "system" => Error::System(message),
            "corrupt" => Error::Corrupt { id: message },
            _ => Error::Other(message),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
