//! Log files: the log's lines written to files in `LOG_DIR` as well as to stdout, a new file
//! each hour or day (`LOG_FILE_ROTATION`) and whenever one reaches `LOG_FILE_MAX_SIZE_MB`, the
//! oldest deleted past `LOG_FILE_MAX_FILES` files or `LOG_FILE_MAX_AGE_DAYS` days.
//!
//! Files are named for the UTC time their period began (`gemini-balance-proxy.2026-12-08.log`
//! daily, `gemini-balance-proxy.2026-12-08T13.log` hourly, to the second with `size`), with
//! `.1`, `.2`, ... before `.log` for the files a size limit opened within one period. Only
//! files named so are ever deleted: anything else in the directory is left alone. A restart
//! appends to the file of the current period while it has room.
//!
//! Written here rather than taken from a crate: tracing-appender rolls by time only;
//! file-rotate, rolling-file and logroller roll by time or by size, keep files by count or by
//! age but not both, and read the clock themselves, where [`RollingFiles`] is given the time
//! (so that the tests can move it by days).
//!
//! The files are written on a thread of their own ([`FileFeed`]), fed whole batches of lines by
//! the log's writer thread through a bounded queue: a slow or full disk holds up neither a
//! request nor the stdout log. Lines that cannot be written (the queue is full, or the write
//! fails) are dropped and counted; the first failed write is logged, and so is the count once
//! writing works again (a full queue is only counted).

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::request_line::civil_from_days;

/// How long a flush (at shutdown) waits for the log's thread at most.
pub const FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Asks a log thread (fed through `tx`) to flush, and waits until it has, at most `limit`:
/// a disk that hangs (a hard NFS mount, a FIFO) must not hold shutdown. A full queue is
/// retried until then (room comes as the thread writes).
pub fn flush_within<T>(
    tx: &mpsc::SyncSender<T>,
    message: impl FnOnce(mpsc::SyncSender<()>) -> T,
    limit: std::time::Duration,
) {
    let (done, wait) = mpsc::sync_channel(1);
    let deadline = std::time::Instant::now() + limit;
    let mut flush = message(done);
    loop {
        match tx.try_send(flush) {
            Ok(()) => {
                let _ = wait
                    .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()));
                return;
            }
            Err(mpsc::TrySendError::Full(back)) if std::time::Instant::now() < deadline => {
                flush = back;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(_) => return,
        }
    }
}

/// Every log file's name starts with this.
pub const PREFIX: &str = "gemini-balance-proxy.";
/// ... and ends with this.
pub const SUFFIX: &str = ".log";

/// Batches waiting for the file thread at most (each holds what the log's writer thread
/// gathered in one round, a few lines to a few thousand).
const QUEUE: usize = 256;
/// The file thread looks at the clock at least this often, for expired files and a new
/// period, even when no line comes.
const TICK: Duration = Duration::from_secs(1);
/// Expired files are looked for at least this often (and whenever a new file is opened, or the
/// settings change).
const SWEEP_EVERY: u64 = 60;

/// When a new file begins (`LOG_FILE_ROTATION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// At every full hour (UTC).
    Hourly,
    /// At midnight UTC.
    Daily,
    /// Only when the file reaches the size limit.
    Size,
}

impl Rotation {
    /// `hourly`, `daily` or `size`.
    pub fn parse(text: &str) -> Option<Rotation> {
        match text {
            "hourly" => Some(Rotation::Hourly),
            "daily" => Some(Rotation::Daily),
            "size" => Some(Rotation::Size),
            _ => None,
        }
    }

    /// The name stamp of a file opened at `secs` (since the epoch), and when its period ends.
    fn stamp(self, secs: u64) -> (String, Option<u64>) {
        let (year, month, day) = civil_from_days((secs / 86_400) as i64);
        let rem = secs % 86_400;
        let date = format!("{year:04}-{month:02}-{day:02}");
        match self {
            Rotation::Daily => (date, Some(secs - rem + 86_400)),
            Rotation::Hourly => (
                format!("{date}T{:02}", rem / 3600),
                Some(secs - secs % 3600 + 3600),
            ),
            Rotation::Size => (
                format!(
                    "{date}T{:02}-{:02}-{:02}",
                    rem / 3600,
                    rem % 3600 / 60,
                    rem % 60
                ),
                None,
            ),
        }
    }
}

