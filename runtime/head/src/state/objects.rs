//! Objects: puts, where each object is, `locate`, and rebuilding lost ones
//! by re-running the task that made them (lineage).

use std::time::Instant;

use bytes::Bytes;
use ferray_core::{ComponentId, Error, ObjectId, TaskId};

use super::{
    ComponentUse, Effect, HEAD_HOLDER, INLINE_MAX, Kind, ObjectLoc, Put, Set, State, TState,
    Waiter, lost_made, lost_put,
};

impl State {
    /// A put: a worker holds it, or a client sent it inline or is pushing it.
    pub(super) fn put(&mut self, session: u64, p: Put) -> Result<(), Error> {
        let id = p.id;
        if let Some(b) = &p.inline
            && (b.len() > INLINE_MAX || !id.matches(b))
        {
            return Err(Error::Corrupt { id: id.to_hex() });
        }
        let node = self.node_of(session);
        let job = match self.acting_job(session, p.acting) {
            Ok(job) => job,
            Err(e) => {
                // The worker keeps nothing the head does not know of.
                if let Some(n) = node
                    && !self.objects.contains_key(&id)
                {
                    self.send_node(n, Effect::Free(vec![id]));
                }
                return Err(e);
            }
        };
        let live = self.jobs.get(&job).is_some_and(|j| !j.state.finished());
        // Counted once per object and job (an upload's second `Put` is not
        // a second put).
        if live
            && let Some(j) = self.jobs.get_mut(&job)
            && !j.objects.contains(&id)
        {
            if let Err(e) = self.job_caps.check_put(j.put_bytes, p.size) {
                // Not kept: the worker frees its copy, and the job hears why
                // (a task given the object then finds it missing).
                if let Some(n) = node
                    && !self.objects.contains_key(&id)
                {
                    self.send_node(n, Effect::Free(vec![id]));
                }
                self.log(job, "head", format!("a put was refused: {e}\n").as_bytes());
                return Err(e);
            }
            j.put_bytes += p.size;
        }
        let o = self.objects.entry(id).or_default();
        let was_available = o.available();
        o.size = p.size;
        if let Some(b) = p.inline {
            o.inline = Some(b);
        }
        let mut gave_up = false;
        if let Some(n) = node {
            // The worker keeps a copy either way; it is freed with the job.
            o.holders.insert(n);
            *o.made_on.entry(n).or_default() += 1;
        } else if p.uploading && !o.available() {
            o.uploading = true;
        } else if !p.uploading && o.uploading && !o.available() {
            // The client's upload failed.
            o.uploading = false;
            gave_up = true;
        }
        // Or it is here now (inline, or a worker's copy of what a client
        // uploads): what waited for the upload goes.
        let wake = gave_up || (!was_available && o.available());
        if live {
            o.put = true;
            o.jobs.insert(job);
            if let Some(j) = self.jobs.get_mut(&job) {
                j.objects.insert(id);
            }
        } else if o.jobs.is_empty() && !o.pinned {
            // A put into a job that has ended: nobody can refer to it.
            let waiters = std::mem::take(&mut o.waiters);
            self.objects.remove(&id);
            if let Some(n) = node {
                self.send_node(n, Effect::Free(vec![id]));
            }
            self.object_changed(id);
            for w in waiters {
                self.try_ready(w);
            }
            return Ok(());
        }
        self.object_changed(id);
        if wake {
            self.wake_object(id);
        }
        Ok(())
    }

    /// The head's store received a pushed object.
    pub fn pushed(&mut self, id: ObjectId, size: u64, pin: bool) {
        let o = self.objects.entry(id).or_default();
        o.size = size;
        o.holders.insert(HEAD_HOLDER);
        o.uploading = false;
        // Only `ferray put` pins: a client's upload may arrive before its
        // session's `Put` names the job, and must not outlive that job.
        if pin {
            o.pinned = true;
        }
        self.wake_object(id);
        self.pump();
    }

    /// A node pulled an object and keeps it.
    pub(super) fn located(&mut self, session: u64, id: ObjectId) {
        let Some(node) = self.node_of(session) else {
            return;
        };
        match self.objects.get_mut(&id) {
            Some(o) => {
                let was_available = o.available();
                o.holders.insert(node);
                if was_available {
                    self.object_changed(id);
                } else {
                    // What waited for an upload may go now.
                    self.wake_object(id);
                }
            }
            // Freed meanwhile: the node drops its copy.
            None => self.send_node(node, Effect::Free(vec![id])),
        }
    }

    pub(super) fn loc(&self, id: &ObjectId) -> Option<ObjectLoc> {
        let o = self.objects.get(id)?;
        Some(ObjectLoc {
            id: *id,
            size: o.size,
            inline: o.inline.clone(),
            holders: o
                .holders
                .iter()
                .filter_map(|h| self.holder_address(*h))
                .collect(),
        })
    }

