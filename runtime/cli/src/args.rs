//! Arguments several commands share: the value parsers, what a node offers
//! (`run` and `start`), and what a job's driver holds (`run` and `submit`,
//! Ray's `--entrypoint-num-cpus` and friends).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use ferray::{JobCaps, OutputMode, Resources, Runtime, RuntimeBuilder, parse_duration, parse_size};

pub(crate) fn size(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}

pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

pub(crate) fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not K=V")),
    }
}

pub(crate) fn dir_grant(s: &str) -> Result<(PathBuf, String), String> {
    match s.split_once("::") {
        Some((h, g)) if !h.is_empty() && !g.is_empty() => Ok((PathBuf::from(h), g.to_string())),
        _ => Err(format!(
            "`{s}` is not HOST::GUEST (for example `./data::/data`)"
        )),
    }
}

/// Custom resources, `{"tpu": 2, "fpga": 0.5}`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Custom(pub Vec<(String, f64)>);

pub(crate) fn custom(json: &str) -> Result<Custom, String> {
    let map: std::collections::BTreeMap<String, f64> = serde_json::from_str(json)
        .map_err(|e| format!("expected a JSON object of amounts like '{{\"tpu\": 2}}': {e}"))?;
    Ok(Custom(map.into_iter().collect()))
}

/// What a node offers its tasks.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct NodeArgs {
    /// CPUs tasks may hold at once (default: this machine's cores).
    #[arg(long, value_name = "N")]
    pub num_cpus: Option<f64>,
    /// GPUs tasks may hold at once (default: the GPU adapters found).
    #[arg(long, value_name = "N")]
    pub num_gpus: Option<f64>,
    /// Count a software GPU adapter (Mesa's llvmpipe) as a GPU.
    #[arg(long)]
    pub allow_software_gpu: bool,
    /// Custom resources, as JSON: '{"tpu": 2}'.
    #[arg(long, value_name = "JSON", value_parser = custom)]
    pub resources: Option<Custom>,
    /// The node's memory, like 8GiB (default: this machine's): what tasks
    /// may reserve at once, and what all its guests' memories may hold.
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub memory: Option<u64>,
    /// Bytes of objects kept in memory before spilling to disk.
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub object_store_memory: Option<u64>,
    /// Where each store makes its own spill directory (0700, removed when
    /// it stops; stale ones of dead processes are removed at start-up).
    /// Default: the temp dir.
    #[arg(long, value_name = "DIR")]
    pub spill_dir: Option<PathBuf>,
    /// The most memory one task or actor may ask for, like 512MiB (a
    /// ceiling: more is refused; the default cap becomes this).
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub max_task_memory: Option<u64>,
    /// The longest wall-clock limit a task may ask for, like 30s (blocked
    /// time included; the default limit becomes this).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub max_task_timeout: Option<std::time::Duration>,
    /// The most fuel a task may ask for (turns fuel metering on).
    #[arg(long, value_name = "N")]
    pub max_task_fuel: Option<u64>,
    /// The most bytes one call's arguments may take, objects resolved
    /// (default 256MiB).
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub max_argument_bytes: Option<u64>,
    /// The most tasks one job may have in flight (submitted, not finished).
    #[arg(long, value_name = "N")]
    pub max_job_tasks: Option<u64>,
    /// The most live actors one job may have.
    #[arg(long, value_name = "N")]
    pub max_job_actors: Option<u64>,
    /// The most bytes one job may put over its life, like 10GiB.
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub max_job_put_bytes: Option<u64>,
    /// The most bytes of a job's log the head keeps (default 16MiB; the
    /// oldest lines go first).
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub max_job_log_bytes: Option<u64>,
}

