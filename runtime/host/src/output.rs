//! Captured stdout and stderr of a guest: bounded, so that a guest cannot
//! make the host buffer more than the configured number of bytes. Bytes past
//! the bound are dropped and counted, never turned into a trap.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

#[derive(Default)]
struct Inner {
    buf: BytesMut,
    dropped: u64,
    /// Bytes already passed on live (they count toward the bound).
    sent: usize,
}

/// One guest output stream (stdout or stderr) with a byte bound.
#[derive(Clone)]
pub struct Capture {
    capacity: usize,
    inner: Arc<Mutex<Inner>>,
    /// Whole lines go here as they are written (the rest stays for
    /// [`Capture::take`]).
    live: Option<crate::config::LiveOutput>,
}

impl Capture {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Arc::default(),
            live: None,
        }
    }

    /// A capture that passes whole lines to `live` as they come.
    pub fn live(capacity: usize, live: Option<crate::config::LiveOutput>) -> Self {
        Self {
            live,
            ..Self::new(capacity)
        }
    }

    fn append(&self, bytes: &[u8]) {
        let ready = {
            let mut inner = self.inner.lock();
            let room = self.capacity.saturating_sub(inner.buf.len() + inner.sent);
            let take = room.min(bytes.len());
            inner.buf.extend_from_slice(&bytes[..take]);
            inner.dropped += (bytes.len() - take) as u64;
            if self.live.is_none() {
                return;
            }
            // Whole lines, or a long line's first part.
            let cut = match inner.buf.iter().rposition(|b| *b == b'\n') {
                Some(i) => i + 1,
                None if inner.buf.len() >= crate::config::LIVE_CHUNK => inner.buf.len(),
                None => 0,
            };
            if cut == 0 {
                return;
            }
            inner.sent += cut;
            inner.buf.split_to(cut).freeze()
        };
        // Outside the lock: the receiver may take its time.
        if let Some(live) = &self.live {
            live(&ready);
        }
    }

    /// What the guest wrote (up to the bound) and how many bytes were dropped.
    pub fn take(&self) -> (Bytes, u64) {
        let mut inner = self.inner.lock();
        let dropped = std::mem::take(&mut inner.dropped);
        (inner.buf.split().freeze(), dropped)
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        // Always accept: what does not fit is dropped and counted.
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.append(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_is_bounded_and_counts_what_it_drops() {
        let mut c = Capture::new(8);
        c.write(Bytes::from_static(b"hello ")).unwrap();
        c.write(Bytes::from_static(b"world")).unwrap();
        let (bytes, dropped) = c.take();
        assert_eq!(&bytes[..], b"hello wo");
        assert_eq!(dropped, 3);
    }
}
