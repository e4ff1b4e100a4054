//! Collective groups: the `collective` imports' `all-reduce` (Ray's
//! `ray.util.collective.allreduce`), for actors created with a
//! [`GroupMember`] (what `ferray train` makes its workers).
//!
//! The members of a group on this runtime meet here: each call is a round
//! (a member's n-th call is round n), its list is added into the round's
//! sum as it comes, and the last member to come publishes the sum, which
//! every member takes back. A group is named within its job; members are
//! told apart by rank, and a rank belongs to the first actor that used it.
//!
//! On a cluster the members of a group live on several nodes. Each member
//! joins at its first all-reduce (the head answers once all have, with the
//! node of each rank: [`Transport::join`]); then the members on a node add
//! up their lists here, and the nodes all-reduce their sums in a ring
//! (reduce-scatter, then all-gather: each node sends `2 (k - 1) / k` of
//! the list, whatever the number of nodes `k`), each part sent straight to
//! the next node ([`Transport::send`]) and taken from this node's mailbox
//! ([`Collectives::deliver`]).
//!
//! A group breaks for good, and every member waiting in it fails, when a
//! member stops before giving its part: its call is dropped (the actor was
//! killed, died, or its call timed out), or the actor dies; or when a part
//! could not be sent or had the wrong length.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use std::sync::OnceLock;

use bytes::Bytes;
use ferray_core::{ActorId, Error, GroupMember, JobId};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};

/// A group's key: its job (`None`: the runtime's own) and name.
type Key = (Option<JobId>, String);

/// The most bytes of one part (a whole list of the longest all-reduce).
pub(crate) const MAX_PART_BYTES: usize = 4 * ferray_host::MAX_ALL_REDUCE;

/// The most bytes of parts this node holds that no member has taken yet
/// (sent by other nodes ahead of this one's members).
const MAX_HELD_PARTS: usize = 2 << 30;

/// How a cluster's node reaches the other nodes of its groups.
pub(crate) trait Transport: Send + Sync + 'static {
    /// This node's address, as [`Transport::join`] names nodes.
    fn address(&self) -> &str;
    /// Join `m`'s group: once every member has, the node of each rank.
    fn join(&self, job: u64, m: &GroupMember) -> BoxFuture<'static, Result<Vec<String>, Error>>;
    /// Send a part to the node at `to`; done once that node holds it.
    fn send(&self, to: &str, key: PartKey, data: Bytes) -> BoxFuture<'static, Result<(), Error>>;
    /// `m`'s group broke (`why`): its members still joining, and those
    /// that join later, fail.
    fn abandon(
        &self,
        job: u64,
        m: &GroupMember,
        why: String,
    ) -> BoxFuture<'static, Result<(), Error>>;
}

/// The step of a part that says its group broke (its bytes: why, as text).
pub(crate) const BROKEN_STEP: u32 = u32::MAX;
/// Groups this node saw break, whose late parts it drops.
const MAX_DEAD: usize = 4096;

/// One part of one step of an all-reduce between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PartKey {
    pub job: u64,
    pub group: String,
    pub round: u64,
    pub step: u32,
}

#[derive(Default)]
pub(crate) struct Collectives {
    groups: Mutex<HashMap<Key, Arc<Group>>>,
    /// Set on a cluster's node.
    transport: OnceLock<Arc<dyn Transport>>,
    parts: Mutex<Parts>,
}

/// Parts that came from other nodes, and members waiting for theirs.
#[derive(Default)]
struct Parts {
    slots: HashMap<PartKey, Slot>,
    held: usize,
    /// Groups (job, name) that broke here: their parts are dropped.
    dead: std::collections::VecDeque<(u64, String)>,
}

impl Parts {
    /// Drop the parts held for (job, group), and those that come later.
    fn bury(&mut self, job: u64, group: &str) {
        let mut freed = 0;
        self.slots.retain(|k, slot| {
            let keep = k.job != job || k.group != group;
            if let (false, Slot::Here(d)) = (keep, &*slot) {
                freed += d.len();
            }
            keep
        });
        self.held -= freed;
        if !self.dead.iter().any(|(j, g)| *j == job && g == group) {
            if self.dead.len() >= MAX_DEAD {
                self.dead.pop_front();
            }
            self.dead.push_back((job, group.to_string()));
        }
    }
}

