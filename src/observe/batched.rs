//! Batched log output: `tracing` lines are appended to one shared buffer and written out when it
//! holds [`BATCH_BYTES`] or every [`FLUSH_INTERVAL`], instead of one `write` system call per
//! line (with the access log on, one per HTTP request).
//!
//! No line is dropped: a full buffer is written by the thread that filled it. A line waits at
//! most one interval; dropping the [`BatchGuard`] (at exit) writes what is left.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;
use tracing_subscriber::fmt::MakeWriter;

/// A buffer this full is written at once, by the thread that filled it.
pub const BATCH_BYTES: usize = 64 * 1024;
/// The longest a line waits in the buffer.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

struct Shared<W> {
    /// Pending lines and the sink they go to, under one lock so lines are written in order.
    state: Mutex<(Vec<u8>, W)>,
    /// Set (and signalled) when the guard is dropped.
    stop: Mutex<bool>,
    wake: Condvar,
}

impl<W: Write> Shared<W> {
    fn append(&self, line: &[u8]) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (buffer, sink) = &mut *state;
        buffer.extend_from_slice(line);
        if buffer.len() >= BATCH_BYTES {
            write_out(buffer, sink);
        }
    }

    fn flush(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (buffer, sink) = &mut *state;
        write_out(buffer, sink);
    }
}

/// Writes and empties `buffer`. A failing log sink has nowhere to report to: the lines are
/// dropped rather than kept growing.
fn write_out<W: Write>(buffer: &mut Vec<u8>, sink: &mut W) {
    if !buffer.is_empty() {
        let _ = sink.write_all(buffer).and_then(|()| sink.flush());
        buffer.clear();
    }
}

/// A `MakeWriter` for `tracing_subscriber::fmt` that batches lines (see the module docs).
pub struct Batched<W> {
    shared: Arc<Shared<W>>,
}

/// Owns the flushing thread; dropping it stops the thread and writes out every pending line.
pub struct BatchGuard<W: Write + Send + 'static> {
    shared: Arc<Shared<W>>,
    thread: Option<JoinHandle<()>>,
}

impl<W: Write + Send + 'static> std::fmt::Debug for BatchGuard<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchGuard").finish_non_exhaustive()
    }
}

/// A batching writer over `sink` and the guard of its flushing thread (`headwater-log`).
pub fn batched<W: Write + Send + 'static>(sink: W) -> std::io::Result<(Batched<W>, BatchGuard<W>)> {
    let shared = Arc::new(Shared {
        state: Mutex::new((Vec::with_capacity(BATCH_BYTES * 2), sink)),
        stop: Mutex::new(false),
        wake: Condvar::new(),
    });
    let flusher = shared.clone();
    let thread = std::thread::Builder::new()
        .name("headwater-log".into())
        .spawn(move || {
            let mut stop = flusher.stop.lock().unwrap_or_else(PoisonError::into_inner);
            while !*stop {
                stop = flusher
                    .wake
                    .wait_timeout(stop, FLUSH_INTERVAL)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                flusher.flush();
            }
        })?;
    Ok((
        Batched {
            shared: shared.clone(),
        },
        BatchGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

impl<W: Write + Send + 'static> Drop for BatchGuard<W> {
    fn drop(&mut self) {
        *self
            .shared
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.shared.flush();
    }
}

/// One event's writer: `tracing_subscriber::fmt` writes each formatted line with one call.
pub struct LineWriter<'a, W> {
    shared: &'a Shared<W>,
}

impl<W: Write> Write for LineWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.shared.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + 'a> MakeWriter<'a> for Batched<W> {
    type Writer = LineWriter<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test can read while the writer owns it.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("sink").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn len(&self) -> usize {
            self.0.lock().expect("sink").len()
        }
    }

    #[test]
    fn lines_are_written_in_order_by_size_by_time_and_on_drop() {
        let sink = Sink::default();
        let (writer, guard) = batched(sink.clone()).expect("thread");
        writer.make_writer().write_all(b"first\n").expect("write");
        // The interval flush, waited for with a deadline rather than a fixed sleep.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink.len() == 0 {
            assert!(std::time::Instant::now() < deadline, "never flushed");
            std::thread::sleep(Duration::from_millis(10));
        }
        let line = vec![b'x'; 1000];
        for _ in 0..(BATCH_BYTES / line.len() + 1) {
            writer.make_writer().write_all(&line).expect("write");
        }
        assert!(sink.len() > BATCH_BYTES, "a full batch is written at once");
        writer.make_writer().write_all(b"last\n").expect("write");
        drop(guard);
        let text = sink.0.lock().expect("sink").clone();
        assert!(text.starts_with(b"first\n") && text.ends_with(b"last\n"));
        assert_eq!(text.len(), 6 + (BATCH_BYTES / 1000 + 1) * 1000 + 5);
    }
}