/// Where and how the files are written; `None` in [`RollingFiles::configure`]: no files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileConfig {
    /// `LOG_DIR`.
    pub dir: PathBuf,
    pub rotation: Rotation,
    /// A file holds at most this many bytes (a line longer than that gets a file of its own).
    pub max_bytes: Option<u64>,
    /// At most this many files are kept, the one being written included.
    pub max_files: Option<usize>,
    /// A file whose last line is older than this is deleted (never the one being written).
    pub max_age: Option<Duration>,
}

/// One of the log's files, as its name says: where its period began, and its number in it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Name {
    start: u64,
    n: u32,
    stamp: String,
}

impl Name {
    fn file_name(&self) -> String {
        match self.n {
            0 => format!("{PREFIX}{}{SUFFIX}", self.stamp),
            n => format!("{PREFIX}{}.{n}{SUFFIX}", self.stamp),
        }
    }

    /// When its period ended, as its stamp says (`None` for files rolled by size only).
    fn period_end(&self) -> Option<u64> {
        match self.stamp.len() {
            10 => Some(self.start + 86_400),
            13 => Some(self.start + 3600),
            _ => None,
        }
    }

    /// The name of one of the log's files, or `None` for any other file.
    fn parse(file_name: &str) -> Option<Name> {
        let rest = file_name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
        let (stamp, n) = match rest.split_once('.') {
            Some((stamp, n)) => {
                let number: u32 = n.parse().ok().filter(|v| *v > 0)?;
                // Canonical digits only (`.01` is not one of ours).
                if number.to_string() != n {
                    return None;
                }
                (stamp, number)
            }
            None => (rest, 0),
        };
        Some(Name {
            start: parse_stamp(stamp)?,
            n,
            stamp: stamp.to_owned(),
        })
    }
}