enum Slot {
    Here(Part),
    Wanted(oneshot::Sender<Part>),
}

/// A part as it came: its frames, kept as they are (no copy into one
/// buffer), each a whole number of f32s.
#[derive(Debug, Default)]
pub(crate) struct Part {
    frames: Vec<bytes::Bytes>,
    len: usize,
}

impl Part {
    /// Add a frame; its length must be a multiple of 4.
    pub(crate) fn push(&mut self, frame: bytes::Bytes) -> Result<(), Error> {
        if !frame.len().is_multiple_of(4) {
            return Err(Error::InvalidArgument(
                "a frame of an all-reduce part splits a number".into(),
            ));
        }
        self.len += frame.len();
        self.frames.push(frame);
        Ok(())
    }

    /// Its bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// `f(dst, x)` for each number `x` of the part and its place `dst` in
    /// `into` (as long as the part): a loop per frame, over whole arrays of
    /// four bytes, that the compiler vectorizes.
    fn apply(&self, into: &mut [f32], f: impl Fn(&mut f32, f32)) {
        let mut at = 0;
        for frame in &self.frames {
            let (words, _) = frame.as_chunks::<4>();
            let n = words.len().min(into.len().saturating_sub(at));
            for (d, w) in into[at..at + n].iter_mut().zip(words) {
                f(d, f32::from_le_bytes(*w));
            }
            at += n;
        }
    }
}

struct Group {
    name: String,
    world: u32,
    st: Mutex<GroupState>,
    /// Woken when a round's sum is ready or the group breaks.
    changed: Notify,
    /// On a cluster: where the members live, once they all joined.
    plan: OnceLock<Arc<Plan>>,
}

/// A group's nodes on a cluster.
#[derive(Debug)]
struct Plan {
    /// The nodes, in the order of their lowest rank: the ring.
    nodes: Vec<String>,
    /// This node's place in the ring.
    me: usize,
    /// How many members live on this node.
    local: u32,
}

impl Plan {
    fn new(addresses: &[String], me: &str, world: u32) -> Result<Plan, Error> {
        if addresses.len() != world as usize {
            return Err(Error::System(format!(
                "the head named {} members of a group of {world}",
                addresses.len()
            )));
        }
        let mut nodes: Vec<String> = Vec::new();
        for a in addresses {
            if !nodes.contains(a) {
                nodes.push(a.clone());
            }
        }
        let local = addresses.iter().filter(|a| *a == me).count() as u32;
        let Some(me) = nodes.iter().position(|a| a == me) else {
            return Err(Error::System(format!(
                "the head names no member of the group on this node ({me})"
            )));
        };
        Ok(Plan { nodes, me, local })
    }
}

#[derive(Default)]
struct GroupState {
    /// Each rank's next round.
    next: Vec<u64>,
    /// The actor that holds each rank.
    holders: Vec<Option<ActorId>>,
    rounds: BTreeMap<u64, Round>,
    broken: Option<Error>,
    /// Ranks whose actor died.
    gone: BTreeSet<u32>,
    /// Ranks of this node that joined the group (on a cluster).
    joined: BTreeSet<u32>,
}

struct Round {
    sum: Vec<f32>,
    arrived: u32,
    /// The sum, once every member has given its part.
    done: Option<Arc<Vec<f32>>>,
    /// Members that took the sum back.
    taken: u32,
}

/// A member's round in progress: dropped before it ends, it breaks the
/// group (the member will never give its part, or never take the sum).
struct InRound<'a> {
    c: &'a Collectives,
    group: &'a Group,
    job: Option<JobId>,
    rank: u32,
    ended: bool,
}

impl Drop for InRound<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.c.brk(
                self.group,
                self.job,
                format!(
                    "rank {} of the group `{}` stopped during an all-reduce",
                    self.rank, self.group.name
                ),
            );
        }
    }
}

