//! A small world for the state machine's tests: the head's state with one
//! uploaded component, worker nodes and client sessions that talk to it
//! through its event API, and the effects they are sent.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use ferray_core::{
    ActorId, ActorOptions, ComponentId, Error, JobId, NodeId, ObjectId, Resources, TaskId,
    TaskOptions,
};

use super::{
    Acting, ActorCall, Arg, Assign, CallActor, CreateActor, Done, Effect, Hello, Input, Made,
    ObjectLoc, Outcome, Put, StartActor, State, Submit, WorkerHello,
};

/// A worker node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Node {
    pub session: u64,
    pub id: NodeId,
}

/// A connected client, and its job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Client {
    pub session: u64,
    pub job: JobId,
}

pub(super) struct World {
    pub st: State,
    pub now: Instant,
    pub comp: ComponentId,
    next_ids: BTreeMap<u64, u64>,
}

/// A task's options with `cpus` and `max_retries`.
pub(super) fn opts(cpus: f64, max_retries: u32) -> TaskOptions {
    TaskOptions {
        resources: Resources::cpus(cpus),
        max_retries,
        ..TaskOptions::default()
    }
}

/// The id of a result made from `bytes`, as a node reports it (inline when
/// small, else by holder: `large` claims 1 MiB).
pub(super) fn made(bytes: &[u8], large: bool) -> Made {
    Made {
        id: ObjectId::of(bytes),
        size: if large { 1 << 20 } else { bytes.len() as u64 },
        inline: (!large).then(|| Bytes::copy_from_slice(bytes)),
    }
}

impl World {
    pub fn new() -> World {
        let mut st = State::new("head:1".into());
        let comp = ComponentId::of(b"component");
        let now = Instant::now();
        st.upload_component(comp, Bytes::from_static(b"component"), now);
        World {
            st,
            now,
            comp,
            next_ids: BTreeMap::new(),
        }
    }

    /// The component is uploaded (again), as a client does before it
    /// submits.
    pub fn upload(&mut self) {
        let comp = self.comp;
        self.st
            .upload_component(comp, Bytes::from_static(b"component"), self.now);
    }

    /// A worker with `cpus` joins.
    pub fn node(&mut self, cpus: f64) -> Node {
        self.node_with(Resources::cpus(cpus))
    }

    pub fn node_with(&mut self, resources: Resources) -> Node {
        let n = self.st.next_node;
        let hello = Hello {
            name: format!("n{n}"),
            worker: Some(WorkerHello {
                resources,
                object_address: address(NodeId(n)),
            }),
            in_head: false,
            results_key: None,
        };
        let w = self
            .st
            .open_session(&hello, self.now)
            .expect("a worker joins");
        self.st.pump();
        Node {
            session: w.session,
            id: w.node.expect("a worker is a node"),
        }
    }

    /// A client connects (its job starts).
    pub fn client(&mut self) -> Client {
        let hello = Hello {
            name: "client".into(),
            worker: None,
            in_head: false,
            results_key: Some(results_key(self.st.next_session)),
        };
        let w = self
            .st
            .open_session(&hello, self.now)
            .expect("a client joins");
        Client {
            session: w.session,
            job: w.job.expect("a client has a job"),
        }
    }

    /// The next id of a session's range.
    pub fn id(&mut self, session: u64) -> u64 {
        let n = self.next_ids.entry(session).or_insert(0);
        *n += 1;
        (session << 32) | *n
    }

    /// A session's message, handled as the edge handles a batch (a pump
    /// follows).
    pub fn send(&mut self, session: u64, input: Input) {
        self.st.handle(session, input);
        self.st.pump();
    }

    pub fn submit(&mut self, c: Client, args: Vec<Arg>, options: TaskOptions) -> TaskId {
        self.submit_as(c.session, Acting::Session, args, options)
    }

    /// A task of `c`'s job running on `n`, for a worker's requests to act
    /// for: it takes no CPU and is not retried, and its assignment and start
    /// are drained here.
    pub fn task_on(&mut self, n: Node, c: Client) -> Acting {
        let options = TaskOptions {
            strategy: ferray_core::Strategy::Node {
                node: n.id.0,
                soft: false,
            },
            ..opts(0.0, 0)
        };
        let t = self.submit(c, vec![], options);
        assert_eq!(self.take().assign(n), (t, 1));
        self.started(n, t);
        self.take();
        Acting::Task(t)
    }

    pub fn submit_as(
        &mut self,
        session: u64,
        acting: Acting,
        args: Vec<Arg>,
        options: TaskOptions,
    ) -> TaskId {
        let task = TaskId(self.id(session));
        let comp = self.comp;
        self.send(
            session,
            Input::Submit(Submit {
                task,
                acting,
                component: Ok(comp),
                function: "f".into(),
                options: Ok(options),
                args: Ok(args),
            }),
        );
        task
    }

    pub fn create_actor(&mut self, c: Client, options: ActorOptions) -> ActorId {
        let actor = ActorId(self.id(c.session));
        let comp = self.comp;
        self.send(
            c.session,
            Input::CreateActor(CreateActor {
                actor,
                acting: Acting::Session,
                component: Ok(comp),
                class: "counter".into(),
                options: Ok(options),
                args: Ok(vec![]),
            }),
        );
        actor
    }

    pub fn call(&mut self, c: Client, actor: ActorId) -> TaskId {
        let task = TaskId(self.id(c.session));
        self.send(
            c.session,
            Input::CallActor(CallActor {
                task,
                acting: Acting::Session,
                actor,
                method: "add".into(),
                args: Ok(vec![]),
                direct: None,
            }),
        );
        task
    }

