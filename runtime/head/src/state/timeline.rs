//! The timeline: where and when each attempt ran. An attempt opens when the
//! head sends it to a node (it takes the node's lowest free slot, so the
//! spans of one slot never overlap) and closes when its node answers, dies,
//! or its job ends. Closed spans are kept in one ring for the whole head,
//! the newest [`MAX_SPANS`], so the head's memory stays bounded whatever
//! the jobs do; a job's timeline is read from the ring and its open ones.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use ferray_core::view::Span;
use ferray_core::{JobId, NodeId, TaskId, cut_text};

use super::views::clip;
use super::{NodeEntry, State, TaskEntry};

/// Closed spans the head keeps: each is about 100 bytes with its function
/// (cut to 1 KiB), and a failure's error (cut to 1 KiB).
pub const MAX_SPANS: usize = 100_000;
/// The longest error a span keeps.
const MAX_SPAN_ERROR: usize = 1_024;

/// An attempt that runs: its place in the order of attempts, its slot and
/// when it started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Open {
    pub seq: u64,
    pub slot: u32,
    pub start_us: u64,
}

/// A node's slots: the lowest free one is taken first.
#[derive(Debug, Default)]
pub(super) struct Slots {
    next: u32,
    free: BinaryHeap<Reverse<u32>>,
}

impl Slots {
    fn take(&mut self) -> u32 {
        match self.free.pop() {
            Some(Reverse(s)) => s,
            None => {
                self.next += 1;
                self.next - 1
            }
        }
    }

    fn give(&mut self, slot: u32) {
        if slot < self.next {
            self.free.push(Reverse(slot));
        }
    }

    /// Slots in use.
    pub(super) fn used(&self) -> usize {
        self.next as usize - self.free.len()
    }
}

/// How an attempt ended.
pub(super) enum End<'a> {
    Finished,
    ErrValue,
    Failed(&'a str),
    Lost(&'a str),
    Cancelled(&'a str),
}

impl End<'_> {
    fn outcome(&self) -> &'static str {
        match self {
            End::Finished => "FINISHED",
            End::ErrValue => "ERR_VALUE",
            End::Failed(_) => "FAILED",
            End::Lost(_) => "LOST",
            End::Cancelled(_) => "CANCELLED",
        }
    }

    fn error(&self) -> String {
        match self {
            End::Finished | End::ErrValue => String::new(),
            End::Failed(e) | End::Lost(e) | End::Cancelled(e) => {
                let mut e = e.to_string();
                cut_text(&mut e, MAX_SPAN_ERROR);
                e
            }
        }
    }
}

/// The ring of closed spans and the counters.
#[derive(Debug, Default)]
pub(super) struct Timeline {
    closed: VecDeque<Span>,
    next_seq: u64,
    /// Attempts ended, ever (the dashboard's rate of tasks).
    ended: u64,
}

/// Now, in microseconds since the Unix epoch.
pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Timeline {
    fn open(&mut self, node: Option<&mut NodeEntry>, task: &mut TaskEntry) {
        let slot = node.map_or(0, |n| n.slots.take());
        task.open = Some(Open {
            seq: self.next_seq,
            slot,
            start_us: unix_us(),
        });
        self.next_seq += 1;
    }

    fn close(
        &mut self,
        node_id: NodeId,
        node: Option<&mut NodeEntry>,
        t: TaskId,
        task: &mut TaskEntry,
        end: End<'_>,
    ) {
        let Some(open) = task.open.take() else {
            return;
        };
        if let Some(n) = node {
            n.slots.give(open.slot);
        }
        self.ended += 1;
        self.closed.push_back(Span {
            seq: open.seq,
            task: t,
            job: task.job,
            attempt: task.attempts,
            function: clip(&task.name()),
            node: node_id,
            slot: open.slot,
            start_unix_us: open.start_us,
            end_unix_us: unix_us().max(open.start_us),
            outcome: end.outcome().into(),
            error: end.error(),
        });
        if self.closed.len() > MAX_SPANS {
            self.closed.pop_front();
        }
    }
}

/// The span of an attempt that runs.
fn open_span(t: TaskId, task: &TaskEntry, open: Open, node: NodeId) -> Span {
    Span {
        seq: open.seq,
        task: t,
        job: task.job,
        attempt: task.attempts,
        function: clip(&task.name()),
        node,
        slot: open.slot,
        start_unix_us: open.start_us,
        end_unix_us: 0,
        outcome: "RUNNING".into(),
        error: String::new(),
    }
}

impl State {
    /// The task's attempt was sent to `node`.
    pub(super) fn open_attempt(&mut self, node: NodeId, t: TaskId) {
        if let Some(task) = self.tasks.get_mut(&t) {
            self.timeline.open(self.nodes.get_mut(&node), task);
        }
    }

    /// The task's attempt on `node` ended.
    pub(super) fn close_attempt(&mut self, node: NodeId, t: TaskId, end: End<'_>) {
        if let Some(task) = self.tasks.get_mut(&t) {
            self.timeline
                .close(node, self.nodes.get_mut(&node), t, task, end);
        }
    }

    /// The same, for a task already taken out of the table.
    pub(super) fn close_removed(
        &mut self,
        node: NodeId,
        t: TaskId,
        task: &mut TaskEntry,
        end: End<'_>,
    ) {
        self.timeline
            .close(node, self.nodes.get_mut(&node), t, task, end);
    }

    /// Attempts ended since the head started.
    pub fn attempts_ended(&self) -> u64 {
        self.timeline.ended
    }

    /// Every span the head keeps (closed, then running) that `keep` wants,
    /// as references to the closed ones and built running ones.
    pub(super) fn spans_where<'a>(
        &'a self,
        keep: impl Fn(JobId, TaskId) -> bool + Copy + 'a,
    ) -> impl Iterator<Item = (u64, SpanRef<'a>)> + 'a {
        let closed = self
            .timeline
            .closed
            .iter()
            .filter(move |s| keep(s.job, s.task))
            .map(|s| (s.seq, SpanRef::Closed(s)));
        let open = self.tasks.iter().filter_map(move |(t, task)| {
            let open = task.open?;
            let node = task.ran_on?;
            keep(task.job, *t).then_some((open.seq, SpanRef::Open(*t, task, open, node)))
        });
        closed.chain(open)
    }

    /// The attempts of one task the head keeps, oldest first.
    pub fn task_spans(&self, t: TaskId) -> Vec<Span> {
        let mut v: Vec<Span> = self
            .spans_where(move |_, task| task == t)
            .map(|(_, s)| s.to_span())
            .collect();
        v.sort_by_key(|s| s.seq);
        v
    }
}

/// A span the head keeps, or one it builds from a running attempt.
pub(super) enum SpanRef<'a> {
    Closed(&'a Span),
    Open(TaskId, &'a TaskEntry, Open, NodeId),
}

impl SpanRef<'_> {
    pub(super) fn to_span(&self) -> Span {
        match self {
            SpanRef::Closed(s) => (*s).clone(),
            SpanRef::Open(t, task, open, node) => open_span(*t, task, *open, *node),
        }
    }
}