impl Group {
    /// Break it (once): whether this was the first break.
    fn brk(&self, why: String) -> bool {
        let mut st = self.st.lock();
        let first = st.broken.is_none();
        if first {
            st.broken = Some(Error::ActorDied(why));
        }
        st.rounds.clear();
        drop(st);
        self.changed.notify_waiters();
        first
    }

    /// Once it breaks, why.
    async fn broken(&self) -> Error {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(e) = &self.st.lock().broken {
                return e.clone();
            }
            notified.await;
        }
    }
}

impl Collectives {
    fn group(&self, job: Option<JobId>, m: &GroupMember) -> Result<Arc<Group>, Error> {
        let mut groups = self.groups.lock();
        let g = groups
            .entry((job, m.group.clone()))
            .or_insert_with(|| {
                Arc::new(Group {
                    name: m.group.clone(),
                    world: m.world_size,
                    st: Mutex::new(GroupState {
                        next: vec![0; m.world_size as usize],
                        holders: vec![None; m.world_size as usize],
                        ..GroupState::default()
                    }),
                    changed: Notify::new(),
                    plan: OnceLock::new(),
                })
            })
            .clone();
        if g.world != m.world_size {
            return Err(Error::InvalidArgument(format!(
                "the group `{}` has {} members, not {}",
                m.group, g.world, m.world_size
            )));
        }
        Ok(g)
    }

    /// Break `g` of `job`: its members here fail; on a cluster, the head
    /// (for members still joining) and the group's other nodes are told,
    /// and parts for it are dropped.
    fn brk(&self, g: &Group, job: Option<JobId>, why: String) {
        if !g.brk(why.clone()) {
            return;
        }
        let Some(t) = self.transport.get() else {
            return;
        };
        let j = job.map_or(0, |j| j.0);
        self.parts.lock().bury(j, &g.name);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut tells = Vec::new();
        if let Ok(m) = GroupMember::new(g.name.clone(), 0, g.world) {
            tells.push(t.abandon(j, &m, why.clone()));
        }
        if let Some(plan) = g.plan.get() {
            for (i, node) in plan.nodes.iter().enumerate() {
                if i != plan.me {
                    let key = PartKey {
                        job: j,
                        group: g.name.clone(),
                        round: 0,
                        step: BROKEN_STEP,
                    };
                    tells.push(t.send(node, key, Bytes::from(why.clone().into_bytes())));
                }
            }
        }
        rt.spawn(async move {
            for r in futures::future::join_all(tells).await {
                if let Err(e) = r {
                    tracing::debug!("telling of a broken group: {e}");
                }
            }
        });
    }

    /// This node's way to the other nodes of its groups (a cluster's
    /// worker sets it once, before any actor starts).
    pub(crate) fn set_transport(&self, t: Arc<dyn Transport>) {
        let _ = self.transport.set(t);
    }

