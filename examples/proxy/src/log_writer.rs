//! Log lines leave the request path without a system call: each line is handed to a writer
//! thread, which writes them to stdout in batches (one `write(2)` per batch, not per line).
//!
//! A full queue drops the line and counts it rather than make a request wait for the terminal
//! or a slow pipe; the count is reported by the next line that gets through.
//!
//! With `LOG_DIR` set, each batch is also handed, whole, to the log files' own thread
//! ([`crate::log_files`]), so that a slow disk holds up neither stdout nor a request.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use tracing_subscriber::fmt::MakeWriter;

use crate::log_files::FileFeed;

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
    /// Lines dropped since the writer thread last reported it.
    dropped: Arc<AtomicU64>,
    /// Lines dropped since the start.
    dropped_total: Arc<AtomicU64>,
    files: FileFeed,
}

impl LogWriter {
    /// Starts the writer thread (writing to stdout) and the log files' thread (writing nothing
    /// until configured). `colours`: the lines carry terminal colour codes.
    pub fn stdout(colours: bool) -> std::io::Result<LogWriter> {
        let files = FileFeed::start(colours)?;
        LogWriter::start(std::io::stdout(), files)
    }

    fn start(out: impl Write + Send + 'static, files: FileFeed) -> std::io::Result<LogWriter> {
        let (tx, rx) = sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        let feed = files.clone();
        std::thread::Builder::new()
            .name("log-writer".to_owned())
            .spawn(move || write_lines(rx, out, counter, feed))?;
        Ok(LogWriter {
            tx,
            dropped,
            dropped_total: Arc::new(AtomicU64::new(0)),
            files,
        })
    }

    /// The log files' thread.
    pub fn files(&self) -> &FileFeed {
        &self.files
    }

    /// Lines dropped since the start because the writer thread could not keep up (they
    /// reached neither stdout nor a file).
    pub fn dropped(&self) -> u64 {
        self.dropped_total.load(Ordering::Relaxed)
    }

    /// Waits until every line handed over so far is written (at shutdown).
    pub fn flush(&self) {
        crate::log_files::flush_within(&self.tx, Msg::Flush, crate::log_files::FLUSH_LIMIT);
    }
}

fn write_lines(rx: Receiver<Msg>, out: impl Write, dropped: Arc<AtomicU64>, files: FileFeed) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    // The batch for the log files (only while they are written), and its line count.
    let mut batch: Vec<u8> = Vec::new();
    let mut lines = 0u64;
    while let Ok(first) = rx.recv() {
        let to_files = files.is_on();
        let mut next = Some(first);
        // Everything queued now goes out in one write.
        while let Some(msg) = next {
            match msg {
                Msg::Line(line) => {
                    let _ = out.write_all(&line);
                    if to_files {
                        batch.extend_from_slice(&line);
                        lines += 1;
                    }
                }
                Msg::Flush(done) => {
                    let _ = out.flush();
                    if !batch.is_empty() {
                        files.send(std::mem::take(&mut batch), std::mem::take(&mut lines));
                    }
                    files.flush();
                    let _ = done.send(());
                }
            }
            next = rx.try_recv().ok();
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let note = note(&format!(
                "{lost} log lines were dropped (the log output could not keep up)"
            ));
            let _ = out.write_all(note.as_bytes());
            if to_files {
                batch.extend_from_slice(note.as_bytes());
                lines += 1;
            }
        }
        let _ = out.flush();
        if !batch.is_empty() {
            files.send(std::mem::take(&mut batch), std::mem::take(&mut lines));
        }
        std::thread::sleep(GATHER);
    }
}

/// A line the log writes of itself, in the log's format (text, or a JSON object with
/// LOG_FORMAT=json).
pub fn note(message: &str) -> String {
    if crate::logging::is_json() {
        format!(
            "{}\n",
            serde_json::json!({"level": "WARN", "target": "gemini_balance_proxy", "message": message})
        )
    } else {
        format!("gemini-balance-proxy: {message}\n")
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
                self.writer.dropped_total.fetch_add(1, Ordering::Relaxed);
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
        let sink = Shared::default();
        let writer = LogWriter::start(sink.clone(), FileFeed::start(false).unwrap()).unwrap();
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

    #[test]
    fn with_log_dir_the_same_lines_reach_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Shared::default();
        let files = FileFeed::start(false).unwrap();
        let writer = LogWriter::start(sink.clone(), files.clone()).unwrap();
        files.configure(Some(crate::log_files::FileConfig {
            dir: dir.path().to_owned(),
            rotation: crate::log_files::Rotation::Daily,
            max_bytes: None,
            max_files: None,
            max_age: None,
        }));
        // The file thread has the settings once it has answered a flush.
        files.flush();
        for i in 0..100 {
            writeln!(writer.make_writer(), "line {i}").unwrap();
        }
        writer.flush();
        let stdout = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1);
        let file = std::fs::read_to_string(entries[0].as_ref().unwrap().path()).unwrap();
        assert_eq!(file, stdout);
        assert_eq!(file.lines().count(), 100);
    }
}
