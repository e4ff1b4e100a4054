//! Write [ferray](https://example.invalid/ferray) guests in Rust: objects, tasks and actors.
//!
//! A ferray guest is a WebAssembly component. Its crate declares its own exports in WIT
//! (`wit/world.wit`) and generates their bindings with `wit_bindgen::generate!`; this crate
//! provides the host calls — the `ferray:runtime` imports — behind a small Rust API modelled on
//! Ray's: [`put`] / [`get`] / [`wait`] for the object store, [`remote`] and [`Task`] to submit
//! tasks, [`Actor`] to create and call actors, [`Options`] for resources and retries.
//!
//! Values cross the host interface in ferray's canonical value encoding, postcard's wire format
//! applied to WIT values in declaration order (see `docs/VALUES.md`): an argument list is encoded
//! as a Rust tuple of the parameters (`&(x,)` for one parameter) and a result decodes into the
//! Rust type matching the function's WIT result (`s64` → `i64`, `list<T>` → `Vec<T>`,
//! `string` → `String`, a record → a `#[derive(Deserialize)]` struct with the same fields in the
//! same order, ...).
//!
//! # Example: squares
//!
//! `wit/world.wit` of the guest crate:
//!
//! ```wit
//! package ferray-examples:squares;
//!
//! world squares {
//!     export heavy-compute: func(x: s64) -> s64;
//!     export run: func(n: u32) -> list<s64>;
//! }
//! ```
//!
//! `src/lib.rs`:
//!
//! ```text
//! wit_bindgen::generate!({ path: "wit", world: "squares" });
//!
//! struct Squares;
//!
//! impl Guest for Squares {
//!     fn heavy_compute(x: i64) -> i64 {
//!         x * x
//!     }
//!
//!     /// Fans out `n` tasks, like `ray.get([heavy_compute.remote(i) for i in range(n)])`.
//!     fn run(n: u32) -> Vec<i64> {
//!         let refs: Vec<_> = (0..n)
//!             .map(|i| ferray_sdk::remote("heavy-compute", &(i64::from(i),)))
//!             .collect();
//!         ferray_sdk::get_all(&refs).expect("heavy-compute tasks")
//!     }
//! }
//!
//! export!(Squares);
//! ```
//!
//! Built with `cargo component build --release` or `cargo build --release --target
//! wasm32-wasip2`, then `ferray run squares.wasm run 10` prints
//! `[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]`.
//!
//! The crate also compiles for the host target (so that a workspace builds as a whole), but its
//! functions can only be called inside a ferray guest.

use core::fmt;
use core::time::Duration;

pub use serde;
use serde::Serialize;
use serde::de::DeserializeOwned;

#[allow(unsafe_code, missing_docs, clippy::all, rust_2018_idioms)]
mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "ferray:runtime/guest",
    });
}

pub mod collective;
#[cfg(feature = "data")]
pub mod data;
pub mod gpu;
pub mod serve;
pub mod train;

use bindings::ferray::runtime::types as wit;
use bindings::ferray::runtime::{actors as wit_actors, objects as wit_objects, tasks as wit_tasks};

