//! The log's writers (the JSON file, stderr): lines gather in memory and one thread per writer
//! writes them out in batches.
//!
//! A writer thread woken for every line costs each call a few thread switches; here the first
//! line into an empty buffer wakes the thread, which lets more gather for a moment, then writes
//! them all at once. The buffer is bounded: past it, lines are counted and dropped, never waited
//! for (a full disk, or a stderr pipe its reader never drains, must not stall calls), and the
//! count is written when there is room again. At exit the thread is given a moment to write
//! what is waiting, not waited for without end.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the thread lets lines gather after the first one wakes it.
const GATHER: Duration = Duration::from_millis(20);
/// Past this, lines are dropped until the thread has written what is waiting.
const MAX_PENDING_BYTES: usize = 8 << 20;
/// This much waiting wakes the thread without waiting out `GATHER`.
const WRITE_AT_BYTES: usize = 256 << 10;
/// How long a process at its end waits for its lines to be written.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// Where a writer's lines go, which decides how a loss is written down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The JSON log file: the process's log, which [`write_now`] writes out.
    JsonFile,
    /// Human lines to stderr.
    Stderr,
}

impl Destination {
    fn thread_name(self) -> &'static str {
        match self {
            Destination::JsonFile => "exai-log-writer",
            Destination::Stderr => "exai-stderr",
        }
    }

    fn write_loss(self, batch: &mut Vec<u8>, dropped: u64) {
        let _ = match self {
            Destination::JsonFile => writeln!(
                batch,
                "{{\"level\":\"WARN\",\"fields\":{{\"message\":\"{dropped} log lines dropped: \
                 the log file could not keep up\"}},\"target\":\"exai::logging\"}}"
            ),
            Destination::Stderr => writeln!(
                batch,
                "WARN {dropped} log lines dropped: stderr was not read fast enough"
            ),
        };
    }
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    dropped: u64,
    closing: bool,
}

struct Shared {
    destination: Destination,
    pending: Mutex<Pending>,
    wake: Condvar,
    /// The file or stderr. Held while a batch is taken and written, so batches reach it in
    /// order whoever writes them (the thread, or a reader of the file who wants the lines now).
    out: Mutex<Box<dyn Write + Send>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes what is waiting; `batch` is scratch room. Returns whether logging is closing.
    fn write_pending(&self, batch: &mut Vec<u8>) -> bool {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        let mut pending = self.lock();
        std::mem::swap(batch, &mut pending.bytes);
        let dropped = std::mem::take(&mut pending.dropped);
        let closing = pending.closing;
        drop(pending);
        if dropped > 0 {
            self.destination.write_loss(batch, dropped);
        }
        // A failed write (disk full, a closed pipe) loses these lines; logging goes on.
        let _ = out.write_all(batch).and_then(|()| out.flush());
        batch.clear();
        // A burst's room is given back once it is written.
        batch.shrink_to(WRITE_AT_BYTES);
        closing
    }
}

/// The process's log file writer, for [`write_now`].
static CURRENT: OnceLock<Arc<Shared>> = OnceLock::new();

/// Writes the lines waiting for the log thread now, on the caller's thread: for a reader of
/// the log file (a call's record with its log lines) that must see every line so far.
pub fn write_now() {
    if let Some(shared) = CURRENT.get() {
        shared.write_pending(&mut Vec::new());
    }
}

/// Where a log layer's lines go (cheap to clone: one per event).
#[derive(Clone)]
pub struct Batched {
    shared: Arc<Shared>,
}

/// Keep it alive while logging: on drop it has what is waiting written, and stops the thread.
pub struct WriterGuard {
    shared: Arc<Shared>,
    /// Says the thread has written its last batch.
    finished: std::sync::mpsc::Receiver<()>,
}

/// Starts the thread that writes to `out`, a `destination`.
pub fn start(
    out: impl Write + Send + 'static,
    destination: Destination,
) -> std::io::Result<(Batched, WriterGuard)> {
    let shared = Arc::new(Shared {
        destination,
        pending: Mutex::default(),
        wake: Condvar::new(),
        out: Mutex::new(Box::new(out)),
    });
    let (done, finished) = std::sync::mpsc::sync_channel(1);
    {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name(destination.thread_name().into())
            .spawn(move || {
                write_batches(&shared);
                let _ = done.send(());
            })?;
    }
    // The first file writer is the process's log (tests may start more).
    if destination == Destination::JsonFile {
        let _ = CURRENT.set(shared.clone());
    }
    Ok((
        Batched {
            shared: shared.clone(),
        },
        WriterGuard { shared, finished },
    ))
}

