//! Every Gemini-Balance setting, described once: name, type, default, group, whether this
//! version acts on it. The `.env` reader, the startup warnings, the admin config API and the
//! config page all read this one table.
//!
//! Text forms (`.env`, the environment, stored values) are read the way Gemini-Balance's
//! pydantic `Settings` reads them, so that every `.env` the Python server accepts starts this
//! one: variable names in any case, booleans and numbers with pydantic's coercion, log levels
//! as its logger maps them. A Gemini-Balance number this proxy cannot use as given (it would
//! overflow a timer or never end a request) is clamped into range and reported as
//! [`Adjusted`]; what Gemini-Balance itself refuses is refused here too. The admin API is
//! stricter ([`check`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde_json::{json, Value};

/// The type of a setting, and how its text form is read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// `true`/`false`, read as pydantic reads a bool: `true`, `1`, `yes`, `on`, `t`, `y` and
    /// `false`, `0`, `no`, `off`, `f`, `n`, in any case (and an empty value: false).
    Bool,
    /// A whole number, read as pydantic reads an int (` 3 `, `+3`, `1_000`, `3.0`; not `3.5`),
    /// used within `min..=max` (see [`Def::out_of_range`]).
    Int { min: i64, max: i64 },
    /// A number, read as pydantic reads a float, used within `min..=max`.
    Float { min: f64, max: f64 },
    /// Free text.
    Text,
    /// Text that is a secret (masked whenever shown).
    Secret,
    /// A list of strings: JSON (`["a","b"]`) or comma-separated.
    List,
    /// A list of secrets.
    SecretList,
    /// A JSON object.
    Object,
    /// A JSON object whose values are secrets (its names are shown, its values masked).
    SecretObject,
    /// A JSON list of objects (SAFETY_SETTINGS).
    ObjectList,
    /// One of a fixed set of words.
    Choice(&'static [&'static str]),
    /// LOG_LEVEL: one of [`LOG_LEVELS`]; Gemini-Balance's spellings are read too (see
    /// [`log_level`]).
    LogLevel,
}

impl Kind {
    /// The name shown in the admin UI.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Bool => "bool",
            Kind::Int { .. } => "int",
            Kind::Float { .. } => "float",
            Kind::Text => "string",
            Kind::Secret => "secret",
            Kind::List => "list",
            Kind::SecretList => "secret list",
            Kind::Object => "object",
            Kind::SecretObject => "secret object",
            Kind::ObjectList => "list of objects",
            Kind::Choice(_) | Kind::LogLevel => "choice",
        }
    }

    /// `true` for secrets.
    pub fn is_secret(&self) -> bool {
        matches!(self, Kind::Secret | Kind::SecretList | Kind::SecretObject)
    }
}

/// The log levels of this proxy (tracing's), as LOG_LEVEL holds them.
pub const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];

/// The level a LOG_LEVEL spelling stands for, in any case: Gemini-Balance's five (`DEBUG`,
/// `INFO`, `WARNING`, `ERROR`, `CRITICAL`; tracing has nothing above error) and this proxy's
/// own `warn` and `trace`. `None` for anything else, which Gemini-Balance's logger runs at
/// INFO (`LOG_LEVELS.get(level.lower(), logging.INFO)` in `app/log/logger.py`): `FATAL` and
/// `NOTSET` included.
pub fn log_level(text: &str) -> Option<&'static str> {
    match text.trim().to_ascii_lowercase().as_str() {
        "critical" | "error" => Some("error"),
        "warning" | "warn" => Some("warn"),
        "info" => Some("info"),
        "debug" => Some("debug"),
        "trace" => Some("trace"),
        _ => None,
    }
}

/// What happens to a number outside its kind's range when read from its text form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutOfRange {
    /// Clamped into range and reported ([`Adjusted`]): Gemini-Balance accepts any number for
    /// its settings, so a `.env` that starts it must start this proxy.
    Clamp,
    /// Refused: this proxy's own settings, and the ranges Gemini-Balance enforces itself
    /// (ADMIN_SESSION_EXPIRE).
    Refuse,
}

/// Whether this version acts on a setting. Settings read but not acted on yet are `NotYet`, so
/// that a value set for them is named in the startup warning instead of silently ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Read and applied.
    Yes,
    /// Known from Gemini-Balance but not acted on yet: named in the startup warning.
    NotYet,
}

/// One setting.
#[derive(Debug, Clone, Copy)]
pub struct Def {
    pub name: &'static str,
    pub kind: Kind,
    /// The default, in the setting's text form (as it would appear in `.env`).
    pub default: &'static str,
    pub group: &'static str,
    pub help: &'static str,
    pub support: Support,
    /// Can be changed while running (through the admin API).
    pub live: bool,
    /// A number outside the range of its kind, read from text: clamped or refused.
    pub out_of_range: OutOfRange,
    /// A field of Gemini-Balance's `Settings` class (`app/config/config.py`); `false` for this
    /// proxy's own settings.
    pub python: bool,
}

const fn def(
    name: &'static str,
    kind: Kind,
    default: &'static str,
    group: &'static str,
    help: &'static str,
) -> Def {
    Def {
        name,
        kind,
        default,
        group,
        help,
        support: Support::Yes,
        live: true,
        out_of_range: OutOfRange::Clamp,
        python: true,
    }
}

/// This proxy's own setting, not one of Gemini-Balance's.
const fn ours(mut d: Def) -> Def {
    d.python = false;
    d
}

const fn not_yet(mut d: Def) -> Def {
    d.support = Support::NotYet;
    d
}

const fn startup_only(mut d: Def) -> Def {
    d.live = false;
    d
}

/// A number outside the range is refused, not clamped (see [`OutOfRange`]).
const fn refuse_out_of_range(mut d: Def) -> Def {
    d.out_of_range = OutOfRange::Refuse;
    d
}

const INT: Kind = Kind::Int {
    min: 0,
    max: i64::MAX,
};

/// Any whole number (settings this version only names in the startup warning).
const ANY_INT: Kind = Kind::Int {
    min: i64::MIN,
    max: i64::MAX,
};

/// The longest duration a seconds setting may ask for, one year: beyond it the timers'
/// deadline arithmetic would overflow (Gemini-Balance has no upper bound; larger values are
/// clamped to this).
const SECONDS_MAX: i64 = 365 * 86_400;

const DEFAULT_SAFETY: &str = r#"[{"category":"HARM_CATEGORY_HARASSMENT","threshold":"OFF"},{"category":"HARM_CATEGORY_HATE_SPEECH","threshold":"OFF"},{"category":"HARM_CATEGORY_SEXUALLY_EXPLICIT","threshold":"OFF"},{"category":"HARM_CATEGORY_DANGEROUS_CONTENT","threshold":"OFF"},{"category":"HARM_CATEGORY_CIVIC_INTEGRITY","threshold":"BLOCK_NONE"}]"#;

