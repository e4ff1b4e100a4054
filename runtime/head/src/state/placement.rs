//! Placement: the queues of what waits for a node, the scheduler's choice,
//! and dispatch (a task's assignment with its arguments resolved).

use std::collections::{HashMap, VecDeque};

use ferray_core::{Error, NodeId, Resources, Strategy, TaskId, TaskOptions};

use super::{
    AState, Arg, Assign, Effect, JobState, Kind, MAX_INLINE_ARGS, ResolvedArg, State, TState,
    Waiter, describe,
};
use crate::sched::Placement;

impl State {
    /// What a waiter asks for and how it wants to be placed (`None`: it no
    /// longer waits for a node).
    fn demand_of(&self, w: Waiter) -> Option<(Resources, Strategy)> {
        match w {
            Waiter::Task(t) => {
                let task = self.tasks.get(&t)?;
                if !matches!(task.state, TState::Queued) {
                    return None;
                }
                match &task.kind {
                    Kind::Task { options, .. } => {
                        Some((options.resources.clone(), options.strategy))
                    }
                    Kind::Driver { resources, .. } => Some((resources.clone(), Strategy::Default)),
                    Kind::ActorCall { .. } => None,
                }
            }
            Waiter::Actor(a) => {
                let actor = self.actors.get(&a)?;
                matches!(actor.state, AState::Pending)
                    .then(|| (actor.options.resources.clone(), actor.options.strategy))
            }
        }
    }

    /// Queue a waiter for a node: default placements in groups of equal
    /// demand (FIFO within a group), others apart.
    pub(super) fn enqueue(&mut self, w: Waiter) {
        let Some((demand, strategy)) = self.demand_of(w) else {
            return;
        };
        self.dirty = true;
        if matches!(strategy, Strategy::Default) && matches!(w, Waiter::Task(_)) {
            match self.queues.groups.iter_mut().find(|(d, _)| *d == demand) {
                Some((_, g)) => g.push_back(w),
                None => self.queues.groups.push((demand, VecDeque::from([w]))),
            }
        } else {
            self.queues.others.push_back(w);
        }
    }

    pub(super) fn args_of(&self, w: Waiter) -> &[Arg] {
        match w {
            Waiter::Task(t) => self.tasks.get(&t).map_or(&[], |t| t.args.as_slice()),
            Waiter::Actor(a) => self.actors.get(&a).map_or(&[], |a| a.args.as_slice()),
        }
    }

    /// Try one waiter; `false` when it must keep waiting.
    fn try_place(&mut self, w: Waiter, demand: &Resources, strategy: Strategy) -> bool {
        let locality = self.locality(self.args_of(w));
        let placed = match w {
            Waiter::Task(_) => self.sched.assign(demand, strategy, &locality),
            Waiter::Actor(_) => self.sched.place(demand, strategy, &locality),
        };
        match placed {
            Placement::Node(node) => {
                match w {
                    Waiter::Task(t) => self.dispatch(t, node),
                    Waiter::Actor(a) => self.start_actor(a, node),
                }
                true
            }
            Placement::Wait => false,
            Placement::Infeasible(why) => {
                let e = Error::Infeasible(format!("it asks for {} and {why}", describe(demand)));
                match w {
                    Waiter::Task(t) => self.fail_task(t, e),
                    Waiter::Actor(a) => self.actor_dead(a, e),
                }
                true
            }
        }
    }

    /// Place what waits for a node, as far as resources allow (after each
    /// batch of a session's messages, and after what frees or adds work
    /// outside one). A group of equal default demands stops at its first
    /// that finds no room (no node has room for any of them), so a pass
    /// costs what it places.
    ///
    /// The pass runs only when something changed that can make a placement
    /// possible since the last one: a waiter was queued (a submission, a
    /// retry, a dependency that became ready, an actor to restart), or the
    /// scheduler's view changed (a node joined or left, resources or a
    /// backlog place were given back). A batch of heartbeats changes
    /// neither, and costs no pass.
    pub fn pump(&mut self) {
        if self.rejoining() {
            // Nothing is placed until the earlier head's sessions are back.
            return;
        }
        let changed = self.sched.take_changed();
        if !std::mem::take(&mut self.dirty) && !changed {
            return;
        }
        self.passes += 1;
        let ended = self.jobs_ended;
        let mut settled = false;
        for _ in 0..8 {
            let mut q = std::mem::take(&mut self.queues);
            for (demand, group) in q.groups.iter_mut() {
                while let Some(&w) = group.front() {
                    if self.demand_of(w).is_none() {
                        group.pop_front();
                        continue;
                    }
                    if !self.try_place(w, demand, Strategy::Default) {
                        break;
                    }
                    group.pop_front();
                }
            }
            q.groups.retain(|(_, g)| !g.is_empty());
            let mut keep = VecDeque::new();
            while let Some(w) = q.others.pop_front() {
                let Some((demand, strategy)) = self.demand_of(w) else {
                    continue;
                };
                if !self.try_place(w, &demand, strategy) {
                    keep.push_back(w);
                }
            }
            q.others = keep;
            // What was queued meanwhile goes after what waited before.
            let arrived = std::mem::replace(&mut self.queues, q);
            let more = !arrived.groups.is_empty() || !arrived.others.is_empty();
            for (_, g) in arrived.groups {
                for w in g {
                    self.enqueue(w);
                }
            }
            for w in arrived.others {
                self.enqueue(w);
            }
            if !more {
                settled = true;
                break;
            }
        }
        if self.jobs_ended != ended {
            // A job ended while its entries were out of the queues.
            self.purge_queues();
        }
        // What this pass queued and took is settled; a pass cut short with
        // arrivals left over runs again next time.
        self.dirty = !settled;
        self.sched.take_changed();
    }