fn write_batches(shared: &Shared) {
    let mut batch = Vec::new();
    loop {
        let mut pending = shared.lock();
        while pending.bytes.is_empty() && !pending.closing {
            pending = shared
                .wake
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if !pending.closing && pending.bytes.len() < WRITE_AT_BYTES {
            // Let the rest of this moment's lines join the first.
            drop(
                shared
                    .wake
                    .wait_timeout(pending, GATHER)
                    .unwrap_or_else(PoisonError::into_inner),
            );
        } else {
            drop(pending);
        }
        let closing = shared.write_pending(&mut batch);
        if closing && shared.lock().bytes.is_empty() {
            return;
        }
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        // A writer stuck on a pipe nobody reads is left behind: the process ends all the same.
        let _ = self.finished.recv_timeout(EXIT_WAIT);
    }
}

/// One event's line, handed over whole when the event is written.
pub struct Line {
    shared: Arc<Shared>,
    bytes: Vec<u8>,
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.bytes.is_empty() {
            return;
        }
        let mut pending = self.shared.lock();
        let was_empty = pending.bytes.is_empty();
        if pending.bytes.len() + self.bytes.len() > MAX_PENDING_BYTES {
            pending.dropped += 1;
            return;
        }
        pending.bytes.extend_from_slice(&self.bytes);
        let full = pending.bytes.len() >= WRITE_AT_BYTES;
        drop(pending);
        if was_empty || full {
            self.shared.wake.notify_one();
        }
    }
}

impl<'a> MakeWriter<'a> for Batched {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            shared: self.shared.clone(),
            bytes: Vec::with_capacity(512),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file stand-in whose contents the test can read.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_once_in_order_by_the_time_the_guard_drops() {
        let sink = Sink::default();
        let (writer, guard) = start(sink.clone(), Destination::JsonFile).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        writeln!(writer.make_writer(), "t{t} line {i}").unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 4000);
        for t in 0..4 {
            let mine: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(&format!("t{t} ")))
                .collect();
            let expected: Vec<String> = (0..1000).map(|i| format!("t{t} line {i}")).collect();
            assert_eq!(mine, expected, "thread {t}'s lines, in its order");
        }
    }

    /// A file (or a pipe) that blocks until the test lets it go.
    struct Stuck(Arc<(Mutex<bool>, Condvar)>, Sink);

    impl Stuck {
        fn gate() -> Arc<(Mutex<bool>, Condvar)> {
            Arc::new((Mutex::new(false), Condvar::new()))
        }
    }

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (open, moved) = &*self.0;
            let mut open = open.lock().unwrap();
            while !*open {
                open = moved.wait(open).unwrap();
            }
            self.1.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_writer_stuck_for_good_holds_the_end_of_the_process_back_a_moment_only() {
        // A stderr pipe the client never reads: the thread is stuck in its first write.
        let gate = Stuck::gate();
        let (writer, guard) =
            start(Stuck(gate.clone(), Sink::default()), Destination::Stderr).unwrap();
        writeln!(writer.make_writer(), "a line nobody reads").unwrap();
        let started = std::time::Instant::now();
        drop(guard);
        let waited = started.elapsed();
        assert!(
            waited >= EXIT_WAIT && waited < EXIT_WAIT + Duration::from_secs(2),
            "waited {waited:?}"
        );
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
    }

    #[test]
    fn lines_past_the_bound_are_counted_not_waited_for() {
        for destination in [Destination::JsonFile, Destination::Stderr] {
            lines_past_the_bound_are_counted_on(destination);
        }
    }

    fn lines_past_the_bound_are_counted_on(destination: Destination) {
        // The buffer fills while the thread is held in its first write.
        let gate = Stuck::gate();
        let sink = Sink::default();
        let (writer, guard) = start(Stuck(gate.clone(), sink.clone()), destination).unwrap();
        let line = vec![b'x'; 64 << 10];
        // The first batch holds the writer thread; then the buffer fills up and overflows.
        let lines = 2 * MAX_PENDING_BYTES / line.len();
        for _ in 0..lines {
            writer.make_writer().write_all(&line).unwrap();
        }
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains("log lines dropped"),
            "the loss is written down ({destination:?})"
        );
        // (The test's lines end in no newline: the loss follows the last one written.)
        let at = text.find(" log lines dropped: ").unwrap();
        let before = text[..at].trim_end_matches(|c: char| c.is_ascii_digit());
        let (prefix, reason) = match destination {
            Destination::JsonFile => (
                "{\"level\":\"WARN\",\"fields\":{\"message\":\"",
                "the log file could not keep up\"},\"target\":\"exai::logging\"}\n",
            ),
            Destination::Stderr => ("WARN ", "stderr was not read fast enough\n"),
        };
        assert!(
            before.ends_with(prefix)
                && text[at + " log lines dropped: ".len()..].starts_with(reason),
            "a JSON line in the JSON log, a human one on stderr ({destination:?})"
        );
        let written = text.matches(&"x".repeat(64 << 10)).count();
        assert!(
            written < lines && written > 0,
            "{written} of {lines} lines written"
        );
    }
}