/// Every setting, in the order the admin page shows them.
pub const DEFS: &[Def] = &[
    // Server
    ours(startup_only(def(
        "HOST",
        Kind::Text,
        "0.0.0.0",
        "Server",
        "Address to listen on",
    ))),
    ours(refuse_out_of_range(startup_only(def(
        "PORT",
        Kind::Int { min: 0, max: 65535 },
        "8000",
        "Server",
        "Port to listen on",
    )))),
    def(
        "LOG_LEVEL",
        Kind::LogLevel,
        "info",
        "Server",
        "Log level (Gemini-Balance's WARNING and CRITICAL are read as warn and error)",
    ),
    ours(def(
        "LOG_FORMAT",
        Kind::Choice(&["text", "json"]),
        "text",
        "Server",
        "Log lines as text, or as JSON objects one a line (stdout and the log files; not a Gemini-Balance setting)",
    )),
    ours(def(
        "LOG_DIR",
        Kind::Text,
        "",
        "Server",
        "Also write the log to files in this directory (created if missing; empty: stdout only). The web admin's logs are the database's, not these files (not a Gemini-Balance setting)",
    )),
    ours(def(
        "LOG_FILE_ROTATION",
        Kind::Choice(&["daily", "hourly", "size"]),
        "daily",
        "Server",
        "With LOG_DIR: a new log file every day or every hour (UTC), or only when LOG_FILE_MAX_SIZE_MB is reached (not a Gemini-Balance setting)",
    )),
    ours(refuse_out_of_range(def(
        "LOG_FILE_MAX_SIZE_MB",
        Kind::Int {
            min: 0,
            max: 1_000_000,
        },
        "100",
        "Server",
        "With LOG_DIR: a log file that reaches this many MiB is closed and the next one opened, whatever LOG_FILE_ROTATION (0: no limit; not a Gemini-Balance setting)",
    ))),
    ours(refuse_out_of_range(def(
        "LOG_FILE_MAX_FILES",
        Kind::Int {
            min: 0,
            max: 1_000_000,
        },
        "30",
        "Server",
        "With LOG_DIR: keep this many log files at most, the oldest deleted first (0: no limit; not a Gemini-Balance setting)",
    ))),
    ours(refuse_out_of_range(def(
        "LOG_FILE_MAX_AGE_DAYS",
        Kind::Int {
            min: 0,
            max: 36_500,
        },
        "7",
        "Server",
        "With LOG_DIR: delete log files whose last line is older than this many days (0: no limit; not a Gemini-Balance setting)",
    ))),
    startup_only(def(
        "TIMEZONE",
        Kind::Text,
        "Asia/Shanghai",
        "Server",
        "IANA time zone (e.g. Asia/Shanghai, Europe/Berlin, UTC) of the calendar-month statistics and of the midnight log purge",
    )),
    // Client connections (not Gemini-Balance settings): docs/proxy.md, "What the server
    // guarantees".
    ours(refuse_out_of_range(startup_only(def(
        "CLIENT_HEADER_TIMEOUT",
        Kind::Int { min: 1, max: 3600 },
        "30",
        "Server",
        "Seconds a new connection has to send its first complete request head; then it is closed",
    )))),
    ours(refuse_out_of_range(startup_only(def(
        "CLIENT_IDLE_TIMEOUT",
        Kind::Int { min: 1, max: 3600 },
        "60",
        "Server",
        "Seconds a connection may wait with no request in progress (HTTP/1.1 keep-alive, HTTP/2 with no open stream) before it is closed",
    )))),
    ours(refuse_out_of_range(startup_only(def(
        "CLIENT_SEND_TIMEOUT",
        Kind::Int { min: 1, max: 3600 },
        "60",
        "Server",
        "Seconds a client may take nothing of what is sent to it (a response it does not read, an HTTP/2 window it does not open); then its connection is closed",
    )))),
    ours(refuse_out_of_range(startup_only(def(
        "CLIENT_BODY_TIMEOUT",
        Kind::Int { min: 1, max: 3600 },
        "30",
        "Server",
        "Seconds a client may send nothing while the proxy waits for more of its request body; then it is answered 408",
    )))),
    ours(refuse_out_of_range(startup_only(def(
        "CLIENT_BODY_MIN_RATE",
        Kind::Int {
            min: 0,
            max: 1_000_000_000,
        },
        "500",
        "Server",
        "Bytes per second a request body must average after its first CLIENT_BODY_TIMEOUT seconds; a slower one is answered 408 (0: no minimum)",
    )))),
    ours(refuse_out_of_range(startup_only(def(
        "MAX_CONNECTIONS",
        Kind::Int {
            min: 0,
            max: 1_000_000,
        },
        "0",
        "Server",
        "Open client connections at most; past it a new one is answered 503 and closed (0: from the open-file limit)",
    )))),
    ours(refuse_out_of_range(startup_only(def(
        "SHUTDOWN_TIMEOUT",
        Kind::Int { min: 0, max: 3600 },
        "8",
        "Server",
        "Seconds requests in progress get to finish after SIGTERM or Ctrl-C; then every connection is closed",
    )))),
    ours(def(
        "CORS_ENABLED",
        Kind::Bool,
        "true",
        "Server",
        "Answer browsers' cross-origin requests (CORS) on the API routes, so web chat front-ends can call the proxy; never on the admin API or web admin (not a Gemini-Balance setting)",
    )),
    ours(def(
        "CORS_ALLOWED_ORIGINS",
        Kind::List,
        r#"["*"]"#,
        "Server",
        "Origins (https://chat.example.com) whose pages may call the API routes; * for any, as Gemini-Balance allowed (not a Gemini-Balance setting)",
    )),
    // Keys and auth
    def(
        "API_KEYS",
        Kind::SecretList,
        "[]",
        "Keys",
        "Gemini API keys, in rotation order",
    ),
    def(
        "ALLOWED_TOKENS",
        Kind::SecretList,
        "[]",
        "Keys",
        "Client tokens accepted on the API routes",
    ),
    def(
        "AUTH_TOKEN",
        Kind::Secret,
        "",
        "Keys",
        "Admin token (also accepted as a client token); defaults to the first ALLOWED_TOKENS",
    ),
    ours(refuse_out_of_range(def(
        "AUTH_FAILURE_BURST",
        Kind::Int {
            min: 0,
            max: 1_000_000,
        },
        "10",
        "Keys",
        "Failed authentications one client address may make in a row before it is answered 429 (0: no limit; not a Gemini-Balance setting)",
    ))),
    ours(refuse_out_of_range(def(
        "AUTH_FAILURE_REFILL_SECONDS",
        Kind::Int {
            min: 1,
            max: 86_400,
        },
        "6",
        "Keys",
        "After that, one more failed authentication is allowed every this many seconds (not a Gemini-Balance setting)",
    ))),
    ours(def(
        "TRUSTED_PROXIES",
        Kind::List,
        "[]",
        "Keys",
        "Reverse proxies in front of this one (addresses or ranges such as 127.0.0.1, 10.0.0.0/8) whose X-Forwarded-For names the client (not a Gemini-Balance setting)",
    )),
    ours(def(
        "METRICS_TOKEN",
        Kind::Secret,
        "",
        "Keys",
        "Bearer token GET /metrics (Prometheus) requires; /metrics is off while neither this nor METRICS_ALLOWED_IPS is set (not a Gemini-Balance setting)",
    )),
    ours(def(
        "METRICS_ALLOWED_IPS",
        Kind::List,
        "[]",
        "Keys",
        "Client addresses or ranges (127.0.0.1, 10.0.0.0/8) that may read GET /metrics; with METRICS_TOKEN set too, both must pass (not a Gemini-Balance setting)",
    )),
    def(
        "MAX_FAILURES",
        INT,
        "3",
        "Keys",
        "Consecutive counted failures that take a key out (0: never)",
    ),
    def(
        "CHECK_INTERVAL_HOURS",
        Kind::Float {
            min: 0.0,
            max: 8760.0,
        },
        "1",
        "Keys",
        "Re-check failed keys this often (0: never)",
    ),
    def(
        "TEST_MODEL",
        Kind::Text,
        "gemini-2.5-flash-lite",
        "Keys",
        "Model used to verify keys",
    ),
    not_yet(def(
        "PAID_KEY",
        Kind::Secret,
        "",
        "Keys",
        "Key for image generation",
    )),
    not_yet(def(
        "VERTEX_API_KEYS",
        Kind::SecretList,
        "[]",
        "Keys",
        "Vertex Express keys",
    )),
    not_yet(def(
        "VERTEX_EXPRESS_BASE_URL",
        Kind::Text,
        "https://aiplatform.googleapis.com/v1beta1/publishers/google",
        "Keys",
        "Vertex Express base URL",
    )),
    // Upstream
    startup_only(def(
        "BASE_URL",
        Kind::Text,
        "https://generativelanguage.googleapis.com/v1beta",
        "Upstream",
        "Gemini base URL, version included",
    )),
    def(
        "MAX_RETRIES",
        // Gemini-Balance makes no attempt at all with 0, and an enormous value would keep a
        // failing request going for hours: both are clamped.
        Kind::Int { min: 1, max: 100 },
        "3",
        "Upstream",
        "Attempts per request, the first included; moving on from a rate-limited or rejected key is not counted",
    ),
    def(
        "TIME_OUT",
        Kind::Int {
            min: 1,
            max: SECONDS_MAX,
        },
        "300",
        "Upstream",
        "Seconds to connect and for each read from the upstream",
    ),
    def(
        "CUSTOM_HEADERS",
        Kind::SecretObject,
        "{}",
        "Upstream",
        "Extra headers sent upstream (a secret: they often carry a relay's credentials)",
    ),
    def(
        "PROXIES",
        Kind::SecretList,
        "[]",
        "Upstream",
        "Proxies for upstream calls (http://, https://, socks5://, socks5h://; user:password@ allowed)",
    ),
    def(
        "PROXIES_USE_CONSISTENCY_HASH_BY_API_KEY",
        Kind::Bool,
        "true",
        "Upstream",
        "Give each key a stable proxy (the same across restarts); otherwise take turns",
    ),
    ours(def(
        "IMAGE_FETCH_ALLOW_PRIVATE_NETWORKS",
        Kind::Bool,
        "false",
        "Upstream",
        "Let image URLs in OpenAI chat requests reach loopback, private and link-local addresses (trusted networks only; not a Gemini-Balance setting)",
    )),
    def(
        "URL_NORMALIZATION_ENABLED",
        Kind::Bool,
        "false",
        "Upstream",
        "Fix common client path mistakes (/v1/v1/chat/completions, a missing /v1beta, /chat/completions without a prefix) before routing",
    ),
    // Models
    def(
        "SEARCH_MODELS",
        Kind::List,
        r#"["gemini-2.5-flash","gemini-2.5-pro"]"#,
        "Models",
        "Models with a -search variant",
    ),
    def(
        "IMAGE_MODELS",
        Kind::List,
        r#"["gemini-2.0-flash-exp","gemini-2.5-flash-image-preview"]"#,
        "Models",
        "Models with an -image variant",
    ),
    def(
        "THINKING_MODELS",
        Kind::List,
        "[]",
        "Models",
        "Models with a -non-thinking variant",
    ),
    def(
        "THINKING_BUDGET_MAP",
        Kind::Object,
        "{}",
        "Models",
        "Default thinking budget per model (-1: dynamic)",
    ),
    def(
        "FILTERED_MODELS",
        Kind::List,
        r#"["gemini-1.0-pro-vision-latest","gemini-pro-vision","chat-bison-001","text-bison-001","embedding-gecko-001"]"#,
        "Models",
        "Models hidden and refused",
    ),
    def(
        "SAFETY_SETTINGS",
        Kind::ObjectList,
        DEFAULT_SAFETY,
        "Models",
        "Safety settings applied when the client sends none",
    ),
    def(
        "SHOW_THINKING_PROCESS",
        Kind::Bool,
        "true",
        "Models",
        "Ask models that think for their thoughts; OpenAI: reasoning_content",
    ),
    def(
        "SHOW_SEARCH_LINK",
        Kind::Bool,
        "true",
        "Models",
        "Append the search sources to answers of a search switched on here (-search, googleSearch function)",
    ),
    def(
        "TOOLS_CODE_EXECUTION_ENABLED",
        Kind::Bool,
        "false",
        "Models",
        "Add the code execution tool",
    ),
    def(
        "URL_CONTEXT_ENABLED",
        Kind::Bool,
        "false",
        "Models",
        "Add the URL context tool",
    ),
    def(
        "URL_CONTEXT_MODELS",
        Kind::List,
        r#"["gemini-2.5-pro","gemini-2.5-flash","gemini-2.5-flash-lite","gemini-2.0-flash","gemini-2.0-flash-live-001"]"#,
        "Models",
        "Models that get the URL context tool",
    ),
    // Streaming
    def(
        "FAKE_STREAM_ENABLED",
        Kind::Bool,
        "false",
        "Streaming",
        "Answer streams from a non-streaming call, with keep-alives",
    ),
    def(
        "FAKE_STREAM_EMPTY_DATA_INTERVAL_SECONDS",
        Kind::Int {
            min: 1,
            max: SECONDS_MAX,
        },
        "5",
        "Streaming",
        "Seconds between keep-alives",
    ),
    def(
        "STREAM_OPTIMIZER_ENABLED",
        Kind::Bool,
        "false",
        "Streaming",
        "Re-chunk long deltas for smooth typing",
    ),
    def(
        "STREAM_MIN_DELAY",
        Kind::Float {
            min: 0.0,
            max: SECONDS_MAX as f64,
        },
        "0.016",
        "Streaming",
        "Seconds between pieces of long text",
    ),
    def(
        "STREAM_MAX_DELAY",
        Kind::Float {
            min: 0.0,
            max: SECONDS_MAX as f64,
        },
        "0.024",
        "Streaming",
        "Seconds between pieces of short text",
    ),
    def(
        "STREAM_SHORT_TEXT_THRESHOLD",
        INT,
        "10",
        "Streaming",
        "Characters up to which text goes one character at a time",
    ),
    def(
        "STREAM_LONG_TEXT_THRESHOLD",
        INT,
        "50",
        "Streaming",
        "Characters from which text goes in chunks",
    ),
    def(
        "STREAM_CHUNK_SIZE",
        Kind::Int {
            min: 1,
            max: i64::MAX,
        },
        "5",
        "Streaming",
        "Characters per chunk of long text",
    ),
    // Storage and logs
    startup_only(def(
        "DATABASE_TYPE",
        Kind::Choice(&["sqlite", "mysql", "postgres"]),
        "sqlite",
        "Storage",
        "Where this proxy keeps usage, logs, key state and settings: sqlite (data/<SQLITE_DATABASE>.db, one instance), mysql (MySQL/MariaDB from MYSQL_*) or postgres (POSTGRES_URL; not a Gemini-Balance value); several instances share a mysql or postgres database (docs/scale-out.md)",
    )),
    ours(startup_only(def(
        "POSTGRES_URL",
        Kind::Secret,
        "",
        "Storage",
        "With DATABASE_TYPE=postgres: the database, as postgres://user:password@host:5432/dbname (not a Gemini-Balance setting)",
    ))),
    ours(startup_only(def(
        "POSTGRES_SCHEMA",
        Kind::Text,
        "",
        "Storage",
        "With DATABASE_TYPE=postgres: the schema of this proxy's tables, created if missing (empty: the connection's search_path; not a Gemini-Balance setting)",
    ))),
    ours(startup_only(def(
        "SHARED_KEYS_SEALING_KEY",
        Kind::Secret,
        "",
        "Storage",
        "With DATABASE_TYPE=postgres or mysql: 64 hex digits (openssl rand -hex 32), the same on every instance, with which a key added through one instance's admin API is sealed for the others; empty: such a key serves on that instance only (not a Gemini-Balance setting)",
    ))),
    ours(refuse_out_of_range(startup_only(def(
        "QUOTA_SYNC_INTERVAL_SECONDS",
        Kind::Int { min: 1, max: 3600 },
        "5",
        "Storage",
        "Seconds between two exchanges of the client quotas with the database: this instance's new use is added, every instance's use and the limits and names set elsewhere are read (docs/quotas.md; not a Gemini-Balance setting)",
    )))),
    startup_only(def(
        "SQLITE_DATABASE",
        Kind::Text,
        "default_db",
        "Storage",
        "Database file under data/",
    )),
    ours(refuse_out_of_range(startup_only(def(
        "SQLITE_QUEUE_CAPACITY",
        Kind::Int {
            min: 1,
            max: 1_000_000,
        },
        "16384",
        "Storage",
        "Usage records queued for the database writer at most; past it records are dropped and counted, never waited for (not a Gemini-Balance setting)",
    )))),
    ours(startup_only(def(
        "IMPORT_PYTHON_DATABASE",
        Kind::Bool,
        "true",
        "Storage",
        "At the first start (no data/<SQLITE_DATABASE>.db and no secrets file yet), bring over the settings and keys kept in the Python Gemini-Balance server's database (its SQLite data/<SQLITE_DATABASE>, or MySQL with DATABASE_TYPE=mysql), once (not a Gemini-Balance setting)",
    ))),
    startup_only(def(
        "MYSQL_HOST",
        Kind::Text,
        "",
        "Storage",
        "MySQL host (with DATABASE_TYPE=mysql, this proxy's store; also read by `import mysql`)",
    )),
    startup_only(def(
        "MYSQL_PORT",
        ANY_INT,
        "3306",
        "Storage",
        "MySQL port (with DATABASE_TYPE=mysql, this proxy's store; also read by `import mysql`)",
    )),
    startup_only(def(
        "MYSQL_USER",
        Kind::Text,
        "",
        "Storage",
        "MySQL user (with DATABASE_TYPE=mysql, this proxy's store; also read by `import mysql`)",
    )),
    startup_only(def(
        "MYSQL_PASSWORD",
        Kind::Secret,
        "",
        "Storage",
        "MySQL password (with DATABASE_TYPE=mysql, this proxy's store; also read by `import mysql`)",
    )),
    startup_only(def(
        "MYSQL_DATABASE",
        Kind::Text,
        "",
        "Storage",
        "MySQL database (with DATABASE_TYPE=mysql, this proxy's store; also read by `import mysql`)",
    )),
    startup_only(def(
        "MYSQL_SOCKET",
        Kind::Text,
        "",
        "Storage",
        "MySQL socket (with DATABASE_TYPE=mysql, this proxy's store; also read by `import mysql`)",
    )),
    def(
        "ERROR_LOG_RECORD_REQUEST_BODY",
        Kind::Bool,
        "false",
        "Storage",
        "Keep the request body of failed requests",
    ),
    def(
        "AUTO_DELETE_ERROR_LOGS_ENABLED",
        Kind::Bool,
        "true",
        "Storage",
        "Delete old error logs",
    ),
    def(
        "AUTO_DELETE_ERROR_LOGS_DAYS",
        INT,
        "7",
        "Storage",
        "Keep error logs this many days (0: none are kept past the next purge)",
    ),
    def(
        "AUTO_DELETE_REQUEST_LOGS_ENABLED",
        Kind::Bool,
        "false",
        "Storage",
        "Delete old request logs",
    ),
    def(
        "AUTO_DELETE_REQUEST_LOGS_DAYS",
        INT,
        "30",
        "Storage",
        "Keep request logs this many days (0: none are kept past the next purge)",
    ),
    ours(def(
        "DATABASE_MAX_SIZE_MB",
        INT,
        "0",
        "Storage",
        "SQLite: keep the database's pages in use at about this many MiB (checked every 5 s, the write-ahead log apart) by deleting the oldest request and error log rows (statistics kept); 0: no limit (not a Gemini-Balance setting)",
    )),
    // Admin
    refuse_out_of_range(startup_only(def(
        "ADMIN_SESSION_EXPIRE",
        Kind::Int {
            min: 300,
            max: 86_400,
        },
        "3600",
        "Admin",
        "Seconds an admin session lasts",
    ))),
    // Not supported yet
    not_yet(def(
        "CREATE_IMAGE_MODEL",
        Kind::Text,
        "imagen-3.0-generate-002",
        "Images and speech",
        "Image generation model",
    )),
    not_yet(def(
        "UPLOAD_PROVIDER",
        Kind::Text,
        "smms",
        "Images and speech",
        "Image hosting provider",
    )),
    not_yet(def(
        "TTS_MODEL",
        Kind::Text,
        "gemini-2.5-flash-preview-tts",
        "Images and speech",
        "Text-to-speech model",
    )),
    not_yet(def(
        "TTS_VOICE_NAME",
        Kind::Text,
        "Zephyr",
        "Images and speech",
        "Text-to-speech voice",
    )),
    not_yet(def(
        "TTS_SPEED",
        Kind::Text,
        "normal",
        "Images and speech",
        "Text-to-speech speed",
    )),
    not_yet(def(
        "FILES_CLEANUP_ENABLED",
        Kind::Bool,
        "true",
        "Files",
        "Files API cleanup",
    )),
    not_yet(def(
        "FILES_CLEANUP_INTERVAL_HOURS",
        ANY_INT,
        "1",
        "Files",
        "Files API cleanup interval",
    )),
    not_yet(def(
        "FILES_USER_ISOLATION_ENABLED",
        Kind::Bool,
        "true",
        "Files",
        "Files API isolation",
    )),
];

