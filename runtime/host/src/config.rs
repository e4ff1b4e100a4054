use std::path::PathBuf;
use std::time::Duration;

/// How a node's host is set up. One per process.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Where compiled components are cached on disk (`None`: memory only).
    pub cache_dir: Option<PathBuf>,
    /// Whether fuel metering is on (costs speed for every guest; needed for
    /// any task that sets fuel).
    pub fuel: bool,
    /// Default memory cap of one task or actor instance, in bytes.
    pub default_memory_limit: u64,
    /// Bytes of stdout and of stderr kept per task; the rest is dropped.
    pub max_output_bytes: usize,
    /// How often the epoch advances: the granularity of time limits and of
    /// the cooperative yields of long-running guests.
    pub epoch_tick: Duration,
    /// Concurrent instances the pooling allocator can hold (`None`: no pooling).
    pub pool_instances: Option<u32>,
    /// Extra directories granted to every guest (`host`, `guest` path).
    pub dirs: Vec<(PathBuf, String)>,
    /// Environment variables granted to every guest.
    pub env: Vec<(String, String)>,
    /// The node's GPU, shared by the tasks that ask for one (`None`: no GPU).
    pub gpu: Option<ferray_gpu::Gpu>,
    /// Bytes of linear memory all the node's instances may hold together
    /// (`None`: no bound but each instance's own cap).
    pub guest_memory: Option<u64>,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            fuel: false,
            default_memory_limit: 1 << 30,
            max_output_bytes: 1 << 20,
            epoch_tick: Duration::from_millis(5),
            pool_instances: Some(1000),
            dirs: Vec::new(),
            env: Vec::new(),
            gpu: None,
            guest_memory: None,
        }
    }
}

/// Where a call's stdout goes while it runs: whole lines, as they are
/// written (a line longer than [`LIVE_CHUNK`] goes in pieces).
pub type LiveOutput = std::sync::Arc<dyn Fn(&[u8]) + Send + Sync>;

/// The most bytes of one line held back waiting for its end.
pub const LIVE_CHUNK: usize = 64 << 10;

/// The per-call limits of a task attempt or actor method call.
#[derive(Clone, Default)]
pub struct Limits {
    /// Memory cap in bytes (`None`: the host's default).
    pub memory: Option<u64>,
    /// Wall-clock limit of the call.
    pub timeout: Option<Duration>,
    /// Fuel for the call (needs `HostConfig::fuel`).
    pub fuel: Option<u64>,
    /// GPUs the task asked for: the `gpu` imports work only when above 0.
    pub num_gpus: f64,
    /// Its stdout as it runs (`None`: all of it with the outcome). Bounded
    /// as the captured output is (`HostConfig::max_output_bytes`); stderr
    /// always comes with the outcome (a trap's message takes its tail).
    pub live_stdout: Option<LiveOutput>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("memory", &self.memory)
            .field("timeout", &self.timeout)
            .field("fuel", &self.fuel)
            .field("num_gpus", &self.num_gpus)
            .field("live_stdout", &self.live_stdout.is_some())
            .finish()
    }
}
