//! The proxy's log: stdout (through [`crate::log_writer`]) and, with `LOG_DIR`, files
//! ([`crate::log_files`]). Its level (`LOG_LEVEL`), its format (`LOG_FORMAT`: text, or JSON
//! objects one a line) and its files (`LOG_DIR`, `LOG_FILE_*`) follow the settings while the
//! proxy runs ([`Logging::apply`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::log_files::{FileConfig, Rotation};
use crate::log_writer::LogWriter;
use crate::settings::{self, Settings};

/// The log target of the line that says where the proxy listens: shown at every LOG_LEVEL.
pub const STARTUP: &str = "gemini_balance_proxy::startup";

type Filtered = Layered<reload::Layer<EnvFilter, Registry>, Registry>;
type Format = Box<dyn Layer<Filtered> + Send + Sync>;

/// `LOG_FORMAT=json`: the hand-formatted request line (text) steps aside for tracing's.
static JSON: AtomicBool = AtomicBool::new(false);

/// Whether the log is JSON lines.
pub fn is_json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// The running log, changed by [`apply`](Self::apply).
pub struct Logging {
    writer: LogWriter,
    colours: bool,
    filter: reload::Handle<EnvFilter, Registry>,
    format: reload::Handle<Format, Filtered>,
    applied: Mutex<Applied>,
}

/// The log settings in force.
#[derive(Debug, Clone, PartialEq)]
struct Applied {
    level: String,
    json: bool,
    files: Option<FileConfig>,
}

impl Applied {
    fn of(settings: &Settings) -> Applied {
        let dir = settings.text("LOG_DIR").trim();
        let positive = |name: &str| u64::try_from(settings.int(name)).ok().filter(|n| *n > 0);
        let files = (!dir.is_empty()).then(|| FileConfig {
            dir: dir.into(),
            rotation: Rotation::parse(settings.text("LOG_FILE_ROTATION"))
                .unwrap_or(Rotation::Daily),
            max_bytes: positive("LOG_FILE_MAX_SIZE_MB").map(|mib| mib.saturating_mul(1 << 20)),
            max_files: positive("LOG_FILE_MAX_FILES")
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            max_age: positive("LOG_FILE_MAX_AGE_DAYS")
                .map(|days| Duration::from_secs(days.saturating_mul(86_400))),
        });
        Applied {
            level: settings.text("LOG_LEVEL").to_owned(),
            json: settings.text("LOG_FORMAT") == "json",
            files,
        }
    }
}

/// The filter of a LOG_LEVEL (one of [`settings::LOG_LEVELS`], whatever spelling it was given in).
fn filter(level: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(format!("{level},hyper=warn,reqwest=warn,{STARTUP}=info")).map_err(|_| {
        format!(
            "LOG_LEVEL: expected one of {}",
            settings::LOG_LEVELS.join(", ")
        )
    })
}

fn format_layer(json: bool, colours: bool, writer: &LogWriter) -> Format {
    if json {
        // Without the spans' fields: a span opened under the text format carries only the text
        // formatter's fields, and the JSON formatter panics on such a span (a switch while
        // requests run); the request line carries what a line needs.
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .flatten_event(true)
            .with_ansi(false)
            .with_writer(writer.clone())
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_ansi(colours)
            .with_writer(writer.clone())
            .boxed()
    }
}

impl Logging {
    /// Starts the log (the writer threads and the global subscriber) with the log settings of
    /// `settings`.
    pub fn start(settings: &Settings) -> Result<Logging, String> {
        let colours = std::io::IsTerminal::is_terminal(&std::io::stdout());
        let writer = LogWriter::stdout(colours)
            .map_err(|e| format!("cannot start the log writer thread: {e}"))?;
        let level = settings.text("LOG_LEVEL").to_owned();
        let (filter_layer, filter) = reload::Layer::new(filter(&level)?);
        let (format_layer, format) = reload::Layer::new(format_layer(false, colours, &writer));
        tracing_subscriber::registry()
            .with(filter_layer)
            .with(format_layer)
            .init();
        let logging = Logging {
            writer,
            colours,
            filter,
            format,
            applied: Mutex::new(Applied {
                level,
                json: false,
                files: None,
            }),
        };
        logging.apply(settings)?;
        Ok(logging)
    }

    /// The writer of the log's lines (for the hand-formatted request line).
    pub fn writer(&self) -> &LogWriter {
        &self.writer
    }

    /// Whether stdout is a terminal (and the text log coloured).
    pub fn colours(&self) -> bool {
        self.colours
    }

    /// Applies the log settings of `settings` that differ from those in force. `LOG_DIR` is
    /// created if missing; one that cannot be (a volume not mounted at a restart, a directory
    /// chosen on another instance) leaves the log on stdout only, with a warning, and the other
    /// settings still apply. (A change through the admin API is checked before, and refused.)
    pub fn apply(&self, settings: &Settings) -> Result<(), String> {
        let mut next = Applied::of(settings);
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        if next.files != applied.files {
            if let Some(files) = &next.files {
                if let Err(e) = crate::log_files::prepare_dir(&files.dir) {
                    tracing::warn!(
                        "LOG_DIR ({}) cannot be used: {e}; the log goes to stdout only",
                        files.dir.display()
                    );
                    next.files = None;
                }
            }
        }
        if next.level != applied.level {
            self.filter
                .reload(filter(&next.level)?)
                .map_err(|e| format!("the log filter could not be changed: {e}"))?;
        }
        if next.json != applied.json {
            // First: the hand-formatted request lines follow at once.
            JSON.store(next.json, Ordering::Relaxed);
            self.format
                .reload(format_layer(next.json, self.colours, &self.writer))
                .map_err(|e| format!("the log format could not be changed: {e}"))?;
        }
        if next.files != applied.files {
            self.writer.files().configure(next.files.clone());
        }
        *applied = next;
        Ok(())
    }

    /// Waits until every line so far is written (at shutdown).
    pub fn flush(&self) {
        self.writer.flush();
    }

    /// Lines that reached neither stdout nor a file (the log could not keep up), and lines
    /// that did not reach a file (the disk was slow, full or failing), since the start.
    pub fn dropped(&self) -> (u64, u64) {
        (self.writer.dropped(), self.writer.files().dropped())
    }
}
