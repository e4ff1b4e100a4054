//! `/metrics`: the cluster as the head sees it, in Prometheus text format
//! (through `prometheus-client`), under Ray's metric names with a `ferray_`
//! prefix where the meaning matches. The gauges are read from the state's
//! tables at scrape time (`State::counts`): nothing is counted twice. The
//! histograms are what the edge times as messages pass: a task's wait from
//! its submission to its first assignment, and an attempt's run from
//! `Started` to `Done`.

use std::collections::HashMap;
use std::time::Instant;

use axum::extract::State as AxState;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferray_core::TaskId;
use prometheus_client::encoding::text::encode_registry;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::Head;
use crate::state::State;

/// Prometheus' text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

type Labels = Vec<(&'static str, String)>;
type FGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// When tasks were submitted and attempts started, until they are assigned
/// and done, and the histograms of those waits. Lives beside the state,
/// under the head's lock; entries of tasks that left the phase another way
/// (cancelled, their job ended, their node died) go at the next sweep.
#[derive(Debug)]
pub(crate) struct Timings {
    submitted: HashMap<TaskId, Instant>,
    started: HashMap<TaskId, Instant>,
    scheduling: Histogram,
    run: Histogram,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            submitted: HashMap::new(),
            started: HashMap::new(),
            // 100 µs to about 7 minutes.
            scheduling: Histogram::new(exponential_buckets(1e-4, 4.0, 12)),
            // 1 ms to about 3 days.
            run: Histogram::new(exponential_buckets(1e-3, 4.0, 14)),
        }
    }
}

impl Timings {
    pub(crate) fn submitted(&mut self, t: TaskId, now: Instant) {
        self.submitted.insert(t, now);
    }

    pub(crate) fn assigned(&mut self, t: TaskId, now: Instant) {
        if let Some(at) = self.submitted.remove(&t) {
            self.scheduling.observe((now - at).as_secs_f64());
        }
    }

    pub(crate) fn started(&mut self, t: TaskId, now: Instant) {
        self.started.insert(t, now);
    }

    pub(crate) fn done(&mut self, t: TaskId, now: Instant) {
        if let Some(at) = self.started.remove(&t) {
            self.run.observe((now - at).as_secs_f64());
        }
    }

    /// Forget the tasks that are no longer waiting for a node, or running.
    pub(crate) fn sweep(&mut self, state: &State) {
        self.submitted.retain(|t, _| {
            matches!(
                state.task_state(*t),
                Some("WAITING_FOR_DEPENDENCIES" | "PENDING_NODE_ASSIGNMENT")
            )
        });
        self.started
            .retain(|t, _| state.task_state(*t) == Some("RUNNING"));
    }
}