    pub fn put(&mut self, session: u64, acting: Acting, bytes: &[u8], inline: bool) -> ObjectId {
        let id = ObjectId::of(bytes);
        self.send(
            session,
            Input::Put(Put {
                id,
                size: bytes.len() as u64,
                acting,
                inline: inline.then(|| Bytes::copy_from_slice(bytes)),
                uploading: false,
            }),
        );
        id
    }

    pub fn started(&mut self, n: Node, t: TaskId) {
        self.send(n.session, Input::Started(t));
    }

    pub fn done(&mut self, n: Node, t: TaskId, attempt: u32, outcome: Outcome) {
        self.send(
            n.session,
            Input::Done(Done {
                task: t,
                attempt,
                outcome,
                stdout: Bytes::new(),
                stderr: Bytes::new(),
                wave: String::new(),
                err_value: false,
                direct: false,
            }),
        );
    }

    /// The attempt made `bytes` (see [`made`]).
    pub fn ok(&mut self, n: Node, t: TaskId, attempt: u32, bytes: &[u8], large: bool) -> ObjectId {
        let m = made(bytes, large);
        let id = m.id;
        self.done(n, t, attempt, Outcome::Made(m));
        id
    }

    pub fn fail(&mut self, n: Node, t: TaskId, attempt: u32, e: Error) {
        self.done(n, t, attempt, Outcome::Failed(e));
    }

    /// Start then finish an assigned attempt.
    pub fn run(&mut self, n: Node, t: TaskId, attempt: u32, bytes: &[u8], large: bool) -> ObjectId {
        self.started(n, t);
        self.ok(n, t, attempt, bytes, large)
    }

    /// The node's connection breaks.
    pub fn kill(&mut self, n: Node) {
        self.st.close_session(n.session, "killed");
    }

    /// What was sent since the last look.
    pub fn take(&mut self) -> Sent {
        Sent(std::mem::take(&mut self.st.out.sent))
    }

    /// The CPUs the scheduler sees free on a node.
    pub fn free_cpus(&self, n: Node) -> f64 {
        self.st.sched.free(n.id).map_or(-1.0, |r| r.num_cpus())
    }

    pub fn task_state(&self, t: TaskId) -> Option<&'static str> {
        self.st.tasks.get(&t).map(|t| t.state_name())
    }
}

pub(super) fn address(n: NodeId) -> String {
    format!("{n}:7000")
}

/// The results key of the client with this session.
pub(super) fn results_key(session: u64) -> super::io::ResultsKey {
    [session as u8; 16]
}

/// Effects sent, by kind and session.
#[derive(Debug)]
pub(super) struct Sent(pub Vec<(u64, Effect)>);

impl Sent {
    pub fn to(&self, session: u64) -> impl Iterator<Item = &Effect> {
        self.0
            .iter()
            .filter(move |(s, _)| *s == session)
            .map(|(_, e)| e)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn assigns(&self, n: Node) -> Vec<Assign> {
        self.to(n.session)
            .filter_map(|e| match e {
                Effect::Assign(a) => Some(a.clone()),
                _ => None,
            })
            .collect()
    }

    /// The one assignment sent to `n`: (task, attempt).
    pub fn assign(&self, n: Node) -> (TaskId, u32) {
        let a = self.assigns(n);
        assert_eq!(a.len(), 1, "one assignment to {n:?}: {self:?}");
        (a[0].task, a[0].attempt)
    }

    pub fn starts(&self, n: Node) -> Vec<StartActor> {
        self.to(n.session)
            .filter_map(|e| match e {
                Effect::StartActor(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn calls(&self, n: Node) -> Vec<ActorCall> {
        self.to(n.session)
            .filter_map(|e| match e {
                Effect::ActorCall(c) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn resolved(&self, session: u64) -> Vec<(TaskId, Result<ObjectLoc, Error>)> {
        self.to(session)
            .filter_map(|e| match e {
                Effect::Resolved { task, result } => Some((*task, result.clone())),
                _ => None,
            })
            .collect()
    }

    /// The error the one resolution of `t` carries.
    pub fn error_of(&self, session: u64, t: TaskId) -> Error {
        let r: Vec<_> = self
            .resolved(session)
            .into_iter()
            .filter(|(x, _)| *x == t)
            .collect();
        assert_eq!(r.len(), 1, "one resolution of {t}: {self:?}");
        match &r[0].1 {
            Err(e) => e.clone(),
            Ok(loc) => panic!("{t} resolved with {loc:?}"),
        }
    }

    /// Where the one resolution of `t` says its result is.
    pub fn loc_of(&self, session: u64, t: TaskId) -> ObjectLoc {
        let r: Vec<_> = self
            .resolved(session)
            .into_iter()
            .filter(|(x, _)| *x == t)
            .collect();
        assert_eq!(r.len(), 1, "one resolution of {t}: {self:?}");
        match &r[0].1 {
            Ok(loc) => loc.clone(),
            Err(e) => panic!("{t} failed: {e}"),
        }
    }

    pub fn frees(&self, n: Node) -> Vec<ObjectId> {
        self.to(n.session)
            .flat_map(|e| match e {
                Effect::Free(ids) => ids.clone(),
                Effect::FreeSeen(ids) => ids.iter().map(|(id, _)| *id).collect(),
                _ => vec![],
            })
            .collect()
    }

    pub fn cancels(&self, n: Node) -> Vec<TaskId> {
        self.to(n.session)
            .filter_map(|e| match e {
                Effect::Cancel(t) => Some(*t),
                _ => None,
            })
            .collect()
    }

    pub fn stops(&self, n: Node) -> Vec<ActorId> {
        self.to(n.session)
            .filter_map(|e| match e {
                Effect::StopActor(a) => Some(*a),
                _ => None,
            })
            .collect()
    }

    pub fn closed(&self, session: u64) -> bool {
        self.to(session).any(|e| matches!(e, Effect::Close))
    }
}