impl NodeArgs {
    /// The driver's runtime (connected to the cluster at `address`, or an
    /// embedded one with these resources; output to stderr) and the
    /// component at `path` loaded on it (read first: a missing file fails
    /// before any connection).
    pub(crate) fn driver_with(
        &self,
        path: &std::path::Path,
        address: Option<&str>,
        token: Option<&str>,
    ) -> Result<(Runtime, ferray::Component)> {
        use anyhow::Context as _;
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let rt = self.driver(address, token)?;
        let comp = rt
            .load_bytes_sync(&bytes)
            .with_context(|| format!("cannot load {}", path.display()))?;
        Ok((rt, comp))
    }

    /// The driver's runtime: connected to the cluster at `address`, or an
    /// embedded one with these resources; output to stderr.
    pub(crate) fn driver(&self, address: Option<&str>, token: Option<&str>) -> Result<Runtime> {
        Ok(match address {
            Some(address) => {
                let mut b = Runtime::builder().output(OutputMode::Stderr);
                if let Some(t) = token {
                    b = b.token(t);
                }
                futures::executor::block_on(b.connect(address))?
            }
            None => self.builder(OutputMode::Stderr).build_sync()?,
        })
    }

    /// A runtime builder with these resources, its output going to `output`.
    pub(crate) fn builder(&self, output: OutputMode) -> RuntimeBuilder {
        let mut b = Runtime::builder()
            .output(output)
            .allow_software_gpu(self.allow_software_gpu);
        if let Some(n) = self.num_cpus {
            b = b.num_cpus(n);
        }
        if let Some(n) = self.num_gpus {
            b = b.num_gpus(n);
        }
        if let Some(m) = self.memory {
            b = b.memory(m);
        }
        if let Some(m) = self.object_store_memory {
            b = b.object_store_memory(m);
        }
        if let Some(d) = &self.spill_dir {
            b = b.spill_base(d);
        }
        for (k, v) in self.resources.as_ref().map_or(&[][..], |c| &c.0) {
            b = b.resource(k, *v);
        }
        if let Some(m) = self.max_task_memory {
            b = b.max_task_memory(m);
        }
        if let Some(t) = self.max_task_timeout {
            b = b.max_task_timeout(t);
        }
        if let Some(f) = self.max_task_fuel {
            b = b.max_task_fuel(f);
        }
        if let Some(n) = self.max_argument_bytes {
            b = b.max_argument_bytes(n);
        }
        b.job_caps(self.job_caps())
    }

    /// The per-job caps these flags set.
    pub(crate) fn job_caps(&self) -> JobCaps {
        JobCaps {
            tasks: self.max_job_tasks,
            actors: self.max_job_actors,
            put_bytes: self.max_job_put_bytes,
            log_bytes: self.max_job_log_bytes,
        }
    }
}

/// What a job's driver (the function called from the command line) holds
/// while it runs, as Ray's `ray job submit --entrypoint-num-cpus ...`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct EntrypointArgs {
    /// CPUs the driver holds (default 0, as Ray's entrypoint).
    #[arg(long, value_name = "N")]
    pub entrypoint_num_cpus: Option<f64>,
    /// GPUs the driver holds (default 0); a driver that uses the GPU itself needs one.
    #[arg(long, value_name = "N")]
    pub entrypoint_num_gpus: Option<f64>,
    /// Custom resources the driver holds, as JSON: '{"tpu": 1}'.
    #[arg(long, value_name = "JSON", value_parser = custom)]
    pub entrypoint_resources: Option<Custom>,
}

impl EntrypointArgs {
    /// Ray's defaults: nothing unless asked for.
    pub(crate) fn resources(&self) -> Result<Resources> {
        let mut r = Resources::default();
        if let Some(n) = self.entrypoint_num_cpus {
            r = r.with_cpus(n)?;
        }
        if let Some(n) = self.entrypoint_num_gpus {
            r = r.with_gpus(n)?;
        }
        for (k, v) in self.entrypoint_resources.as_ref().map_or(&[][..], |c| &c.0) {
            r = r.with_custom(k, *v)?;
        }
        Ok(r)
    }
}