/// Convenience result type of this crate, with [`Error`] as the default error.
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// Why a ferray call failed: the host's `ferray:runtime/types.error`, plus [`Error::Decode`] for
/// values that do not decode as the requested Rust type.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// The function, method, actor or component is unknown.
    NotFound(String),
    /// Arguments do not match the callee's signature, or a bad option (also: arguments this SDK
    /// could not encode).
    InvalidArgument(String),
    /// The task failed (trap, time limit, memory limit, fuel, guest-returned error).
    TaskFailed(String),
    /// The actor is dead (killed, or out of restarts).
    ActorDied(String),
    /// The task was cancelled.
    Cancelled(String),
    /// The object is gone and cannot be rebuilt.
    ObjectLost(String),
    /// No node can ever satisfy the resource demand.
    Infeasible(String),
    /// A wait timed out.
    Timeout,
    /// The object's bytes do not decode as the requested type.
    Decode(String),
    /// Anything else.
    Other(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound(m) => write!(f, "not found: {m}"),
            Error::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            Error::TaskFailed(m) => write!(f, "task failed: {m}"),
            Error::ActorDied(m) => write!(f, "actor died: {m}"),
            Error::Cancelled(m) => write!(f, "cancelled: {m}"),
            Error::ObjectLost(m) => write!(f, "object lost: {m}"),
            Error::Infeasible(m) => write!(f, "infeasible: {m}"),
            Error::Timeout => f.write_str("timed out"),
            Error::Decode(m) => write!(f, "cannot decode value: {m}"),
            Error::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<wit::Error> for Error {
    fn from(e: wit::Error) -> Self {
        match e {
            wit::Error::NotFound(m) => Error::NotFound(m),
            wit::Error::InvalidArgument(m) => Error::InvalidArgument(m),
            wit::Error::TaskFailed(m) => Error::TaskFailed(m),
            wit::Error::ActorDied(m) => Error::ActorDied(m),
            wit::Error::Cancelled(m) => Error::Cancelled(m),
            wit::Error::ObjectLost(m) => Error::ObjectLost(m),
            wit::Error::Infeasible(m) => Error::Infeasible(m),
            wit::Error::Timeout => Error::Timeout,
            wit::Error::Other(m) => Error::Other(m),
        }
    }
}

/// A reference to an object in the store: a value [`put`] there, or the pending result of a task
/// or actor call (as Ray's `ObjectRef`). Dropping it releases this guest's hold on the object.
pub struct ObjectRef(wit::ObjectRef);

impl ObjectRef {
    /// The reference's id: `obj-<hex>` for a put, `task-<n>` for a result.
    pub fn id(&self) -> String {
        self.0.id()
    }

    /// The content id (blake3 hex of the value's bytes) once the value is ready, else `None`.
    pub fn content_id(&self) -> Option<String> {
        self.0.content_id()
    }
}

impl fmt::Debug for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ObjectRef").field(&self.0.handle()).finish()
    }
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(value)
        .map_err(|e| Error::InvalidArgument(format!("cannot encode value: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::Decode(e.to_string()))
}

/// Store a value (encoded with postcard) and return a reference to it, as `ray.put`. The
/// reference is ready at once.
///
/// # Panics
///
/// If the value cannot be encoded (postcard refuses only unusual serde types, e.g. sequences of
/// unknown length).
pub fn put<T: Serialize + ?Sized>(value: &T) -> ObjectRef {
    let bytes = encode(value).unwrap_or_else(|e| panic!("ferray_sdk::put: {e}"));
    put_bytes(&bytes)
}

/// Store bytes that are already in the canonical value encoding and return a reference to them.
///
/// The bytes are the value's encoding, so `put_bytes(&postcard::to_allocvec(&x)?)` is `put(&x)`;
/// for a WIT `list<u8>` the encoding is a varint length followed by the raw bytes.
pub fn put_bytes(encoded: &[u8]) -> ObjectRef {
    ObjectRef(wit_objects::put(encoded))
}

/// The value of an object, waiting until it is ready (as `ray.get`), decoded with postcard.
///
/// Fails with the host's error when the task behind the reference failed, and with
/// [`Error::Decode`] when the bytes are not a `T`.
pub fn get<T: DeserializeOwned>(r: &ObjectRef) -> Result<T> {
    decode(&get_bytes(r)?)
}

/// The encoded bytes of an object, waiting until it is ready.
pub fn get_bytes(r: &ObjectRef) -> Result<Vec<u8>> {
    Ok(wit_objects::get(&r.0)?)
}

/// The values of several objects, in order (as `ray.get(list)`); the first failure is returned.
pub fn get_all<T: DeserializeOwned>(refs: &[ObjectRef]) -> Result<Vec<T>> {
    refs.iter().map(get).collect()
}

/// As `ray.wait`: blocks until `num_returns` of `refs` are ready or `timeout` passes (`None`
/// waits as long as needed), and returns the indexes into `refs` of the ready ones and of the
/// others, each in the order given.
///
/// `num_returns` is capped at `refs.len()`.
pub fn wait(
    refs: &[ObjectRef],
    num_returns: usize,
    timeout: Option<Duration>,
) -> (Vec<usize>, Vec<usize>) {
    if refs.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let borrowed: Vec<&wit::ObjectRef> = refs.iter().map(|r| &r.0).collect();
    let num = u32::try_from(num_returns.min(refs.len())).unwrap_or(u32::MAX);
    let ready_raw = wit_objects::wait(&borrowed, num, timeout.map(duration_ms));
    let mut is_ready = vec![false; refs.len()];
    for i in ready_raw {
        if let Some(slot) = is_ready.get_mut(i as usize) {
            *slot = true;
        }
    }
    let mut ready = Vec::new();
    let mut not_ready = Vec::new();
    for (i, r) in is_ready.into_iter().enumerate() {
        if r { ready.push(i) } else { not_ready.push(i) }
    }
    (ready, not_ready)
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Submit a call of an exported function of this component, as `f.remote(*args)`, and return a
/// reference to its pending result at once.
///
/// `args` is a tuple of the function's parameters: `&(x,)` for one, `&(a, b)` for two, `&()` for
/// none.
///
/// # Panics
///
/// If the host refuses the submission (unknown function, arguments that do not match its
/// signature, an infeasible resource demand), like Ray raising at `.remote()`. Use [`Task`] to get
/// that as an [`Error`] instead.
pub fn remote<A: Serialize + ?Sized>(function: &str, args: &A) -> ObjectRef {
    match Task::new(function).args(args).submit() {
        Ok(r) => r,
        Err(e) => panic!("ferray_sdk::remote({function:?}): submission refused: {e}"),
    }
}

/// The blake3 digest (64 hex characters) of the component this code runs in, e.g. to pass to
/// another component that submits tasks back to this one.
pub fn self_digest() -> String {
    wit_tasks::self_digest()
}

/// Cancel the pending or running task behind `r` (as `ray.cancel`); getting it then fails with
/// [`Error::Cancelled`].
pub fn cancel(r: &ObjectRef) -> Result<()> {
    Ok(wit_tasks::cancel(&r.0)?)
}

/// Options of a task or an actor, as Ray's `.options(...)`; every unset option takes the host's
/// default.
///
/// ```no_run
/// use std::time::Duration;
/// use ferray_sdk::Options;
///
/// let opts = Options::new()
///     .num_cpus(0.5)
///     .max_retries(2)
///     .retry_exceptions(true)
///     .timeout(Duration::from_secs(30))
///     .resource("accelerator", 1.0);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// CPUs held while running (Ray's `num_cpus`; default 1 for tasks).
    pub num_cpus: Option<f64>,
    /// GPUs held while running (Ray's `num_gpus`; default 0).
    pub num_gpus: Option<f64>,
    /// Bytes of memory reserved by the scheduler, also the guest's memory cap.
    pub memory: Option<u64>,
    /// Retries after system failures (default 3); for an actor, its restarts (default 0).
    pub max_retries: Option<u32>,
    /// Also retry traps and guest-returned errors (default false).
    pub retry_exceptions: Option<bool>,
    /// Wall-clock limit of one attempt (sent in whole milliseconds).
    pub timeout: Option<Duration>,
    /// Custom resources, as `(name, amount)`.
    pub resources: Vec<(String, f64)>,
}

impl Options {
    /// All defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// CPUs held while running.
    pub fn num_cpus(mut self, n: f64) -> Self {
        self.num_cpus = Some(n);
        self
    }

    /// GPUs held while running.
    pub fn num_gpus(mut self, n: f64) -> Self {
        self.num_gpus = Some(n);
        self
    }

    /// Bytes of memory to reserve; also caps the guest's memory.
    pub fn memory(mut self, bytes: u64) -> Self {
        self.memory = Some(bytes);
        self
    }

    /// Retries after system failures (tasks), or restarts (actors).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = Some(n);
        self
    }

    /// Actor restarts, as Ray's `max_restarts` (the same option as [`Options::max_retries`]).
    pub fn max_restarts(self, n: u32) -> Self {
        self.max_retries(n)
    }

    /// Whether traps and guest-returned errors are retried too.
    pub fn retry_exceptions(mut self, yes: bool) -> Self {
        self.retry_exceptions = Some(yes);
        self
    }

    /// Wall-clock limit of one attempt.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Demand `amount` of the custom resource `name` (added to earlier demands).
    pub fn resource(mut self, name: &str, amount: f64) -> Self {
        self.resources.push((name.to_string(), amount));
        self
    }

    fn to_wit(&self) -> wit::Options {
        wit::Options {
            num_cpus: self.num_cpus,
            num_gpus: self.num_gpus,
            memory: self.memory,
            max_retries: self.max_retries,
            retry_exceptions: self.retry_exceptions,
            timeout_ms: self.timeout.map(duration_ms),
            resources: self
                .resources
                .iter()
                .map(|(name, amount)| wit::ResourceDemand {
                    name: name.clone(),
                    amount: *amount,
                })
                .collect(),
        }
    }
}

/// An argument list under construction: encoded value pieces and object references.
#[derive(Default)]
struct ArgList<'a> {
    pieces: Vec<Piece<'a>>,
    /// The first encoding failure, reported on submission.
    error: Option<Error>,
}

