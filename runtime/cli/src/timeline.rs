//! `ferray timeline JOB -o trace.json`: a job's attempts as a Chrome trace
//! (Perfetto, `chrome://tracing`): a row per node and slot, a span per
//! attempt with its function, failures marked. The head keeps the newest
//! attempts of the whole cluster (`ferray_head`'s `MAX_SPANS`); older ones
//! of a long job are no longer in its timeline.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use ferray::cluster::{ListFilter, chrome_trace};
use ferray_core::JobId;

use crate::cluster::{ConnectArgs, job_id, runtime};

#[derive(clap::Args, Debug)]
pub struct TimelineArgs {
    /// The job's id (`job-3` or `3`).
    job: String,
    /// Where to write the trace (`-` for stdout).
    #[arg(short = 'o', long = "output", value_name = "FILE", default_value = "-")]
    output: PathBuf,
    #[command(flatten)]
    connect: ConnectArgs,
}

pub fn timeline(args: TimelineArgs) -> Result<ExitCode> {
    let job = JobId(job_id(&args.job)?);
    let exec = runtime()?;
    let (spans, names) = exec.block_on(async {
        let mut c = args.connect.client().await?;
        // The job must be one the head knows (an empty timeline of a typo
        // would say nothing).
        c.watch_job(job.0, false, |_| {}).await?;
        let mut spans = Vec::new();
        let filter = ListFilter {
            job: Some(job),
            ..ListFilter::default()
        };
        c.state_pages_where("spans", &filter, |p| spans.extend(p.spans))
            .await?;
        let mut names = BTreeMap::new();
        c.state_pages("nodes", |p| {
            for n in p.nodes {
                let name = if n.name.is_empty() { n.address } else { n.name };
                names.insert(n.id, name);
            }
        })
        .await?;
        anyhow::Ok((spans, names))
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let trace = chrome_trace(&spans, &names, now);
    if args.output.as_os_str() == "-" {
        crate::stdout_line(format_args!("{trace}"), true);
    } else {
        std::fs::write(&args.output, trace)
            .with_context(|| format!("cannot write {}", args.output.display()))?;
        eprintln!(
            "{} attempts of {job} written to {}",
            spans.len(),
            args.output.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