/// Seconds since the epoch of `YYYY-MM-DD`, `YYYY-MM-DDTHH` or `YYYY-MM-DDTHH-MM-SS` (UTC).
fn parse_stamp(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |from: usize, to: usize| -> Option<u64> {
        let digits = s.get(from..to)?;
        digits
            .bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    if !matches!(b.len(), 10 | 13 | 19) || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let mut secs = days_from_civil(year, month, day)? * 86_400;
    if b.len() >= 13 {
        let hour = num(11, 13)?;
        if b[10] != b'T' || hour > 23 {
            return None;
        }
        secs += hour * 3600;
    }
    if b.len() == 19 {
        let (minute, second) = (num(14, 16)?, num(17, 19)?);
        if b[13] != b'-' || b[16] != b'-' || minute > 59 || second > 59 {
            return None;
        }
        secs += minute * 60 + second;
    }
    Some(secs)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm); `None`
/// before 1970.
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    let year = year as i64 - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = (month as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    u64::try_from(era * 146_097 + doe - 719_468).ok()
}

fn secs_of(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// The file being written.
struct Current {
    file: File,
    name: Name,
    size: u64,
    /// When its period ends (`None`: rolled by size only).
    ends: Option<u64>,
}

/// The log files of one directory: writes lines, rolls, deletes. Every call is given the time.
#[derive(Default)]
pub struct RollingFiles {
    config: Option<FileConfig>,
    current: Option<Current>,
    /// When to look for expired files next (seconds since the epoch).
    next_sweep: u64,
    /// Files deleted when a new one was opened, not reported yet.
    deleted: Vec<PathBuf>,
}

impl RollingFiles {
    pub fn new() -> RollingFiles {
        RollingFiles::default()
    }

    /// Takes new settings (`None`: no more files). A new directory or rotation opens a new
    /// file with the next line; new limits apply at once. Returns the files deleted.
    pub fn configure(&mut self, config: Option<FileConfig>, now: SystemTime) -> Vec<PathBuf> {
        if self.config == config {
            return Vec::new();
        }
        let same_file = match (&self.config, &config) {
            (Some(old), Some(new)) => old.dir == new.dir && old.rotation == new.rotation,
            _ => false,
        };
        if !same_file {
            self.current = None;
        }
        self.config = config;
        self.sweep(secs_of(now))
    }

    /// The files deleted because a new one was opened, since the last call.
    pub fn take_deleted(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.deleted)
    }

    /// Writes whole lines (a batch ending in `\n`), opening a new file first when the period
    /// ended, and between two lines when the size limit is reached. On an error the file is
    /// closed (the next write opens it again: the disk may have room again by then).
    pub fn write(&mut self, now: SystemTime, mut bytes: &[u8]) -> io::Result<()> {
        let Some(config) = &self.config else {
            return Ok(());
        };
        let max = config.max_bytes;
        let secs = secs_of(now);
        while !bytes.is_empty() {
            let period_over = match &self.current {
                None => true,
                Some(c) => c.ends.is_some_and(|end| secs >= end),
            };
            if period_over {
                self.open(secs, false)?;
            }
            let Some(current) = self.current.as_mut() else {
                return Ok(());
            };
            let take = match max {
                None => bytes.len(),
                Some(max) => {
                    let room =
                        usize::try_from(max.saturating_sub(current.size)).unwrap_or(usize::MAX);
                    if bytes.len() <= room {
                        bytes.len()
                    } else if let Some(i) = bytes[..room].iter().rposition(|&b| b == b'\n') {
                        i + 1
                    } else if current.size == 0 {
                        // One line longer than a whole file: it gets a file of its own.
                        bytes
                            .iter()
                            .position(|&b| b == b'\n')
                            .map_or(bytes.len(), |i| i + 1)
                    } else {
                        self.open(secs, true)?;
                        continue;
                    }
                }
            };
            if let Err(e) = current.file.write_all(&bytes[..take]) {
                self.current = None;
                return Err(e);
            }
            current.size += take as u64;
            bytes = &bytes[take..];
            if !bytes.is_empty() {
                self.open(secs, true)?;
            }
        }
        Ok(())
    }

    /// Closes the file when its period ended (the next line opens the new one) and deletes
    /// expired files, at most every minute: files expire in a quiet hour too. Returns the
    /// files deleted.
    pub fn tick(&mut self, now: SystemTime) -> Vec<PathBuf> {
        let secs = secs_of(now);
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.ends.is_some_and(|end| secs >= end))
        {
            self.current = None;
        }
        if secs >= self.next_sweep {
            self.sweep(secs)
        } else {
            Vec::new()
        }
    }

    /// Opens the file for `secs`: the newest of its period when it has room (at a start, or a
    /// new period), else (or after `full`) the next number.
    fn open(&mut self, secs: u64, full: bool) -> io::Result<()> {
        let Some(config) = &self.config else {
            return Ok(());
        };
        let (stamp, ends) = config.rotation.stamp(secs);
        let start = parse_stamp(&stamp).unwrap_or(secs);
        prepare_dir(&config.dir)?;
        let newest = list(&config.dir)?
            .into_iter()
            .filter(|(name, _)| name.stamp == stamp)
            .max_by_key(|(name, _)| name.n);
        let n = match newest {
            None => 0,
            Some((name, _)) if full => name.n + 1,
            Some((name, path)) => {
                let size = std::fs::metadata(&path).map_or(0, |m| m.len());
                if config.max_bytes.is_none_or(|max| size < max) {
                    name.n
                } else {
                    name.n + 1
                }
            }
        };
        let name = Name { start, n, stamp };
        let path = config.dir.join(name.file_name());
        self.current = None;
        let file = open_append(&path)?;
        let size = file.metadata().map_or(0, |m| m.len());
        self.current = Some(Current {
            file,
            name,
            size,
            ends,
        });
        // A new file may be one too many.
        let deleted = self.sweep(secs);
        self.deleted.extend(deleted);
        Ok(())
    }

    /// Deletes the files past the count and the age limits (never the one being written).
    /// A file's last line is no later than the end of its period, nor than the start of the
    /// next file.
    fn sweep(&mut self, secs: u64) -> Vec<PathBuf> {
        self.next_sweep = secs + SWEEP_EVERY;
        let Some(config) = &self.config else {
            return Vec::new();
        };
        if config.max_files.is_none() && config.max_age.is_none() {
            return Vec::new();
        }
        let Ok(mut files) = list(&config.dir) else {
            return Vec::new();
        };
        files.sort();
        let current = self.current.as_ref().map(|c| &c.name);
        let total = files.len();
        let mut deleted = Vec::new();
        for (i, (name, path)) in files.iter().enumerate() {
            if Some(name) == current {
                continue;
            }
            let newer = total - i - 1;
            let too_many = config.max_files.is_some_and(|max| newer >= max);
            // The next file of a later period (a numbered file of the same period started at
            // the same time as this one, and says nothing of when this one ended).
            let next = files[i + 1..]
                .iter()
                .map(|(next, _)| next.start)
                .find(|&start| start > name.start)
                .unwrap_or(secs);
            let ended = name.period_end().unwrap_or(secs).min(next).min(secs);
            let too_old = config
                .max_age
                .is_some_and(|age| secs.saturating_sub(ended) > age.as_secs());
            if (too_many || too_old) && std::fs::remove_file(path).is_ok() {
                deleted.push(path.clone());
            }
        }
        deleted
    }
}

