//! The state's own invariants, checked from outside after any event: by the
//! seeded simulation (`sim.rs`, which adds what it knows of its simulated
//! nodes) and by the `head_state` fuzz target. Nothing here changes the
//! state; a broken invariant is an `Err` that says which.

use ferray_core::{ObjectId, ResourceSet, TaskId};

use super::{AState, Dep, HEAD_HOLDER, Kind, State, TState, Waiter};

/// `ensure!(cond, "format", args...)`: an `Err` with the message when the
/// condition does not hold.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

impl State {
    /// Every invariant of the tables that holds between any two events:
    /// nodes and their resources, dead nodes, components in use, tasks,
    /// actors, objects, jobs and the placement queues. For the simulation
    /// and the fuzzer only.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        self.check_nodes()?;
        self.check_dead_nodes()?;
        self.check_components()?;
        self.check_tasks()?;
        self.check_actors()?;
        self.check_objects()?;
        self.check_jobs()?;
        self.check_queues()
    }

    fn exists(&self, w: &Waiter) -> bool {
        match w {
            Waiter::Task(t) => self.tasks.contains_key(t),
            Waiter::Actor(a) => self.actors.contains_key(a),
        }
    }

    /// A waiter waits on a dependency that will wake it.
    fn waits_properly(&self, w: Waiter, on: Option<Dep>) -> Result<(), String> {
        let Some(dep) = on else {
            return Err(format!("{w:?} waits on nothing"));
        };
        let (pending, listed) = match dep {
            Dep::Task(d) => match self.tasks.get(&d) {
                Some(t) => (
                    matches!(
                        t.state,
                        TState::Waiting | TState::Queued | TState::Running(_)
                    ),
                    t.waiters.contains(&w),
                ),
                None => (false, false),
            },
            Dep::Object(o) => match self.objects.get(&o) {
                Some(o) => (o.uploading && !o.available(), o.waiters.contains(&w)),
                None => (false, false),
            },
        };
        ensure!(
            pending && listed,
            "{w:?} waits on {dep:?}, which will not wake it"
        );
        Ok(())
    }

    fn queued_times(&self, w: Waiter) -> usize {
        let q = &self.queues;
        q.groups
            .iter()
            .flat_map(|(_, g)| g.iter())
            .chain(q.others.iter())
            .filter(|x| **x == w)
            .count()
    }

    fn check_nodes(&self) -> Result<(), String> {
        for (id, n) in &self.nodes {
            if !n.alive {
                ensure!(
                    n.running.is_empty() && n.actors.is_empty(),
                    "dead {id} runs"
                );
                ensure!(self.sched.free(*id).is_none(), "dead {id} is scheduled");
                continue;
            }
            let Some(free) = self.sched.free(*id) else {
                return Err(format!("live {id} is not scheduled"));
            };
            // What the tables say the node holds: never past its total.
            let mut expect = ResourceSet::new(n.total.clone());
            let mut backlog = 0;
            // Each attempt there holds its own slot of the timeline.
            let mut slots = std::collections::BTreeSet::new();
            ensure!(
                n.slots.used() == n.running.len(),
                "{id} has {} timeline slots in use for {} attempts",
                n.slots.used(),
                n.running.len()
            );
            for t in &n.running {
                let Some(task) = self.tasks.get(t) else {
                    return Err(format!("{t} runs on {id} but does not exist"));
                };
                ensure!(task.state == TState::Running(*id), "{t} on {id}");
                let Some(open) = task.open else {
                    return Err(format!("{t} runs on {id} with no open span"));
                };
                ensure!(
                    slots.insert(open.slot),
                    "{t} shares slot {} on {id}",
                    open.slot
                );
                if task.started {
                    ensure!(expect.try_acquire(&task.held), "{id} overloaded by {t}");
                } else if !matches!(task.kind, Kind::ActorCall { .. }) {
                    backlog += 1;
                }
            }
            for a in &n.actors {
                let Some(actor) = self.actors.get(a) else {
                    return Err(format!("{a} lives on {id} but does not exist"));
                };
                ensure!(
                    matches!(actor.state, AState::Alive(x) if x == *id),
                    "{a} is hosted by {id} but not alive there"
                );
                ensure!(
                    expect.try_acquire(&actor.options.resources),
                    "{id} overloaded by {a}"
                );
            }
            ensure!(expect.free() == free, "{id}: free resources");
            ensure!(n.total.covers(free), "{id}: more free than its total");
            ensure!(
                self.sched.backlog(*id) == Some(backlog),
                "{id}: backlog {:?}, not {backlog}",
                self.sched.backlog(*id)
            );
        }
        Ok(())
    }

    /// Nothing points at a node that is dead or forgotten: no object's
    /// holders, no actor, no running task; a dead node will be forgotten.
    fn check_dead_nodes(&self) -> Result<(), String> {
        let live = |n: &ferray_core::NodeId| self.nodes.get(n).is_some_and(|n| n.alive);
        for (id, o) in &self.objects {
            for h in &o.holders {
                ensure!(*h == HEAD_HOLDER || live(h), "{id:?} held by dead {h}");
            }
            ensure!(
                o.spilled_on.is_subset(&o.holders),
                "{id:?} spilled on {:?}, held by {:?}",
                o.spilled_on,
                o.holders
            );
        }
        for (a, actor) in &self.actors {
            if let AState::Alive(n) = actor.state {
                ensure!(live(&n), "{a} lives on dead {n}");
            }
        }
        for (t, task) in &self.tasks {
            if let TState::Running(n) = task.state {
                ensure!(live(&n), "{t} runs on dead {n}");
            }
            // The timeline's open span is the attempt that runs.
            ensure!(
                task.open.is_some() == matches!(task.state, TState::Running(_)),
                "{t} is {} with an open span: {:?}",
                task.state_name(),
                task.open
            );
        }
        for (id, n) in &self.nodes {
            if !n.alive {
                ensure!(
                    self.dead_nodes.iter().any(|(d, _)| d == id),
                    "dead {id} will never be forgotten"
                );
            }
        }
        Ok(())
    }

    /// What live jobs' tasks and actors use is still there.
    fn check_components(&self) -> Result<(), String> {
        for (t, task) in &self.tasks {
            if let Kind::Task { component, .. } | Kind::Driver { component, .. } = &task.kind {
                ensure!(
                    self.components.contains_key(component),
                    "{t}: its component"
                );
            }
        }
        for (a, actor) in &self.actors {
            // One that was never created (its component unknown, say) is
            // remembered as dead, with no component.
            ensure!(
                matches!(actor.state, AState::Dead(_))
                    || self.components.contains_key(&actor.component),
                "{a}: its component"
            );
        }
        Ok(())
    }

    fn check_tasks(&self) -> Result<(), String> {
        for (t, task) in &self.tasks {
            let Some(job) = self.jobs.get(&task.job) else {
                return Err(format!("{t}: its {} does not exist", task.job));
            };
            ensure!(!job.state.finished(), "{t} of ended {} is left", task.job);
            ensure!(job.tasks.contains(t), "{t} is not its job's");
            ensure!(task.waiters.iter().all(|w| self.exists(w)), "{t}: waiters");
            match &task.state {
                TState::Running(n) => {
                    let node = self.nodes.get(n);
                    ensure!(node.is_some_and(|x| x.alive), "{t} runs on dead {n}");
                    ensure!(
                        node.is_some_and(|x| x.running.contains(t)),
                        "{t} runs on {n}, which does not list it"
                    );
                    ensure!(task.attempts >= 1, "{t} runs with no attempt");
                }
                // A direct call sent where its actor no longer lives: it
                // waits for its caller to send it again whole.
                TState::Waiting if task.direct => {}
                TState::Waiting => self.waits_properly(Waiter::Task(*t), task.waiting_on)?,
                TState::Queued => match &task.kind {
                    Kind::ActorCall { actor, .. } => {
                        ensure!(
                            self.actors.get(actor).is_some_and(|a| a.calls.contains(t)),
                            "{t} is lost to {actor}"
                        );
                    }
                    _ => {
                        let n = self.queued_times(Waiter::Task(*t));
                        ensure!(n == 1, "{t} queued {n} times");
                    }
                },
                TState::Done(_) | TState::Failed(_) => {
                    ensure!(task.resolved, "{t} ended unresolved");
                    // (Unless something still waits on it.)
                    ensure!(
                        !task.released || !task.waiters.is_empty(),
                        "{t} ended, released, and is still kept"
                    );
                }
            }
            if let Kind::ActorCall { actor, .. } = &task.kind
                && matches!(task.state, TState::Waiting)
                && !task.direct
            {
                ensure!(
                    self.actors.get(actor).is_some_and(|a| a.calls.contains(t)),
                    "{t} is lost to {actor}"
                );
            }
        }
        Ok(())
    }

    fn check_actors(&self) -> Result<(), String> {
        for (a, actor) in &self.actors {
            let Some(job) = self.jobs.get(&actor.job) else {
                return Err(format!("{a}: its {} does not exist", actor.job));
            };
            ensure!(!job.state.finished(), "{a} of ended {} is left", actor.job);
            ensure!(job.actors.contains(a), "{a} is not its job's");
            match actor.state {
                AState::Alive(n) => {
                    ensure!(
                        self.nodes
                            .get(&n)
                            .is_some_and(|x| x.alive && x.actors.contains(a)),
                        "{a} lives on {n}, which does not host it"
                    );
                }
                AState::Pending if actor.queued => {
                    let n = self.queued_times(Waiter::Actor(*a));
                    ensure!(n == 1, "{a} queued {n} times");
                }
                AState::Pending => self.waits_properly(Waiter::Actor(*a), actor.waiting_on)?,
                AState::Dead(_) => ensure!(actor.calls.is_empty(), "dead {a} has calls"),
            }
            for t in &actor.calls {
                ensure!(
                    self.tasks.get(t).is_some_and(
                        |x| matches!(x.kind, Kind::ActorCall { actor: y, .. } if y == *a)
                    ),
                    "{a}: its queued call {t} is not a call of it"
                );
            }
        }
        Ok(())
    }

    fn check_objects(&self) -> Result<(), String> {
        let mut makers: std::collections::HashMap<ObjectId, Vec<TaskId>> = Default::default();
        for (t, task) in &self.tasks {
            if let Some(m) = task.made {
                makers.entry(m).or_default().push(*t);
            }
        }
        for (id, o) in &self.objects {
            let listed: Vec<TaskId> = o.makers.iter().copied().collect();
            let mut made = makers.remove(id).unwrap_or_default();
            made.sort();
            ensure!(
                listed == made,
                "{id:?}: makers {listed:?}, but {made:?} made it"
            );
            for h in &o.holders {
                ensure!(
                    *h == HEAD_HOLDER || self.nodes.get(h).is_some_and(|n| n.alive),
                    "{id:?} held by dead {h}"
                );
            }
            // A client's upload may reach the head's store before its
            // session's `Put` names the job (`State::pushed`): until then
            // the head holds it for no job.
            ensure!(
                o.pinned || !o.jobs.is_empty() || o.holders.contains(&HEAD_HOLDER),
                "{id:?} belongs to no job"
            );
            for j in &o.jobs {
                ensure!(
                    self.jobs
                        .get(j)
                        .is_some_and(|job| !job.state.finished() && job.objects.contains(id)),
                    "{id:?} belongs to {j}, which is ended or does not list it"
                );
            }
            ensure!(o.waiters.iter().all(|w| self.exists(w)), "{id:?}: waiters");
        }
        Ok(())
    }

    fn check_jobs(&self) -> Result<(), String> {
        for (j, job) in &self.jobs {
            ensure!(
                job.done <= job.total,
                "{j}: {} of {} done",
                job.done,
                job.total
            );
            if job.state.finished() {
                ensure!(
                    job.tasks.is_empty() && job.actors.is_empty() && job.objects.is_empty(),
                    "ended {j} holds tasks, actors or objects"
                );
                continue;
            }
            for t in &job.tasks {
                ensure!(self.tasks.get(t).is_some_and(|x| x.job == *j), "{j}: {t}");
            }
            for a in &job.actors {
                ensure!(self.actors.get(a).is_some_and(|x| x.job == *j), "{j}: {a}");
            }
            for o in &job.objects {
                ensure!(
                    self.objects.get(o).is_some_and(|x| x.jobs.contains(j)),
                    "{j}: {o:?}"
                );
            }
        }
        Ok(())
    }

    fn check_queues(&self) -> Result<(), String> {
        let q = &self.queues;
        for w in q
            .groups
            .iter()
            .flat_map(|(_, g)| g.iter())
            .chain(q.others.iter())
        {
            ensure!(self.exists(w), "{w:?} is queued but gone");
        }
        Ok(())
    }
}
