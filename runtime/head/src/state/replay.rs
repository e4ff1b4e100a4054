//! A re-run driver does not redo finished work. When a job's driver runs
//! again (its node died), a submission equal to one an earlier attempt of it
//! made — the same component, function, arguments and options, the n-th
//! such in the attempt as it was the n-th before — gets the earlier task's
//! result, finished or pending, instead of a new task: the new id becomes
//! an alias of the earlier one.

use ferray_core::{ComponentId, Error, JobId, ObjectId, TaskId, TaskOptions};

use super::{Acting, Arg, Effect, Map, ObjectLoc, State, TState};

/// What a job's driver submitted, to answer a re-run's equal submissions.
#[derive(Default)]
pub(super) struct Replay {
    /// Earlier submissions: (digest of the submission, its occurrence) to
    /// the task that was made for it.
    made: Map<(ObjectId, u32), TaskId>,
    /// Occurrences of each digest in the attempt that runs now.
    seen: Map<ObjectId, u32>,
    /// The driver attempt `seen` counts for.
    attempt: u32,
    /// A re-run's ids that stand for earlier tasks, and back.
    alias_of: Map<TaskId, TaskId>,
    aliases: Map<TaskId, Vec<(u64, TaskId)>>,
}

/// The digest of a submission: what makes two of them equal.
fn digest(
    component: &ComponentId,
    function: &str,
    options: &TaskOptions,
    args: &[Arg],
) -> ObjectId {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(component.as_bytes());
    buf.extend_from_slice(&(function.len() as u64).to_le_bytes());
    buf.extend_from_slice(function.as_bytes());
    let options = format!("{options:?}");
    buf.extend_from_slice(&(options.len() as u64).to_le_bytes());
    buf.extend_from_slice(options.as_bytes());
    for a in args {
        match a {
            Arg::Value(b) => {
                buf.push(0);
                buf.extend_from_slice(&(b.len() as u64).to_le_bytes());
                buf.extend_from_slice(b);
            }
            Arg::Task(t) => {
                buf.push(1);
                buf.extend_from_slice(&t.0.to_le_bytes());
            }
            Arg::Object(o) => {
                buf.push(2);
                buf.extend_from_slice(o.as_bytes());
            }
        }
    }
    ObjectId::of(&buf)
}

impl State {
    /// A re-run's ids in `args` stand for the earlier tasks.
    pub(super) fn unalias(&self, job: JobId, args: &mut [Arg]) {
        let Some(j) = self.jobs.get(&job) else {
            return;
        };
        if j.replay.alias_of.is_empty() {
            return;
        }
        for a in args {
            if let Arg::Task(t) = a
                && let Some(earlier) = j.replay.alias_of.get(t)
            {
                *a = Arg::Task(*earlier);
            }
        }
    }

    /// A submission of `job`: when its driver makes it and an earlier
    /// attempt of the driver made an equal one, `t` becomes an alias of that
    /// task (answered with its result) and `true` comes back; otherwise the
    /// submission is remembered and a task is to be made.
    pub(super) fn replayed(
        &mut self,
        session: u64,
        acting: Acting,
        job: JobId,
        t: TaskId,
        submission: (&ComponentId, &str, &TaskOptions, &[Arg]),
    ) -> bool {
        let Some(j) = self.jobs.get(&job) else {
            return false;
        };
        let Some(driver) = j.driver.filter(|d| acting == Acting::Task(*d)) else {
            return false;
        };
        let attempt = self.tasks.get(&driver).map_or(0, |d| d.attempts);
        let (component, function, options, args) = submission;
        let key = digest(component, function, options, args);
        let Some(j) = self.jobs.get_mut(&job) else {
            return false;
        };
        let r = &mut j.replay;
        if r.attempt != attempt {
            r.attempt = attempt;
            r.seen.clear();
        }
        let n = r.seen.entry(key).or_insert(0);
        let occurrence = *n;
        *n += 1;
        let Some(&earlier) = r.made.get(&(key, occurrence)) else {
            r.made.insert((key, occurrence), t);
            return false;
        };
        r.alias_of.insert(t, earlier);
        tracing::debug!("{t} of the re-run driver of {job} is {earlier}, made before");
        let result = match self.tasks.get(&earlier).map(|e| e.state.clone()) {
            Some(TState::Done(oid)) => self
                .loc(&oid)
                .ok_or_else(|| Error::ObjectLost(format!("the result of {earlier} was freed"))),
            Some(TState::Failed(e)) => Err(e),
            Some(_) => {
                // Answered when it ends.
                if let Some(j) = self.jobs.get_mut(&job) {
                    j.replay
                        .aliases
                        .entry(earlier)
                        .or_default()
                        .push((session, t));
                }
                return true;
            }
            None => Err(Error::TaskFailed(format!("{earlier} is no longer known"))),
        };
        self.answer_aliases(job, earlier, Some((session, t)), result);
        true
    }

    /// `earlier` is over: its aliases (or only `one`) get its result.
    pub(super) fn answer_aliases(
        &mut self,
        job: JobId,
        earlier: TaskId,
        one: Option<(u64, TaskId)>,
        result: Result<ObjectLoc, Error>,
    ) {
        let to = match one {
            Some(x) => vec![x],
            None => match self.jobs.get_mut(&job) {
                Some(j) => j.replay.aliases.remove(&earlier).unwrap_or_default(),
                None => return,
            },
        };
        for (session, task) in to {
            self.send(
                session,
                Effect::Resolved {
                    task,
                    result: result.clone(),
                },
            );
        }
    }
}
