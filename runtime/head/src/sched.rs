//! The central scheduler's placement: which node gets a task or an actor.
//! Pure bookkeeping (no I/O, no locks), so that the head can call it under
//! its lock and a benchmark can drive it with simulated nodes.
//!
//! Rules:
//! - a demand runs on a node only while the node has all of it free (CPUs,
//!   GPUs, memory, custom resources, in fixed point): no node is ever loaded
//!   past what it announced. Tasks are pipelined: a node may also hold a
//!   backlog of assigned tasks (at most eight per CPU) that wait in its
//!   own admission queue, so that a node never idles while the head
//!   answers; a task takes its resources here when the node
//!   reports that it started ([`Scheduler::started`]), so this view mirrors
//!   the node's own;
//! - a demand that no live node could hold even when idle is infeasible and
//!   reported at once, never queued silently;
//! - default strategy: the node holding most of the task's argument bytes
//!   (data locality), else the node with the most CPUs free;
//! - `Spread`: round robin over the nodes with room;
//! - node affinity: only that node, or (soft) the default rule when it is
//!   gone or can never hold the demand.

use std::collections::BTreeMap;

use ferray_core::{NodeId, ResourceSet, Resources, Strategy};

/// Where a demand goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Placed; the node's resources are taken.
    Node(NodeId),
    /// Feasible, but no suitable node has room now.
    Wait,
    /// No node could ever hold it.
    Infeasible(String),
}

#[derive(Debug)]
struct NodeRes {
    set: ResourceSet,
    /// Tasks assigned that have not started yet.
    backlog: u32,
    max_backlog: u32,
}

impl NodeRes {
    /// Whether a task of `demand` may be assigned now.
    fn open_for(&self, demand: &Resources) -> bool {
        self.set.total().covers(demand) && self.backlog < self.max_backlog
    }
}

/// The nodes' capacities and what is free of them.
#[derive(Debug, Default)]
pub struct Scheduler {
    nodes: BTreeMap<NodeId, NodeRes>,
    cursor: u64,
    /// Something changed that may let a waiting demand in (a node came
    /// or went, resources or a backlog place were given back): the head
    /// runs its placement pass only then ([`Scheduler::take_changed`]).
    changed: bool,
    /// Nodes are expected (a restarted head waits for its workers to join
    /// again): while there is none, demands wait instead of being
    /// infeasible.
    awaiting_nodes: bool,
}

impl Scheduler {
    /// While `on` and no node is live, placements wait for one.
    pub fn await_nodes(&mut self, on: bool) {
        if self.awaiting_nodes != on {
            self.awaiting_nodes = on;
            self.changed = true;
        }
    }

    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_node(&mut self, id: NodeId, total: Resources) {
        self.changed = true;
        let max_backlog = ((total.num_cpus() * 8.0).ceil() as u32).max(4);
        self.nodes.insert(
            id,
            NodeRes {
                set: ResourceSet::new(total),
                backlog: 0,
                max_backlog,
            },
        );
    }

    pub fn remove_node(&mut self, id: NodeId) {
        self.changed = true;
        self.nodes.remove(&id);
    }

