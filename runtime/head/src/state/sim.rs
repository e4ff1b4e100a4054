//! A deterministic simulation of the head's state machine: seeded random
//! events from honest simulated nodes and clients (nodes join, die, go
//! silent and are declared dead; tasks are submitted with dependencies on
//! earlier results and objects, run, fail, are retried, rebuilt and
//! cancelled; actors are created, called, crash and are killed; objects are
//! put, uploaded and pulled; jobs end), with the state's invariants checked
//! after every step. Then the chaos stops and the nodes run everything
//! they are given (all that can end must end), and every job is stopped
//! (nothing may be left behind).
//!
//! `FERRAY_SIM_SEED=<n>` replays one seed and `FERRAY_SIM_STEPS=<n>` sets
//! the steps per seed (10,000 by default). Without a seed, a few fixed
//! seeds run, then one from the clock. A failing run prints its seed and
//! its latest events.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use ferray_core::{
    ActorId, ActorOptions, Error, JobId, NodeId, ObjectId, ResourceSet, Resources, Strategy,
    TaskId, TaskOptions,
};

use super::harness::{Client, Node, World, made};
use super::{
    AState, Acting, Arg, CallActor, CreateActor, Done, Effect, HEAD_HOLDER, Input, JobRequest,
    KillActor, Outcome, Put, ResolvedArg, Submit, TState,
};

/// splitmix64: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next() % n as u64) as usize
    }

    /// True `p` times in 100.
    fn pct(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Live,
    /// Hung: sends nothing (no heartbeats); the head will declare it dead.
    Silent,
    /// Declared dead by the head; its late messages still arrive.
    Zombie,
    /// Its connection broke.
    Gone,
}

/// An attempt a node was assigned.
#[derive(Clone, Debug)]
struct Attempt {
    task: TaskId,
    attempt: u32,
    job: JobId,
    demand: Resources,
    driver: bool,
    started: bool,
    blocked: bool,
}

/// An actor a node hosts.
#[derive(Clone, Debug)]
struct Hosted {
    incarnation: u32,
    demand: Resources,
    /// Its node's admission granted its resources.
    leased: bool,
    next_seq: u64,
}

/// A worker as the head sees it: it runs only what it was sent, in its own
/// admission, and reports in order on its one session.
struct SimNode {
    node: Node,
    free: ResourceSet,
    life: Life,
    attempts: Vec<Attempt>,
    actors: BTreeMap<ActorId, Hosted>,
    /// Calls received and not answered, in arrival order.
    calls: Vec<(TaskId, ActorId)>,
    /// What it holds, with how many results and puts of each it made (as
    /// a worker's session counts them).
    holds: BTreeMap<ObjectId, u32>,
    /// Messages sent and not yet handled by the head, in order.
    outbox: VecDeque<Input>,
}

impl SimNode {
    fn sends(&self) -> bool {
        matches!(self.life, Life::Live | Life::Zombie)
    }
    fn connected(&self) -> bool {
        matches!(self.life, Life::Live | Life::Silent)
    }
    fn done(&mut self, task: TaskId, attempt: u32, outcome: Outcome) {
        self.outbox.push_back(Input::Done(Done {
            task,
            attempt,
            outcome,
            stdout: Bytes::new(),
            stderr: Bytes::new(),
            wave: String::new(),
            err_value: false,
            direct: false,
        }));
    }
    /// What an attempt that ends gives back to the node's admission.
    fn end(&mut self, a: &Attempt) {
        if a.started {
            if a.blocked {
                self.free.release(&a.demand.without_cpus());
            } else {
                self.free.release(&a.demand);
            }
        }
    }
    /// Pending actor leases first (FIFO), then tasks: the first that fits.
    fn admit(&mut self) -> Option<usize> {
        for h in self.actors.values_mut() {
            if !h.leased {
                if self.free.try_acquire(&h.demand) {
                    h.leased = true;
                }
                return None;
            }
        }
        let i = self
            .attempts
            .iter()
            .position(|a| !a.started && self.free.free().covers(&a.demand))?;
        let a = &mut self.attempts[i];
        if !self.free.try_acquire(&a.demand) {
            return None;
        }
        a.started = true;
        Some(i)
    }
}

struct SimClient {
    client: Client,
    open: bool,
    /// Its job was stopped: it stays connected but does nothing more.
    stopped: bool,
    tasks: Vec<TaskId>,
    actors: Vec<ActorId>,
    uploads: Vec<ObjectId>,
}

struct Sim {
    w: World,
    rng: Rng,
    step: usize,
    nodes: Vec<SimNode>,
    node_at: BTreeMap<u64, usize>,
    clients: Vec<SimClient>,
    client_at: BTreeMap<u64, usize>,
    drivers: Vec<JobId>,
    /// Resolutions each submission got, by its submitting session.
    resolutions: BTreeMap<(u64, TaskId), u32>,
    tasks: Vec<TaskId>,
    job_tasks: BTreeMap<JobId, Vec<TaskId>>,
    objects: Vec<ObjectId>,
    job_objects: BTreeMap<JobId, Vec<ObjectId>>,
    /// Tasks whose results their submitters have.
    made: BTreeSet<TaskId>,
    /// The latest events, for a failure's report.
    trail: VecDeque<String>,
    /// What happened, by kind, for the run's summary.
    stats: BTreeMap<&'static str, u64>,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_random_cluster_keeps_the_invariants() {
    let steps = env_u64("FERRAY_SIM_STEPS").map_or(10_000, |s| s as usize);
    let seeds: Vec<u64> = match env_u64("FERRAY_SIM_SEED") {
        Some(s) => vec![s],
        None => {
            let clock = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            vec![1, 2, 3, clock]
        }
    };
    for seed in seeds {
        let started = std::time::Instant::now();
        let report = Report(seed);
        let stats = Sim::new(seed).run(steps);
        std::mem::forget(report);
        eprintln!(
            "simulation seed {seed}: {steps} steps in {:.1?} ({stats})",
            started.elapsed()
        );
    }
}