/// The log's files in `dir`, unsorted.
fn list(dir: &Path) -> io::Result<Vec<(Name, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().and_then(Name::parse) else {
            continue;
        };
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            files.push((name, entry.path()));
        }
    }
    Ok(files)
}

/// Creates `dir` if missing (its owner's alone, as `data/` is); an existing one is used as is.
pub fn prepare_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Opens `path` to append (created as its owner's alone).
fn open_append(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// The bytes without terminal colour codes (`ESC [ ... letter`), which the stdout log has
/// when it is a terminal.
fn strip_ansi(bytes: &[u8]) -> Cow<'_, [u8]> {
    if !bytes.contains(&0x1b) {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == 0x1b && bytes.get(i + 1) == Some(&b'[') {
            i += 2;
            while i < bytes.len() && !(0x40..=0x7e).contains(&bytes[i]) {
                i += 1;
            }
            i += 1;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Cow::Owned(out)
}

/// What the log's writer thread hands the file thread.
enum FileMsg {
    /// Whole lines, and how many.
    Lines(Vec<u8>, u64),
    /// Everything before is written: answer.
    Flush(SyncSender<()>),
    /// A new configuration waits in the control channel.
    Wake,
}

/// The file thread's handle, held by the log's writer (cheap to clone).
#[derive(Clone)]
pub struct FileFeed {
    tx: SyncSender<FileMsg>,
    control: Sender<Option<FileConfig>>,
    /// Whether files are written (the writer thread gathers batches for them only then).
    on: Arc<AtomicBool>,
    /// Lines that did not reach a file, since the start.
    dropped: Arc<AtomicU64>,
}

impl FileFeed {
    /// Starts the file thread (writing nothing until [`configure`](Self::configure)d).
    /// `colours`: the lines carry terminal colour codes, which the files do without.
    pub fn start(colours: bool) -> io::Result<FileFeed> {
        FileFeed::start_with_clock(colours, SystemTime::now)
    }

    fn start_with_clock(colours: bool, clock: fn() -> SystemTime) -> io::Result<FileFeed> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let (control, configs) = mpsc::channel();
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        std::thread::Builder::new()
            .name("log-files".to_owned())
            .spawn(move || run(rx, configs, counter, colours, clock))?;
        Ok(FileFeed {
            tx,
            control,
            on: Arc::new(AtomicBool::new(false)),
            dropped,
        })
    }

    /// New settings (`None`: no files); the file thread takes them within a moment.
    pub fn configure(&self, config: Option<FileConfig>) {
        self.on.store(config.is_some(), Ordering::Relaxed);
        let _ = self.control.send(config);
        let _ = self.tx.try_send(FileMsg::Wake);
    }

    /// Whether lines are written to files.
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Hands whole lines over without waiting: a full queue drops them (counted).
    pub fn send(&self, lines: Vec<u8>, count: u64) {
        match self.tx.try_send(FileMsg::Lines(lines, count)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(count, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Waits until everything handed over is written (at shutdown, and in tests).
    pub fn flush(&self) {
        flush_within(&self.tx, FileMsg::Flush, FLUSH_LIMIT);
    }

    /// Lines that did not reach a file since the start (a full queue, a failed write).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The file thread.
fn run(
    rx: Receiver<FileMsg>,
    configs: Receiver<Option<FileConfig>>,
    dropped: Arc<AtomicU64>,
    colours: bool,
    clock: fn() -> SystemTime,
) {
    let mut files = RollingFiles::new();
    // Lines lost since writing last failed; `None` while writing works.
    let mut failing: Option<u64> = None;
    loop {
        while let Ok(config) = configs.try_recv() {
            report_deleted(&files.configure(config, clock()));
        }
        match rx.recv_timeout(TICK) {
            Ok(FileMsg::Lines(lines, count)) => {
                let lines = if colours {
                    strip_ansi(&lines)
                } else {
                    Cow::Borrowed(&lines[..])
                };
                let written = files.write(clock(), &lines);
                report_deleted(&files.take_deleted());
                match written {
                    Ok(()) => {
                        if let Some(lost) = failing.take() {
                            let note = crate::log_writer::note(&format!(
                                "{lost} log lines could not be written to this directory and were dropped"
                            ));
                            let _ = files.write(clock(), note.as_bytes());
                            tracing::warn!(
                                dropped_lines = lost,
                                "log files: writing works again; lines dropped meanwhile"
                            );
                        }
                    }
                    Err(e) => {
                        dropped.fetch_add(count, Ordering::Relaxed);
                        if failing.is_none() {
                            // Once per failure: this line comes back here, and is lost too.
                            tracing::warn!(
                                error = %e,
                                "log files: lines cannot be written to LOG_DIR; they are dropped and counted until they can"
                            );
                        }
                        *failing.get_or_insert(0) += count;
                    }
                }
            }
            Ok(FileMsg::Flush(done)) => {
                let _ = done.send(());
            }
            Ok(FileMsg::Wake) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        report_deleted(&files.tick(clock()));
    }
}

fn report_deleted(deleted: &[PathBuf]) {
    if !deleted.is_empty() {
        let names: Vec<String> = deleted
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        tracing::info!(files = %names.join(", "), "log files: deleted past LOG_FILE_MAX_FILES or LOG_FILE_MAX_AGE_DAYS");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3600;
    const DAY: u64 = 86_400;
    /// 2026-12-08T00:00:00Z.
    const T0: u64 = 1_796_688_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn config(dir: &Path, rotation: Rotation) -> FileConfig {
        FileConfig {
            dir: dir.to_owned(),
            rotation,
            max_bytes: None,
            max_files: None,
            max_age: None,
        }
    }

    /// The log's files in `dir`, by name, with their text.
    fn contents(dir: &Path) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read_to_string(e.path()).unwrap(),
                )
            })
            .collect();
        out.sort();
        out
    }

    fn names(dir: &Path) -> Vec<String> {
        contents(dir).into_iter().map(|(n, _)| n).collect()
    }

    #[test]
    fn t0_is_the_date_it_claims() {
        assert_eq!(parse_stamp("2026-12-08"), Some(T0));
        assert_eq!(Rotation::Daily.stamp(T0 + 5).0, "2026-12-08");
        assert_eq!(
            Rotation::Hourly.stamp(T0 + 13 * HOUR + 5).0,
            "2026-12-08T13"
        );
        assert_eq!(
            Rotation::Size.stamp(T0 + 13 * HOUR + 62).0,
            "2026-12-08T13-01-02"
        );
        assert_eq!(
            parse_stamp("2026-12-08T13-01-02"),
            Some(T0 + 13 * HOUR + 62)
        );
        assert_eq!(parse_stamp("2000-02-29"), Some(951_782_400));
        for other in [
            "2026-13-01",
            "2026-12-08T24",
            "2026-12-08X13",
            "20261208",
            "2026-12-0a",
        ] {
            assert_eq!(parse_stamp(other), None, "{other}");
        }
        for other in [
            "gemini-balance-proxy.2026-12-08.0.log",
            "gemini-balance-proxy.2026-12-08.01.log",
            "gemini-balance-proxy.2026-12-08.log.gz",
            "other.2026-12-08.log",
        ] {
            assert_eq!(Name::parse(other), None, "{other}");
        }
    }

    #[test]
    fn daily_and_hourly_files_roll_when_the_period_ends() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = RollingFiles::new();
        files.configure(Some(config(dir.path(), Rotation::Daily)), at(T0));
        files.write(at(T0 + 10), b"first\n").unwrap();
        files.write(at(T0 + DAY - 1), b"second\n").unwrap();
        files.write(at(T0 + DAY), b"third\n").unwrap();
        assert_eq!(
            contents(dir.path()),
            [
                (
                    "gemini-balance-proxy.2026-12-08.log".into(),
                    "first\nsecond\n".into()
                ),
                (
                    "gemini-balance-proxy.2026-12-09.log".into(),
                    "third\n".into()
                ),
            ]
        );
        // Live: hourly from now on.
        files.configure(
            Some(config(dir.path(), Rotation::Hourly)),
            at(T0 + DAY + 10),
        );
        files.write(at(T0 + DAY + HOUR + 1), b"fourth\n").unwrap();
        files.write(at(T0 + DAY + 2 * HOUR), b"fifth\n").unwrap();
        assert_eq!(
            names(dir.path()),
            [
                "gemini-balance-proxy.2026-12-08.log",
                "gemini-balance-proxy.2026-12-09.log",
                "gemini-balance-proxy.2026-12-09T01.log",
                "gemini-balance-proxy.2026-12-09T02.log",
            ]
        );
    }

    #[test]
    fn a_size_limit_rolls_between_lines_and_a_restart_continues_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut limited = config(dir.path(), Rotation::Daily);
        limited.max_bytes = Some(10);
        let mut files = RollingFiles::new();
        files.configure(Some(limited.clone()), at(T0));
        // One batch of three lines: 6 + 6 bytes do not fit in 10.
        files.write(at(T0), b"aaaaa\nbbbbb\nccc\n").unwrap();
        // A line longer than a whole file gets one of its own.
        files.write(at(T0), b"dddddddddddddd\n").unwrap();
        files.write(at(T0), b"e\n").unwrap();
        assert_eq!(
            contents(dir.path()),
            [
                (
                    "gemini-balance-proxy.2026-12-08.1.log".into(),
                    "bbbbb\nccc\n".into()
                ),
                (
                    "gemini-balance-proxy.2026-12-08.2.log".into(),
                    "dddddddddddddd\n".into()
                ),
                ("gemini-balance-proxy.2026-12-08.3.log".into(), "e\n".into()),
                (
                    "gemini-balance-proxy.2026-12-08.log".into(),
                    "aaaaa\n".into()
                ),
            ]
        );
        // A restart appends to the newest file of the period while it has room...
        drop(files);
        let mut files = RollingFiles::new();
        files.configure(Some(limited.clone()), at(T0 + 5));
        files.write(at(T0 + 5), b"f\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("gemini-balance-proxy.2026-12-08.3.log"))
                .unwrap(),
            "e\nf\n"
        );
        // ... and a size-only rotation names files to the second.
        limited.rotation = Rotation::Size;
        files.configure(Some(limited), at(T0 + 6));
        files.write(at(T0 + HOUR + 1), b"gggggg\nhhhhhh\n").unwrap();
        let names = names(dir.path());
        assert!(names.contains(&"gemini-balance-proxy.2026-12-08T01-00-01.log".to_owned()));
        assert!(names.contains(&"gemini-balance-proxy.2026-12-08T01-00-01.1.log".to_owned()));
    }

    #[test]
    fn files_past_the_count_are_deleted_oldest_first_never_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not ours").unwrap();
        std::fs::write(dir.path().join("gemini-balance-proxy.log"), "not ours").unwrap();
        let mut limited = config(dir.path(), Rotation::Hourly);
        limited.max_files = Some(3);
        let mut files = RollingFiles::new();
        files.configure(Some(limited.clone()), at(T0));
        for hour in 0..5 {
            files.write(at(T0 + hour * HOUR), b"line\n").unwrap();
        }
        assert_eq!(
            names(dir.path()),
            [
                "gemini-balance-proxy.2026-12-08T02.log",
                "gemini-balance-proxy.2026-12-08T03.log",
                "gemini-balance-proxy.2026-12-08T04.log",
                "gemini-balance-proxy.log",
                "notes.txt",
            ]
        );
        // A lower limit, live: applied at once; the file being written stays.
        limited.max_files = Some(1);
        let deleted = files.configure(Some(limited), at(T0 + 4 * HOUR + 1));
        assert_eq!(deleted.len(), 2);
        assert_eq!(
            names(dir.path()),
            [
                "gemini-balance-proxy.2026-12-08T04.log",
                "gemini-balance-proxy.log",
                "notes.txt",
            ]
        );
    }

    #[test]
    fn files_past_the_age_are_deleted_as_the_clock_moves_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut limited = config(dir.path(), Rotation::Daily);
        limited.max_age = Some(Duration::from_secs(2 * DAY));
        let mut files = RollingFiles::new();
        files.configure(Some(limited), at(T0));
        for day in 0..3 {
            files.write(at(T0 + day * DAY + 10), b"line\n").unwrap();
        }
        // The 8th ended when the 9th began: two days old at the 11th 00:00, not more.
        assert!(files.tick(at(T0 + 3 * DAY)).is_empty());
        assert_eq!(names(dir.path()).len(), 3);
        // A minute later (the next sweep), past two days: deleted, with nothing written.
        let deleted = files.tick(at(T0 + 3 * DAY + SWEEP_EVERY));
        assert_eq!(deleted.len(), 1);
        assert_eq!(
            names(dir.path()),
            [
                "gemini-balance-proxy.2026-12-09.log",
                "gemini-balance-proxy.2026-12-10.log",
            ]
        );
        // Weeks later the last file (closed by the tick at its period's end) goes too.
        let deleted = files.tick(at(T0 + 30 * DAY));
        assert_eq!(deleted.len(), 2);
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn numbered_files_of_one_day_are_as_old_as_the_day_not_their_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut limited = config(dir.path(), Rotation::Daily);
        limited.max_bytes = Some(10);
        limited.max_age = Some(Duration::from_secs(DAY));
        let mut files = RollingFiles::new();
        files.configure(Some(limited), at(T0));
        // The day's first file fills at once; the numbered one goes on to 23:59.
        files.write(at(T0), b"aaaaa\nbbbbb\n").unwrap();
        files.write(at(T0 + DAY - 60), b"late\n").unwrap();
        files.write(at(T0 + DAY + 10), b"next day\n").unwrap();
        // A minute into the next day the three files of the 8th are a minute old: kept.
        assert!(files.tick(at(T0 + DAY + SWEEP_EVERY)).is_empty());
        assert_eq!(names(dir.path()).len(), 4);
        // A day after the 8th ended they go.
        assert_eq!(files.tick(at(T0 + 2 * DAY + 2 * SWEEP_EVERY)).len(), 3);
    }

    #[test]
    fn a_file_from_before_a_long_stop_is_as_old_as_its_period() {
        let dir = tempfile::tempdir().unwrap();
        let mut limited = config(dir.path(), Rotation::Daily);
        limited.max_age = Some(Duration::from_secs(7 * DAY));
        let mut files = RollingFiles::new();
        files.configure(Some(limited.clone()), at(T0 - 100 * DAY));
        files.write(at(T0 - 100 * DAY), b"long ago\n").unwrap();
        // The proxy was off for 100 days: at its start the old file is found expired.
        let mut files = RollingFiles::new();
        assert_eq!(files.configure(Some(limited), at(T0)).len(), 1);
        files.write(at(T0), b"now\n").unwrap();
        assert_eq!(names(dir.path()), ["gemini-balance-proxy.2026-12-08.log"]);
    }

    #[test]
    fn colour_codes_do_not_reach_the_files() {
        assert_eq!(
            &*strip_ansi(b"\x1b[2m2026\x1b[0m \x1b[32m INFO\x1b[0m x\n"),
            b"2026  INFO x\n"
        );
        assert_eq!(&*strip_ansi(b"plain\n"), b"plain\n");
    }

    #[test]
    fn a_failed_write_drops_and_counts_the_lines_and_the_thread_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        // LOG_DIR is a file: nothing can be written under it.
        let blocked = dir.path().join("blocked");
        std::fs::write(&blocked, "").unwrap();
        let feed = FileFeed::start(false).unwrap();
        feed.configure(Some(config(&blocked, Rotation::Daily)));
        feed.flush();
        feed.send(b"one\ntwo\n".to_vec(), 2);
        feed.flush();
        assert_eq!(feed.dropped(), 2);
        // A directory that works: lines are written again.
        let good = dir.path().join("logs");
        feed.configure(Some(config(&good, Rotation::Daily)));
        feed.send(b"three\n".to_vec(), 1);
        feed.flush();
        let written: String = contents(&good).into_iter().map(|(_, text)| text).collect();
        assert!(written.starts_with("three\n"), "{written}");
        assert!(
            written.contains("2 log lines could not be written"),
            "{written}"
        );
        assert_eq!(feed.dropped(), 2);
    }
}