    /// Whether something changed since the last call that may let a
    /// waiting demand be placed (or make one infeasible); clears it.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn total(&self, id: NodeId) -> Option<&Resources> {
        self.nodes.get(&id).map(|n| n.set.total())
    }

    pub fn free(&self, id: NodeId) -> Option<&Resources> {
        self.nodes.get(&id).map(|n| n.set.free())
    }

    /// Tasks assigned to `id` that have not started yet.
    pub fn backlog(&self, id: NodeId) -> Option<u32> {
        self.nodes.get(&id).map(|n| n.backlog)
    }

    /// Give back what a placement took.
    pub fn release(&mut self, id: NodeId, demand: &Resources) {
        if let Some(n) = self.nodes.get_mut(&id) {
            self.changed = true;
            n.set.release(demand);
        }
    }

    /// Take `demand` on `id` if it is free there now.
    pub fn try_take(&mut self, id: NodeId, demand: &Resources) -> bool {
        self.nodes
            .get_mut(&id)
            .is_some_and(|n| n.set.try_acquire(demand))
    }

    /// Whether some live node could ever hold `demand`; the reason if not.
    pub fn feasible(&self, demand: &Resources) -> Result<(), String> {
        if self.nodes.values().any(|n| n.set.total().covers(demand)) {
            return Ok(());
        }
        if self.nodes.is_empty() {
            return Err("the cluster has no worker nodes".into());
        }
        let why = self
            .nodes
            .iter()
            .filter_map(|(id, n)| {
                n.set
                    .total()
                    .shortfall(demand)
                    .map(|s| format!("{id}: {s}"))
            })
            .take(3)
            .collect::<Vec<_>>()
            .join("; ");
        Err(format!("no node can ever hold it ({why})"))
    }

    /// Assign a task of `demand` to a node's backlog (its resources are
    /// taken when it starts). `locality` lists the argument bytes each node
    /// holds.
    pub fn assign(
        &mut self,
        demand: &Resources,
        strategy: Strategy,
        locality: &[(NodeId, u64)],
    ) -> Placement {
        if self.awaiting_nodes && self.nodes.is_empty() {
            return Placement::Wait;
        }
        if let Err(why) = self.feasible_for(demand, strategy) {
            return Placement::Infeasible(why);
        }
        let pick = match strategy {
            Strategy::Node { node, soft } => {
                let id = NodeId(node);
                match self.nodes.get(&id) {
                    Some(n) if n.set.total().covers(demand) => {
                        if n.open_for(demand) {
                            Some(id)
                        } else {
                            None
                        }
                    }
                    _ if soft => self.best_open(demand, locality),
                    _ => None,
                }
            }
            Strategy::Spread => {
                let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
                let n = ids.len() as u64;
                let mut found = None;
                for i in 0..n {
                    let id = ids[((self.cursor + i) % n) as usize];
                    if self.nodes[&id].open_for(demand) {
                        self.cursor = (self.cursor + i + 1) % n;
                        found = Some(id);
                        break;
                    }
                }
                found
            }
            Strategy::Default => self.best_open(demand, locality),
        };
        match pick {
            Some(id) => {
                if let Some(n) = self.nodes.get_mut(&id) {
                    n.backlog += 1;
                }
                Placement::Node(id)
            }
            None => Placement::Wait,
        }
    }

    /// An assigned task started on `id`: it takes `demand` (`false` if this
    /// view had no room, which only a lagging view can show).
    pub fn started(&mut self, id: NodeId, demand: &Resources) -> bool {
        match self.nodes.get_mut(&id) {
            Some(n) => {
                // A backlog place is free again.
                self.changed = true;
                n.backlog = n.backlog.saturating_sub(1);
                n.set.try_acquire(demand)
            }
            None => false,
        }
    }

    /// What a node that came back to a restarted head runs: `demand`
    /// taken when it `started` (or its actor lives there; `true` when it
    /// was), else a place in its backlog. A report at odds with what the
    /// node offers takes nothing (and gives nothing back later).
    pub fn adopt(&mut self, id: NodeId, demand: &Resources, started: bool) -> bool {
        let Some(n) = self.nodes.get_mut(&id) else {
            return false;
        };
        self.changed = true;
        if !started {
            n.backlog += 1;
            return false;
        }
        let taken = n.set.try_acquire(demand);
        if !taken {
            tracing::warn!("{id} came back running more than it offers");
        }
        taken
    }

    /// An assigned task ended before it started.
    pub fn unassign(&mut self, id: NodeId) {
        if let Some(n) = self.nodes.get_mut(&id) {
            self.changed = true;
            n.backlog = n.backlog.saturating_sub(1);
        }
    }

    fn feasible_for(&self, demand: &Resources, strategy: Strategy) -> Result<(), String> {
        if let Strategy::Node { node, soft: false } = strategy {
            let id = NodeId(node);
            return match self.nodes.get(&id) {
                None => Err(format!("{id} (node affinity) is not a live node")),
                Some(n) if !n.set.total().covers(demand) => Err(format!(
                    "{id} (node affinity) can never hold {}",
                    n.set.total().shortfall(demand).unwrap_or_default()
                )),
                Some(_) => Ok(()),
            };
        }
        self.feasible(demand)
    }

    /// The node for a default assignment: the one holding most argument
    /// bytes, else one with room now and the shortest backlog, else the
    /// shortest backlog for its size.
    fn best_open(&self, demand: &Resources, locality: &[(NodeId, u64)]) -> Option<NodeId> {
        let mut local: Vec<&(NodeId, u64)> = locality.iter().filter(|(_, b)| *b > 0).collect();
        local.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        for (id, _) in local {
            if self.nodes.get(id).is_some_and(|n| n.open_for(demand)) {
                return Some(*id);
            }
        }
        self.nodes
            .iter()
            .filter(|(_, n)| n.open_for(demand))
            .min_by(|a, b| {
                let key = |n: &NodeRes| {
                    let room = n.set.free().covers(demand) && n.backlog == 0;
                    let load = f64::from(n.backlog) / f64::from(n.max_backlog);
                    (!room, load, -n.set.free().num_cpus())
                };
                let (ka, kb) = (key(a.1), key(b.1));
                ka.0.cmp(&kb.0)
                    .then(ka.1.total_cmp(&kb.1))
                    .then(ka.2.total_cmp(&kb.2))
                    .then(a.0.cmp(b.0))
            })
            .map(|(id, _)| *id)
    }

    /// Place `demand` and take it now (actors, which hold their resources
    /// for life). `locality` lists the argument bytes each node holds.
    pub fn place(
        &mut self,
        demand: &Resources,
        strategy: Strategy,
        locality: &[(NodeId, u64)],
    ) -> Placement {
        if self.awaiting_nodes && self.nodes.is_empty() {
            return Placement::Wait;
        }
        if let Strategy::Node { node, soft } = strategy {
            let id = NodeId(node);
            match self.nodes.get(&id) {
                Some(n) if n.set.total().covers(demand) => {
                    return if self.try_take(id, demand) {
                        Placement::Node(id)
                    } else {
                        Placement::Wait
                    };
                }
                _ if !soft => {
                    return Placement::Infeasible(match self.nodes.get(&id) {
                        None => format!("{id} (node affinity) is not a live node"),
                        Some(n) => format!(
                            "{id} (node affinity) can never hold {}",
                            n.set.total().shortfall(demand).unwrap_or_default()
                        ),
                    });
                }
                _ => {}
            }
        }
        if let Err(why) = self.feasible(demand) {
            return Placement::Infeasible(why);
        }
        let chosen = match strategy {
            Strategy::Spread => self.spread(demand),
            _ => self.best(demand, locality),
        };
        match chosen {
            Some(id) if self.try_take(id, demand) => Placement::Node(id),
            _ => Placement::Wait,
        }
    }

    fn spread(&mut self, demand: &Resources) -> Option<NodeId> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let n = ids.len() as u64;
        for i in 0..n {
            let id = ids[((self.cursor + i) % n) as usize];
            if self.nodes[&id].set.free().covers(demand) {
                self.cursor = (self.cursor + i + 1) % n;
                return Some(id);
            }
        }
        None
    }

    fn best(&self, demand: &Resources, locality: &[(NodeId, u64)]) -> Option<NodeId> {
        // Locality first: the node with most argument bytes that has room.
        let mut local: Vec<&(NodeId, u64)> = locality.iter().filter(|(_, b)| *b > 0).collect();
        local.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        for (id, _) in local {
            if self
                .nodes
                .get(id)
                .is_some_and(|n| n.set.free().covers(demand))
            {
                return Some(*id);
            }
        }
        // Else the node with most CPUs free (ties: lowest id).
        self.nodes
            .iter()
            .filter(|(_, n)| n.set.free().covers(demand))
            .max_by(|a, b| {
                let (fa, fb) = (a.1.set.free().num_cpus(), b.1.set.free().num_cpus());
                fa.total_cmp(&fb).then(b.0.cmp(a.0))
            })
            .map(|(id, _)| *id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(n: f64) -> Resources {
        Resources::cpus(n)
    }

    #[test]
    fn never_overloads_a_node_and_waits_when_full() {
        let mut s = Scheduler::new();
        s.add_node(NodeId(1), cpus(2.0));
        s.add_node(NodeId(2), cpus(1.0));
        let mut placed = Vec::new();
        for _ in 0..3 {
            match s.place(&cpus(1.0), Strategy::Default, &[]) {
                Placement::Node(id) => placed.push(id),
                other => panic!("{other:?}"),
            }
        }
        placed.sort();
        assert_eq!(placed, vec![NodeId(1), NodeId(1), NodeId(2)]);
        assert_eq!(s.place(&cpus(1.0), Strategy::Default, &[]), Placement::Wait);
        s.release(NodeId(2), &cpus(1.0));
        assert_eq!(
            s.place(&cpus(1.0), Strategy::Default, &[]),
            Placement::Node(NodeId(2))
        );
    }

    #[test]
    fn infeasible_is_reported_with_the_reason() {
        let mut s = Scheduler::new();
        s.add_node(NodeId(1), cpus(2.0));
        match s.place(&cpus(3.0), Strategy::Default, &[]) {
            Placement::Infeasible(why) => assert!(why.contains("3 CPUs"), "{why}"),
            other => panic!("{other:?}"),
        }
        let gpu = Resources::cpus(1.0).with_gpus(0.5).unwrap();
        assert!(matches!(
            s.place(&gpu, Strategy::Default, &[]),
            Placement::Infeasible(_)
        ));
    }

    #[test]
    fn locality_prefers_the_node_holding_the_bytes() {
        let mut s = Scheduler::new();
        s.add_node(NodeId(1), cpus(4.0));
        s.add_node(NodeId(2), cpus(2.0));
        let loc = [(NodeId(2), 1 << 20), (NodeId(1), 10)];
        assert_eq!(
            s.place(&cpus(1.0), Strategy::Default, &loc),
            Placement::Node(NodeId(2))
        );
    }

    #[test]
    fn spread_round_robins_and_affinity_pins() {
        let mut s = Scheduler::new();
        for i in 1..=3 {
            s.add_node(NodeId(i), cpus(8.0));
        }
        let got: Vec<_> = (0..6)
            .map(|_| s.place(&cpus(1.0), Strategy::Spread, &[]))
            .collect();
        let ids: Vec<u64> = got
            .iter()
            .map(|p| match p {
                Placement::Node(id) => id.0,
                _ => 0,
            })
            .collect();
        assert_eq!(ids, vec![1, 2, 3, 1, 2, 3]);
        let pin = Strategy::Node {
            node: 3,
            soft: false,
        };
        assert_eq!(s.place(&cpus(1.0), pin, &[]), Placement::Node(NodeId(3)));
        let gone = Strategy::Node {
            node: 9,
            soft: false,
        };
        assert!(matches!(
            s.place(&cpus(1.0), gone, &[]),
            Placement::Infeasible(_)
        ));
        let soft = Strategy::Node {
            node: 9,
            soft: true,
        };
        assert!(matches!(s.place(&cpus(1.0), soft, &[]), Placement::Node(_)));
    }

    #[test]
    fn assigned_tasks_take_resources_when_they_start() {
        let mut s = Scheduler::new();
        s.add_node(NodeId(1), cpus(1.0));
        // A backlog of 8 per CPU (at least 4), then no more.
        for _ in 0..8 {
            assert_eq!(
                s.assign(&cpus(1.0), Strategy::Default, &[]),
                Placement::Node(NodeId(1))
            );
        }
        assert_eq!(
            s.assign(&cpus(1.0), Strategy::Default, &[]),
            Placement::Wait
        );
        // Only one runs at a time: the node's view is mirrored.
        assert!(s.started(NodeId(1), &cpus(1.0)));
        assert!(!s.started(NodeId(1), &cpus(1.0)));
        assert_eq!(s.free(NodeId(1)).unwrap().num_cpus(), 0.0);
        s.release(NodeId(1), &cpus(1.0));
        assert_eq!(s.free(NodeId(1)).unwrap().num_cpus(), 1.0);
        // Two backlog slots were used up by the starts; one more is open.
        assert_eq!(
            s.assign(&cpus(1.0), Strategy::Default, &[]),
            Placement::Node(NodeId(1))
        );
        assert!(matches!(
            s.assign(&cpus(2.0), Strategy::Default, &[]),
            Placement::Infeasible(_)
        ));
    }

    #[test]
    fn assignment_prefers_idle_room_then_locality() {
        let mut s = Scheduler::new();
        s.add_node(NodeId(1), cpus(2.0));
        s.add_node(NodeId(2), cpus(2.0));
        assert_eq!(
            s.assign(&cpus(1.0), Strategy::Default, &[]),
            Placement::Node(NodeId(1))
        );
        // Node 1 has a backlog now: node 2 is idle.
        assert_eq!(
            s.assign(&cpus(1.0), Strategy::Default, &[]),
            Placement::Node(NodeId(2))
        );
        let loc = [(NodeId(1), 5 << 20)];
        assert_eq!(
            s.assign(&cpus(1.0), Strategy::Default, &loc),
            Placement::Node(NodeId(1))
        );
    }

    #[test]
    fn fractional_gpus_share_a_node() {
        let mut s = Scheduler::new();
        s.add_node(NodeId(1), cpus(4.0).with_gpus(1.0).unwrap());
        let half = cpus(0.0).with_gpus(0.5).unwrap();
        assert!(matches!(
            s.place(&half, Strategy::Default, &[]),
            Placement::Node(_)
        ));
        assert!(matches!(
            s.place(&half, Strategy::Default, &[]),
            Placement::Node(_)
        ));
        assert_eq!(s.place(&half, Strategy::Default, &[]), Placement::Wait);
    }
}