enum Piece<'a> {
    Value(Vec<u8>),
    Object(&'a ObjectRef),
}

impl<'a> ArgList<'a> {
    fn push_bytes(&mut self, bytes: &[u8]) {
        if let Some(Piece::Value(last)) = self.pieces.last_mut() {
            last.extend_from_slice(bytes);
        } else {
            self.pieces.push(Piece::Value(bytes.to_vec()));
        }
    }

    fn push_value<T: Serialize + ?Sized>(&mut self, value: &T) {
        match encode(value) {
            Ok(bytes) => self.push_bytes(&bytes),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
    }

    fn push_ref(&mut self, r: &'a ObjectRef) {
        self.pieces.push(Piece::Object(r));
    }

    fn push_list_of_refs(&mut self, refs: &'a [ObjectRef]) {
        // A list<T> is its varint element count followed by the elements.
        self.push_value(&Count(refs.len()));
        for r in refs {
            self.push_ref(r);
        }
    }

    fn into_wit(self) -> Result<Vec<wit::Arg<'a>>> {
        if let Some(e) = self.error {
            return Err(e);
        }
        Ok(self
            .pieces
            .into_iter()
            .map(|p| match p {
                Piece::Value(bytes) => wit::Arg::Value(bytes),
                Piece::Object(r) => wit::Arg::Object(&r.0),
            })
            .collect())
    }
}