    /// The element-wise sum of `data` over the `m.world_size` members of
    /// `m.group` in `job`; `actor` is the caller.
    pub(crate) async fn all_reduce(
        &self,
        job: Option<JobId>,
        actor: ActorId,
        m: &GroupMember,
        data: Vec<f32>,
    ) -> Result<Vec<f32>, Error> {
        if m.world_size == 1 {
            return Ok(data);
        }
        let g = self.group(job, m)?;
        if let Some(e) = &g.st.lock().broken {
            return Err(e.clone());
        }
        let mut guard = InRound {
            c: self,
            group: &g,
            job,
            rank: m.rank,
            ended: false,
        };
        let plan = match self.transport.get() {
            Some(t) => {
                let joined = tokio::select! {
                    p = self.plan(&g, t, job, m) => p,
                    e = g.broken() => Err(e),
                };
                Some(joined.inspect_err(|_| guard.ended = true)?)
            }
            None => None,
        };
        let expected = plan.as_ref().map_or(g.world, |p| p.local);
        let rank = m.rank as usize;
        let (round, lead) = {
            let mut st = g.st.lock();
            if let Some(e) = &st.broken {
                guard.ended = true;
                return Err(e.clone());
            }
            match st.holders[rank] {
                Some(a) if a != actor => {
                    guard.ended = true;
                    return Err(Error::InvalidArgument(format!(
                        "rank {rank} of the group `{}` belongs to {a}",
                        m.group
                    )));
                }
                Some(_) => {}
                None => st.holders[rank] = Some(actor),
            }
            let n = st.next[rank];
            st.next[rank] = n + 1;
            let r = st.rounds.entry(n).or_insert_with(|| Round {
                sum: Vec::new(),
                arrived: 0,
                done: None,
                taken: 0,
            });
            if r.arrived == 0 {
                r.sum = data;
            } else if r.sum.len() != data.len() {
                let e = Error::InvalidArgument(format!(
                    "rank {rank} gave {} numbers to an all-reduce of the group `{}` where others \
                     gave {}",
                    data.len(),
                    m.group,
                    r.sum.len()
                ));
                drop(st);
                guard.ended = true;
                self.brk(&g, job, e.to_string());
                return Err(e);
            } else {
                for (s, x) in r.sum.iter_mut().zip(&data) {
                    *s += x;
                }
            }
            r.arrived += 1;
            let lead = if r.arrived == expected {
                // The last member here: the sum of this node's members,
                // then of the nodes.
                let sum = std::mem::take(&mut r.sum);
                match &plan {
                    Some(p) if p.nodes.len() > 1 => Some(sum),
                    _ => {
                        r.done = Some(Arc::new(sum));
                        drop(st);
                        g.changed.notify_waiters();
                        None
                    }
                }
            } else {
                None
            };
            (n, lead)
        };
        if let (Some(sum), Some(plan), Some(t)) = (lead, &plan, self.transport.get()) {
            let key = PartKey {
                job: job.map_or(0, |j| j.0),
                group: m.group.clone(),
                round,
                step: 0,
            };
            let ring = tokio::select! {
                r = self.ring(t.as_ref(), plan, key, sum) => r,
                e = g.broken() => Err(e),
            };
            match ring {
                Ok(sum) => {
                    if let Some(r) = g.st.lock().rounds.get_mut(&round) {
                        r.done = Some(Arc::new(sum));
                    }
                    g.changed.notify_waiters();
                }
                Err(e) => {
                    guard.ended = true;
                    // A group that broke meanwhile says why (its parts are
                    // dropped as it breaks, which may end the ring first).
                    let e = g.st.lock().broken.clone().unwrap_or(e);
                    self.brk(&g, job, e.to_string());
                    return Err(e);
                }
            }
        }
        let sum = loop {
            let notified = g.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = g.st.lock();
                if let Some(e) = &st.broken {
                    guard.ended = true;
                    return Err(e.clone());
                }
                if let Some(r) = st.rounds.get_mut(&round)
                    && let Some(sum) = r.done.clone()
                {
                    r.taken += 1;
                    if r.taken == expected {
                        st.rounds.remove(&round);
                    }
                    break sum;
                }
            }
            notified.await;
        };
        guard.ended = true;
        drop(guard);
        // The last to take it gets the buffer itself.
        Ok(Arc::try_unwrap(sum).unwrap_or_else(|a| a.as_ref().clone()))
    }

    /// Where `g`'s members live: `m` joins at its first all-reduce.
    async fn plan(
        &self,
        g: &Group,
        t: &Arc<dyn Transport>,
        job: Option<JobId>,
        m: &GroupMember,
    ) -> Result<Arc<Plan>, Error> {
        if !g.st.lock().joined.contains(&m.rank) {
            let addresses = t.join(job.map_or(0, |j| j.0), m).await?;
            let plan = Arc::new(Plan::new(&addresses, t.address(), g.world)?);
            let _ = g.plan.set(plan);
            g.st.lock().joined.insert(m.rank);
        }
        g.plan
            .get()
            .cloned()
            .ok_or_else(|| Error::System("a group joined without a plan".into()))
    }

    /// All-reduce this node's `sum` with the other nodes of `plan`, in a
    /// ring: k - 1 steps that each send one k-th of the list to the next
    /// node and add the one from the previous (then node i holds the whole
    /// sum of part i + 1), and k - 1 steps that pass the summed parts on.
    async fn ring(
        &self,
        t: &dyn Transport,
        plan: &Plan,
        key: PartKey,
        data: Vec<f32>,
    ) -> Result<Vec<f32>, Error> {
        // Shared with the part in flight, which is sent from it without a
        // copy; the step's send is done (and the part dropped) before the
        // list is written again.
        let mut data = Arc::new(data);
        let k = plan.nodes.len();
        let i = plan.me;
        let next = &plan.nodes[(i + 1) % k];
        let len = data.len();
        let bounds = |c: usize| (c * len / k, (c + 1) * len / k);
        for step in 0..2 * (k - 1) {
            let s = step % (k - 1);
            let gather = step >= k - 1;
            let (send_c, recv_c) = if gather {
                ((i + 1 + k - s) % k, (i + k - s) % k)
            } else {
                ((i + k - s) % k, (i + 2 * k - s - 1) % k)
            };
            let (a, b) = bounds(send_c);
            let bytes = part_bytes(&data, a..b);
            let part = PartKey {
                step: step as u32,
                ..key.clone()
            };
            let (sent, got) = futures::join!(t.send(next, part.clone(), bytes), self.recv(part));
            sent?;
            let got = got?;
            let (a, b) = bounds(recv_c);
            // The list itself, unless the transport still holds the part
            // sent (then a copy).
            let data = Arc::make_mut(&mut data);
            if got.len() != (b - a) * 4 {
                return Err(Error::InvalidArgument(format!(
                    "another node of the group `{}` all-reduces a list of another length",
                    key.group
                )));
            }
            if gather {
                got.apply(&mut data[a..b], |d, x| *d = x);
            } else {
                got.apply(&mut data[a..b], |d, x| *d += x);
            }
        }
        Ok(Arc::try_unwrap(data).unwrap_or_else(|a| a.as_ref().clone()))
    }

    /// A part from another node (the `Collective` service): to the member
    /// waiting for it, or held until one does.
    pub(crate) fn deliver(&self, key: PartKey, data: Part) -> Result<(), Error> {
        if key.step == BROKEN_STEP {
            // Another node of the group saw it break.
            let job = (key.job != 0).then_some(JobId(key.job));
            let g = self.groups.lock().get(&(job, key.group.clone())).cloned();
            let why = String::from_utf8_lossy(&data.frames.concat()).into_owned();
            match g {
                Some(g) => self.brk(&g, job, why),
                None => self.parts.lock().bury(key.job, &key.group),
            }
            return Ok(());
        }
        let mut guard = self.parts.lock();
        let Parts { slots, held, dead } = &mut *guard;
        if dead.iter().any(|(j, g)| *j == key.job && *g == key.group) {
            return Ok(());
        }
        use std::collections::hash_map::Entry;
        match slots.entry(key) {
            Entry::Occupied(e) if matches!(e.get(), Slot::Wanted(_)) => {
                if let Slot::Wanted(tx) = e.remove() {
                    let _ = tx.send(data);
                }
                Ok(())
            }
            // The first one stays.
            Entry::Occupied(e) => Err(Error::InvalidArgument(format!(
                "a second part {} of round {} of the group `{}`",
                e.key().step,
                e.key().round,
                e.key().group
            ))),
            Entry::Vacant(e) => {
                if *held + data.len() > MAX_HELD_PARTS {
                    return Err(Error::InvalidArgument(format!(
                        "this node holds {held} bytes of all-reduce parts no member has taken"
                    )));
                }
                *held += data.len();
                e.insert(Slot::Here(data));
                Ok(())
            }
        }
    }

    async fn recv(&self, key: PartKey) -> Result<Part, Error> {
        let rx = {
            let mut parts = self.parts.lock();
            match parts.slots.remove(&key) {
                Some(Slot::Here(d)) => {
                    parts.held -= d.len();
                    return Ok(d);
                }
                _ => {
                    let (tx, rx) = oneshot::channel();
                    parts.slots.insert(key.clone(), Slot::Wanted(tx));
                    rx
                }
            }
        };
        // Given up (the member stopped): its slot goes.
        struct Unwant<'a>(&'a Collectives, Option<PartKey>);
        impl Drop for Unwant<'_> {
            fn drop(&mut self) {
                if let Some(k) = self.1.take() {
                    let mut parts = self.0.parts.lock();
                    if matches!(parts.slots.get(&k), Some(Slot::Wanted(_))) {
                        parts.slots.remove(&k);
                    }
                }
            }
        }
        let mut unwant = Unwant(self, Some(key));
        let got = rx
            .await
            .map_err(|_| Error::System("an all-reduce part was dropped".into()));
        unwant.1 = None;
        got
    }

    /// The actor holding `m`'s rank died or lost its state (made before its
    /// first all-reduce, the group is made broken, so that the others fail
    /// rather than wait). The group goes once every rank of this node has
    /// (every rank, embedded).
    pub(crate) fn member_died(&self, job: Option<JobId>, m: &GroupMember, why: &str) {
        let Ok(g) = self.group(job, m) else {
            return;
        };
        self.brk(
            &g,
            job,
            format!("rank {} of the group `{}` died: {why}", m.rank, m.group),
        );
        let all_gone = {
            let mut st = g.st.lock();
            st.gone.insert(m.rank);
            let here = match (g.plan.get(), self.transport.get()) {
                (Some(plan), _) => plan.local as usize,
                // Not joined here: the head knows it broke, so a member
                // that comes later fails at its join.
                (None, Some(_)) => st.holders.iter().flatten().count().max(1),
                (None, None) => g.world as usize,
            };
            st.gone.len() >= here
        };
        if all_gone {
            self.groups.lock().remove(&(job, m.group.clone()));
            self.parts.lock().bury(job.map_or(0, |j| j.0), &m.group);
        }
    }
}

