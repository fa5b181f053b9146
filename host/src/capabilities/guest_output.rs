//! A guest's stdout and stderr, captured line by line into the host's log.
//!
//! Each line becomes a log event (target `trellis::guest`, field `stream`)
//! inside the span of the run that wrote it, so it carries the tenant, app,
//! component and trace id like the host's own lines. Output is bounded: a
//! line is cut at [`MAX_LINE`] bytes, and each component may log
//! [`LINES_PER_SECOND`] lines a second (bursts up to [`BURST`]); lines over
//! the rate are counted and the count is logged with the next line let
//! through. A chatty guest therefore costs the host a bounded amount of log.

use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Longest line logged; the rest of a longer line is dropped.
pub const MAX_LINE: usize = 4096;
/// Lines a component may log per second, on average.
pub const LINES_PER_SECOND: u32 = 100;
/// Lines a component may log at once.
pub const BURST: u32 = 1000;

/// One component's log budget, shared by all its runs.
pub struct OutputBudget {
    limiter: DefaultDirectRateLimiter,
    dropped: AtomicU64,
}

impl Default for OutputBudget {
    fn default() -> Self {
        let per_second = NonZeroU32::new(LINES_PER_SECOND).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(BURST).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)),
            dropped: AtomicU64::new(0),
        }
    }
}

impl OutputBudget {
    fn log(&self, stream: &'static str, line: &[u8], truncated: bool) {
        if self.limiter.check().is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                target: "trellis::guest",
                stream,
                dropped,
                "{dropped} lines of guest output dropped: over {LINES_PER_SECOND} lines a second"
            );
        }
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches('\r');
        if truncated {
            tracing::info!(target: "trellis::guest", stream, truncated, "{line}");
        } else {
            tracing::info!(target: "trellis::guest", stream, "{line}");
        }
    }
}

/// What a store hands the guest as `stdout` or `stderr`.
pub struct GuestOutput {
    stream: &'static str,
    budget: Arc<OutputBudget>,
}

impl GuestOutput {
    pub fn stdout(budget: Arc<OutputBudget>) -> Self {
        Self {
            stream: "stdout",
            budget,
        }
    }

    pub fn stderr(budget: Arc<OutputBudget>) -> Self {
        Self {
            stream: "stderr",
            budget,
        }
    }

    fn writer(&self) -> LineWriter {
        LineWriter {
            stream: self.stream,
            budget: self.budget.clone(),
            line: Vec::new(),
            truncated: false,
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.writer())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.writer())
    }
}

/// Splits what a guest writes into lines and logs each.
struct LineWriter {
    stream: &'static str,
    budget: Arc<OutputBudget>,
    /// The line so far (at most [`MAX_LINE`] bytes).
    line: Vec<u8>,
    /// The current line was longer than [`MAX_LINE`].
    truncated: bool,
}

impl LineWriter {
    fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let (part, rest, ends) = match bytes.iter().position(|&b| b == b'\n') {
                Some(at) => (&bytes[..at], &bytes[at + 1..], true),
                None => (bytes, &[][..], false),
            };
            let room = MAX_LINE - self.line.len();
            if part.len() > room {
                self.truncated = true;
            }
            self.line.extend_from_slice(&part[..part.len().min(room)]);
            if ends {
                self.finish_line();
            }
            bytes = rest;
        }
    }

    fn finish_line(&mut self) {
        self.budget.log(self.stream, &self.line, self.truncated);
        self.line.clear();
        self.truncated = false;
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.finish_line();
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for LineWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut().push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> LineWriter {
        GuestOutput::stdout(Arc::new(OutputBudget::default())).writer()
    }

    #[test]
    fn lines_are_split_across_writes_and_long_ones_cut() {
        let mut w = writer();
        w.push(b"hel");
        assert_eq!(w.line, b"hel");
        w.push(b"lo\nwor");
        assert_eq!(w.line, b"wor");
        w.push(&vec![b'x'; MAX_LINE * 2]);
        assert_eq!(w.line.len(), MAX_LINE);
        assert!(w.truncated);
        w.push(b"\n");
        assert!(w.line.is_empty());
        assert!(!w.truncated);
    }

    #[test]
    fn lines_over_the_rate_are_counted_not_logged() {
        let budget = Arc::new(OutputBudget::default());
        let mut w = GuestOutput::stderr(budget.clone()).writer();
        let many = "line\n".repeat(BURST as usize + 50);
        w.push(many.as_bytes());
        let dropped = budget.dropped.load(Ordering::Relaxed);
        // A few tokens may come back while the loop runs.
        assert!((40..=50).contains(&dropped), "{dropped}");
    }
}