/// A Gemini-Balance variable this version does not use and does not show on the config page:
/// named in the startup warning when set, never silently ignored.
#[derive(Debug, Clone, Copy)]
pub struct Unused {
    pub name: &'static str,
    /// A credential: never shown, and redacted from what an import brings over.
    pub secret: bool,
    /// A field of Gemini-Balance's `Settings` class (`ENABLE_TTS` is read outside it).
    pub python: bool,
}

const fn unused(name: &'static str) -> Unused {
    Unused {
        name,
        secret: false,
        python: true,
    }
}

const fn unused_secret(name: &'static str) -> Unused {
    Unused {
        name,
        secret: true,
        python: true,
    }
}

/// The Gemini-Balance variables this version does not use: the image hosts' settings and
/// credentials, the update check's repository and `ENABLE_TTS` (read by Gemini-Balance's TTS
/// code outside its `Settings`).
pub const UNUSED_VARS: &[Unused] = &[
    unused("GITHUB_REPO_OWNER"),
    unused("GITHUB_REPO_NAME"),
    Unused {
        name: "ENABLE_TTS",
        secret: false,
        python: false,
    },
    unused_secret("SMMS_SECRET_TOKEN"),
    unused_secret("PICGO_API_KEY"),
    unused("PICGO_API_URL"),
    unused("CLOUDFLARE_IMGBED_URL"),
    unused_secret("CLOUDFLARE_IMGBED_AUTH_CODE"),
    unused("CLOUDFLARE_IMGBED_UPLOAD_FOLDER"),
    unused("OSS_ENDPOINT"),
    unused("OSS_ENDPOINT_INNER"),
    unused_secret("OSS_ACCESS_KEY"),
    unused_secret("OSS_ACCESS_KEY_SECRET"),
    unused("OSS_BUCKET_NAME"),
    unused("OSS_REGION"),
];

/// The definition of a setting.
pub fn find(name: &str) -> Option<&'static Def> {
    DEFS.iter().find(|d| d.name == name)
}

/// A value that does not fit its setting; names the setting and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub name: String,
    pub expected: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: expected {}", self.name, self.expected)
    }
}

impl std::error::Error for Invalid {}

/// A value read from text that this proxy uses differently from how it was given: a number
/// clamped into the range it can use, a log level Gemini-Balance runs at INFO, a fractional
/// thinking budget. Named in one startup warning (only numbers and log levels are adjusted,
/// never secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adjusted {
    pub name: &'static str,
    /// The text given (trimmed, and cut short if long).
    pub given: String,
    /// The value used, in its text form.
    pub used: String,
}

impl fmt::Display for Adjusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={} (using {})", self.name, self.given, self.used)
    }
}

