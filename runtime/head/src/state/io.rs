//! What goes into the state machine and what comes out of it. Plain Rust
//! types over `ferray_core`'s: the state knows nothing of the wire, and
//! `wire.rs` converts at the edge.
//!
//! Fields that the edge decodes from the wire (a component id, options,
//! arguments) arrive as `Result`s: the state checks them in the order it
//! checks everything else, so a malformed message is refused with the same
//! error, at the same point, as when the state decoded it itself.

use bytes::Bytes;
use ferray_core::{
    ActorId, ActorOptions, ComponentId, Error, JobId, NodeId, ObjectId, Resources, TaskId,
    TaskOptions,
};

/// An argument as its submitter gives it: bytes, the result of a task, or
/// an object made by `put`.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    Value(Bytes),
    Task(TaskId),
    Object(ObjectId),
}

// ----- in -----

/// A session's first message.
#[derive(Clone, Debug)]
pub struct Hello {
    pub name: String,
    /// A worker offers resources and serves objects; a client does neither.
    pub worker: Option<WorkerHello>,
    /// It runs in the head's own process, so it never outlives the head
    /// (a restarted head does not wait for it).
    pub in_head: bool,
    /// The key under which nodes send its tasks' small results straight to
    /// it (as well as to the head); none: through the head only.
    pub results_key: Option<ResultsKey>,
}

/// A session's key for results straight from nodes (16 random bytes).
pub type ResultsKey = [u8; 16];

#[derive(Clone, Debug)]
pub struct WorkerHello {
    pub resources: Resources,
    /// Where its object server listens.
    pub object_address: String,
}

/// For whom a session sends a request. A client acts for itself (its own
/// job); a worker for a task attempt or an actor the head placed on it, and
/// the request's job is that assignment's: the sender never names a job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Acting {
    #[default]
    Session,
    Task(TaskId),
    Actor(ActorId),
}

/// A task submitted by a session (ids come from the session's range).
#[derive(Clone, Debug)]
pub struct Submit {
    pub task: TaskId,
    pub acting: Acting,
    pub component: Result<ComponentId, Error>,
    pub function: String,
    pub options: Result<TaskOptions, Error>,
    pub args: Result<Vec<Arg>, Error>,
}

#[derive(Clone, Debug)]
pub struct CreateActor {
    pub actor: ActorId,
    pub acting: Acting,
    pub component: Result<ComponentId, Error>,
    pub class: String,
    pub options: Result<ActorOptions, Error>,
    pub args: Result<Vec<Arg>, Error>,
}

#[derive(Clone, Debug)]
pub struct CallActor {
    pub task: TaskId,
    pub acting: Acting,
    pub actor: ActorId,
    pub method: String,
    pub args: Result<Vec<Arg>, Error>,
    /// The caller sent the call straight to the actor's node, where it
    /// believes the actor lives: that node answers it, and the head only
    /// records it (and answers it when the caller asks, `DirectLost`).
    pub direct: Option<ActorAt>,
}

/// Where an actor of a job lives: told to a caller with the answer of a
/// call the head routed, so that its later calls may go straight there.
#[derive(Clone, Debug, PartialEq)]
pub struct ActorAt {
    pub actor: ActorId,
    pub incarnation: u32,
    pub node: NodeId,
    pub address: String,
    pub job: JobId,
}

/// Kill an actor of the caller's job; with `task`, answered on that id.
#[derive(Clone, Debug)]
pub struct KillActor {
    pub actor: ActorId,
    pub acting: Acting,
    pub task: Option<TaskId>,
}

/// An object made by `put`: a worker holds it; a client sends it inline or
/// pushes it to the head (`uploading`).
#[derive(Clone, Debug)]
pub struct Put {
    pub id: ObjectId,
    pub size: u64,
    pub acting: Acting,
    pub inline: Option<Bytes>,
    pub uploading: bool,
}

/// An attempt ended (a task or an actor call).
#[derive(Clone, Debug)]
pub struct Done {
    pub task: TaskId,
    pub attempt: u32,
    pub outcome: Outcome,
    pub stdout: Bytes,
    pub stderr: Bytes,
    /// A driver's result as WAVE text.
    pub wave: String,
    /// The result is a guest's `err(..)`.
    pub err_value: bool,
    /// A direct actor call (its caller's report of it may come later).
    pub direct: bool,
}

#[derive(Clone, Debug)]
pub enum Outcome {
    /// The node keeps the result.
    Made(Made),
    Failed(Error),
    /// A result whose id did not decode.
    BadResult(Error),
    /// Neither a result nor an error.
    Empty,
}

/// A result as the node that made it describes it.
#[derive(Clone, Debug)]
pub struct Made {
    pub id: ObjectId,
    pub size: u64,
    pub inline: Option<Bytes>,
}

/// An actor died on its worker (a crash with no restarts left there).
#[derive(Clone, Debug)]
pub struct ActorDied {
    pub actor: ActorId,
    pub incarnation: u32,
    pub error: Error,
}

