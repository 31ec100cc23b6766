//! Log lines leave the request path without a system call: each line is handed to a writer
//! thread, which writes them to stdout in batches (one `write(2)` per batch, not per line).
//!
//! A full queue drops the line and counts it rather than make a request wait for the terminal
//! or a slow pipe; the count is reported by the next line that gets through.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use tracing_subscriber::fmt::MakeWriter;

/// Lines waiting for the writer thread at most.
const QUEUE: usize = 16 * 1024;
/// After a batch, lines gather this long: meanwhile a request hands its line over without
/// waking the writer thread (a wake-up per line costs more than formatting it).
const GATHER: std::time::Duration = std::time::Duration::from_millis(5);

enum Msg {
    Line(Vec<u8>),
    Flush(SyncSender<()>),
}

/// The `MakeWriter` of the log: cheap to clone, never blocks.
#[derive(Clone)]
pub struct LogWriter {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

impl LogWriter {
    /// Starts the writer thread (writing to stdout).
    pub fn stdout() -> std::io::Result<LogWriter> {
        let (tx, rx) = sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        std::thread::Builder::new()
            .name("log-writer".to_owned())
            .spawn(move || write_lines(rx, std::io::stdout(), counter))?;
        Ok(LogWriter { tx, dropped })
    }

    /// Waits until every line handed over so far is written (at shutdown).
    pub fn flush(&self) {
        let (done, wait) = sync_channel(1);
        if self.tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

fn write_lines(rx: Receiver<Msg>, out: impl Write, dropped: Arc<AtomicU64>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        // Everything queued now goes out in one write.
        while let Some(msg) = next {
            match msg {
                Msg::Line(line) => {
                    let _ = out.write_all(&line);
                }
                Msg::Flush(done) => {
                    let _ = out.flush();
                    let _ = done.send(());
                }
            }
            next = rx.try_recv().ok();
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let _ = writeln!(
                out,
                "gemini-balance-proxy: {lost} log lines were dropped (the log output could not keep up)"
            );
        }
        let _ = out.flush();
        std::thread::sleep(GATHER);
    }
}

/// One log line being formatted; handed to the writer thread when complete.
pub struct Line<'a> {
    buf: Vec<u8>,
    writer: &'a LogWriter,
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.buf);
        match self.writer.tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.writer.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

impl LogWriter {
    /// A line to write into; it is handed over when dropped.
    pub fn make_line(&self) -> Line<'_> {
        Line {
            buf: Vec::with_capacity(256),
            writer: self,
        }
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        self.make_line()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_whole_and_in_order_and_flush_waits() {
        let (tx, rx) = sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let sink = Shared::default();
        let (out, counter) = (sink.clone(), dropped.clone());
        std::thread::spawn(move || write_lines(rx, out, counter));
        let writer = LogWriter { tx, dropped };
        for i in 0..1000 {
            let mut line = writer.make_writer();
            write!(line, "line ").unwrap();
            writeln!(line, "{i}").unwrap();
        }
        writer.flush();
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert_eq!(lines[0], "line 0");
        assert_eq!(lines[999], "line 999");
    }
}