/// Each resource of `total` as two gauges, `State` USED and AVAILABLE,
/// labelled `Name` and `extra` (memory too when `memory`).
fn resource_gauges(
    family: &Family<Labels, FGauge>,
    extra: &[(&'static str, String)],
    total: &ferray_core::Resources,
    free: &ferray_core::Resources,
    memory: bool,
) {
    let put = |name: &str, total: f64, free: f64| {
        for (state, v) in [("USED", (total - free).max(0.0)), ("AVAILABLE", free)] {
            let mut labels = vec![("Name", name.to_string()), ("State", state.to_string())];
            labels.extend(extra.iter().cloned());
            family.get_or_create(&labels).set(v);
        }
    };
    put("CPU", total.num_cpus(), free.num_cpus());
    put("GPU", total.num_gpus(), free.num_gpus());
    if memory {
        put("memory", total.memory() as f64, free.memory() as f64);
    }
    for (name, amount) in total.custom() {
        let left = free
            .custom()
            .find(|(n, _)| *n == name)
            .map_or(0.0, |(_, v)| v);
        put(name, amount, left);
    }
}

fn gauge_family() -> Family<Labels, Gauge> {
    Family::default()
}

fn set(f: &Family<Labels, Gauge>, labels: Labels, v: u64) {
    f.get_or_create(&labels)
        .set(i64::try_from(v).unwrap_or(i64::MAX));
}

/// The metrics text, read under the lock.
pub(crate) fn render(head: &Head) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::default();
    let (c, scheduling, run) = {
        let core = head.core.lock();
        (
            core.state.counts(),
            core.timings.scheduling.clone(),
            core.timings.run.clone(),
        )
    };
    let tasks = gauge_family();
    for (state, n) in &c.tasks {
        set(&tasks, vec![("State", state.clone())], *n);
    }
    reg.register(
        "ferray_tasks",
        "Tasks (functions, drivers and actor calls) the head lists, by state",
        tasks,
    );
    let actors = gauge_family();
    for (state, n) in &c.actors {
        set(&actors, vec![("State", state.to_string())], *n);
    }
    reg.register("ferray_actors", "Actors of live jobs, by state", actors);
    let jobs = gauge_family();
    for (state, n) in &c.jobs {
        set(&jobs, vec![("State", state.to_string())], *n);
    }
    reg.register("ferray_jobs", "Jobs the head keeps, by state", jobs);
    let active = Gauge::<i64>::default();
    active.set(c.nodes_alive as i64);
    reg.register(
        "ferray_cluster_active_nodes",
        "Nodes alive in the cluster",
        active,
    );
    let failed = Gauge::<i64>::default();
    failed.set(c.nodes_dead as i64);
    reg.register(
        "ferray_cluster_failed_nodes",
        "Nodes declared dead and still listed",
        failed,
    );
    let resources = Family::<Labels, FGauge>::default();
    for (node, total, free) in &c.resources {
        let node = vec![("InstanceId", node.to_string())];
        resource_gauges(&resources, &node, total, free, true);
    }
    reg.register(
        "ferray_resources",
        "Logical resources of each live node, USED or AVAILABLE, as the scheduler counts them",
        resources,
    );
    let objects = Gauge::<i64>::default();
    objects.set(i64::try_from(c.objects).unwrap_or(i64::MAX));
    reg.register("ferray_objects", "Objects in the head's table", objects);
    let bytes = gauge_family();
    for (node, n) in &c.object_bytes {
        let holder = if *node == crate::state::HEAD_HOLDER {
            "head".to_string()
        } else {
            node.to_string()
        };
        set(&bytes, vec![("InstanceId", holder)], *n);
    }
    reg.register(
        "ferray_object_store_memory",
        "Bytes of the cluster's objects each node holds, as the head knows them",
        bytes,
    );
    reg.register(
        "ferray_scheduling_latency_seconds",
        "From a task's submission to its first assignment to a node",
        scheduling,
    );
    reg.register(
        "ferray_task_run_seconds",
        "From an attempt's start on its node (resources granted) to its end",
        run,
    );
    let mut out = String::new();
    encode_registry(&mut out, &reg)?;
    Ok(out)
}

/// Metrics text as a response (500 if it could not be written).
pub(super) fn text_response(text: Result<String, std::fmt::Error>) -> Response {
    match text {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::warn!("the metrics could not be written: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// `GET /metrics`.
pub(super) async fn scrape(AxState(head): AxState<Head>) -> Response {
    text_response(render(&head))
}

/// A worker's view of itself, for its own `/metrics` (the worker fills it
/// from its runtime at each scrape; this crate knows no runtime).
#[derive(Debug, Clone, Default)]
pub struct NodeMetrics {
    /// Bytes of the objects its store holds in memory, and on disk.
    pub object_store_bytes_in_memory: u64,
    pub object_store_bytes_spilled: u64,
    /// Objects its store holds (in memory or spilled).
    pub objects: u64,
    /// Instance slots (one per task attempt or actor): in use, and all
    /// (`None`: not known to the caller).
    pub instance_slots: Option<(u64, u64)>,
    /// Bytes of guest linear memory (and decoded arguments) held now, and
    /// the node's limit (`None`: not known to the caller).
    pub guest_memory: Option<(u64, u64)>,
    /// The node's resources as its admission counts them: total and free.
    pub resources_total: ferray_core::Resources,
    pub resources_free: ferray_core::Resources,
    /// Bytes of GPU buffers held by its tasks (`None`: no GPU).
    pub gpu_memory_used: Option<u64>,
    /// Objects it pulled from other nodes: their bytes, and the seconds
    /// each took.
    pub transfer_bytes: Option<ferray_core::HistogramSnapshot>,
    pub transfer_seconds: Option<ferray_core::HistogramSnapshot>,
}

/// A histogram counted elsewhere (a node's [`ferray_core::Histogram`]),
/// written as Prometheus writes its own.
#[derive(Debug)]
struct Counted(ferray_core::HistogramSnapshot);

impl prometheus_client::encoding::EncodeMetric for Counted {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        // The encoder sums the buckets as it writes them (Prometheus'
        // are cumulative): give it each bucket's own count.
        let mut below = 0;
        let own: Vec<(f64, u64)> = self
            .0
            .buckets
            .iter()
            .map(|(bound, n)| {
                let mine = n.saturating_sub(below);
                below = *n;
                (*bound, mine)
            })
            .collect();
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.0.sum,
            self.0.count,
            &own,
            None,
        )
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }
}

/// A worker's metrics text.
pub fn render_node(m: &NodeMetrics) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::default();
    let g = |v: u64| {
        let x = Gauge::<i64>::default();
        x.set(i64::try_from(v).unwrap_or(i64::MAX));
        x
    };
    let store = gauge_family();
    set(
        &store,
        vec![("Location", "IN_MEMORY".into())],
        m.object_store_bytes_in_memory,
    );
    set(
        &store,
        vec![("Location", "SPILLED".into())],
        m.object_store_bytes_spilled,
    );
    reg.register(
        "ferray_object_store_memory",
        "Bytes of the objects this node's store holds, in memory or spilled to disk",
        store,
    );
    reg.register(
        "ferray_object_store_num_local_objects",
        "Objects this node's store holds",
        g(m.objects),
    );
    if let Some((used, total)) = m.instance_slots {
        let slots = gauge_family();
        set(&slots, vec![("State", "USED".into())], used);
        set(
            &slots,
            vec![("State", "AVAILABLE".into())],
            total.saturating_sub(used),
        );
        reg.register(
            "ferray_node_instance_slots",
            "Guest instance slots (one per task attempt or actor), USED or AVAILABLE",
            slots,
        );
    }
    if let Some((used, limit)) = m.guest_memory {
        reg.register(
            "ferray_node_guest_mem_used",
            "Bytes of guest linear memory and decoded arguments held on this node",
            g(used),
        );
        reg.register(
            "ferray_node_guest_mem_limit",
            "The node's limit on guest memory (--memory)",
            g(limit),
        );
    }
    let resources = Family::<Labels, FGauge>::default();
    resource_gauges(
        &resources,
        &[],
        &m.resources_total,
        &m.resources_free,
        false,
    );
    reg.register(
        "ferray_node_resources",
        "This node's resources as its admission counts them, USED or AVAILABLE",
        resources,
    );
    if let Some(bytes) = m.gpu_memory_used {
        reg.register(
            "ferray_node_gpus_memory_used",
            "Bytes of GPU buffers its tasks hold",
            g(bytes),
        );
    }
    if let Some(h) = &m.transfer_bytes {
        reg.register(
            "ferray_object_transfer_bytes",
            "Objects this node pulled from other nodes, by size",
            Counted(h.clone()),
        );
    }
    if let Some(h) = &m.transfer_seconds {
        reg.register(
            "ferray_object_transfer_seconds",
            "How long each pull of an object from another node took",
            Counted(h.clone()),
        );
    }
    let mut out = String::new();
    encode_registry(&mut out, &reg)?;
    Ok(out)
}