/// Reads a setting's text form (from `.env`, the environment, the database or the secrets
/// file) into JSON; a value that had to be adjusted is used adjusted (see [`read`]).
pub fn parse(def: &'static Def, raw: &str) -> Result<Value, Invalid> {
    read(def, raw).map(|(value, _)| value)
}

/// Like [`parse`], and says whether the value used differs from the one given.
pub fn read(def: &'static Def, raw: &str) -> Result<(Value, Option<Adjusted>), Invalid> {
    let (value, adjusted) = parse_text(def, raw)?;
    value_rules(def, &value).map_err(|expected| Invalid {
        name: def.name.to_owned(),
        expected,
    })?;
    let adjusted = adjusted.then(|| {
        let given = raw.trim();
        Adjusted {
            name: def.name,
            given: match given.char_indices().nth(40) {
                Some((cut, _)) => format!("{}…", &given[..cut]),
                None => given.to_owned(),
            },
            used: to_text(&value),
        }
    });
    Ok((value, adjusted))
}

/// The text form read by the setting's kind, and whether it was adjusted to be used.
fn parse_text(def: &Def, raw: &str) -> Result<(Value, bool), Invalid> {
    let invalid = |expected: String| Invalid {
        name: def.name.to_owned(),
        expected,
    };
    let exact = |value: Value| Ok((value, false));
    let clamp = def.out_of_range == OutOfRange::Clamp;
    let raw = raw.trim();
    match def.kind {
        Kind::Bool => match pydantic_bool(raw) {
            Some(b) => exact(json!(b)),
            None => Err(invalid(format!(
                "true or false (also 1/0, yes/no, on/off, t/f, y/n), got {raw:?}"
            ))),
        },
        Kind::Int { min, max } => match pydantic_int(raw) {
            Some(n) if (min..=max).contains(&n) => exact(json!(n)),
            Some(n) if clamp => Ok((json!(n.clamp(min, max)), true)),
            _ => Err(invalid(format!("{}, got {raw:?}", int_expected(min, max)))),
        },
        Kind::Float { min, max } => match pydantic_float(raw) {
            Some(x) if x >= min && x <= max => exact(json!(x)),
            // Not a number: the default (pydantic reads "nan" as a float).
            Some(x) if clamp && x.is_nan() => {
                Ok((json!(def.default.parse::<f64>().unwrap_or(min)), true))
            }
            Some(x) if clamp => Ok((json!(x.clamp(min, max)), true)),
            _ => Err(invalid(format!(
                "a number from {min} to {max}, got {raw:?}"
            ))),
        },
        Kind::Text | Kind::Secret => exact(json!(raw.trim_matches('"'))),
        Kind::Choice(options) => {
            let lower = raw.to_ascii_lowercase();
            match options.iter().find(|o| **o == lower) {
                Some(o) => exact(json!(o)),
                None => Err(invalid(format!(
                    "one of {}, got {raw:?}",
                    options.join(", ")
                ))),
            }
        }
        // Gemini-Balance takes any text and logs at INFO for a level its logger does not know.
        Kind::LogLevel => match log_level(raw) {
            Some(level) => exact(json!(level)),
            None => Ok((json!(def.default), !raw.is_empty())),
        },
        Kind::List | Kind::SecretList => parse_list(raw)
            .map(|items| (json!(items), false))
            .map_err(|e| {
                invalid(format!(
                    "a JSON list of strings such as [\"a\",\"b\"], or a comma-separated list ({e})"
                ))
            }),
        Kind::Object | Kind::SecretObject => {
            match serde_json::from_str::<Value>(if raw.is_empty() { "{}" } else { raw }) {
                Ok(Value::Object(map)) if def.name == "THINKING_BUDGET_MAP" => {
                    budgets(map).map_err(invalid)
                }
                Ok(v @ Value::Object(_)) => exact(v),
                _ => Err(invalid(
                    "a JSON object such as {\"name\": \"value\"}".to_owned(),
                )),
            }
        }
        Kind::ObjectList => {
            match serde_json::from_str::<Value>(if raw.is_empty() { "[]" } else { raw }) {
                Ok(Value::Array(items)) if items.iter().all(Value::is_object) => {
                    exact(Value::Array(items))
                }
                _ => Err(invalid("a JSON list of objects".to_owned())),
            }
        }
    }
}

/// What an int setting expects, in words.
fn int_expected(min: i64, max: i64) -> String {
    match (min, max) {
        (i64::MIN, i64::MAX) => "a whole number".to_owned(),
        (min, i64::MAX) => format!("a whole number of at least {min}"),
        (min, max) => format!("a whole number from {min} to {max}"),
    }
}

/// A bool as pydantic (v2, lax mode) reads one from text (`str_as_bool` in pydantic-core),
/// in any case; an empty value is false.
fn pydantic_bool(text: &str) -> Option<bool> {
    const TRUE: &[&str] = &["1", "t", "y", "on", "yes", "true"];
    const FALSE: &[&str] = &["", "0", "f", "n", "no", "off", "false"];
    let is = |words: &[&str]| words.iter().any(|w| w.eq_ignore_ascii_case(text));
    if is(TRUE) {
        Some(true)
    } else if is(FALSE) {
        Some(false)
    } else {
        None
    }
}

/// An int as pydantic (v2, lax mode) reads one from text (`str_as_int` in pydantic-core):
/// surrounding whitespace, one sign, `_` between digits and a fraction of zeros (`3.0`) are
/// accepted; `3.5`, `1e3`, `inf` and `3.` are not. Python's ints have no bounds: values beyond
/// `i64` saturate, to be clamped like any other value out of range.
fn pydantic_int(text: &str) -> Option<i64> {
    let text = text.trim();
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let digits = match digits.split_once('.') {
        Some((whole, zeros)) if !zeros.is_empty() && zeros.bytes().all(|b| b == b'0') => whole,
        Some(_) => return None,
        None => digits,
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let mut n: i64 = 0;
    for b in digits.bytes() {
        match b {
            b'0'..=b'9' => n = n.saturating_mul(10).saturating_add(i64::from(b - b'0')),
            b'_' => {}
            _ => return None,
        }
    }
    Some(if negative { -n } else { n })
}

/// A float as pydantic (v2, lax mode) reads one from text (`str_as_float` in pydantic-core,
/// which is Rust's own float syntax: `1.5`, `.5`, `1e3`, `inf`, `nan`; and `_` between digits).
fn pydantic_float(text: &str) -> Option<f64> {
    text.trim().parse().ok().or_else(|| {
        let underscores_ok = text.contains('_')
            && !text.starts_with('_')
            && !text.ends_with('_')
            && !text.contains("__");
        underscores_ok
            .then(|| text.replace('_', "").parse().ok())
            .flatten()
    })
}

/// THINKING_BUDGET_MAP as Gemini-Balance reads it (a `Dict[str, float]`: numbers, numeric
/// strings, booleans), made whole numbers as Gemini's `thinkingBudget` is: a fraction is cut
/// off, an infinite or NaN budget is left out (both reported as adjusted).
fn budgets(map: serde_json::Map<String, Value>) -> Result<(Value, bool), String> {
    let mut out = serde_json::Map::new();
    let mut adjusted = false;
    for (model, budget) in map {
        if let Some(whole) = budget.as_i64() {
            out.insert(model, json!(whole));
            continue;
        }
        let number = match &budget {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => pydantic_float(s),
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            _ => None,
        };
        let Some(number) = number else {
            return Err(format!(
                "a JSON object of thinking budgets (numbers) such as {{\"gemini-2.5-flash\": -1}}, and {model:?} has {}",
                json_type(&budget)
            ));
        };
        if !number.is_finite() {
            adjusted = true;
            continue;
        }
        adjusted |= number.fract() != 0.0;
        out.insert(model, json!(number.trunc() as i64));
    }
    Ok((Value::Object(out), adjusted))
}

/// Checks a JSON value from the admin API against a setting and returns it normalised.
///
/// Stricter than the text form of `.env`: the value must already have the JSON type of the
/// setting's kind (`5`, not `"5"`; `["a"]`, not `"a"` or `42`; `true`, not `"yes"`), be in range,
/// and follow the setting's own rules (see [`admin_rules`]). Messages never repeat a secret.
pub fn check(def: &Def, value: &Value) -> Result<Value, Invalid> {
    let invalid = |expected: String| Invalid {
        name: def.name.to_owned(),
        expected,
    };
    let typed = typed(def, value).map_err(invalid)?;
    value_rules(def, &typed)
        .and_then(|()| admin_rules(def, &typed))
        .map_err(invalid)?;
    Ok(typed)
}

/// `value` if it has the JSON type of the setting's kind (normalised: text trimmed, blank list
/// entries dropped, choices in lower case), else what was expected.
fn typed(def: &Def, value: &Value) -> Result<Value, String> {
    let expected = match def.kind {
        Kind::Bool => "true or false".to_owned(),
        Kind::Int { min, max } => int_expected(min, max),
        Kind::Float { min, max } => format!("a number from {min} to {max}"),
        Kind::Text | Kind::Secret => "a string".to_owned(),
        Kind::Choice(words) => format!("one of {}", words.join(", ")),
        Kind::LogLevel => format!(
            "one of {} (WARNING and CRITICAL, Gemini-Balance's words, are read as warn and error)",
            LOG_LEVELS.join(", ")
        ),
        Kind::List | Kind::SecretList => "a JSON list of strings such as [\"a\", \"b\"]".to_owned(),
        Kind::Object => "a JSON object such as {\"name\": \"value\"}".to_owned(),
        Kind::SecretObject => "a JSON object of strings such as {\"name\": \"value\"}".to_owned(),
        Kind::ObjectList => "a JSON list of objects".to_owned(),
    };
    let got = |what: &str| format!("{expected}, got {what}");
    match (def.kind, value) {
        (_, Value::Null) => Err(got(&format!(
            "null (DELETE /api/config/{} forgets a change)",
            def.name
        ))),
        (Kind::Bool, Value::Bool(b)) => Ok(json!(b)),
        (Kind::Int { min, max }, Value::Number(n)) => match whole(n) {
            Some(i) if (min..=max).contains(&i) => Ok(json!(i)),
            _ => Err(got(&n.to_string())),
        },
        (Kind::Float { min, max }, Value::Number(n)) => match n.as_f64() {
            Some(x) if x.is_finite() && (min..=max).contains(&x) => Ok(json!(x)),
            _ => Err(got(&n.to_string())),
        },
        (Kind::Text | Kind::Secret, Value::String(s)) => Ok(json!(s.trim())),
        (Kind::LogLevel, Value::String(s)) => match log_level(s) {
            Some(level) => Ok(json!(level)),
            None => Err(got(&format!("{s:?}"))),
        },
        (Kind::Choice(words), Value::String(s)) => {
            let lower = s.trim().to_ascii_lowercase();
            match words.iter().find(|w| **w == lower) {
                Some(w) => Ok(json!(w)),
                None => Err(got(&format!("{s:?}"))),
            }
        }
        (Kind::List | Kind::SecretList, Value::Array(items)) => {
            let mut list = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) if s.trim().is_empty() => {}
                    Value::String(s) => list.push(json!(s.trim())),
                    other => return Err(got(&format!("entry #{} as {}", i + 1, json_type(other)))),
                }
            }
            Ok(Value::Array(list))
        }
        (Kind::Object, Value::Object(_)) => Ok(value.clone()),
        (Kind::SecretObject, Value::Object(map)) => {
            match map.iter().find(|(_, v)| !v.is_string()) {
                Some((name, v)) => Err(got(&format!("{} for {name:?}", json_type(v)))),
                None => Ok(value.clone()),
            }
        }
        (Kind::ObjectList, Value::Array(items)) => {
            match items.iter().position(|item| !item.is_object()) {
                Some(i) => Err(got(&format!(
                    "entry #{} as {}",
                    i + 1,
                    json_type(&items[i])
                ))),
                None => Ok(value.clone()),
            }
        }
        (_, other) => Err(got(json_type(other))),
    }
}