/// Serializes as postcard's varint `usize`, i.e. a list's length prefix.
struct Count(usize);

impl Serialize for Count {
    fn serialize<S: serde::Serializer>(&self, s: S) -> core::result::Result<S::Ok, S::Error> {
        // postcard encodes a `u64` as a varint, the same bytes as a sequence length.
        s.serialize_u64(self.0 as u64)
    }
}

/// The argument methods shared by [`Task`], [`ActorBuilder`] and [`ActorCall`]: each appends
/// to the builder's `args: ArgList<'a>`, in parameter order.
macro_rules! arg_methods {
    () => {
        /// Append one parameter's value.
        pub fn arg<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
            self.args.push_value(value);
            self
        }

        /// Append several parameters, given as a tuple (`&(a, b)`).
        pub fn args<A: Serialize + ?Sized>(mut self, args: &A) -> Self {
            self.args.push_value(args);
            self
        }

        /// Append one parameter whose value is the value of object `r`: a dependency, resolved
        /// by the host before the call runs (as passing an `ObjectRef` to `f.remote`).
        pub fn arg_ref(mut self, r: &'a ObjectRef) -> Self {
            self.args.push_ref(r);
            self
        }

        /// Append one `list<T>` parameter whose elements are the values of `refs`, each a
        /// dependency.
        pub fn arg_list_of_refs(mut self, refs: &'a [ObjectRef]) -> Self {
            self.args.push_list_of_refs(refs);
            self
        }
    };
}

/// A task submission under construction: a function of this component ([`Task::new`]) or of
/// another one ([`Task::of`]), its arguments in parameter order, and its [`Options`].
///
/// ```no_run
/// use ferray_sdk::{Options, Task};
///
/// let data = ferray_sdk::put("some text");
/// let counts = Task::new("count-words")
///     .arg_ref(&data)              // the parameter's value is the object's value
///     .options(Options::new().num_cpus(0.5).max_retries(2))
///     .submit()?;
/// let _n: Vec<(String, u32)> = ferray_sdk::get(&counts)?;
/// # Ok::<(), ferray_sdk::Error>(())
/// ```
pub struct Task<'a> {
    component: Option<String>,
    function: String,
    args: ArgList<'a>,
    options: Options,
}

impl<'a> Task<'a> {
    /// A call of `function`, exported by this component.
    pub fn new(function: &str) -> Self {
        Task {
            component: None,
            function: function.to_string(),
            args: ArgList::default(),
            options: Options::default(),
        }
    }

    /// A call of `function`, exported by the component with digest `component` (64 hex chars, as
    /// [`self_digest`] returns).
    pub fn of(component: &str, function: &str) -> Self {
        Task {
            component: Some(component.to_string()),
            ..Task::new(function)
        }
    }

    arg_methods!();