/// Prints the seed when a run panics.
struct Report(u64);

impl Drop for Report {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "the simulation failed with seed {0}; replay it with FERRAY_SIM_SEED={0}",
                self.0
            );
        }
    }
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut w = World::new();
        // Short enough that dead nodes are forgotten and idle components
        // dropped many times in a run.
        w.st.dead_node_window = Duration::from_secs(20);
        w.st.component_grace = Duration::from_secs(10);
        Sim {
            w,
            rng: Rng(seed),
            step: 0,
            nodes: Vec::new(),
            node_at: BTreeMap::new(),
            clients: Vec::new(),
            client_at: BTreeMap::new(),
            drivers: Vec::new(),
            resolutions: BTreeMap::new(),
            tasks: Vec::new(),
            job_tasks: BTreeMap::new(),
            objects: Vec::new(),
            job_objects: BTreeMap::new(),
            made: BTreeSet::new(),
            trail: VecDeque::new(),
            stats: BTreeMap::new(),
        }
    }

    fn count(&mut self, what: &'static str) {
        *self.stats.entry(what).or_default() += 1;
    }

    fn note(&mut self, what: String) {
        if self.trail.len() == 40 {
            self.trail.pop_front();
        }
        self.trail.push_back(format!("{}: {what}", self.step));
    }

    fn run(mut self, steps: usize) -> String {
        for _ in 0..3 {
            self.join();
        }
        for _ in 0..2 {
            self.new_client();
        }
        for step in 0..steps {
            self.step = step;
            self.guarded(|sim| {
                sim.act();
                sim.route();
                sim.check();
                sim.check_nothing_left_to_place();
            });
        }
        self.guarded(|sim| {
            sim.quiesce();
            sim.check();
            sim.drain();
            sim.check();
            sim.check_drained();
        });
        let resolved = self.resolutions.values().filter(|n| **n == 1).count();
        let stats: Vec<String> = self.stats.iter().map(|(k, v)| format!("{k} {v}")).collect();
        format!(
            "{} submissions, {resolved} resolved; {} nodes, {} jobs; {}",
            self.resolutions.len(),
            self.nodes.len(),
            self.w.st.jobs.len(),
            stats.join(", ")
        )
    }

    /// Run `f`; when it panics, print the latest events first.
    fn guarded(&mut self, f: impl FnOnce(&mut Sim)) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self)));
        if let Err(e) = r {
            eprintln!("at step {}; the latest events:", self.step);
            for t in &self.trail {
                eprintln!("  {t}");
            }
            std::panic::resume_unwind(e);
        }
    }

    // ----- the world's moves -----

    fn act(&mut self) {
        self.w.now += Duration::from_millis(100);
        if self.step.is_multiple_of(10) {
            // Heartbeats.
            let now = self.w.now;
            for n in self.nodes.iter().filter(|n| n.life == Life::Live) {
                self.w.st.touch(n.node.session, now);
            }
        }
        if self.step.is_multiple_of(5) {
            let now = self.w.now;
            let before = (self.w.st.nodes.len(), self.w.st.components.len());
            self.w.st.check_heartbeats(now, Duration::from_secs(5));
            if self.w.st.nodes.len() < before.0 {
                self.count("dead node forgotten");
            }
            if self.w.st.components.len() < before.1 {
                self.count("component dropped");
            }
        }
        match self.rng.below(100) {
            0..=39 => self.deliver(),
            40..=71 => self.node_work(),
            72..=95 => self.client_work(),
            _ => self.cluster_change(),
        }
    }

    /// A batch of a node's messages reaches the head, as `lib.rs` handles
    /// one: touch, each message, then a pump.
    fn deliver(&mut self) {
        let ready: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].sends() && !self.nodes[*i].outbox.is_empty())
            .collect();
        if ready.is_empty() {
            return;
        }
        let i = ready[self.rng.below(ready.len())];
        let n = 1 + self.rng.below(8);
        let session = self.nodes[i].node.session;
        let batch: Vec<Input> = {
            let q = &mut self.nodes[i].outbox;
            let k = n.min(q.len());
            q.drain(..k).collect()
        };
        self.note(format!(
            "deliver {} from {}",
            batch.len(),
            self.nodes[i].node.id
        ));
        if self.nodes[i].life == Life::Zombie {
            self.count("late messages");
        }
        let now = self.w.now;
        self.w.st.touch(session, now);
        for m in batch {
            self.w.st.handle(session, m);
        }
        self.w.st.pump();
    }

    fn live_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].life == Life::Live)
            .collect()
    }

    fn node_work(&mut self) {
        self.count("node move");
        let live = self.live_nodes();
        if live.is_empty() {
            return;
        }
        let i = live[self.rng.below(live.len())];
        match self.rng.below(100) {
            0..=29 => self.start_one(i),
            30..=59 => self.finish_one(i),
            60..=63 => self.fail_unstarted(i),
            64..=71 => self.block_or_resume(i),
            72..=83 => self.answer_call(i),
            84..=85 => self.crash_actor(i),
            86..=90 => self.pull(i),
            91..=94 => self.node_put(i),
            _ => self.nested_submit(i),
        }
    }

    fn start_one(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if let Some(k) = n.admit() {
            let t = n.attempts[k].task;
            n.outbox.push_back(Input::Started(t));
            let id = n.node.id;
            self.note(format!("{t} starts on {id}"));
        }
    }

    fn finish_one(&mut self, i: usize) {
        let started: Vec<usize> = (0..self.nodes[i].attempts.len())
            .filter(|k| self.nodes[i].attempts[*k].started)
            .collect();
        if started.is_empty() {
            return;
        }
        let k = started[self.rng.below(started.len())];
        let a = self.nodes[i].attempts.remove(k);
        self.nodes[i].end(&a);
        let roll = self.rng.below(100);
        let (outcome, err_value) = if a.driver {
            match roll {
                0..=69 => (Outcome::Made(made(b"ok", false)), false),
                70..=79 => (Outcome::Made(made(b"err", false)), true),
                _ => (Outcome::Failed(Error::Trap("main panicked".into())), false),
            }
        } else {
            let bytes = format!("result of {}", a.task);
            let large = a.task.0.is_multiple_of(3);
            match roll {
                0..=79 => (Outcome::Made(made(bytes.as_bytes(), large)), false),
                80..=86 => (Outcome::Failed(Error::System("lost a disk".into())), false),
                87..=89 => (Outcome::Failed(Error::Trap("panic".into())), false),
                90..=91 => (Outcome::Failed(Error::TimeLimit("1s".into())), false),
                92..=97 => (Outcome::Made(made(bytes.as_bytes(), large)), true),
                98 => (Outcome::Empty, false),
                _ => (
                    Outcome::BadResult(Error::InvalidArgument("a short id".into())),
                    false,
                ),
            }
        };
        if let Outcome::Made(m) = &outcome {
            *self.nodes[i].holds.entry(m.id).or_default() += 1;
            self.objects.push(m.id);
        }
        let id = self.nodes[i].node.id;
        self.note(format!(
            "{} attempt {} ends on {id}: {outcome:?} err_value={err_value}",
            a.task, a.attempt
        ));
        let stdout = if self.rng.pct(10) {
            Bytes::from_static(b"a line\n")
        } else {
            Bytes::new()
        };
        self.nodes[i].outbox.push_back(Input::Done(Done {
            task: a.task,
            attempt: a.attempt,
            outcome,
            stdout,
            stderr: Bytes::new(),
            wave: if a.driver { "ok".into() } else { String::new() },
            err_value,
            direct: false,
        }));
    }

    fn fail_unstarted(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let Some(k) = n.attempts.iter().position(|a| !a.started) else {
            return;
        };
        let a = n.attempts.remove(k);
        n.done(
            a.task,
            a.attempt,
            Outcome::Failed(Error::System("could not fetch an argument".into())),
        );
        let id = n.node.id;
        self.note(format!("{} fails before it starts on {id}", a.task));
    }

    fn block_or_resume(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let Some(k) = n
            .attempts
            .iter()
            .position(|a| a.started && a.demand.num_cpus() > 0.0)
        else {
            return;
        };
        let a = &mut n.attempts[k];
        let cpus = a.demand.cpus_only();
        if !a.blocked {
            a.blocked = true;
            n.free.release(&cpus);
        } else if n.free.try_acquire(&cpus) {
            a.blocked = false;
        } else {
            return;
        }
        let (task, blocked) = (a.task, a.blocked);
        n.outbox.push_back(Input::Blocked { task, blocked });
        self.note(format!("{task} blocked={blocked}"));
    }

    fn answer_call(&mut self, i: usize) {
        let leased: Vec<ActorId> = self.nodes[i]
            .actors
            .iter()
            .filter(|(_, h)| h.leased)
            .map(|(a, _)| *a)
            .collect();
        let n = &mut self.nodes[i];
        let Some(k) = n.calls.iter().position(|(_, a)| leased.contains(a)) else {
            return;
        };
        let (t, _) = n.calls.remove(k);
        let outcome = if self.rng.pct(85) {
            let m = made(format!("call result {t}").as_bytes(), false);
            *n.holds.entry(m.id).or_default() += 1;
            self.objects.push(m.id);
            Outcome::Made(m)
        } else {
            Outcome::Failed(Error::Trap("method panicked".into()))
        };
        n.done(t, 1, outcome);
        self.note(format!("call {t} answered"));
    }

    fn crash_actor(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let Some((&a, _)) = n.actors.iter().next() else {
            return;
        };
        let Some(h) = n.actors.remove(&a) else { return };
        if h.leased {
            n.free.release(&h.demand);
        }
        n.outbox.push_back(Input::ActorDied(super::ActorDied {
            actor: a,
            incarnation: h.incarnation,
            error: Error::ActorDied(format!("{a} crashed")),
        }));
        let calls: Vec<TaskId> = n
            .calls
            .iter()
            .filter(|(_, x)| *x == a)
            .map(|(t, _)| *t)
            .collect();
        n.calls.retain(|(_, x)| *x != a);
        for t in calls {
            n.done(
                t,
                1,
                Outcome::Failed(Error::ActorDied(format!("{a} crashed"))),
            );
        }
        self.note(format!("{a} crashes"));
    }

    /// The node pulls an object the cluster has, and keeps it.
    fn pull(&mut self, i: usize) {
        let st = &self.w.st;
        let n = &self.nodes[i];
        let candidates: Vec<ObjectId> = self
            .objects
            .iter()
            .rev()
            .take(50)
            .filter(|o| {
                st.objects.get(o).is_some_and(|e| e.available()) && !n.holds.contains_key(o)
            })
            .copied()
            .collect();
        if candidates.is_empty() {
            return;
        }
        let o = candidates[self.rng.below(candidates.len())];
        let n = &mut self.nodes[i];
        n.holds.entry(o).or_default();
        n.outbox.push_back(Input::Located(o));
    }

    /// A task running on the node puts an object into its job.
    fn node_put(&mut self, i: usize) {
        let n = &self.nodes[i];
        let Some((job, task)) = n
            .attempts
            .iter()
            .find(|a| a.started)
            .map(|a| (a.job, a.task))
        else {
            return;
        };
        let bytes = format!("put {} by {}", self.step, n.node.id);
        let id = ObjectId::of(bytes.as_bytes());
        let n = &mut self.nodes[i];
        *n.holds.entry(id).or_default() += 1;
        n.outbox.push_back(Input::Put(Put {
            id,
            size: 1 << 20,
            acting: Acting::Task(task),
            inline: None,
            uploading: false,
        }));
        self.objects.push(id);
        self.job_objects.entry(job).or_default().push(id);
    }

    /// A driver running on the node submits a task of its job.
    fn nested_submit(&mut self, i: usize) {
        let Some((job, driver)) = self.nodes[i]
            .attempts
            .iter()
            .find(|a| a.started && a.driver)
            .map(|a| (a.job, a.task))
        else {
            return;
        };
        let session = self.nodes[i].node.session;
        let task = TaskId(self.w.id(session));
        let submit = self.random_submit(task, job, Acting::Task(driver));
        self.resolutions.insert((session, task), 0);
        self.nodes[i].outbox.push_back(Input::Submit(submit));
        self.note(format!("{task} submitted by a driver"));
    }

    /// Arguments: values, results of earlier tasks (of the same job,
    /// mostly) and objects.
    fn random_args(&mut self, job: JobId) -> Vec<Arg> {
        let n = self.rng.below(4);
        let mut args = Vec::with_capacity(n);
        for _ in 0..n {
            let own = self.job_tasks.get(&job).map_or(&[][..], |v| v.as_slice());
            let arg = match self.rng.below(10) {
                0..=3 => Arg::Value(Bytes::from(vec![self.rng.below(256) as u8; 8])),
                4..=6 if !own.is_empty() => {
                    let recent = own.len().min(20);
                    Arg::Task(own[own.len() - 1 - self.rng.below(recent)])
                }
                7 if !self.tasks.is_empty() => {
                    let recent = self.tasks.len().min(40);
                    Arg::Task(self.tasks[self.tasks.len() - 1 - self.rng.below(recent)])
                }
                8 if !self.objects.is_empty() => {
                    let recent = self.objects.len().min(40);
                    let k = self.objects.len() - 1 - self.rng.below(recent);
                    Arg::Object(self.objects[k])
                }
                _ => match self.job_objects.get(&job) {
                    Some(v) if !v.is_empty() => {
                        let recent = v.len().min(20);
                        Arg::Object(v[v.len() - 1 - self.rng.below(recent)])
                    }
                    _ => Arg::Value(Bytes::from_static(b"v")),
                },
            };
            args.push(arg);
        }
        args
    }

    fn random_options(&mut self) -> TaskOptions {
        let cpus = [0.0, 0.5, 1.0, 1.0, 2.0][self.rng.below(5)];
        let mut resources = Resources::cpus(cpus);
        if self.rng.pct(4) {
            resources = Resources::cpus(1.0).with_gpus(1.0).unwrap_or_default();
        }
        if self.rng.pct(1) {
            resources = Resources::cpus(64.0);
        }
        let strategy = match self.rng.below(20) {
            0 | 1 => Strategy::Spread,
            2 => Strategy::Node {
                node: 1 + self.rng.below(self.nodes.len() + 1) as u64,
                soft: self.rng.pct(70),
            },
            _ => Strategy::Default,
        };
        TaskOptions {
            resources,
            max_retries: self.rng.below(4) as u32,
            retry_exceptions: self.rng.pct(30),
            strategy,
            ..TaskOptions::default()
        }
    }

    fn random_submit(&mut self, task: TaskId, job: JobId, acting: Acting) -> Submit {
        let args = self.random_args(job);
        self.tasks.push(task);
        self.job_tasks.entry(job).or_default().push(task);
        let options = self.random_options();
        Submit {
            task,
            acting,
            component: Ok(self.w.comp),
            function: "f".into(),
            options: Ok(options),
            args: Ok(args),
        }
    }

    fn client_work(&mut self) {
        let open: Vec<usize> = (0..self.clients.len())
            .filter(|i| self.clients[*i].open && !self.clients[*i].stopped)
            .collect();
        if open.is_empty() {
            return self.new_client();
        }
        let i = open[self.rng.below(open.len())];
        let c = self.clients[i].client;
        match self.rng.below(100) {
            0..=44 => {
                if self.w.st.tasks.len() > 400 {
                    return;
                }
                let task = TaskId(self.w.id(c.session));
                let submit = self.random_submit(task, c.job, Acting::Session);
                self.note(format!("{task} submitted: {:?}", submit.args));
                self.resolutions.insert((c.session, task), 0);
                self.clients[i].tasks.push(task);
                self.w.send(c.session, Input::Submit(submit));
            }
            45..=52 => {
                let bytes = format!("client put {}", self.step);
                let id = self
                    .w
                    .put(c.session, Acting::Session, bytes.as_bytes(), true);
                self.objects.push(id);
                self.job_objects.entry(c.job).or_default().push(id);
            }
            53..=56 => {
                let id = ObjectId::of(format!("upload {}", self.step).as_bytes());
                self.w.send(
                    c.session,
                    Input::Put(Put {
                        id,
                        size: 5 << 20,
                        acting: Acting::Session,
                        inline: None,
                        uploading: true,
                    }),
                );
                self.clients[i].uploads.push(id);
                self.objects.push(id);
                self.job_objects.entry(c.job).or_default().push(id);
            }
            57..=60 => {
                let Some(id) = self.clients[i].uploads.pop() else {
                    return;
                };
                if self.rng.pct(70) {
                    self.w.st.pushed(id, 5 << 20, false);
                } else {
                    self.w.send(
                        c.session,
                        Input::Put(Put {
                            id,
                            size: 5 << 20,
                            acting: Acting::Session,
                            inline: None,
                            uploading: false,
                        }),
                    );
                }
            }
            61..=66 => {
                let actor = ActorId(self.w.id(c.session));
                let options = ActorOptions {
                    resources: Resources::cpus([0.0, 0.5, 1.0][self.rng.below(3)]),
                    max_restarts: self.rng.below(3) as u32,
                    strategy: if self.rng.pct(20) {
                        Strategy::Spread
                    } else {
                        Strategy::Default
                    },
                    ..ActorOptions::default()
                };
                let args = if self.rng.pct(30) {
                    self.random_args(c.job)
                } else {
                    vec![]
                };
                self.note(format!("{actor} created"));
                self.clients[i].actors.push(actor);
                let comp = self.w.comp;
                self.w.send(
                    c.session,
                    Input::CreateActor(CreateActor {
                        actor,
                        acting: Acting::Session,
                        component: Ok(comp),
                        class: "k".into(),
                        options: Ok(options),
                        args: Ok(args),
                    }),
                );
            }
            67..=80 => {
                let actors = &self.clients[i].actors;
                if actors.is_empty() {
                    return;
                }
                let actor = actors[self.rng.below(actors.len())];
                let task = TaskId(self.w.id(c.session));
                let args = if self.rng.pct(20) {
                    self.random_args(c.job)
                } else {
                    vec![]
                };
                self.note(format!("{task} calls {actor}"));
                self.resolutions.insert((c.session, task), 0);
                self.tasks.push(task);
                self.clients[i].tasks.push(task);
                self.w.send(
                    c.session,
                    Input::CallActor(CallActor {
                        task,
                        acting: Acting::Session,
                        actor,
                        method: "m".into(),
                        args: Ok(args),
                        direct: None,
                    }),
                );
            }
            81..=82 => {
                let actors = &self.clients[i].actors;
                if actors.is_empty() {
                    return;
                }
                let actor = actors[self.rng.below(actors.len())];
                self.note(format!("{actor} killed"));
                self.w.send(
                    c.session,
                    Input::KillActor(KillActor {
                        actor,
                        acting: Acting::Session,
                        task: None,
                    }),
                );
            }
            85..=86 => {
                let tasks = &self.clients[i].tasks;
                if tasks.is_empty() {
                    return;
                }
                let t = tasks[self.rng.below(tasks.len())];
                self.note(format!("{t} released"));
                self.w.send(c.session, Input::Release(vec![t]));
            }
            83..=84 => {
                let tasks = &self.clients[i].tasks;
                if tasks.is_empty() {
                    return;
                }
                let t = tasks[self.rng.below(tasks.len())];
                self.note(format!("{t} cancelled"));
                self.w.send(
                    c.session,
                    Input::Cancel {
                        task: t,
                        acting: Acting::Session,
                    },
                );
            }
            87..=96 => {
                if self.objects.is_empty() {
                    return;
                }
                let recent = self.objects.len().min(40);
                let o = self.objects[self.objects.len() - 1 - self.rng.below(recent)];
                let _ = self.w.st.locate(o);
            }
            97..=98 => {
                self.note(format!("{} stopped", c.job));
                self.clients[i].stopped = true;
                let _ = self.w.st.stop_job(c.job);
            }
            _ => {
                self.note(format!("client of {} leaves", c.job));
                self.w.st.close_session(c.session, "it left");
            }
        }
    }

    fn cluster_change(&mut self) {
        self.count("cluster change");
        let live = self.live_nodes();
        match self.rng.below(100) {
            0..=24 if live.len() < 6 => self.join(),
            25..=39 if !live.is_empty() => {
                let i = live[self.rng.below(live.len())];
                self.note(format!("{} killed", self.nodes[i].node.id));
                // What was sent before the connection broke arrived.
                self.route();
                self.nodes[i].life = Life::Gone;
                self.nodes[i].outbox.clear();
                let session = self.nodes[i].node.session;
                self.w.st.close_session(session, "its connection broke");
            }
            40..=44 if !live.is_empty() => {
                let i = live[self.rng.below(live.len())];
                self.note(format!("{} goes silent", self.nodes[i].node.id));
                self.nodes[i].life = Life::Silent;
            }
            45..=74 => {
                let running = self
                    .drivers
                    .iter()
                    .filter(|j| self.w.st.jobs.get(j).is_some_and(|j| !j.state.finished()))
                    .count();
                if running >= 3 {
                    return;
                }
                self.w.upload();
                let job = self.w.st.submit_job(JobRequest {
                    component: self.w.comp,
                    function: "main".into(),
                    args: vec![],
                    entrypoint: Resources::default(),
                });
                if let Ok(job) = job {
                    self.note(format!("{job} submitted"));
                    self.drivers.push(job);
                }
            }
            _ => {
                if self.clients.iter().filter(|c| c.open && !c.stopped).count() < 4 {
                    self.new_client();
                }
            }
        }
    }

    fn join(&mut self) {
        let cpus = [1.0, 2.0, 4.0][self.rng.below(3)];
        let mut resources = Resources::cpus(cpus);
        if self.rng.pct(25) {
            resources = resources.with_gpus(1.0).unwrap_or_default();
        }
        self.join_with(resources);
    }

    fn join_with(&mut self, resources: Resources) {
        let node = self.w.node_with(resources.clone());
        self.note(format!("{} joins with {resources:?}", node.id));
        self.node_at.insert(node.session, self.nodes.len());
        self.nodes.push(SimNode {
            node,
            free: ResourceSet::new(resources),
            life: Life::Live,
            attempts: Vec::new(),
            actors: BTreeMap::new(),
            calls: Vec::new(),
            holds: BTreeMap::new(),
            outbox: VecDeque::new(),
        });
    }

    fn new_client(&mut self) {
        let client = self.w.client();
        // A client uploads what it loads once, and may use it much later.
        self.w.upload();
        self.client_at.insert(client.session, self.clients.len());
        self.clients.push(SimClient {
            client,
            open: true,
            stopped: false,
            tasks: Vec::new(),
            actors: Vec::new(),
            uploads: Vec::new(),
        });
    }

    // ----- what the head sends -----

    /// Every effect reaches its session, which acts on it as a node or a
    /// client does.
    fn route(&mut self) {
        loop {
            let sent = std::mem::take(&mut self.w.st.out.sent);
            self.w.st.out.objects.clear();
            self.w.st.out.jobs.clear();
            self.w.st.out.head_frees.clear();
            self.w.st.out.saves.clear();
            if sent.is_empty() {
                return;
            }
            for (session, e) in sent {
                if let Some(&i) = self.node_at.get(&session) {
                    self.node_gets(i, e);
                } else if let Some(&i) = self.client_at.get(&session) {
                    self.client_gets(i, e);
                } else {
                    panic!("an effect for session {session}, which never opened: {e:?}");
                }
            }
        }
    }

    fn resolved(&mut self, session: u64, task: TaskId, result: &Result<super::ObjectLoc, Error>) {
        let Some(n) = self.resolutions.get_mut(&(session, task)) else {
            panic!("{task} was resolved to session {session}, which did not submit it");
        };
        *n += 1;
        assert_eq!(*n, 1, "{task} was resolved twice (now {result:?})");
        match result {
            Ok(_) => self.count("resolved ok"),
            Err(e) => self.count(match e.kind() {
                "system" => "failed: system",
                "trap" | "time_limit" => "failed: app",
                "task_failed" => "failed: dependency",
                "cancelled" => "failed: cancelled",
                "actor_died" => "failed: actor died",
                "object_lost" => "failed: object lost",
                "infeasible" => "failed: infeasible",
                "not_found" => "failed: not found",
                "invalid_argument" => "failed: invalid",
                _ => "failed: other",
            }),
        }
        if let Ok(loc) = result {
            self.check_loc(loc);
            self.objects.push(loc.id);
            self.made.insert(task);
        }
    }

    /// A location names live holders only.
    fn check_loc(&self, loc: &super::ObjectLoc) {
        for h in &loc.holders {
            let live = h == &self.w.st.head_address
                || self
                    .nodes
                    .iter()
                    .any(|n| n.connected() && super::harness::address(n.node.id) == *h);
            assert!(live, "{loc:?} names {h}, which is not a live holder");
        }
        assert!(
            loc.inline.is_some() || !loc.holders.is_empty(),
            "{loc:?} can be read nowhere"
        );
    }

    fn node_gets(&mut self, i: usize, e: Effect) {
        let session = self.nodes[i].node.session;
        if !matches!(e, Effect::Close) {
            assert!(
                self.nodes[i].connected(),
                "{:?} sent to {:?} node {}",
                e,
                self.nodes[i].life,
                self.nodes[i].node.id
            );
        }
        match e {
            Effect::Close => {
                if self.nodes[i].life != Life::Gone {
                    self.count("declared dead");
                    self.nodes[i].life = Life::Zombie;
                }
            }
            Effect::Resolved { task, result } => self.resolved(session, task, &result),
            Effect::Assign(a) => {
                self.count(if self.made.contains(&a.task) {
                    "assign: lineage"
                } else if a.attempt > 1 {
                    "assign: retry"
                } else {
                    "assign"
                });
                for arg in &a.args {
                    if let ResolvedArg::Object(loc) = arg {
                        self.check_loc(loc);
                    }
                }
                for (k, other) in self.nodes.iter().enumerate() {
                    let busy = other.attempts.iter().any(|x| x.task == a.task)
                        || other.calls.iter().any(|(t, _)| *t == a.task);
                    assert!(
                        !(other.connected() && busy),
                        "{} assigned to {} while node {} still runs it",
                        a.task,
                        self.nodes[i].node.id,
                        self.nodes[k].node.id
                    );
                }
                self.nodes[i].attempts.push(Attempt {
                    task: a.task,
                    attempt: a.attempt,
                    job: a.job,
                    demand: a.options.resources.clone(),
                    driver: a.driver,
                    started: false,
                    blocked: false,
                });
            }
            Effect::StartActor(s) => {
                self.count(if s.incarnation > 0 {
                    "actor restart"
                } else {
                    "actor start"
                });
                let n = &mut self.nodes[i];
                assert!(
                    !n.actors.contains_key(&s.actor),
                    "{} started twice",
                    s.actor
                );
                let leased =
                    n.actors.values().all(|h| h.leased) && n.free.try_acquire(&s.options.resources);
                n.actors.insert(
                    s.actor,
                    Hosted {
                        incarnation: s.incarnation,
                        demand: s.options.resources.clone(),
                        leased,
                        next_seq: 0,
                    },
                );
            }
            Effect::ActorCall(c) => {
                let n = &mut self.nodes[i];
                match n.actors.get_mut(&c.actor) {
                    Some(h) if h.incarnation == c.incarnation => {
                        assert_eq!(c.seq, h.next_seq, "calls of {} out of order", c.actor);
                        h.next_seq += 1;
                        n.calls.push((c.task, c.actor));
                    }
                    _ => n.done(
                        c.task,
                        1,
                        Outcome::Failed(Error::ActorDied(format!("{} is not here", c.actor))),
                    ),
                }
            }
            Effect::StopActor(a) => {
                let n = &mut self.nodes[i];
                if let Some(h) = n.actors.remove(&a)
                    && h.leased
                {
                    n.free.release(&h.demand);
                }
                let calls: Vec<TaskId> = n
                    .calls
                    .iter()
                    .filter(|(_, x)| *x == a)
                    .map(|(t, _)| *t)
                    .collect();
                n.calls.retain(|(_, x)| *x != a);
                for t in calls {
                    n.done(
                        t,
                        1,
                        Outcome::Failed(Error::ActorDied(format!("{a} stopped"))),
                    );
                }
            }
            Effect::Cancel(t) => {
                let n = &mut self.nodes[i];
                if let Some(k) = n.attempts.iter().position(|a| a.task == t) {
                    let a = n.attempts.remove(k);
                    n.end(&a);
                    n.done(
                        t,
                        a.attempt,
                        Outcome::Failed(Error::Cancelled(format!("{t} was cancelled"))),
                    );
                } else if let Some(k) = n.calls.iter().position(|(x, _)| *x == t) {
                    n.calls.remove(k);
                    n.done(
                        t,
                        1,
                        Outcome::Failed(Error::Cancelled(format!("{t} was cancelled"))),
                    );
                }
            }
            Effect::Free(ids) => {
                for id in ids {
                    self.nodes[i].holds.remove(&id);
                }
            }
            Effect::FreeSeen(ids) => {
                let holds = &mut self.nodes[i].holds;
                for (id, seen) in ids {
                    match holds.get_mut(&id) {
                        Some(made) if *made > seen => *made -= seen,
                        _ => {
                            holds.remove(&id);
                        }
                    }
                }
            }
            Effect::Output { .. } => {}
            // The simulated callers make no direct calls (the state tests
            // cover them): a location is only counted.
            Effect::ActorAt(_) => self.count("actor location"),
            Effect::CheckCalls(ts) => {
                let n = &mut self.nodes[i];
                for t in ts {
                    if !n.calls.iter().any(|(x, _)| *x == t) {
                        n.done(
                            t,
                            1,
                            Outcome::Failed(Error::ActorDied(format!("{t} never came"))),
                        );
                    }
                }
            }
        }
    }

    fn client_gets(&mut self, i: usize, e: Effect) {
        let session = self.clients[i].client.session;
        assert!(self.clients[i].open, "{e:?} sent to a client that left");
        match e {
            Effect::Resolved { task, result } => self.resolved(session, task, &result),
            Effect::Output { .. } | Effect::ActorAt(_) => {}
            Effect::Close => self.clients[i].open = false,
            other => panic!("a client was sent {other:?}"),
        }
    }

    // ----- the end -----

    /// The head placed all it could: another pump now places nothing (no
    /// change was left without one).
    fn check_nothing_left_to_place(&mut self) {
        // A full pass, as if something had changed: what a change left
        // placeable without marking the state dirty would be placed now.
        self.w.st.dirty = true;
        self.w.st.pump();
        let sent = std::mem::take(&mut self.w.st.out.sent);
        assert!(
            sent.is_empty(),
            "step {}: a pump placed what waited: {sent:?}",
            self.step
        );
    }

    /// The chaos stops: silent nodes are declared dead, uploads end, actors
    /// are killed (they hold resources for life), two large nodes join, and
    /// the nodes run all they are given, successfully, until nothing moves.
    /// Then every task of a live job has ended.
    fn quiesce(&mut self) {
        self.step += 1;
        let now = self.w.now + Duration::from_secs(60);
        self.w.now = now;
        for n in self.nodes.iter().filter(|n| n.life == Life::Live) {
            self.w.st.touch(n.node.session, now);
        }
        self.w.st.check_heartbeats(now, Duration::from_secs(5));
        self.route();
        for i in 0..self.clients.len() {
            let c = &mut self.clients[i];
            if !c.open || c.stopped {
                continue;
            }
            let (session, uploads, actors) = (
                c.client.session,
                std::mem::take(&mut c.uploads),
                c.actors.clone(),
            );
            for id in uploads {
                self.w.st.pushed(id, 5 << 20, false);
            }
            for a in actors {
                self.w.send(
                    session,
                    Input::KillActor(KillActor {
                        actor: a,
                        acting: Acting::Session,
                        task: None,
                    }),
                );
            }
            self.route();
        }
        for _ in 0..2 {
            let big = Resources::cpus(16.0).with_gpus(1.0).unwrap_or_default();
            self.join_with(big);
        }
        self.route();
        for _ in 0..100_000 {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                if !self.nodes[i].sends() {
                    continue;
                }
                if !self.nodes[i].outbox.is_empty() {
                    let session = self.nodes[i].node.session;
                    let batch: Vec<Input> = self.nodes[i].outbox.drain(..).collect();
                    self.w.st.touch(session, now);
                    for m in batch {
                        self.w.st.handle(session, m);
                    }
                    self.w.st.pump();
                    self.route();
                    moved = true;
                }
                if self.nodes[i].life != Life::Live {
                    continue;
                }
                let n = &mut self.nodes[i];
                while let Some(k) = n.admit() {
                    let t = n.attempts[k].task;
                    n.outbox.push_back(Input::Started(t));
                    moved = true;
                }
                let (started, waiting): (Vec<Attempt>, Vec<Attempt>) =
                    n.attempts.drain(..).partition(|a| a.started);
                n.attempts = waiting;
                for a in started {
                    n.end(&a);
                    let bytes = format!("result of {}", a.task);
                    let m = made(bytes.as_bytes(), a.task.0.is_multiple_of(3));
                    *n.holds.entry(m.id).or_default() += 1;
                    n.outbox.push_back(Input::Done(Done {
                        task: a.task,
                        attempt: a.attempt,
                        outcome: Outcome::Made(m),
                        stdout: Bytes::new(),
                        stderr: Bytes::new(),
                        wave: String::new(),
                        err_value: false,
                        direct: false,
                    }));
                    moved = true;
                }
                let leased: Vec<ActorId> = n
                    .actors
                    .iter()
                    .filter(|(_, h)| h.leased)
                    .map(|(a, _)| *a)
                    .collect();
                let (answer, keep): (Vec<_>, Vec<_>) =
                    n.calls.drain(..).partition(|(_, a)| leased.contains(a));
                n.calls = keep;
                for (t, _) in answer {
                    let m = made(format!("call result {t}").as_bytes(), false);
                    *n.holds.entry(m.id).or_default() += 1;
                    n.done(t, 1, Outcome::Made(m));
                    moved = true;
                }
            }
            self.route();
            if !moved {
                break;
            }
        }
        let st = &self.w.st;
        for (t, task) in &st.tasks {
            assert!(
                matches!(task.state, TState::Done(_) | TState::Failed(_)),
                "{t} is {} with nothing left to wait for",
                task.state_name()
            );
        }
        for (a, actor) in &st.actors {
            assert!(matches!(actor.state, AState::Dead(_)), "{a} lives on");
        }
    }

    /// Every job ends (its submitters still there), and the nodes answer
    /// what they were told until nothing is in flight.
    fn drain(&mut self) {
        self.step += 1;
        // Silent nodes are declared dead.
        let now = self.w.now + Duration::from_secs(60);
        for n in self.nodes.iter().filter(|n| n.life == Life::Live) {
            self.w.st.touch(n.node.session, now);
        }
        self.w.st.check_heartbeats(now, Duration::from_secs(5));
        self.route();
        let jobs: Vec<JobId> = self.w.st.jobs.keys().copied().collect();
        for j in jobs {
            let _ = self.w.st.stop_job(j);
            self.route();
        }
        for _ in 0..1000 {
            let pending: Vec<usize> = (0..self.nodes.len())
                .filter(|i| self.nodes[*i].sends() && !self.nodes[*i].outbox.is_empty())
                .collect();
            if pending.is_empty() {
                break;
            }
            for i in pending {
                let session = self.nodes[i].node.session;
                let batch: Vec<Input> = self.nodes[i].outbox.drain(..).collect();
                for m in batch {
                    self.w.st.handle(session, m);
                }
                self.w.st.pump();
                self.route();
            }
        }
    }

    fn check_drained(&self) {
        let st = &self.w.st;
        for ((session, task), n) in &self.resolutions {
            let open = self.client_at.get(session).map_or_else(
                || {
                    self.node_at
                        .get(session)
                        .is_some_and(|i| self.nodes[*i].connected())
                },
                |i| self.clients[*i].open,
            );
            if open {
                assert_eq!(*n, 1, "{task} of session {session} was resolved {n} times");
            }
        }
        assert!(st.tasks.is_empty(), "tasks are left: {}", st.tasks.len());
        assert!(st.actors.is_empty(), "actors are left: {}", st.actors.len());
        assert!(
            st.objects.values().all(|o| o.pinned),
            "objects of ended jobs are left"
        );
        assert!(st.queues.groups.is_empty() && st.queues.others.is_empty());
        for n in self.nodes.iter().filter(|n| n.connected()) {
            let id = n.node.id;
            assert!(st.nodes[&id].running.is_empty());
            assert!(st.nodes[&id].actors.is_empty());
            assert_eq!(st.sched.free(id), Some(&st.nodes[&id].total));
            assert_eq!(st.sched.backlog(id), Some(0));
            assert_eq!(n.free.free(), &st.nodes[&id].total);
        }
    }

    // ----- invariants -----

    /// The state's own invariants (`invariants.rs`), then what only the
    /// simulation knows: its nodes, what they hold and run.
    fn check(&self) {
        if let Err(e) = self.w.st.check_invariants() {
            panic!("step {}: {e}", self.step);
        }
        self.check_dead_nodes();
        self.check_holders();
        self.check_sim_nodes();
    }

    /// Each simulated node is where the head thinks it is: live, dead
    /// (and to be forgotten) or forgotten; a dead node is forgotten within
    /// its window.
    fn check_dead_nodes(&self) {
        let st = &self.w.st;
        for sn in &self.nodes {
            let id = sn.node.id;
            match st.nodes.get(&id) {
                Some(n) if n.alive => assert!(st.sched.free(id).is_some()),
                Some(_) => {
                    assert!(st.sched.free(id).is_none(), "dead {id} is scheduled");
                    assert!(
                        st.dead_nodes.iter().any(|(d, _)| *d == id),
                        "dead {id} will never be forgotten"
                    );
                }
                None => {
                    assert!(st.sched.free(id).is_none(), "forgotten {id} is scheduled");
                    assert!(sn.life != Life::Live, "live {id} was forgotten");
                }
            }
        }
        for (id, since) in &st.dead_nodes {
            if let Some(since) = since {
                // Forgotten at the first heartbeat check past the window.
                assert!(
                    self.w.now.saturating_duration_since(*since)
                        <= st.dead_node_window + Duration::from_secs(1),
                    "dead {id} outstayed its window"
                );
            }
        }
    }

    /// A node the head lists as an object's holder still holds it; every
    /// object belongs to a job or is pinned (the simulated clients never
    /// upload before their `Put`); every actor's component is known.
    fn check_holders(&self) {
        let st = &self.w.st;
        for (id, o) in &st.objects {
            assert!(o.pinned || !o.jobs.is_empty(), "{id:?} belongs to no job");
        }
        // The simulated clients create actors of uploaded components only:
        // even a dead one's component is known.
        for (a, actor) in &st.actors {
            assert!(
                st.components.contains_key(&actor.component),
                "{a}: its component"
            );
        }
        for (id, o) in &st.objects {
            for h in &o.holders {
                if *h == HEAD_HOLDER {
                    continue;
                }
                let n = &self.nodes[self.node_at[&st.nodes[h].session]];
                assert!(n.holds.contains_key(id), "{h} freed {id:?} it still holds");
            }
        }
    }

    /// What the nodes themselves run agrees with the head.
    fn check_sim_nodes(&self) {
        let st = &self.w.st;
        let mut active: BTreeMap<TaskId, NodeId> = BTreeMap::new();
        for n in self.nodes.iter().filter(|n| n.connected()) {
            let id = n.node.id;
            let mine: BTreeSet<TaskId> = n
                .attempts
                .iter()
                .map(|a| a.task)
                .chain(n.calls.iter().map(|(t, _)| *t))
                .collect();
            for t in &mine {
                if let Some(other) = active.insert(*t, id) {
                    panic!("{t} runs on {other} and {id}");
                }
            }
            if !n.outbox.is_empty() {
                continue;
            }
            // Caught up: the head sees what the node runs.
            let head: BTreeSet<TaskId> = st.nodes[&id].running.iter().copied().collect();
            assert_eq!(head, mine, "{id}: what runs there");
            let in_step = n.actors.values().all(|h| h.leased)
                && st.nodes[&id].running.iter().all(|t| {
                    let task = &st.tasks[t];
                    !task.started
                        || task.held
                            == if task.cpus_released {
                                super::task_demand(&task.kind).without_cpus()
                            } else {
                                super::task_demand(&task.kind)
                            }
                });
            if in_step {
                assert_eq!(
                    Some(n.free.free()),
                    st.sched.free(id),
                    "{id}: the node's admission and the head's view"
                );
            }
        }
    }
}
