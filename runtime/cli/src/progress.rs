//! The progress bar of `ferray run` and `ferray submit` on a terminal:
//! tasks done / total, the rate and the time elapsed (indicatif). Lines
//! written while it shows (the job's log, guests' output, `tracing`'s
//! records) go through it, so they print above the bar instead of through
//! it. Off a terminal there is no bar: the commands print plain lines.

use std::io::IsTerminal as _;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bar on screen, if any: where [`LogWriter`] sends `tracing`'s lines.
static SHOWN: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// What the bar shows after its prefix (`job-3 `, or nothing).
const TEMPLATE: &str = "{prefix}[{elapsed_precise}] [{wide_bar}] {pos}/{len} tasks ({per_sec:1})";

/// Whether this process's stderr is a terminal (a bar is drawn there).
pub(crate) fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// The bar on screen (one at a time); it is cleared when dropped.
pub(crate) struct Bar {
    bar: ProgressBar,
}

impl Bar {
    /// Show a bar on stderr, its line starting with `prefix`.
    pub(crate) fn new(prefix: &str) -> Bar {
        // Hidden until the first count comes (not a full bar of 0/0).
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
        // A constant template: it parses (tests/all/cli.rs sees the bar).
        if let Ok(style) = ProgressStyle::with_template(TEMPLATE) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(prefix.to_string());
        *SHOWN.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
        Bar { bar }
    }

    /// Show `done` of `total` tasks (nothing yet while there are none).
    pub(crate) fn set(&self, done: u64, total: u64) {
        if total == 0 {
            return;
        }
        if self.bar.is_hidden() {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        self.bar.set_length(total.max(done));
        self.bar.set_position(done);
    }

    /// Print a line above the bar (a plain line while it is not shown yet).
    pub(crate) fn println(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        *SHOWN.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.bar.finish_and_clear();
    }
}

/// `tracing`'s writer: stderr, around the bar when one is shown (the bar
/// is cleared, the record written, the bar drawn again).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogWriter
    }
}

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // A clone, so the lock is not held while the bar draws.
        let shown = SHOWN.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match shown {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