    /// Set the task's options.
    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// Submit the task; returns a reference to its pending result, or the host's refusal.
    pub fn submit(self) -> Result<ObjectRef> {
        let args = self.args.into_wit()?;
        let r = wit_tasks::submit(
            self.component.as_deref(),
            &self.function,
            &args,
            &self.options.to_wit(),
        )?;
        Ok(ObjectRef(r))
    }
}

/// A handle to an actor: an instance of a resource exported by a component, whose methods run
/// one at a time in submission order. It is just the actor's id, which can be passed to other
/// tasks as a `u64` and turned back into a handle with [`Actor::from_id`]. Dropping the handle
/// does not kill the actor; [`Actor::kill`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Actor {
    id: u64,
}

impl Actor {
    /// Create an actor of this component's exported resource `class` (`interface.resource` or
    /// `resource`, e.g. `"api.counter"` or `"counter"`), with the constructor's arguments as a
    /// tuple.
    pub fn create<A: Serialize + ?Sized>(class: &str, args: &A) -> Result<Actor> {
        Actor::builder(class).args(args).create()
    }

    /// An actor creation with more choices: another component, dependencies, options.
    pub fn builder(class: &str) -> ActorBuilder<'_> {
        ActorBuilder {
            component: None,
            class,
            args: ArgList::default(),
            options: Options::default(),
        }
    }

    /// The handle of an existing actor, e.g. from an id passed as an argument.
    pub fn from_id(id: u64) -> Actor {
        Actor { id }
    }

    /// The actor's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Call a method (its WIT name, e.g. `"incr"`) with its arguments as a tuple; returns a
    /// reference to the pending result at once.
    pub fn call<A: Serialize + ?Sized>(&self, method: &str, args: &A) -> Result<ObjectRef> {
        self.method(method).args(args).submit()
    }

    /// A method call with more choices of arguments (dependencies).
    pub fn method<'a>(&self, method: &'a str) -> ActorCall<'a> {
        ActorCall {
            actor: self.id,
            method,
            args: ArgList::default(),
        }
    }

    /// Kill the actor (as `ray.kill`): its pending calls fail with [`Error::ActorDied`].
    pub fn kill(&self) -> Result<()> {
        Ok(wit_actors::kill(self.id)?)
    }
}

/// An actor creation under construction, from [`Actor::builder`].
pub struct ActorBuilder<'a> {
    component: Option<String>,
    class: &'a str,
    args: ArgList<'a>,
    options: Options,
}

impl<'a> ActorBuilder<'a> {
    /// Create the actor from the component with this digest instead of this component.
    pub fn component(mut self, digest: &str) -> Self {
        self.component = Some(digest.to_string());
        self
    }

    arg_methods!();

    /// Set the actor's options (`max_retries` is its restarts).
    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// Create the actor.
    pub fn create(self) -> Result<Actor> {
        let args = self.args.into_wit()?;
        let id = wit_actors::create(
            self.component.as_deref(),
            self.class,
            &args,
            &self.options.to_wit(),
        )?;
        Ok(Actor { id })
    }
}

/// An actor method call under construction, from [`Actor::method`].
pub struct ActorCall<'a> {
    actor: u64,
    method: &'a str,
    args: ArgList<'a>,
}

impl<'a> ActorCall<'a> {
    arg_methods!();

    /// Submit the call; returns a reference to its pending result.
    pub fn submit(self) -> Result<ObjectRef> {
        let args = self.args.into_wit()?;
        Ok(ObjectRef(wit_actors::call(self.actor, self.method, &args)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_of_refs_prefix_is_a_list_length() {
        for n in [0usize, 1, 127, 128, 300, 70_000] {
            let ours = postcard::to_allocvec(&Count(n)).expect("encode count");
            let list: Vec<()> = vec![(); n];
            let theirs = postcard::to_allocvec(&list).expect("encode list");
            assert_eq!(ours, theirs, "n = {n}");
        }
    }

    #[test]
    fn adjacent_values_merge_into_one_piece() {
        let mut a = ArgList::default();
        a.push_value(&(1i64,));
        a.push_value(&"x");
        assert_eq!(a.pieces.len(), 1);
        match &a.pieces[0] {
            Piece::Value(b) => assert_eq!(b, &postcard::to_allocvec(&(1i64, "x")).expect("encode")),
            Piece::Object(_) => panic!("expected a value piece"),
        }
    }

    #[test]
    fn errors_display() {
        assert_eq!(Error::Timeout.to_string(), "timed out");
        assert_eq!(
            Error::TaskFailed("boom".into()).to_string(),
            "task failed: boom"
        );
    }
}