/// What a session sends up, after its hello.
#[derive(Clone, Debug)]
pub enum Input {
    Heartbeat,
    /// A heartbeat with the objects the node's store moved to disk, and
    /// read back into memory, since the last one.
    Spills {
        spilled: Vec<ObjectId>,
        restored: Vec<ObjectId>,
    },
    Submit(Submit),
    CreateActor(CreateActor),
    CallActor(CallActor),
    KillActor(KillActor),
    /// Cancel a task of the sender's job.
    Cancel {
        task: TaskId,
        acting: Acting,
    },
    /// A client will not use these tasks' results again (`Runtime::free`).
    Release(Vec<TaskId>),
    Put(Put),
    /// A task waits in get or wait (its CPUs are given back) or resumes.
    Blocked {
        task: TaskId,
        blocked: bool,
    },
    /// An assigned task got its resources on its node.
    Started(TaskId),
    /// What a running task printed so far (its job's live log).
    Output {
        task: TaskId,
        stdout: Bytes,
    },
    Done(Done),
    /// The sender now holds this object (it pulled it).
    Located(ObjectId),
    ActorDied(ActorDied),
    /// Direct calls of the sender whose answers it did not get (its stream
    /// to the actor's node broke): the head answers them; `unsent`, those
    /// that did not run, sent again whole: the head routes them.
    DirectLost {
        tasks: Vec<TaskId>,
        unsent: Vec<CallActor>,
    },
}

/// A job submitted to the head (its driver runs on a node).
#[derive(Clone, Debug)]
pub struct JobRequest {
    pub component: ComponentId,
    pub function: String,
    pub args: Vec<String>,
    /// What the driver holds while it runs (Ray's entrypoint resources).
    pub entrypoint: Resources,
}

// ----- out -----

/// Where an object is: its bytes when small, else the object servers that
/// hold it.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectLoc {
    pub id: ObjectId,
    pub size: u64,
    pub inline: Option<Bytes>,
    pub holders: Vec<String>,
}

/// An argument as a worker receives it.
#[derive(Clone, Debug, PartialEq)]
pub enum ResolvedArg {
    Value(Bytes),
    Object(ObjectLoc),
}

/// Run one attempt of a task (or a job's driver).
#[derive(Clone, Debug)]
pub struct Assign {
    pub task: TaskId,
    pub job: JobId,
    pub attempt: u32,
    pub component: ComponentId,
    pub function: String,
    pub args: Vec<ResolvedArg>,
    pub options: TaskOptions,
    /// A job's driver: its arguments are `wave_args`.
    pub driver: bool,
    pub wave_args: Vec<String>,
    /// The submitter's results key (see [`Hello::results_key`]).
    pub caller_key: Option<ResultsKey>,
}

#[derive(Clone, Debug)]
pub struct StartActor {
    pub actor: ActorId,
    pub job: JobId,
    pub incarnation: u32,
    pub component: ComponentId,
    pub class: String,
    pub args: Vec<ResolvedArg>,
    pub options: ActorOptions,
}

/// Calls of one incarnation carry consecutive `seq` numbers from 0.
#[derive(Clone, Debug)]
pub struct ActorCall {
    pub task: TaskId,
    pub actor: ActorId,
    pub incarnation: u32,
    pub seq: u64,
    pub method: String,
    pub args: Vec<ResolvedArg>,
}

/// A message to a session, or the end of it.
#[derive(Clone, Debug)]
pub enum Effect {
    /// A task of this session finished, or failed for good.
    Resolved {
        task: TaskId,
        result: Result<ObjectLoc, Error>,
    },
    Assign(Assign),
    StartActor(StartActor),
    ActorCall(ActorCall),
    StopActor(ActorId),
    Cancel(TaskId),
    /// The cluster no longer needs these objects.
    Free(Vec<ObjectId>),
    /// The cluster no longer needs the results and puts of these objects
    /// the head has seen from the node, so many of each: a node that made
    /// more since keeps its copy for them.
    FreeSeen(Vec<(ObjectId, u32)>),
    /// What a task of a connected client wrote.
    Output {
        source: String,
        stdout: Bytes,
        stderr: Bytes,
    },
    /// Where an actor lives (to a caller, before a call's answer).
    ActorAt(ActorAt),
    /// Direct calls the head waits for on this node (it answers those it
    /// never got).
    CheckCalls(Vec<TaskId>),
    /// The head drops the session (a silent node): its stream ends.
    Close,
}

/// What the state asks of the edge, in order. The edge drains it after each
/// change made under the lock (the vectors keep their room).
#[derive(Debug, Default)]
pub struct Outbox {
    /// Messages to sessions in the order they were made (per session, the
    /// order they must arrive in).
    pub sent: Vec<(u64, Effect)>,
    /// Objects the head's own store no longer keeps for the cluster.
    pub head_frees: Vec<ObjectId>,
    /// Objects whose answer to `locate` may have changed (a holder came,
    /// or it failed, was lost or freed).
    pub objects: Vec<ObjectId>,
    /// Jobs that logged, progressed or changed state.
    pub jobs: Vec<JobId>,
    /// What the head keeps across a restart changed (the edge writes it
    /// to the head's database).
    pub saves: Vec<super::Save>,
}
