//! The `head_state` target: the head's state machine driven by events
//! decoded from the bytes, its invariants checked after every step.
//!
//! Sessions (workers with resources, clients) open first; then each step
//! reads an event: heartbeats, time passing (the heartbeat check), tasks
//! submitted by clients and by tasks running on workers (arguments naming
//! values, earlier tasks and objects), actors created, called, killed and
//! crashing, puts and uploads, the ends of what the head assigned (taken
//! from its outbox), cancels, sessions closing, jobs submitted and stopped.
//! Ids come from small pools of what exists, so events mostly hit live
//! tasks, actors and objects, and sometimes are arbitrary.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ferray_core::{
    ActorId, ActorOptions, ComponentId, Error, JobId, NodeId, ObjectId, Resources, Strategy,
    TaskId, TaskOptions,
};
use ferray_head::fuzzing::{
    Acting, ActorAt, ActorDied, Arg, CallActor, CreateActor, Done, Effect, Hello, Input,
    JobRequest, KillActor, Kind, LiveActor, Made, Outcome, Put, Rejoined, RunningAttempt, Saved,
    State, Submit, WorkerHello,
};

use crate::Input as Bytes8;

/// Steps per input, at most.
const MAX_STEPS: usize = 200;
/// Entries kept per pool (the oldest go).
const POOL: usize = 32;
/// A worker silent for this long is declared dead.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy)]
struct Sess {
    session: u64,
    worker: bool,
    open: bool,
}

/// What the head sent a worker to run.
#[derive(Clone, Copy)]
struct Work {
    session: u64,
    task: TaskId,
    attempt: u32,
    call: Option<ActorId>,
}

struct Driver<'a> {
    input: Bytes8<'a>,
    st: State,
    now: Instant,
    comps: [ComponentId; 2],
    sessions: Vec<Sess>,
    /// Per session, the last id of its range handed out.
    next_ids: Vec<(u64, u64)>,
    tasks: Vec<TaskId>,
    actors: Vec<ActorId>,
    /// Actors started on a worker: (session, actor, incarnation).
    hosted: Vec<(u64, ActorId, u32)>,
    objects: Vec<(ObjectId, u64)>,
    jobs: Vec<JobId>,
    work: Vec<Work>,
    /// What the head saved so far, as its database holds it (a restarted
    /// head takes it back).
    saved: Saved,
}

fn push<T>(pool: &mut Vec<T>, x: T) {
    if pool.len() == POOL {
        pool.remove(0);
    }
    pool.push(x);
}

/// The head's state machine fed the events the bytes make; its invariants
/// must hold after every step, and nothing may panic.
pub fn run(data: &[u8]) {
    let now = Instant::now();
    let mut st = State::new("head:1".into());
    let comps = [ComponentId::of(b"component"), ComponentId::of(b"other")];
    st.upload_component(comps[0], Bytes::from_static(b"component"), now);
    let mut d = Driver {
        input: Bytes8::new(data),
        st,
        now,
        comps,
        sessions: Vec::new(),
        next_ids: Vec::new(),
        tasks: Vec::new(),
        actors: Vec::new(),
        hosted: Vec::new(),
        objects: Vec::new(),
        jobs: Vec::new(),
        work: Vec::new(),
        saved: Saved::default(),
    };
    let workers = 1 + d.byte() % 3;
    for _ in 0..workers {
        d.join();
    }
    d.connect();
    d.settle("the opening");
    // `FERRAY_FUZZ_TRACE=1`: each event's name on stderr (to read a
    // crash's story).
    let trace = std::env::var_os("FERRAY_FUZZ_TRACE").is_some();
    let mut step = 0;
    while !d.input.rest().is_empty() && step < MAX_STEPS {
        let what = d.step();
        if trace {
            eprintln!("{step}: {what}");
        }
        d.settle(what);
        step += 1;
    }
}

