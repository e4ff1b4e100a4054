//! Where guests' stdout and stderr go: each line prefixed with the task or
//! actor that wrote it, as Ray prefixes worker output with its pid.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line a guest wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    /// `task-3`, `actor-2`.
    pub source: String,
    pub stream: Stream,
    pub line: String,
}

/// What the runtime does with guests' output.
#[derive(Debug, Clone, Default)]
pub enum OutputMode {
    /// Write each line to this process's stderr as `(task-3) line`.
    #[default]
    Stderr,
    /// Keep the lines for [`crate::Runtime::take_output`].
    Collect,
    /// Drop them.
    Discard,
}

/// Output kept per source: (stdout, stderr).
type BySource = HashMap<String, (Vec<u8>, Vec<u8>)>;

#[derive(Clone)]
pub(crate) struct OutputSink {
    mode: OutputMode,
    kept: Arc<Mutex<Vec<OutputLine>>>,
    /// A cluster worker: output is kept per source until its result goes
    /// to the head, which adds it to the job's logs.
    buffered: Arc<AtomicBool>,
    by_source: Arc<Mutex<BySource>>,
}

impl OutputSink {
    pub(crate) fn new(mode: OutputMode) -> Self {
        Self {
            mode,
            kept: Arc::default(),
            buffered: Arc::default(),
            by_source: Arc::default(),
        }
    }

    pub(crate) fn set_buffered(&self) {
        self.buffered.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_buffered(&self) -> bool {
        self.buffered.load(Ordering::Relaxed)
    }

    /// The output a source wrote since it was last taken (stdout, stderr).
    pub(crate) fn take_source(&self, source: &str) -> (Vec<u8>, Vec<u8>) {
        self.by_source.lock().remove(source).unwrap_or_default()
    }

    pub(crate) fn emit(&self, source: &str, stream: Stream, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.buffered.load(Ordering::Relaxed) {
            let mut map = self.by_source.lock();
            let entry = map.entry(source.to_string()).or_default();
            let buf = match stream {
                Stream::Stdout => &mut entry.0,
                Stream::Stderr => &mut entry.1,
            };
            // Bounded as the host bounds a guest's output.
            let room = (1usize << 20).saturating_sub(buf.len());
            buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
            return;
        }
        if matches!(self.mode, OutputMode::Discard) {
            return;
        }
        let text = String::from_utf8_lossy(bytes);
        match self.mode {
            OutputMode::Stderr => {
                let mut err = std::io::stderr().lock();
                for line in text.lines() {
                    let _ = writeln!(err, "({source}) {line}");
                }
            }
            OutputMode::Collect => {
                let mut kept = self.kept.lock();
                for line in text.lines() {
                    kept.push(OutputLine {
                        source: source.to_string(),
                        stream,
                        line: line.to_string(),
                    });
                }
            }
            OutputMode::Discard => {}
        }
    }

    pub(crate) fn take(&self) -> Vec<OutputLine> {
        std::mem::take(&mut *self.kept.lock())
    }
}