    /// The argument bytes each node holds (objects that travel inline do
    /// not count).
    fn locality(&self, args: &[Arg]) -> Vec<(NodeId, u64)> {
        let mut bytes: HashMap<NodeId, u64> = HashMap::new();
        for a in args {
            let oid = match a {
                Arg::Object(o) => Some(*o),
                Arg::Task(t) => match self.tasks.get(t).map(|t| &t.state) {
                    Some(TState::Done(o)) => Some(*o),
                    _ => None,
                },
                Arg::Value(_) => None,
            };
            if let Some(o) = oid.and_then(|o| self.objects.get(&o))
                && o.inline.is_none()
            {
                for h in &o.holders {
                    *bytes.entry(*h).or_default() += o.size;
                }
            }
        }
        bytes.into_iter().collect()
    }

    /// The arguments as a worker gets them; `None` when one is no longer
    /// available (lost since it was checked). Small objects travel inline
    /// up to [`MAX_INLINE_ARGS`] bytes in all; the rest by their holders.
    pub(super) fn resolve_args(&self, args: &[Arg]) -> Option<Vec<ResolvedArg>> {
        let mut budget = MAX_INLINE_ARGS;
        args.iter()
            .map(|a| {
                let oid = match a {
                    Arg::Value(b) => return Some(ResolvedArg::Value(b.clone())),
                    Arg::Object(o) => *o,
                    Arg::Task(t) => match self.tasks.get(t).map(|t| &t.state) {
                        Some(TState::Done(o)) => *o,
                        _ => return None,
                    },
                };
                let mut loc = self.loc(&oid)?;
                if let Some(b) = &loc.inline {
                    if b.len() <= budget {
                        budget -= b.len();
                    } else if !loc.holders.is_empty() {
                        loc.inline = None;
                    }
                }
                if loc.inline.is_none() && loc.holders.is_empty() {
                    return None;
                }
                Some(ResolvedArg::Object(loc))
            })
            .collect()
    }

    /// Send a task's attempt to the node the scheduler assigned it to.
    fn dispatch(&mut self, t: TaskId, node: NodeId) {
        let Some(task) = self.tasks.get(&t) else {
            self.sched.unassign(node);
            return;
        };
        let Some(args) = self.resolve_args(&task.args) else {
            // An argument was lost meanwhile: wait for it again.
            self.sched.unassign(node);
            if let Some(task) = self.tasks.get_mut(&t) {
                task.state = TState::Waiting;
            }
            return self.try_ready(Waiter::Task(t));
        };
        let attempt = task.attempts + 1;
        // A driver's arguments are WAVE text; it holds its entrypoint
        // resources and is never retried by its node.
        let (component, function, options, wave_args) = match &task.kind {
            Kind::Task {
                component,
                function,
                options,
            } => (component, function, options.clone(), None),
            Kind::Driver {
                component,
                function,
                wave_args,
                resources,
            } => {
                let options = TaskOptions {
                    resources: resources.clone(),
                    max_retries: 0,
                    ..TaskOptions::default()
                };
                (component, function, options, Some(wave_args))
            }
            Kind::ActorCall { .. } => return,
        };
        // Its submitter may take a small result straight from the node (a
        // driver's goes to the head alone).
        let caller_key = task
            .owner
            .filter(|_| wave_args.is_none())
            .and_then(|o| self.sessions.get(&o))
            .and_then(|s| s.results_key);
        let assign = Assign {
            task: t,
            job: task.job,
            attempt,
            component: *component,
            function: function.clone(),
            args,
            options,
            driver: wave_args.is_some(),
            wave_args: wave_args.cloned().unwrap_or_default(),
            caller_key,
        };
        let job = task.job;
        if let Some(task) = self.tasks.get_mut(&t) {
            task.state = TState::Running(node);
            task.attempts = attempt;
            task.held = Resources::default();
            task.started = false;
            task.cpus_released = false;
            task.ran_on = Some(node);
        }
        if let Some(n) = self.nodes.get_mut(&node) {
            n.running.insert(t);
        }
        self.open_attempt(node, t);
        if let Some(j) = self.jobs.get_mut(&job)
            && j.state == JobState::Pending
        {
            j.state = JobState::Running;
            self.job_changed(job);
            self.save_job(job);
        }
        self.send_node(node, Effect::Assign(assign));
    }
}