    /// Where an object is now; `Ok(None)`: not yet (being made, pushed or
    /// rebuilt; a lost object made by a task is rebuilt now).
    pub fn locate(&mut self, id: ObjectId) -> Result<Option<ObjectLoc>, Error> {
        let Some(o) = self.objects.get(&id) else {
            return Err(Error::NotFound(format!(
                "object {} is not in the cluster (never made, or freed)",
                id.short()
            )));
        };
        if o.available() {
            return Ok(self.loc(&id));
        }
        if o.uploading {
            return Ok(None);
        }
        match o.producer {
            Some(t) => {
                if !self.rebuild(t) {
                    return Err(lost_made(&id, t));
                }
                self.pump();
                Ok(None)
            }
            None => Err(lost_put(&id)),
        }
    }

    /// Re-run the task that made a lost object (lineage); `false` when
    /// nothing can make it again (the task is gone, failed, or an actor
    /// call, whose actor state cannot be replayed).
    pub(super) fn rebuild(&mut self, t: TaskId) -> bool {
        let Some(task) = self.tasks.get_mut(&t) else {
            return false;
        };
        if !matches!(task.kind, Kind::Task { .. }) {
            return false;
        }
        match task.state {
            TState::Done(_) => {
                tracing::info!("{t}: its result was lost; re-running it (lineage)");
                task.state = TState::Waiting;
                self.try_ready(Waiter::Task(t));
                true
            }
            TState::Failed(_) => false,
            _ => true,
        }
    }

    /// The object became available, or can no longer become so: what waits
    /// for it checks again.
    pub(super) fn wake_object(&mut self, id: ObjectId) {
        self.object_changed(id);
        let ws = match self.objects.get_mut(&id) {
            Some(o) => std::mem::take(&mut o.waiters),
            None => return,
        };
        for w in ws {
            self.try_ready(w);
        }
    }
}

/// Components uploaded to the head: kept while something uses them, then
/// dropped, so that the head's memory does not grow with every component
/// ever submitted.
impl State {
    /// A component's bytes arrived (`UploadComponent`). Until a job, task
    /// or actor uses it, it is kept for [`State::component_grace`], and as
    /// long as a client whose session was open at the upload stays
    /// connected (it uploads once, and may submit much later).
    pub fn upload_component(&mut self, id: ComponentId, bytes: Bytes, now: Instant) {
        self.components.insert(id, bytes.clone());
        self.out.saves.push(super::Save::Component(id, bytes));
        self.component_use.insert(
            id,
            ComponentUse {
                seen: now,
                before_session: Some(self.next_session),
            },
        );
    }

    /// Components that no live job's task (its driver included) nor live
    /// actor uses, and have not been used or uploaded for
    /// [`State::component_grace`], are dropped. A live job keeps the
    /// components its tasks ran (a released task is forgotten before its
    /// job ends), and actors stay in the tables until their job ends, so a
    /// component lives as long as a job that used it, lineage re-runs
    /// included. A submission naming a dropped component is refused as one
    /// never uploaded.
    pub(super) fn sweep_components(&mut self, now: Instant) {
        if self.component_use.len() != self.components.len() {
            // Bytes put in place without an upload (tests) count from now.
            for id in self.components.keys() {
                self.component_use.entry(*id).or_insert(ComponentUse {
                    seen: now,
                    before_session: None,
                });
            }
            let components = &self.components;
            self.component_use
                .retain(|id, _| components.contains_key(id));
        }
        let grace = self.component_grace;
        let due = |u: &ComponentUse| now.saturating_duration_since(u.seen) >= grace;
        if !self.component_use.values().any(due) {
            return;
        }
        let mut used: Set<ComponentId> = Set::default();
        for t in self.tasks.values() {
            if let Kind::Task { component, .. } | Kind::Driver { component, .. } = &t.kind {
                used.insert(*component);
            }
        }
        for a in self.actors.values() {
            used.insert(a.component);
        }
        for j in self.jobs.values() {
            if !j.state.finished() {
                used.extend(j.components.iter().copied());
            }
        }
        let oldest_client = self
            .sessions
            .iter()
            .filter(|(_, s)| s.job.is_some())
            .map(|(id, _)| *id)
            .min();
        let mut gone = Vec::new();
        for (id, u) in self.component_use.iter_mut() {
            if used.contains(id) {
                u.seen = now;
                u.before_session = None;
            } else if due(u) {
                let awaited =
                    matches!((u.before_session, oldest_client), (Some(b), Some(c)) if c < b);
                if awaited {
                    // Kept for a client that may use it yet: looked at
                    // again after another grace, not at every sweep.
                    u.seen = now;
                } else {
                    gone.push(*id);
                }
            }
        }
        for id in gone {
            self.component_use.remove(&id);
            self.components.remove(&id);
            self.out.saves.push(super::Save::ForgetComponent(id));
            tracing::info!("component {} dropped: nothing uses it", id.short());
        }
    }
}

impl State {
    /// A node's store moved these objects to disk, or read them back: the
    /// objects page shows which copies are spilled. Objects the node does
    /// not hold are ignored.
    pub(super) fn spills(&mut self, session: u64, spilled: &[ObjectId], restored: &[ObjectId]) {
        let Some(node) = self.node_of(session) else {
            return;
        };
        for id in spilled {
            if let Some(o) = self.objects.get_mut(id)
                && o.holders.contains(&node)
            {
                o.spilled_on.insert(node);
            }
        }
        for id in restored {
            if let Some(o) = self.objects.get_mut(id) {
                o.spilled_on.remove(&node);
            }
        }
    }
}
