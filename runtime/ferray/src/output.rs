//! Where guests' stdout and stderr go: each line prefixed with the task or
//! actor that wrote it, as Ray prefixes worker output with its pid.

use std::io::Write as _;
use std::sync::Arc;

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

#[derive(Clone)]
pub(crate) struct OutputSink {
    mode: OutputMode,
    kept: Arc<Mutex<Vec<OutputLine>>>,
}

impl OutputSink {
    pub(crate) fn new(mode: OutputMode) -> Self {
        Self {
            mode,
            kept: Arc::default(),
        }
    }

    pub(crate) fn emit(&self, source: &str, stream: Stream, bytes: &[u8]) {
        if bytes.is_empty() || matches!(self.mode, OutputMode::Discard) {
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
