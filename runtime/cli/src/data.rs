//! `ferray data run PIPELINE.toml`: a pipeline file's dataset, read,
//! transformed by components and written, on the embedded runtime or a
//! cluster (`--address`); a line per operator as it goes on a terminal
//! (blocks, rows, rows/s), and what was written. Without a `[write]`
//! section the rows are printed as JSON lines.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use ferray_data::{Pipeline, Progress};
use futures::StreamExt as _;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::{args, progress};

#[derive(clap::Subcommand, Debug)]
pub(crate) enum DataCommand {
    /// Run a pipeline file: read, the operators (map_batches, limit,
    /// repartition), then write, or print the rows as JSON lines.
    Run(DataRunArgs),
}

#[derive(clap::Args, Debug)]
pub(crate) struct DataRunArgs {
    #[command(flatten)]
    node: args::NodeArgs,
    /// The pipeline (TOML: [read], [[ops]], [write], [execution]).
    pipeline: PathBuf,
    /// A cluster's head; without it the pipeline runs on the embedded runtime.
    #[arg(long, value_name = "HOST:PORT")]
    address: Option<String>,
    /// The cluster token (default: FERRAY_TOKEN, else the head's token file).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
}

pub(crate) fn data(cmd: DataCommand) -> Result<ExitCode> {
    let DataCommand::Run(args) = cmd;
    let pipeline = Pipeline::load(&args.pipeline)?;
    let rt = args
        .node
        .driver(args.address.as_deref(), args.token.as_deref())?;
    let ds = rt.block_on(pipeline.dataset(&rt))?;
    let started = Instant::now();
    let shown = Display::start(ds.progress());
    let outcome = rt.block_on(async {
        if pipeline.output().is_some() {
            return pipeline
                .write(&ds)
                .await
                .map(|s| s.map(|s| (s.rows, s.files.len())));
        }
        let mut rows = 0u64;
        let mut batches = ds.iter_batches()?;
        while let Some(b) = batches.next().await {
            let b = b?;
            rows += b.num_rows() as u64;
            let text = ferray_data::json_lines(&b)?;
            out!("{}", String::from_utf8_lossy(&text));
        }
        Ok(Some((rows, 0)))
    });
    shown.stop();
    let secs = started.elapsed().as_secs_f64();
    for op in ds.progress().ops() {
        let blocks = op.blocks.load(Ordering::Relaxed);
        match op.counts_rows {
            true => eprintln!(
                "{}: {blocks} blocks, {} rows",
                op.name,
                op.rows.load(Ordering::Relaxed)
            ),
            false => eprintln!("{}: {blocks} blocks", op.name),
        }
    }
    match (outcome?, pipeline.output()) {
        (Some((rows, files)), Some(dir)) => outln!(
            "wrote {rows} rows in {files} files to {} in {secs:.2} s",
            dir.display()
        ),
        (Some((rows, _)), None) => eprintln!("{rows} rows in {secs:.2} s"),
        (None, _) => {}
    }
    let _ = std::io::stdout().flush();
    Ok(ExitCode::SUCCESS)
}

/// A line per operator on a terminal while the pipeline runs.
struct Display {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Display {
    fn start(progress: Arc<Progress>) -> Display {
        let done = Arc::new(AtomicBool::new(false));
        if !progress::stderr_is_terminal() {
            return Display { done, thread: None };
        }
        let stop = done.clone();
        let thread = std::thread::spawn(move || {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let mut bars: Vec<ProgressBar> = Vec::new();
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let ops = progress.ops();
                for op in ops.iter().skip(bars.len()) {
                    let bar = multi.add(ProgressBar::new_spinner());
                    if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix}: {msg}") {
                        bar.set_style(style);
                    }
                    bar.set_prefix(op.name.clone());
                    bars.push(bar);
                }
                let secs = started.elapsed().as_secs_f64().max(1e-3);
                for (op, bar) in ops.iter().zip(&bars) {
                    let rows = op.rows.load(Ordering::Relaxed);
                    let blocks = op.blocks.load(Ordering::Relaxed);
                    bar.set_message(match op.counts_rows {
                        true => format!(
                            "{blocks} blocks, {rows} rows ({:.0} rows/s)",
                            rows as f64 / secs
                        ),
                        false => format!("{blocks} blocks ({:.1} blocks/s)", blocks as f64 / secs),
                    });
                    bar.tick();
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            for bar in bars {
                bar.finish_and_clear();
            }
        });
        Display {
            done,
            thread: Some(thread),
        }
    }

    fn stop(mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