/// A JSON number that is a whole number (`5` or `5.0`).
fn whole(n: &serde_json::Number) -> Option<i64> {
    n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|x| x.fract() == 0.0 && x.abs() < 9.0e18)
            .map(|x| x as i64)
    })
}

/// What a JSON value is, without its content (which may be a secret).
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Rules beyond the type that hold wherever a value comes from (`.env`, the database, the
/// secrets file, the admin API): values the proxy could not use at all.
fn value_rules(def: &Def, value: &Value) -> Result<(), String> {
    match def.name {
        "TRUSTED_PROXIES" | "METRICS_ALLOWED_IPS" => {
            let entries = strings(value);
            crate::client_addr::TrustedProxies::parse(&entries).map(drop)
        }
        "CORS_ALLOWED_ORIGINS" => strings(value)
            .iter()
            .enumerate()
            .try_for_each(|(i, entry)| {
                crate::cors::check_origin(entry).map_err(|e| format!("{e} (entry #{})", i + 1))
            }),
        "SHARED_KEYS_SEALING_KEY" => {
            let text = value.as_str().unwrap_or_default().trim();
            if text.is_empty() || (text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                Ok(())
            } else {
                Err("64 hex digits (openssl rand -hex 32), or nothing".to_owned())
            }
        }
        "CUSTOM_HEADERS" => {
            for (name, v) in value.as_object().into_iter().flatten() {
                if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err(format!("header names, and {name:?} is not one"));
                }
                if axum::http::HeaderValue::from_str(&to_text(v)).is_err() {
                    return Err(format!(
                        "header values, and the value of {name:?} is not one (printable text on one line)"
                    ));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Rules for values set through the admin API, on top of [`value_rules`]: a change made while
/// running must not lock the admin out or break every request (`.env` keeps the Python server's
/// leniency). Each message says what was expected, to follow the word "expected".
fn admin_rules(def: &Def, value: &Value) -> Result<(), String> {
    let each = |rule: &dyn Fn(&str) -> Result<(), String>| {
        strings(value).iter().enumerate().try_for_each(|(i, item)| {
            rule(item).map_err(|e| format!("{e} (entry #{} is not one)", i + 1))
        })
    };
    match def.name {
        "AUTH_TOKEN" => token(value.as_str().unwrap_or_default()),
        "ALLOWED_TOKENS" => each(&token),
        "API_KEYS" => each(&|raw| {
            use gemini_balance::keys::{ApiKey, InvalidKey};
            ApiKey::new(raw).map(drop).map_err(|e| {
                match e {
                    InvalidKey::Empty => "API keys that are not empty",
                    InvalidKey::TooLong => "API keys of at most 512 bytes",
                    _ => "API keys of printable ASCII without spaces",
                }
                .to_owned()
            })
        }),
        "PROXIES" => each(&crate::upstream::check_proxy),
        "THINKING_BUDGET_MAP" => {
            for (model, budget) in value.as_object().into_iter().flatten() {
                if budget.as_number().and_then(whole).is_none_or(|b| b < -1) {
                    let has = match budget {
                        Value::Number(n) => n.to_string(),
                        other => json_type(other).to_owned(),
                    };
                    return Err(format!(
                        "thinking budgets as whole numbers of at least -1 (-1: dynamic), and {model:?} has {has}"
                    ));
                }
            }
            Ok(())
        }
        "SAFETY_SETTINGS" => {
            let items = value.as_array().map(Vec::as_slice).unwrap_or_default();
            match items.iter().position(|item| {
                !(item.get("category").is_some_and(Value::is_string)
                    && item.get("threshold").is_some_and(Value::is_string))
            }) {
                Some(i) => Err(format!(
                    "objects with a \"category\" and a \"threshold\" string (entry #{} is not one)",
                    i + 1
                )),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// A client or admin token set while running: it must be sendable as a header and in `?key=`.
fn token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("a token that is not empty".to_owned());
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("a token of printable ASCII without spaces".to_owned());
    }
    Ok(())
}

/// The strings of a list value.
fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// A list in the Python server's format (`["a","b"]`), or a comma-separated list (`a,b`).
pub fn parse_list(raw: &str) -> Result<Vec<String>, String> {
    let raw = raw.trim();
    if raw.starts_with('[') {
        let items: Vec<Value> = serde_json::from_str(raw).map_err(|e| e.to_string())?;
        return items
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| match item {
                Value::String(s) if s.trim().is_empty() => None,
                Value::String(s) => Some(Ok(s.trim().to_owned())),
                // The entry's type, never its value: the list may be of keys or tokens.
                other => Some(Err(format!(
                    "entry #{} is {}, not a string",
                    i + 1,
                    json_type(&other)
                ))),
            })
            .collect();
    }
    Ok(raw
        .split(',')
        .map(|s| s.trim().trim_matches('"').trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect())
}

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Default,
    Environment,
    /// Changed through the admin API and kept in the database's settings table.
    Database,
    /// A secret changed through the admin API, kept in the secrets file (never in the database).
    SecretsFile,
}

impl Source {
    pub fn as_str(&self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::Environment => "environment",
            Source::Database => "database",
            Source::SecretsFile => "secrets_file",
        }
    }
}

/// The value of every setting, and where it came from.
#[derive(Debug, Clone)]
pub struct Settings {
    values: BTreeMap<&'static str, (Value, Source)>,
}

/// What reading the environment found besides the values.
#[derive(Debug, Default)]
pub struct Findings {
    /// Set, known, but not acted on (by this version or ever).
    pub unsupported: Vec<String>,
    /// Values used differently from how they were given (in the order of [`DEFS`]).
    pub adjusted: Vec<Adjusted>,
}

/// The value of variable `name`: set in exactly that case, or else in any case, as
/// pydantic-settings reads the environment (`case_sensitive=False`: `log_level=debug` sets
/// LOG_LEVEL). Of several spellings in other cases, the first in sorted order.
pub fn lookup<'a>(vars: &'a HashMap<String, String>, name: &str) -> Option<&'a String> {
    vars.get(name).or_else(|| {
        vars.iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(name))
            .min_by(|a, b| a.0.cmp(b.0))
            .map(|(_, value)| value)
    })
}

impl Settings {
    /// Defaults, overridden by the variables that are set. Fails on the first invalid value.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<(Settings, Findings), Invalid> {
        let mut values = BTreeMap::new();
        let mut findings = Findings::default();
        for def in DEFS {
            let given = lookup(vars, def.name);
            let (value, source) = match given {
                Some(raw) => {
                    let (value, adjusted) = read(def, raw)?;
                    findings.adjusted.extend(adjusted);
                    (value, Source::Environment)
                }
                None => (parse(def, def.default)?, Source::Default),
            };
            let set_explicitly = given.is_some_and(|v| !v.trim().is_empty());
            if def.support != Support::Yes
                && set_explicitly
                && parse(def, def.default).ok() != Some(value.clone())
            {
                findings.unsupported.push(def.name.to_owned());
            }
            values.insert(def.name, (value, source));
        }
        findings.unsupported.extend(
            UNUSED_VARS
                .iter()
                .filter(|var| lookup(vars, var.name).is_some_and(|v| !v.trim().is_empty()))
                .map(|var| var.name.to_owned()),
        );
        findings.unsupported.sort();
        let mut settings = Settings { values };
        // AUTH_TOKEN defaults to the first client token, as in Gemini-Balance.
        if settings.text("AUTH_TOKEN").is_empty() {
            if let Some(first) = settings.list("ALLOWED_TOKENS").first().cloned() {
                settings
                    .values
                    .insert("AUTH_TOKEN", (json!(first), Source::Default));
            }
        }
        Ok((settings, findings))
    }

    /// Applies a stored value (from the database). Unknown names and invalid values are
    /// reported, not applied; a value that had to be adjusted is applied adjusted, and logged.
    pub fn apply_stored(&mut self, name: &str, raw: &str) -> Result<(), Invalid> {
        let def = find(name).ok_or_else(|| Invalid {
            name: name.to_owned(),
            expected: "a known setting".to_owned(),
        })?;
        let (value, adjusted) = read(def, raw)?;
        if let Some(adjusted) = adjusted {
            tracing::warn!(setting = %adjusted, "a stored setting is outside what this proxy can use; adjusted");
        }
        self.values.insert(def.name, (value, stored_source(def)));
        Ok(())
    }

    /// Forgets a runtime change: the value from `base` (environment or default) applies again.
    pub fn revert(&mut self, name: &str, base: &Settings) -> Result<Value, Invalid> {
        let def = find(name).ok_or_else(|| Invalid {
            name: name.to_owned(),
            expected: "a known setting".to_owned(),
        })?;
        let entry = base
            .values
            .get(def.name)
            .cloned()
            .unwrap_or((Value::Null, Source::Default));
        let value = entry.0.clone();
        self.values.insert(def.name, entry);
        Ok(value)
    }

    /// Sets a value at runtime (validated); returns the normalised value.
    pub fn set(&mut self, name: &str, value: &Value) -> Result<Value, Invalid> {
        let def = find(name).ok_or_else(|| Invalid {
            name: name.to_owned(),
            expected: "a known setting".to_owned(),
        })?;
        if !def.live {
            return Err(Invalid {
                name: name.to_owned(),
                expected: "a setting that can change while running (this one needs a restart: set it in .env)".to_owned(),
            });
        }
        let value = check(def, value)?;
        self.values
            .insert(def.name, (value.clone(), stored_source(def)));
        Ok(value)
    }

    pub fn value(&self, name: &str) -> &Value {
        static NULL: Value = Value::Null;
        self.values.get(name).map_or(&NULL, |(v, _)| v)
    }

    pub fn source(&self, name: &str) -> Source {
        self.values.get(name).map_or(Source::Default, |(_, s)| *s)
    }

    pub fn bool(&self, name: &str) -> bool {
        self.value(name).as_bool().unwrap_or(false)
    }

    pub fn int(&self, name: &str) -> i64 {
        self.value(name).as_i64().unwrap_or(0)
    }

    pub fn float(&self, name: &str) -> f64 {
        self.value(name).as_f64().unwrap_or(0.0)
    }

    pub fn text(&self, name: &str) -> &str {
        self.value(name).as_str().unwrap_or("")
    }

    pub fn list(&self, name: &str) -> Vec<String> {
        self.value(name)
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Names of the settings whose value comes from `source`.
    pub fn with_source(&self, source: Source) -> Vec<&'static str> {
        self.values
            .iter()
            .filter(|(_, (_, s))| *s == source)
            .map(|(name, _)| *name)
            .collect()
    }

    /// Every setting for the admin API: value (secrets masked), type, group, source.
    pub fn describe(&self) -> Vec<Value> {
        DEFS.iter()
            .map(|def| {
                let value = self.value(def.name);
                let shown = if def.kind.is_secret() {
                    mask_value(value)
                } else {
                    value.clone()
                };
                json!({
                    "name": def.name,
                    "value": shown,
                    "type": def.kind.name(),
                    "group": def.group,
                    "help": def.help,
                    "source": self.source(def.name).as_str(),
                    "supported": def.support == Support::Yes,
                    "live": def.live,
                    "secret": def.kind.is_secret(),
                    "choices": match def.kind {
                        Kind::Choice(words) => json!(words),
                        Kind::LogLevel => json!(LOG_LEVELS),
                        _ => Value::Null,
                    },
                })
            })
            .collect()
    }
}

/// Where a runtime change of `def` is kept: secrets never go into the database.
fn stored_source(def: &Def) -> Source {
    if def.kind.is_secret() {
        Source::SecretsFile
    } else {
        Source::Database
    }
}

/// The text form of a value, as `.env` and the settings table hold it (and [`parse`] reads).
pub fn to_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Masks secrets for display: `sk-a…9f3c`; lists are masked item by item, objects value by value.
pub fn mask_value(value: &Value) -> Value {
    match value {
        Value::String(s) if s.is_empty() => json!(""),
        Value::String(s) => json!(gemini_balance::keys::mask(s)),
        Value::Array(items) => Value::Array(items.iter().map(mask_value).collect()),
        // A secret object (CUSTOM_HEADERS): the names are shown, the values masked.
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(name, v)| (name.clone(), mask_value(&json!(to_text(v)))))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn every_default_parses() {
        for def in DEFS {
            let (_, adjusted) = read(def, def.default).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(adjusted, None, "{}", def.name);
        }
        let names: std::collections::HashSet<_> = DEFS.iter().map(|d| d.name).collect();
        assert_eq!(names.len(), DEFS.len(), "a setting is listed twice");
    }

    #[test]
    fn values_in_every_format() {
        let (s, findings) = Settings::from_vars(&vars(&[
            ("API_KEYS", r#"["AIza1", "AIza2"]"#),
            ("ALLOWED_TOKENS", "sk-1, sk-2"),
            ("FAKE_STREAM_ENABLED", "True"),
            ("STREAM_MIN_DELAY", "0.01"),
            ("THINKING_BUDGET_MAP", r#"{"gemini-2.5-flash": -1}"#),
            ("LOG_LEVEL", "DEBUG"),
        ]))
        .unwrap();
        assert_eq!(s.list("API_KEYS"), ["AIza1", "AIza2"]);
        assert_eq!(s.list("ALLOWED_TOKENS"), ["sk-1", "sk-2"]);
        assert_eq!(
            s.text("AUTH_TOKEN"),
            "sk-1",
            "defaults to the first client token"
        );
        assert!(s.bool("FAKE_STREAM_ENABLED"));
        assert_eq!(s.float("STREAM_MIN_DELAY"), 0.01);
        assert_eq!(s.value("THINKING_BUDGET_MAP")["gemini-2.5-flash"], -1);
        assert_eq!(s.text("LOG_LEVEL"), "debug");
        assert_eq!(s.source("API_KEYS"), Source::Environment);
        assert_eq!(s.source("MAX_RETRIES"), Source::Default);
        assert!(findings.unsupported.is_empty());
    }

    #[test]
    fn invalid_values_name_the_setting() {
        // What Gemini-Balance's pydantic Settings refuses too, and this proxy's own ranges.
        for (name, raw) in [
            ("MAX_RETRIES", "three"),
            ("MAX_RETRIES", "3.5"),
            ("MAX_RETRIES", "1e3"),
            ("MAX_RETRIES", "3."),
            ("MAX_RETRIES", "1__0"),
            ("MAX_RETRIES", "+-3"),
            ("MAX_RETRIES", ""),
            ("TIME_OUT", "inf"),
            ("STREAM_MIN_DELAY", "fast"),
            ("FAKE_STREAM_ENABLED", "maybe"),
            ("FAKE_STREAM_ENABLED", "2"),
            ("API_KEYS", "[1, 2]"),
            ("CUSTOM_HEADERS", "[]"),
            ("THINKING_BUDGET_MAP", r#"{"gemini-2.5-flash": "lots"}"#),
            ("THINKING_BUDGET_MAP", r#"{"gemini-2.5-flash": null}"#),
            // Gemini-Balance's own `Field(ge=300, le=86400)`.
            ("ADMIN_SESSION_EXPIRE", "60"),
            ("ADMIN_SESSION_EXPIRE", "86401"),
            // Not Gemini-Balance settings: their ranges stand.
            ("PORT", "99999"),
            ("CLIENT_IDLE_TIMEOUT", "0"),
            ("AUTH_FAILURE_REFILL_SECONDS", "0"),
        ] {
            let err = Settings::from_vars(&vars(&[(name, raw)])).unwrap_err();
            assert_eq!(err.name, name, "{raw}");
            assert!(!err.expected.is_empty());
        }
    }

    /// Every spelling Gemini-Balance's pydantic Settings accepts, as it reads it (checked against
    /// pydantic 2.14 and Gemini-Balance's `app/config/config.py`); numbers at and beyond this
    /// proxy's old ranges; the clamps, each reported with the value given and used. Lines marked
    /// "ours" are read more leniently than Gemini-Balance does.
    #[test]
    fn values_are_read_as_gemini_balance_reads_them() {
        // (setting, text, value used, `Some(text of the value used)` when adjusted)
        let cases: &[(&str, &str, Value, Option<&str>)] = &[
            // Log levels: app/log/logger.py's five in any case, our warn and trace; anything
            // else is INFO there, and here (reported).
            ("LOG_LEVEL", "DEBUG", json!("debug"), None),
            ("LOG_LEVEL", "debug", json!("debug"), None),
            ("LOG_LEVEL", "Info", json!("info"), None),
            ("LOG_LEVEL", "INFO", json!("info"), None),
            ("LOG_LEVEL", "WARNING", json!("warn"), None),
            ("LOG_LEVEL", "warning", json!("warn"), None),
            ("LOG_LEVEL", "Warning", json!("warn"), None),
            // Ours (Gemini-Balance runs these at INFO): this proxy's documented words.
            ("LOG_LEVEL", "warn", json!("warn"), None),
            ("LOG_LEVEL", "WARN", json!("warn"), None),
            ("LOG_LEVEL", "ERROR", json!("error"), None),
            ("LOG_LEVEL", "error", json!("error"), None),
            ("LOG_LEVEL", "CRITICAL", json!("error"), None),
            ("LOG_LEVEL", "critical", json!("error"), None),
            ("LOG_LEVEL", "trace", json!("trace"), None),
            ("LOG_LEVEL", " warning ", json!("warn"), None), // ours
            ("LOG_LEVEL", "FATAL", json!("info"), Some("info")),
            ("LOG_LEVEL", "fatal", json!("info"), Some("info")),
            ("LOG_LEVEL", "NOTSET", json!("info"), Some("info")),
            ("LOG_LEVEL", "loud", json!("info"), Some("info")),
            // Booleans: pydantic's words, any case, surrounding whitespace.
            ("FAKE_STREAM_ENABLED", "true", json!(true), None),
            ("FAKE_STREAM_ENABLED", "True", json!(true), None),
            ("FAKE_STREAM_ENABLED", "TRUE", json!(true), None),
            ("FAKE_STREAM_ENABLED", "1", json!(true), None),
            ("FAKE_STREAM_ENABLED", "yes", json!(true), None),
            ("FAKE_STREAM_ENABLED", "YES", json!(true), None),
            ("FAKE_STREAM_ENABLED", "on", json!(true), None),
            ("FAKE_STREAM_ENABLED", "On", json!(true), None),
            ("FAKE_STREAM_ENABLED", "t", json!(true), None),
            ("FAKE_STREAM_ENABLED", "T", json!(true), None),
            ("FAKE_STREAM_ENABLED", "y", json!(true), None),
            ("FAKE_STREAM_ENABLED", "Y", json!(true), None),
            ("FAKE_STREAM_ENABLED", " true ", json!(true), None), // ours
            ("SHOW_THINKING_PROCESS", "false", json!(false), None),
            ("SHOW_THINKING_PROCESS", "False", json!(false), None),
            ("SHOW_THINKING_PROCESS", "0", json!(false), None),
            ("SHOW_THINKING_PROCESS", "no", json!(false), None),
            ("SHOW_THINKING_PROCESS", "NO", json!(false), None),
            ("SHOW_THINKING_PROCESS", "off", json!(false), None),
            ("SHOW_THINKING_PROCESS", "OFF", json!(false), None),
            ("SHOW_THINKING_PROCESS", "f", json!(false), None),
            ("SHOW_THINKING_PROCESS", "F", json!(false), None),
            ("SHOW_THINKING_PROCESS", "n", json!(false), None),
            ("SHOW_THINKING_PROCESS", "N", json!(false), None),
            ("SHOW_THINKING_PROCESS", "", json!(false), None), // ours
            // Ints: pydantic's lax forms.
            ("MAX_RETRIES", "3", json!(3), None),
            ("MAX_RETRIES", " 3 ", json!(3), None),
            ("MAX_RETRIES", "+3", json!(3), None),
            ("MAX_RETRIES", "3.0", json!(3), None),
            ("MAX_RETRIES", "3.00", json!(3), None),
            ("MAX_RETRIES", "0003", json!(3), None),
            ("MAX_RETRIES", "1_0", json!(10), None),
            // MAX_RETRIES: the old range was 1..=20; now 1..=100, the rest clamped.
            ("MAX_RETRIES", "20", json!(20), None),
            ("MAX_RETRIES", "21", json!(21), None),
            ("MAX_RETRIES", "100", json!(100), None),
            ("MAX_RETRIES", "101", json!(100), Some("100")),
            ("MAX_RETRIES", "1000000", json!(100), Some("100")),
            (
                "MAX_RETRIES",
                "99999999999999999999999",
                json!(100),
                Some("100"),
            ),
            ("MAX_RETRIES", "0", json!(1), Some("1")),
            ("MAX_RETRIES", "-5", json!(1), Some("1")),
            // TIME_OUT: was 1..=3600.
            ("TIME_OUT", "3600", json!(3600), None),
            ("TIME_OUT", "7200", json!(7200), None),
            ("TIME_OUT", "0", json!(1), Some("1")),
            ("TIME_OUT", "-1", json!(1), Some("1")),
            (
                "TIME_OUT",
                "99999999999",
                json!(SECONDS_MAX),
                Some("31536000"),
            ),
            ("MAX_FAILURES", "1000000", json!(1_000_000), None),
            ("MAX_FAILURES", "-1", json!(0), Some("0")),
            // Floats: was 0..=1.
            ("STREAM_MIN_DELAY", "0.016", json!(0.016), None),
            ("STREAM_MIN_DELAY", "1e-2", json!(0.01), None),
            ("STREAM_MIN_DELAY", " .5 ", json!(0.5), None),
            ("STREAM_MIN_DELAY", "1_0.5", json!(10.5), None),
            ("STREAM_MAX_DELAY", "2", json!(2.0), None),
            ("STREAM_MAX_DELAY", "-0.5", json!(0.0), Some("0.0")),
            (
                "STREAM_MAX_DELAY",
                "inf",
                json!(SECONDS_MAX as f64),
                Some("31536000.0"),
            ),
            ("STREAM_MAX_DELAY", "nan", json!(0.024), Some("0.024")),
            ("STREAM_CHUNK_SIZE", "20000", json!(20_000), None),
            ("STREAM_CHUNK_SIZE", "0", json!(1), Some("1")),
            ("STREAM_CHUNK_SIZE", "-3", json!(1), Some("1")),
            ("STREAM_SHORT_TEXT_THRESHOLD", "-1", json!(0), Some("0")),
            (
                "FAKE_STREAM_EMPTY_DATA_INTERVAL_SECONDS",
                "601",
                json!(601),
                None,
            ),
            (
                "FAKE_STREAM_EMPTY_DATA_INTERVAL_SECONDS",
                "0",
                json!(1),
                Some("1"),
            ),
            ("AUTO_DELETE_ERROR_LOGS_DAYS", "0", json!(0), None),
            ("AUTO_DELETE_ERROR_LOGS_DAYS", "5000", json!(5000), None),
            ("AUTO_DELETE_REQUEST_LOGS_DAYS", "-1", json!(0), Some("0")),
            ("CHECK_INTERVAL_HOURS", "24", json!(24.0), None),
            ("CHECK_INTERVAL_HOURS", "-1", json!(0.0), Some("0.0")),
            (
                "CHECK_INTERVAL_HOURS",
                "100000",
                json!(8760.0),
                Some("8760.0"),
            ),
            ("ADMIN_SESSION_EXPIRE", "300", json!(300), None),
            ("ADMIN_SESSION_EXPIRE", "86400.0", json!(86_400), None),
            ("MYSQL_PORT", "-1", json!(-1), None),
            // THINKING_BUDGET_MAP is a Dict[str, float] there; Gemini wants whole numbers.
            (
                "THINKING_BUDGET_MAP",
                r#"{"m": -1}"#,
                json!({"m": -1}),
                None,
            ),
            (
                "THINKING_BUDGET_MAP",
                r#"{"m": "1024"}"#,
                json!({"m": 1024}),
                None,
            ),
            (
                "THINKING_BUDGET_MAP",
                r#"{"m": 1024.0}"#,
                json!({"m": 1024}),
                None,
            ),
            (
                "THINKING_BUDGET_MAP",
                r#"{"m": true}"#,
                json!({"m": 1}),
                None,
            ),
            (
                "THINKING_BUDGET_MAP",
                r#"{"m": 1.5}"#,
                json!({"m": 1}),
                Some(r#"{"m":1}"#),
            ),
            (
                "THINKING_BUDGET_MAP",
                r#"{"m": "inf", "n": 0}"#,
                json!({"n": 0}),
                Some(r#"{"n":0}"#),
            ),
        ];
        for (name, raw, value, used) in cases {
            let (s, findings) = Settings::from_vars(&vars(&[(name, raw)]))
                .unwrap_or_else(|e| panic!("{name}={raw:?}: {e}"));
            assert_eq!(s.value(name), value, "{name}={raw:?}");
            let expected: Vec<Adjusted> = used
                .iter()
                .map(|used| Adjusted {
                    name: find(name).unwrap().name,
                    given: raw.trim().to_owned(),
                    used: (*used).to_owned(),
                })
                .collect();
            assert_eq!(findings.adjusted, expected, "{name}={raw:?}");
        }
    }

    #[test]
    fn adjusted_values_make_one_line() {
        let (_, findings) = Settings::from_vars(&vars(&[
            ("MAX_RETRIES", "1000"),
            ("TIME_OUT", "0"),
            ("LOG_LEVEL", "FATAL"),
            ("STREAM_CHUNK_SIZE", &format!("-{}", "9".repeat(60))),
        ]))
        .unwrap();
        let line: Vec<String> = findings.adjusted.iter().map(ToString::to_string).collect();
        assert_eq!(
            line,
            [
                "LOG_LEVEL=FATAL (using info)",
                "MAX_RETRIES=1000 (using 100)",
                "TIME_OUT=0 (using 1)",
                &format!("STREAM_CHUNK_SIZE=-{}… (using 1)", "9".repeat(39)),
            ]
        );
    }

    #[test]
    fn variable_names_in_any_case_as_pydantic_settings_reads_them() {
        let (s, findings) = Settings::from_vars(&vars(&[
            ("log_level", "WARNING"),
            ("Max_Retries", "7"),
            ("TIME_OUT", "10"),
            ("time_out", "20"),
            ("github_repo_owner", "someone"),
        ]))
        .unwrap();
        assert_eq!(s.text("LOG_LEVEL"), "warn");
        assert_eq!(s.int("MAX_RETRIES"), 7);
        assert_eq!(s.int("TIME_OUT"), 10, "the exact spelling wins");
        assert_eq!(s.source("LOG_LEVEL"), Source::Environment);
        assert_eq!(findings.unsupported, ["GITHUB_REPO_OWNER"]);
    }

    #[test]
    fn unsupported_settings_are_named() {
        let (_, findings) = Settings::from_vars(&vars(&[
            ("DATABASE_TYPE", "mysql"),
            ("MYSQL_HOST", "db"),
            ("PAID_KEY", "x"),
            ("SMMS_SECRET_TOKEN", "y"),
            ("GITHUB_REPO_OWNER", "snailyp"),
            ("GITHUB_REPO_NAME", "gemini-balance"),
            ("ENABLE_TTS", "true"),
            ("OSS_REGION", ""),
        ]))
        .unwrap();
        assert_eq!(
            findings.unsupported,
            [
                "ENABLE_TTS",
                "GITHUB_REPO_NAME",
                "GITHUB_REPO_OWNER",
                "PAID_KEY",
                "SMMS_SECRET_TOKEN"
            ]
        );
    }

    #[test]
    fn runtime_changes_are_checked_and_secrets_masked() {
        let (mut s, _) = Settings::from_vars(&vars(&[(
            "API_KEYS",
            r#"["AIzaSyA1234567890abcdefghijklmnopqrstuv"]"#,
        )]))
        .unwrap();
        assert_eq!(s.set("MAX_RETRIES", &json!(5)).unwrap(), json!(5));
        assert_eq!(s.source("MAX_RETRIES"), Source::Database);
        assert_eq!(
            s.set("FAKE_STREAM_ENABLED", &json!(true)).unwrap(),
            json!(true)
        );
        assert!(s.set("MAX_RETRIES", &json!("lots")).is_err());
        assert!(s.set("PORT", &json!(9000)).is_err(), "needs a restart");
        assert!(s.set("NO_SUCH_THING", &json!(1)).is_err());
        let described = s.describe();
        let keys = described.iter().find(|d| d["name"] == "API_KEYS").unwrap();
        assert_eq!(keys["value"], json!(["AIza…stuv"]));
        assert_eq!(
            s.with_source(Source::Database),
            ["FAKE_STREAM_ENABLED", "MAX_RETRIES"]
        );
        s.set("ALLOWED_TOKENS", &json!(["sk-new-token-1234"]))
            .unwrap();
        assert_eq!(s.with_source(Source::SecretsFile), ["ALLOWED_TOKENS"]);
        let (base, _) = Settings::from_vars(&HashMap::new()).unwrap();
        assert_eq!(s.revert("MAX_RETRIES", &base).unwrap(), json!(3));
        assert_eq!(s.source("MAX_RETRIES"), Source::Default);
        // CUSTOM_HEADERS is a secret: names shown, values masked, kept in the secrets file.
        s.set(
            "CUSTOM_HEADERS",
            &json!({"x-relay-auth": "Bearer relay-credential-1234", "x-tag": "a"}),
        )
        .unwrap();
        assert_eq!(
            s.with_source(Source::SecretsFile),
            ["ALLOWED_TOKENS", "CUSTOM_HEADERS"]
        );
        let described = s.describe();
        let headers = described
            .iter()
            .find(|d| d["name"] == "CUSTOM_HEADERS")
            .unwrap();
        assert_eq!(
            headers["value"],
            json!({"x-relay-auth": "Bear…1234", "x-tag": "…"})
        );
        assert_eq!(headers["secret"], true);
        assert_eq!(headers["type"], "secret object");
        // What is stored reads back as the same value.
        for (name, value) in [
            ("CUSTOM_HEADERS", json!({"x-a": "1"})),
            ("SEARCH_MODELS", json!(["a", "b"])),
            ("FAKE_STREAM_ENABLED", json!(true)),
            ("STREAM_MIN_DELAY", json!(0.5)),
            ("TEST_MODEL", json!("gemini-x")),
        ] {
            let def = find(name).unwrap();
            assert_eq!(parse(def, &to_text(&value)).unwrap(), value, "{name}");
        }
        assert_eq!(to_text(&json!(["a", "b"])), r#"["a","b"]"#);
        assert_eq!(to_text(&json!("plain")), "plain");
    }

    #[test]
    fn admin_changes_must_have_the_settings_json_type() {
        // (setting, value, what the message must say): every one is refused.
        let refused = [
            // The examples of issue 14.
            ("API_KEYS", json!({"a": 1}), "got an object"),
            ("ALLOWED_TOKENS", json!(42), "got a number"),
            ("AUTH_TOKEN", json!(""), "not empty"),
            // Text forms are for .env, not for JSON.
            ("MAX_RETRIES", json!("5"), "got a string"),
            ("FAKE_STREAM_ENABLED", json!("yes"), "got a string"),
            ("FAKE_STREAM_ENABLED", json!(1), "got a number"),
            ("SEARCH_MODELS", json!("a,b"), "got a string"),
            ("CUSTOM_HEADERS", json!("{\"x-a\": \"1\"}"), "got a string"),
            // Ranges.
            ("MAX_RETRIES", json!(0), "from 1 to 100"),
            ("MAX_RETRIES", json!(101), "from 1 to 100"),
            ("MAX_RETRIES", json!(2.5), "got 2.5"),
            ("TIME_OUT", json!(0), "from 1 to 31536000"),
            ("STREAM_MIN_DELAY", json!(-0.5), "from 0 to 31536000"),
            ("AUTO_DELETE_ERROR_LOGS_DAYS", json!(-1), "at least 0"),
            ("PORT", json!(1), "restart"),
            // Lists, maps and their entries.
            ("SEARCH_MODELS", json!(["a", 1]), "entry #2 as a number"),
            ("API_KEYS", json!(["AIza ok"]), "entry #1"),
            ("ALLOWED_TOKENS", json!(["good", "has space"]), "entry #2"),
            ("AUTH_TOKEN", json!(42), "got a number"),
            ("AUTH_TOKEN", json!("tab\there"), "printable"),
            (
                "PROXIES",
                json!(["ftp://relay"]),
                "expected a proxy URL starting with http://",
            ),
            ("PROXIES", json!(["http://"]), "expected a valid proxy URL"),
            (
                "PROXIES",
                json!(["http://127.0.0.1:1", "socks5://:1"]),
                "(entry #2 is not one)",
            ),
            (
                "API_KEYS",
                json!(["AIza ok"]),
                "expected API keys of printable ASCII without spaces (entry #1 is not one)",
            ),
            ("API_KEYS", json!(["k".repeat(600)]), "at most 512 bytes"),
            ("TRUSTED_PROXIES", json!(["localhost"]), "entry #1"),
            ("CUSTOM_HEADERS", json!({"x-a": 1}), "a number for \"x-a\""),
            ("CUSTOM_HEADERS", json!({"bad name": "1"}), "\"bad name\""),
            (
                "CUSTOM_HEADERS",
                json!({"x-a": "line\nbreak"}),
                "value of \"x-a\"",
            ),
            (
                "THINKING_BUDGET_MAP",
                json!({"m": "1024"}),
                "\"m\" has a string",
            ),
            ("THINKING_BUDGET_MAP", json!({"m": -2}), "at least -1"),
            ("THINKING_BUDGET_MAP", json!([]), "got a list"),
            ("SAFETY_SETTINGS", json!([{"category": "X"}]), "entry #1"),
            ("SAFETY_SETTINGS", json!([1]), "entry #1 as a number"),
            (
                "LOG_LEVEL",
                json!("loud"),
                "one of error, warn, info, debug, trace",
            ),
            ("LOG_LEVEL", json!("FATAL"), "one of error"),
            ("LOG_LEVEL", json!(2), "got a number"),
            ("MAX_RETRIES", Value::Null, "DELETE /api/config/MAX_RETRIES"),
        ];
        for (name, value, says) in refused {
            let err = check(find(name).unwrap(), &value)
                .and_then(|_| {
                    let (mut s, _) = Settings::from_vars(&HashMap::new()).unwrap();
                    s.set(name, &value)
                })
                .unwrap_err();
            assert_eq!(err.name, name, "{value}");
            assert!(err.to_string().contains(says), "{name}={value}: {err}");
            // The message reads "NAME: expected WHAT": WHAT never says "expected" again.
            assert_eq!(
                doubled_word(&err.to_string()),
                None,
                "{name}={value}: {err}"
            );
        }
        // No message repeats a secret.
        for (name, value) in [
            ("AUTH_TOKEN", json!("secret token")),
            ("ALLOWED_TOKENS", json!(["secret token"])),
            ("API_KEYS", json!(["AIza secret"])),
            ("CUSTOM_HEADERS", json!({"x-a": "secret\n"})),
        ] {
            let err = check(find(name).unwrap(), &value).unwrap_err();
            assert!(!err.to_string().contains("secret"), "{err}");
        }
        // Accepted, and normalised where that loses nothing.
        let accepted = [
            ("MAX_RETRIES", json!(5), json!(5)),
            ("MAX_RETRIES", json!(5.0), json!(5)),
            ("STREAM_MIN_DELAY", json!(0), json!(0.0)),
            ("FAKE_STREAM_ENABLED", json!(false), json!(false)),
            ("LOG_LEVEL", json!("DEBUG"), json!("debug")),
            ("LOG_LEVEL", json!("WARNING"), json!("warn")),
            ("LOG_LEVEL", json!("critical"), json!("error")),
            ("LOG_LEVEL", json!("Error"), json!("error")),
            ("MAX_RETRIES", json!(50), json!(50)),
            ("TIME_OUT", json!(7200), json!(7200)),
            ("SEARCH_MODELS", json!([" a ", "", "b"]), json!(["a", "b"])),
            ("API_KEYS", json!([]), json!([])),
            ("AUTH_TOKEN", json!(" sk-admin "), json!("sk-admin")),
            ("CUSTOM_HEADERS", json!({"x-a": "1"}), json!({"x-a": "1"})),
            ("THINKING_BUDGET_MAP", json!({"m": -1}), json!({"m": -1})),
            (
                "TRUSTED_PROXIES",
                json!(["10.0.0.0/8", "::1"]),
                json!(["10.0.0.0/8", "::1"]),
            ),
            ("AUTH_FAILURE_BURST", json!(0), json!(0)),
            (
                "SAFETY_SETTINGS",
                json!([{"category": "A", "threshold": "OFF"}]),
                json!([{"category": "A", "threshold": "OFF"}]),
            ),
        ];
        for (name, value, normalised) in accepted {
            assert_eq!(
                check(find(name).unwrap(), &value).unwrap(),
                normalised,
                "{name}={value}"
            );
        }
        // .env keeps its text forms; a bad TRUSTED_PROXIES entry stops startup there too.
        assert_eq!(
            parse(find("ALLOWED_TOKENS").unwrap(), "42").unwrap(),
            json!(["42"])
        );
        let err = Settings::from_vars(&vars(&[("TRUSTED_PROXIES", "10.0.0.1, nope")])).unwrap_err();
        assert_eq!(err.name, "TRUSTED_PROXIES");
    }

    /// A word said twice in a row ("expected expected"), if any.
    fn doubled_word(text: &str) -> Option<String> {
        let words: Vec<String> = text
            .split_whitespace()
            .map(|w| {
                w.trim_matches(|c: char| !c.is_alphanumeric())
                    .to_lowercase()
            })
            .filter(|w| w.chars().any(char::is_alphabetic))
            .collect();
        words
            .windows(2)
            .find(|pair| pair[0] == pair[1])
            .map(|pair| pair[0].clone())
    }

    #[test]
    fn messages_say_expected_once() {
        assert_eq!(
            doubled_word("PROXIES: expected expected a proxy URL").as_deref(),
            Some("expected")
        );
        // Every setting, given values of every wrong type and a few wrong entries.
        let wrong = [
            json!(null),
            json!(true),
            json!(-7),
            json!(2.5),
            json!("text"),
            json!(["a b", "", "ftp://x", "http://"]),
            json!([1]),
            json!({"bad name": 1}),
            json!([{"category": 1}]),
        ];
        for def in DEFS {
            for value in &wrong {
                let (mut s, _) = Settings::from_vars(&HashMap::new()).unwrap();
                if let Err(err) = s.set(def.name, value) {
                    let text = err.to_string();
                    assert_eq!(doubled_word(&text), None, "{}={value}: {text}", def.name);
                }
            }
        }
    }

    #[test]
    fn a_list_entry_that_is_not_a_string_is_named_by_position_not_value() {
        let err =
            parse_list(r#"["ok", {"k": "AIzaSyA1234567890abcdefghijklmnopqrstuv"}, 12345678]"#)
                .unwrap_err();
        assert_eq!(err, "entry #2 is an object, not a string");
        assert!(!err.contains("AIza"));
    }
}