impl Driver<'_> {
    fn byte(&mut self) -> u8 {
        self.input.byte()
    }

    fn u16(&mut self) -> u16 {
        u16::from(self.byte()) << 8 | u16::from(self.byte())
    }

    /// One of `pool`, or `None` when it is empty.
    fn pick<T: Copy>(&mut self, pool: &[T]) -> Option<T> {
        if pool.is_empty() {
            return None;
        }
        let i = usize::from(self.byte()) % pool.len();
        Some(pool[i])
    }

    fn session(&mut self, worker: Option<bool>) -> Option<u64> {
        let open: Vec<u64> = self
            .sessions
            .iter()
            .filter(|s| s.open && worker.is_none_or(|w| s.worker == w))
            .map(|s| s.session)
            .collect();
        self.pick(&open)
    }

    /// Any session: an open one mostly, else one that closed or never was.
    fn any_session(&mut self) -> u64 {
        match self.byte() % 8 {
            0 => u64::from(self.byte() % 8),
            1 => self.pick(&self.sessions.clone()).map_or(0, |s| s.session),
            _ => self.session(None).unwrap_or(1),
        }
    }

    /// The next id of a session's range (sometimes a used or foreign one).
    fn id(&mut self, session: u64) -> u64 {
        match self.byte() % 16 {
            0 => return (session << 32) | u64::from(self.byte() % 4),
            1 => return u64::from(self.u16()),
            _ => {}
        }
        let n = match self.next_ids.iter_mut().find(|(s, _)| *s == session) {
            Some((_, n)) => n,
            None => {
                self.next_ids.push((session, 0));
                &mut self.next_ids.last_mut().expect("just pushed").1
            }
        };
        *n += 1;
        (session << 32) | *n
    }

    fn task(&mut self) -> TaskId {
        match self.pick(&self.tasks.clone()) {
            Some(t) if !self.byte().is_multiple_of(8) => t,
            _ => TaskId((u64::from(self.byte() % 8) << 32) | u64::from(self.byte() % 8)),
        }
    }

    /// Where a caller believes `actor` lives (often wrong).
    fn actor_at(&mut self, actor: ActorId) -> ActorAt {
        ActorAt {
            actor,
            incarnation: u32::from(self.byte() % 3),
            node: NodeId(u64::from(self.byte() % 6)),
            address: "http://n:1".into(),
            job: JobId(u64::from(self.byte() % 4)),
        }
    }

    fn actor(&mut self) -> ActorId {
        match self.pick(&self.actors.clone()) {
            Some(a) if !self.byte().is_multiple_of(8) => a,
            _ => ActorId((u64::from(self.byte() % 8) << 32) | u64::from(self.byte() % 8)),
        }
    }

    fn object(&mut self) -> ObjectId {
        match self.pick(&self.objects.clone()) {
            Some((o, _)) if !self.byte().is_multiple_of(8) => o,
            _ => ObjectId::of(&[self.byte()]),
        }
    }

    fn component(&mut self) -> Result<ComponentId, Error> {
        match self.byte() % 16 {
            0 => Err(Error::InvalidArgument("bad component".into())),
            1 => Ok(self.comps[1]),
            2 => Ok(ComponentId::of(&[self.byte()])),
            _ => Ok(self.comps[0]),
        }
    }

    fn resources(&mut self, most: u8) -> Resources {
        let cpus = f64::from(self.byte() % (most + 1)) / 2.0;
        let mut r = Resources::cpus(cpus);
        if self.byte().is_multiple_of(4) {
            r = r.with_gpus(f64::from(self.byte() % 3)).unwrap_or_default();
        }
        if self.byte().is_multiple_of(4) {
            r = r.with_memory(u64::from(self.byte()) << 20);
        }
        if self.byte().is_multiple_of(8) {
            r = r
                .with_custom("disk", f64::from(self.byte() % 4))
                .unwrap_or_default();
        }
        r
    }

    fn strategy(&mut self) -> Strategy {
        match self.byte() % 8 {
            0 => Strategy::Spread,
            1 => Strategy::Node {
                node: u64::from(self.byte() % 6),
                soft: self.byte().is_multiple_of(2),
            },
            _ => Strategy::Default,
        }
    }

    fn task_options(&mut self) -> Result<TaskOptions, Error> {
        if self.byte().is_multiple_of(32) {
            return Err(Error::InvalidArgument("bad options".into()));
        }
        Ok(TaskOptions {
            resources: self.resources(6),
            max_retries: u32::from(self.byte() % 4),
            retry_exceptions: self.byte().is_multiple_of(2),
            timeout: None,
            fuel: None,
            strategy: self.strategy(),
        })
    }

    fn actor_options(&mut self) -> Result<ActorOptions, Error> {
        if self.byte().is_multiple_of(32) {
            return Err(Error::InvalidArgument("bad options".into()));
        }
        Ok(ActorOptions {
            resources: self.resources(4),
            max_restarts: u32::from(self.byte() % 3),
            timeout: None,
            fuel: None,
            strategy: self.strategy(),
            // The head passes it on untouched (no byte of the input, so
            // that the saved seeds replay as they did).
            group: None,
        })
    }

    fn args(&mut self) -> Result<Vec<Arg>, Error> {
        let n = self.byte() % 5;
        if n == 4 && self.byte().is_multiple_of(8) {
            return Err(Error::InvalidArgument("bad args".into()));
        }
        Ok((0..n)
            .map(|_| match self.byte() % 3 {
                0 => {
                    let len = usize::from(self.byte() % 8);
                    Arg::Value(Bytes::from(vec![self.byte(); len]))
                }
                1 => Arg::Task(self.task()),
                _ => Arg::Object(self.object()),
            })
            .collect())
    }

    /// Who a session acts for: itself (a client), or a task or actor it
    /// runs (a worker).
    fn acting(&mut self, session: u64) -> Acting {
        match self.byte() % 4 {
            0 => Acting::Session,
            1 => {
                let mine: Vec<ActorId> = self
                    .hosted
                    .iter()
                    .filter(|h| h.0 == session)
                    .map(|h| h.1)
                    .collect();
                match self.pick(&mine) {
                    Some(a) => Acting::Actor(a),
                    None => Acting::Actor(self.actor()),
                }
            }
            _ => {
                let mine: Vec<TaskId> = self
                    .work
                    .iter()
                    .filter(|w| w.session == session)
                    .map(|w| w.task)
                    .collect();
                match self.pick(&mine) {
                    Some(t) => Acting::Task(t),
                    None => Acting::Task(self.task()),
                }
            }
        }
    }

    /// What a session that comes back to a restarted head says it had:
    /// the work and actors the earlier head gave it, with a job from the
    /// pool (right or not), and sometimes an attempt or object that never
    /// was.
    fn report(&mut self, session: u64, work: &[Work], hosted: &[(u64, ActorId, u32)]) -> Rejoined {
        let mut r = Rejoined::default();
        let mine: Vec<Work> = work
            .iter()
            .filter(|w| w.session == session)
            .copied()
            .collect();
        for w in mine {
            let job = self.pick(&self.jobs.clone()).unwrap_or(JobId(1));
            let what = match w.call {
                Some(actor) => Kind::ActorCall {
                    actor,
                    method: "add".into(),
                },
                None if self.byte().is_multiple_of(8) => Kind::Driver {
                    component: self.comps[0],
                    function: "main".into(),
                    wave_args: vec![],
                    resources: self.resources(2),
                },
                None => Kind::Task {
                    component: self.comps[0],
                    function: "f".into(),
                    options: self.task_options().unwrap_or_default(),
                },
            };
            let started = self.byte().is_multiple_of(2);
            let ended = self.byte().is_multiple_of(4);
            let args = self.args().unwrap_or_default();
            r.running.push(RunningAttempt {
                task: w.task,
                job,
                attempt: w.attempt,
                started,
                ended,
                what,
                args,
            });
        }
        if self.byte().is_multiple_of(4) {
            let task = self.task();
            let job = self.pick(&self.jobs.clone()).unwrap_or(JobId(1));
            r.running.push(RunningAttempt {
                task,
                job,
                attempt: 1,
                started: true,
                ended: false,
                what: Kind::Task {
                    component: self.comps[0],
                    function: "f".into(),
                    options: TaskOptions::default(),
                },
                args: vec![],
            });
        }
        let mine: Vec<(ActorId, u32)> = hosted
            .iter()
            .filter(|h| h.0 == session)
            .map(|h| (h.1, h.2))
            .collect();
        for (actor, incarnation) in mine {
            let job = self.pick(&self.jobs.clone()).unwrap_or(JobId(1));
            let options = self.actor_options().unwrap_or_default();
            let args = self.args().unwrap_or_default();
            r.actors.push(LiveActor {
                actor,
                job,
                incarnation,
                component: self.comps[0],
                class: "counter".into(),
                args,
                options,
            });
        }
        for _ in 0..self.byte() % 4 {
            let o = self.object();
            r.objects.push((o, u64::from(self.u16())));
        }
        r
    }

    fn join(&mut self) {
        let resources = self.resources(16);
        let n = self.sessions.len();
        let hello = Hello {
            name: format!("n{n}"),
            worker: Some(WorkerHello {
                resources,
                object_address: format!("http://n{n}:1"),
            }),
            in_head: false,
            results_key: None,
        };
        if let Ok(w) = self.st.open_session(&hello, self.now) {
            self.sessions.push(Sess {
                session: w.session,
                worker: true,
                open: true,
            });
        }
    }

    fn connect(&mut self) {
        let hello = Hello {
            name: "client".into(),
            worker: None,
            in_head: false,
            results_key: Some([7; 16]),
        };
        if let Ok(w) = self.st.open_session(&hello, self.now) {
            self.sessions.push(Sess {
                session: w.session,
                worker: false,
                open: true,
            });
            if let Some(job) = w.job {
                push(&mut self.jobs, job);
            }
        }
    }

    fn close(&mut self, session: u64, why: &str) {
        self.st.close_session(session, why);
        for s in &mut self.sessions {
            if s.session == session {
                s.open = false;
            }
        }
        self.work.retain(|w| w.session != session);
        self.hosted.retain(|h| h.0 != session);
    }

    fn made(&mut self) -> Made {
        let large = self.byte().is_multiple_of(4);
        let bytes = [self.byte(), self.byte() % 4];
        let m = Made {
            id: ObjectId::of(&bytes),
            size: if large { 1 << 20 } else { 2 },
            inline: (!large).then(|| Bytes::copy_from_slice(&bytes)),
        };
        push(&mut self.objects, (m.id, m.size));
        m
    }

    fn outcome(&mut self) -> Outcome {
        match self.byte() % 8 {
            0 => Outcome::Failed(Error::Trap("trapped".into())),
            1 => Outcome::Failed(Error::System("the node failed".into())),
            2 => Outcome::BadResult(Error::InvalidArgument("bad result".into())),
            3 => Outcome::Empty,
            4 => Outcome::Failed(Error::ActorDied("the actor died".into())),
            _ => Outcome::Made(self.made()),
        }
    }

    /// The end of something the head sent a worker (or of an arbitrary
    /// task, from an arbitrary session).
    fn done(&mut self) -> &'static str {
        let (session, task, attempt) = match self.pick(&self.work.clone()) {
            Some(w) if !self.byte().is_multiple_of(8) => {
                if !self.byte().is_multiple_of(4) {
                    self.work
                        .retain(|x| x.task != w.task || x.session != w.session);
                }
                let attempt = if self.byte().is_multiple_of(16) {
                    w.attempt.wrapping_add(1)
                } else {
                    w.attempt
                };
                (w.session, w.task, attempt)
            }
            _ => (self.any_session(), self.task(), u32::from(self.byte() % 3)),
        };
        let outcome = self.outcome();
        let err_value = self.byte().is_multiple_of(8);
        let direct = self.byte().is_multiple_of(4);
        self.st.handle(
            session,
            Input::Done(Done {
                task,
                attempt,
                outcome,
                stdout: Bytes::from_static(b"out\n"),
                stderr: Bytes::new(),
                wave: String::new(),
                err_value,
                direct,
            }),
        );
        "done"
    }

    /// One event; returns its name (for the panic message).
    fn step(&mut self) -> &'static str {
        match self.byte() % 29 {
            0 | 1 => {
                let s = self.any_session();
                self.st.touch(s, self.now);
                self.st.handle(s, Input::Heartbeat);
                "heartbeat"
            }
            2 => {
                // Time passes; the open workers mostly beat in it.
                let gap = Duration::from_millis(u64::from(self.byte()) * 50);
                self.now += gap;
                if !self.byte().is_multiple_of(4) {
                    for s in self.sessions.clone() {
                        if s.open && s.worker && !self.byte().is_multiple_of(8) {
                            self.st.touch(s.session, self.now);
                        }
                    }
                }
                self.st.check_heartbeats(self.now, TIMEOUT);
                "time passes"
            }
            3..=5 => {
                let workers_only = (self.byte().is_multiple_of(3)).then_some(true);
                let Some(s) = self.session(workers_only) else {
                    return "no one submits";
                };
                let task = TaskId(self.id(s));
                let acting = self.acting(s);
                let submit = Submit {
                    task,
                    acting,
                    component: self.component(),
                    function: "f".into(),
                    options: self.task_options(),
                    args: self.args(),
                };
                push(&mut self.tasks, task);
                self.st.handle(s, Input::Submit(submit));
                "submit"
            }
            6 => {
                let s = self.any_session();
                let actor = ActorId(self.id(s));
                let acting = self.acting(s);
                let c = CreateActor {
                    actor,
                    acting,
                    component: self.component(),
                    class: "counter".into(),
                    options: self.actor_options(),
                    args: self.args(),
                };
                push(&mut self.actors, actor);
                self.st.handle(s, Input::CreateActor(c));
                "create actor"
            }
            7 => {
                let s = self.any_session();
                let task = TaskId(self.id(s));
                let acting = self.acting(s);
                let actor = self.actor();
                let direct = self.byte().is_multiple_of(2).then(|| self.actor_at(actor));
                let c = CallActor {
                    task,
                    acting,
                    actor,
                    method: "incr".into(),
                    args: self.args(),
                    direct,
                };
                push(&mut self.tasks, task);
                self.st.handle(s, Input::CallActor(c));
                "call actor"
            }
            8 => {
                let actor = self.actor();
                if self.byte().is_multiple_of(2) {
                    let _ = self.st.kill_actor(actor, "killed");
                } else {
                    let s = self.any_session();
                    let acting = self.acting(s);
                    let task = (self.byte().is_multiple_of(2)).then(|| TaskId(self.id(s)));
                    self.st.handle(
                        s,
                        Input::KillActor(KillActor {
                            actor,
                            acting,
                            task,
                        }),
                    );
                }
                "kill actor"
            }
            9 => {
                let s = self.any_session();
                let acting = self.acting(s);
                let uploading = self.byte().is_multiple_of(4);
                let bytes = vec![self.byte(); usize::from(self.byte() % 4) + 1];
                let id = ObjectId::of(&bytes);
                let size = if uploading {
                    1 << 20
                } else {
                    bytes.len() as u64
                };
                let inline =
                    (!uploading && !self.byte().is_multiple_of(4)).then(|| Bytes::from(bytes));
                push(&mut self.objects, (id, size));
                self.st.handle(
                    s,
                    Input::Put(Put {
                        id,
                        size,
                        acting,
                        inline,
                        uploading,
                    }),
                );
                "put"
            }
            10 => {
                // An upload ends (the bytes reached the head's store).
                let Some((id, size)) = self.pick(&self.objects.clone()) else {
                    return "nothing to push";
                };
                let pin = self.byte().is_multiple_of(4);
                self.st.pushed(id, size, pin);
                "pushed"
            }
            11 => {
                let (session, task) = match self.pick(&self.work.clone()) {
                    Some(w) if !self.byte().is_multiple_of(8) => (w.session, w.task),
                    _ => (self.any_session(), self.task()),
                };
                self.st.handle(session, Input::Started(task));
                "started"
            }
            12..=14 => self.done(),
            15 => {
                let (session, task) = match self.pick(&self.work.clone()) {
                    Some(w) => (w.session, w.task),
                    None => (self.any_session(), self.task()),
                };
                let blocked = self.byte().is_multiple_of(2);
                self.st.handle(session, Input::Blocked { task, blocked });
                "blocked"
            }
            16 => {
                let (session, actor, incarnation) = match self.pick(&self.hosted.clone()) {
                    Some(h) if !self.byte().is_multiple_of(8) => {
                        self.hosted.retain(|x| *x != h);
                        h
                    }
                    _ => (self.any_session(), self.actor(), u32::from(self.byte() % 3)),
                };
                self.st.handle(
                    session,
                    Input::ActorDied(ActorDied {
                        actor,
                        incarnation,
                        error: Error::ActorDied("crashed".into()),
                    }),
                );
                "actor died"
            }
            17 => {
                let s = self.any_session();
                let id = self.object();
                if self.byte().is_multiple_of(2) {
                    self.st.handle(s, Input::Located(id));
                } else {
                    let _ = self.st.locate(id);
                }
                "located"
            }
            18 => {
                let s = self.any_session();
                let task = self.task();
                let acting = self.acting(s);
                self.st.handle(s, Input::Cancel { task, acting });
                "cancel"
            }
            19 => {
                let Some(s) = self.session(None) else {
                    return "no one to close";
                };
                let why = if self.byte().is_multiple_of(2) {
                    "the stream ended"
                } else {
                    "the node died"
                };
                self.close(s, why);
                "close"
            }
            20 => {
                if self.byte().is_multiple_of(2) {
                    self.join();
                    "join"
                } else {
                    self.connect();
                    "connect"
                }
            }
            21 => {
                if self.byte().is_multiple_of(3) {
                    let job = match self.pick(&self.jobs.clone()) {
                        Some(j) if !self.byte().is_multiple_of(8) => j,
                        _ => JobId(u64::from(self.byte() % 8)),
                    };
                    let _ = self.st.stop_job(job);
                    "stop job"
                } else {
                    let component = match self.component() {
                        Ok(c) => c,
                        Err(_) => self.comps[0],
                    };
                    let req = JobRequest {
                        component,
                        function: "main".into(),
                        args: vec!["1".into()],
                        entrypoint: self.resources(4),
                    };
                    if let Ok(job) = self.st.submit_job(req) {
                        push(&mut self.jobs, job);
                    }
                    "submit job"
                }
            }
            22 => {
                let i = usize::from(self.byte() % 2);
                let bytes: &'static [u8] = if i == 0 { b"component" } else { b"other" };
                self.st
                    .upload_component(self.comps[i], Bytes::from_static(bytes), self.now);
                "upload component"
            }
            23 => {
                // A running task's live output, from its node or another.
                let (session, task) = match self.pick(&self.work.clone()) {
                    Some(w) if !self.byte().is_multiple_of(4) => (w.session, w.task),
                    _ => (self.any_session(), self.task()),
                };
                self.st.handle(
                    session,
                    Input::Output {
                        task,
                        stdout: Bytes::from_static(b"a line\n"),
                    },
                );
                "output"
            }
            24 => {
                // A heartbeat naming spilled and restored objects.
                let s = self.any_session();
                let (a, b) = (self.object(), self.object());
                let (spilled, restored) = if self.byte().is_multiple_of(2) {
                    (vec![a], vec![b])
                } else {
                    (vec![a, b], vec![])
                };
                self.st.handle(s, Input::Spills { spilled, restored });
                "spills"
            }
            26 => {
                // The head dies and a new one starts on what it saved:
                // every session is gone (the pools keep the old ids, which
                // the new head must refuse or ignore), workers and a
                // client join it again.
                let mut st = State::new("head:2".into());
                st.restore(self.saved.clone(), self.now);
                self.st = st;
                // Some sessions come back with what they run (and
                // sometimes more, or what never was), the others are gone.
                let old = std::mem::take(&mut self.sessions);
                let mut work = std::mem::take(&mut self.work);
                let mut hosted = std::mem::take(&mut self.hosted);
                for mut s in old {
                    if !s.open || self.byte().is_multiple_of(3) {
                        s.open = false;
                        work.retain(|w| w.session != s.session);
                        hosted.retain(|h| h.0 != s.session);
                        self.sessions.push(s);
                        continue;
                    }
                    let hello = if s.worker {
                        let resources = self.resources(16);
                        Hello {
                            name: "back".into(),
                            worker: Some(WorkerHello {
                                resources,
                                object_address: format!("http://back{}:1", s.session),
                            }),
                            in_head: false,
                            results_key: None,
                        }
                    } else {
                        Hello {
                            name: "back".into(),
                            worker: None,
                            in_head: false,
                            results_key: None,
                        }
                    };
                    s.open = self.st.rejoin_session(s.session, &hello, self.now).is_ok();
                    if !s.open {
                        work.retain(|w| w.session != s.session);
                        hosted.retain(|h| h.0 != s.session);
                    } else if !self.byte().is_multiple_of(8) {
                        // Its report comes now (else never), sometimes
                        // in two parts (or only the first of them).
                        let mut report = self.report(s.session, &work, &hosted);
                        report.more = self.byte().is_multiple_of(4);
                        let more = report.more;
                        self.st.rejoined(s.session, report);
                        if more && !self.byte().is_multiple_of(4) {
                            self.st.rejoined(s.session, Rejoined::default());
                        }
                    }
                    self.sessions.push(s);
                }
                self.work = work;
                self.hosted = hosted;
                for _ in 0..self.byte() % 3 {
                    self.join();
                }
                if self.byte().is_multiple_of(2) {
                    self.connect();
                }
                "the head restarts"
            }
            27 => {
                // A caller lost the answers of direct calls, or sends back
                // calls that did not run.
                let s = self.any_session();
                let tasks = (0..self.byte() % 3).map(|_| self.task()).collect();
                let unsent = (0..self.byte() % 3)
                    .map(|_| {
                        let actor = self.actor();
                        CallActor {
                            task: self.task(),
                            acting: self.acting(s),
                            actor,
                            method: "incr".into(),
                            args: self.args(),
                            direct: None,
                        }
                    })
                    .collect();
                self.st.handle(s, Input::DirectLost { tasks, unsent });
                "direct calls lost"
            }
            28 => {
                // A client will not use these results again (or a session
                // that may not say so).
                let s = self.any_session();
                let tasks = (0..self.byte() % 3).map(|_| self.task()).collect();
                self.st.handle(s, Input::Release(tasks));
                "release"
            }
            _ => {
                // A message from a session that should not send it.
                let s = u64::from(self.byte() % 8);
                match self.byte() % 3 {
                    0 => {
                        let task = self.task();
                        self.st.handle(s, Input::Started(task));
                        "a stray started"
                    }
                    1 => {
                        let id = self.object();
                        self.st.handle(s, Input::Located(id));
                        "a stray located"
                    }
                    _ => {
                        self.st.close_session(s, "unknown");
                        "a stray close"
                    }
                }
            }
        }
    }

    /// After an event, as the edge does after a batch: a placement pass,
    /// the outbox drained (what was sent to workers kept for later events),
    /// and the invariants.
    fn settle(&mut self, what: &str) {
        self.st.pump();
        let out = self.st.outbox();
        let sent = std::mem::take(&mut out.sent);
        out.head_frees.clear();
        out.objects.clear();
        out.jobs.clear();
        for s in std::mem::take(&mut out.saves) {
            self.saved.apply(s);
        }
        for (session, e) in sent {
            match e {
                Effect::Assign(a) => push(
                    &mut self.work,
                    Work {
                        session,
                        task: a.task,
                        attempt: a.attempt,
                        call: None,
                    },
                ),
                Effect::ActorCall(c) => push(
                    &mut self.work,
                    Work {
                        session,
                        task: c.task,
                        attempt: 1,
                        call: Some(c.actor),
                    },
                ),
                Effect::StartActor(s) => push(&mut self.hosted, (session, s.actor, s.incarnation)),
                Effect::StopActor(a) => {
                    self.hosted.retain(|h| h.0 != session || h.1 != a);
                    self.work
                        .retain(|w| w.session != session || w.call != Some(a));
                }
                Effect::Cancel(t) => {
                    if self.byte().is_multiple_of(2) {
                        self.work.retain(|w| w.session != session || w.task != t);
                    }
                }
                Effect::Close => {
                    for s in &mut self.sessions {
                        if s.session == session {
                            s.open = false;
                        }
                    }
                    self.st.close_session(session, "declared dead");
                    self.work.retain(|w| w.session != session);
                    self.hosted.retain(|h| h.0 != session);
                }
                Effect::Resolved { .. }
                | Effect::Free(_)
                | Effect::FreeSeen(_)
                | Effect::Output { .. }
                | Effect::ActorAt(_)
                | Effect::CheckCalls(_) => {}
            }
        }
        if let Err(e) = self.st.check_invariants() {
            panic!("after {what}: {e}");
        }
    }
}