/// `data[r]` as little-endian bytes: on a little-endian host the numbers'
/// own bytes, shared with `data` (no copy).
fn part_bytes(data: &Arc<Vec<f32>>, r: std::ops::Range<usize>) -> Bytes {
    #[cfg(target_endian = "little")]
    {
        struct Shared(Arc<Vec<f32>>, std::ops::Range<usize>);
        impl AsRef<[u8]> for Shared {
            fn as_ref(&self) -> &[u8] {
                bytemuck::cast_slice(&self.0[self.1.clone()])
            }
        }
        Bytes::from_owner(Shared(data.clone(), r))
    }
    #[cfg(not(target_endian = "little"))]
    {
        Bytes::from(le_bytes(&data[r]))
    }
}

/// `xs` as little-endian bytes (written in place: a loop the compiler
/// turns into copies, not a push per byte).
#[cfg(not(target_endian = "little"))]
fn le_bytes(xs: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; xs.len() * 4];
    for (o, x) in out.as_chunks_mut::<4>().0.iter_mut().zip(xs) {
        *o = x.to_le_bytes();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(rank: u32, world: u32) -> GroupMember {
        GroupMember::new("g", rank, world).unwrap()
    }

    #[tokio::test]
    async fn every_member_gets_the_sum_round_after_round() {
        let c = Arc::new(Collectives::default());
        let mut hs = Vec::new();
        for rank in 0..4u32 {
            let c = c.clone();
            hs.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for round in 0..3 {
                    let data = vec![rank as f32 + round as f32, 1.0];
                    let m = member(rank, 4);
                    out.push(
                        c.all_reduce(None, ActorId(rank as u64), &m, data)
                            .await
                            .unwrap(),
                    );
                }
                out
            }));
        }
        for h in hs {
            let out = h.await.unwrap();
            for (round, sum) in out.iter().enumerate() {
                assert_eq!(sum, &vec![6.0 + 4.0 * round as f32, 4.0]);
            }
        }
        assert!(
            c.groups
                .lock()
                .values()
                .all(|g| g.st.lock().rounds.is_empty())
        );
    }

    #[tokio::test]
    async fn a_member_that_stops_breaks_the_group_for_the_others() {
        let c = Arc::new(Collectives::default());
        let c1 = c.clone();
        let waiting = tokio::spawn(async move {
            c1.all_reduce(None, ActorId(0), &member(0, 3), vec![1.0])
                .await
        });
        // Rank 1 gives its part, then is dropped before the sum is made.
        let m1 = member(1, 3);
        let gone = c.all_reduce(None, ActorId(1), &m1, vec![1.0]);
        let _ = tokio::time::timeout(std::time::Duration::from_millis(50), gone).await;
        let e = waiting.await.unwrap().unwrap_err();
        assert!(matches!(e, Error::ActorDied(_)), "{e}");
        let again = c
            .all_reduce(None, ActorId(2), &member(2, 3), vec![1.0])
            .await
            .unwrap_err();
        assert!(
            again.to_string().contains("stopped during an all-reduce"),
            "{again}"
        );
        for rank in 0..3 {
            assert_eq!(c.groups.lock().len(), 1);
            c.member_died(None, &member(rank, 3), "killed");
        }
        assert!(
            c.groups.lock().is_empty(),
            "a group goes with its last member"
        );
    }

    #[tokio::test]
    async fn a_member_dead_before_its_first_call_fails_the_others() {
        let c = Arc::new(Collectives::default());
        c.member_died(None, &member(1, 2), "trapped");
        let e = c
            .all_reduce(None, ActorId(0), &member(0, 2), vec![1.0])
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("rank 1 of the group `g` died: trapped"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn lengths_sizes_and_ranks_must_agree() {
        let c = Arc::new(Collectives::default());
        let c1 = c.clone();
        let first = tokio::spawn(async move {
            c1.all_reduce(None, ActorId(0), &member(0, 2), vec![1.0])
                .await
        });
        tokio::task::yield_now().await;
        let e = c
            .all_reduce(None, ActorId(1), &member(1, 2), vec![1.0, 2.0])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("gave 2 numbers"), "{e}");
        assert!(first.await.unwrap().is_err());

        let m = GroupMember::new("h", 0, 2).unwrap();
        let c2 = c.clone();
        let _held =
            tokio::spawn(async move { c2.all_reduce(None, ActorId(7), &m, vec![1.0]).await });
        tokio::task::yield_now().await;
        let other = GroupMember::new("h", 0, 3).unwrap();
        let e = c
            .all_reduce(None, ActorId(8), &other, vec![1.0])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("has 2 members"), "{e}");
        let same_rank = GroupMember::new("h", 0, 2).unwrap();
        let e = c
            .all_reduce(None, ActorId(8), &same_rank, vec![1.0])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("belongs to"), "{e}");
        // Another job's group of the same name is another group.
        let j = Some(JobId(5));
        assert_eq!(
            c.all_reduce(
                j,
                ActorId(9),
                &GroupMember::new("h", 0, 1).unwrap(),
                vec![2.0]
            )
            .await
            .unwrap(),
            vec![2.0]
        );
    }

    /// Nodes in one process: each a `Collectives` whose transport hands
    /// parts straight to the others'.
    struct Wire {
        me: String,
        ranks: Vec<String>,
        nodes: Arc<Mutex<HashMap<String, Arc<Collectives>>>>,
    }

    impl Transport for Wire {
        fn address(&self) -> &str {
            &self.me
        }
        fn join(
            &self,
            _job: u64,
            _m: &GroupMember,
        ) -> BoxFuture<'static, Result<Vec<String>, Error>> {
            let r = self.ranks.clone();
            Box::pin(async move { Ok(r) })
        }
        fn abandon(
            &self,
            _job: u64,
            _m: &GroupMember,
            _why: String,
        ) -> BoxFuture<'static, Result<(), Error>> {
            Box::pin(async { Ok(()) })
        }
        fn send(
            &self,
            to: &str,
            key: PartKey,
            data: Bytes,
        ) -> BoxFuture<'static, Result<(), Error>> {
            let peer = self.nodes.lock().get(to).cloned();
            Box::pin(async move {
                let mut part = Part::default();
                part.push(data)?;
                peer.ok_or_else(|| Error::System("no such node".into()))?
                    .deliver(key, part)
            })
        }
    }

    #[tokio::test]
    async fn nodes_all_reduce_their_members_sums_in_a_ring() {
        // Five ranks on three nodes, unevenly; lists of 7 numbers (parts of
        // unequal length).
        let ranks = ["a", "b", "a", "c", "b"];
        let nodes = wired(&ranks);
        let mut hs = Vec::new();
        for (rank, node) in ranks.iter().enumerate() {
            let c = nodes.lock()[*node].clone();
            hs.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for round in 0..3u32 {
                    let data: Vec<f32> = (0..7)
                        .map(|i| (rank as u32 * 10 + i + round) as f32)
                        .collect();
                    let m = GroupMember::new("g", rank as u32, 5).unwrap();
                    out.push(
                        c.all_reduce(Some(JobId(3)), ActorId(rank as u64), &m, data)
                            .await
                            .unwrap(),
                    );
                }
                out
            }));
        }
        for h in hs {
            let out = h.await.unwrap();
            for (round, sum) in out.iter().enumerate() {
                let want: Vec<f32> = (0..7)
                    .map(|i| (0..5u32).map(|r| (r * 10 + i + round as u32) as f32).sum())
                    .collect();
                assert_eq!(sum, &want, "round {round}");
            }
        }
        for c in nodes.lock().values() {
            assert!(c.parts.lock().slots.is_empty(), "every part was taken");
        }
    }

    fn wired(ranks: &[&str]) -> Arc<Mutex<HashMap<String, Arc<Collectives>>>> {
        let ranks: Vec<String> = ranks.iter().map(|s| s.to_string()).collect();
        let nodes: Arc<Mutex<HashMap<String, Arc<Collectives>>>> = Default::default();
        for n in &ranks {
            if nodes.lock().contains_key(n) {
                continue;
            }
            let c = Arc::new(Collectives::default());
            c.set_transport(Arc::new(Wire {
                me: n.clone(),
                ranks: ranks.clone(),
                nodes: nodes.clone(),
            }));
            nodes.lock().insert(n.clone(), c);
        }
        nodes
    }

    #[tokio::test]
    async fn a_member_dying_on_one_node_fails_the_members_waiting_on_another() {
        let nodes = wired(&["a", "b"]);
        let a = nodes.lock()["a"].clone();
        let b = nodes.lock()["b"].clone();
        let (m0, m1) = (member(0, 2), member(1, 2));
        let job = Some(JobId(1));
        // A first round together.
        let (x, y) = tokio::join!(
            a.all_reduce(job, ActorId(0), &m0, vec![1.0]),
            b.all_reduce(job, ActorId(1), &m1, vec![2.0])
        );
        assert_eq!((x.unwrap(), y.unwrap()), (vec![3.0], vec![3.0]));
        // Rank 0 waits in the next; rank 1's actor dies on its node.
        let waiting =
            tokio::spawn(async move { a.all_reduce(job, ActorId(0), &m0, vec![1.0]).await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        b.member_died(job, &m1, "killed");
        let e = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the waiting member is told")
            .unwrap()
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("rank 1 of the group `g` died: killed"),
            "{e}"
        );
        // Its parts are dropped, and late ones too.
        assert!(b.parts.lock().slots.is_empty());
        let mut late = Part::default();
        late.push(bytes::Bytes::from(vec![0u8; 4])).unwrap();
        let key = PartKey {
            job: 1,
            group: "g".into(),
            round: 5,
            step: 0,
        };
        b.deliver(key, late).unwrap();
        assert!(
            b.parts.lock().slots.is_empty(),
            "a part of a broken group is dropped"
        );
    }

    #[tokio::test]
    async fn a_second_part_is_refused_and_the_first_kept() {
        let c = Collectives::default();
        let key = PartKey {
            job: 1,
            group: "g".into(),
            round: 0,
            step: 0,
        };
        let part = |x: u8| {
            let mut p = Part::default();
            p.push(bytes::Bytes::from(vec![x; 4])).unwrap();
            p
        };
        c.deliver(key.clone(), part(1)).unwrap();
        assert!(c.deliver(key.clone(), part(2)).is_err());
        assert_eq!(c.parts.lock().held, 4);
        let got = c.recv(key).await.unwrap();
        let mut x = [0f32];
        got.apply(&mut x, |d, v| *d = v);
        assert_eq!(x[0], f32::from_le_bytes([1; 4]));
        assert_eq!(c.parts.lock().held, 0);
    }
}
