//! The Python server's `t_request_log` and `t_error_logs`, brought into the store's logs
//! (`--logs`) through `SqliteStore::import`, which writes each page of rows with the source's
//! mark in one transaction: a second run starts after the mark and adds nothing.
//!
//! What the rows become:
//! - a `t_request_log` row is one upstream attempt (the Python server logged attempts, not
//!   client requests, and did not link them): it becomes a request of one attempt, on the
//!   route `(imported)`, counted in the statistics as the Python server counted it;
//! - a `t_error_logs` row becomes an error log row: its class from its status and body (the
//!   library's classifier), its message `[error_type] error_log`, its request body
//!   `request_msg`.
//!
//! Keys are replaced by their ids and fingerprints, never stored in clear; messages and bodies
//! (where the Python server wrote upstream answers, and URLs with `key=`) are redacted of every
//! secret known from the source (settings and the keys its logs name) and from this proxy's
//! settings, and of anything shaped like a Google API key or an `sk-` token.
//!
//! Times: the Python server wrote naive local times of its own clock (`datetime.now()`); they
//! are read in the zone given (`--time-zone`, else `TZ`, else Asia/Shanghai, the zone its
//! Docker image sets).
//!
//! Ids used again: the Python server's SQLite tables are `INTEGER PRIMARY KEY` without
//! `AUTOINCREMENT`, so once its auto-delete or "delete all" empties a table (or deletes its
//! newest rows) new rows get ids at or below the mark, which resuming after the mark would skip.
//! The mark keeps the time of its row; when the row at the mark is gone or has another time,
//! the import resumes at the first row written after the last one imported (new rows always get
//! ids above every row left), and says so.

use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, StatusCode};
use gemini_balance::api_error::ApiFlavor;
use gemini_balance::classify::Classifier;
use gemini_balance::keys::{ApiKey, KeyId};
use gemini_balance::redact::{redact_sk_tokens, SecretForms};
use gemini_balance::store::sqlite::{ImportBatch, ImportMark, ImportedError};
use gemini_balance::store::TimeZone;
use gemini_balance::usage::{AttemptRecord, Completion, RequestId, RequestRecord};

use super::source::{PythonDb, Row};

/// The tables, in the order they are imported.
pub const TABLES: [&str; 2] = ["t_request_log", "t_error_logs"];

/// Rows per transaction.
const PAGE: i64 = 1_000;

/// The route imported requests are filed under.
pub const ROUTE: &str = "(imported)";

/// Secrets shorter than this are not looked for as text: placeholders such as `.env.example`'s
/// `PICGO_API_KEY=xxxx` would blank every `xxxx` (in key masks too), and a string that short is
/// no secret worth the name. Google keys and `sk-` tokens are found by their pattern anyway.
const MIN_SECRET_CHARS: usize = 8;

/// Removes known secrets (of at least [`MIN_SECRET_CHARS`]) from text, then Google API keys
/// and `sk-` tokens.
pub struct Redactor {
    /// Secrets the patterns do not catch, longest first (one may contain another).
    forms: Vec<SecretForms>,
}

impl Redactor {
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Redactor {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|s| {
                s.chars().count() >= MIN_SECRET_CHARS
                    && !gemini_balance::keys::looks_like_gemini_key(s)
            })
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor {
            forms: secrets
                .iter()
                .map(|s| SecretForms::new(s, &gemini_balance::keys::mask(s)))
                .collect(),
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut bytes = std::borrow::Cow::Borrowed(text.as_bytes());
        for forms in &self.forms {
            if let std::borrow::Cow::Owned(owned) = forms.redact(&bytes) {
                bytes = std::borrow::Cow::Owned(owned);
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        let text = gemini_balance::redact::redact_keys(&text);
        redact_sk_tokens(&text).into_owned()
    }
}

/// Where one table stands.
#[derive(Debug)]
pub struct TableState {
    pub table: &'static str,
    /// `false` when the source has no such table.
    pub present: bool,
    pub mark: Option<ImportMark>,
    /// The import starts after this id: the mark's, or below it when the source's ids started
    /// again.
    pub after: i64,
    /// Set when the ids started again: the mark the first batch replaces.
    pub replaces_mark: Option<i64>,
    /// Rows after `after`, and the highest id.
    pub pending: u64,
    pub max_id: i64,
}

/// Rows of each table not imported yet.
pub async fn states(
    db: &mut PythonDb,
    marks: impl Fn(&str) -> Result<Option<ImportMark>, String>,
) -> Result<Vec<TableState>, String> {
    let mut out = Vec::new();
    for table in TABLES {
        let mark = marks(table)?;
        let present = db.has_table(table).await?;
        let mut after = mark.as_ref().map_or(0, |m| m.last_id);
        let mut replaces_mark = None;
        if let (Some(mark), true) = (&mark, present) {
            if let Some(from) = resume_point(db, table, mark).await? {
                after = from;
                replaces_mark = Some(mark.last_id);
            }
        }
        let (pending, max_id) = if present {
            db.count_after(table, after).await?
        } else {
            (0, after)
        };
        out.push(TableState {
            table,
            present,
            mark,
            after,
            replaces_mark,
            pending,
            max_id,
        });
    }
    Ok(out)
}

/// `Some(id)` to resume after instead of the mark, when the row at the mark is not the one
/// imported (the source's ids started again): the id before the first row written after the
/// last one imported. Warns on stderr.
async fn resume_point(
    db: &mut PythonDb,
    table: &str,
    mark: &ImportMark,
) -> Result<Option<i64>, String> {
    let at_mark = db
        .page(table, &["id", "request_time"], mark.last_id - 1, 1)
        .await?
        .into_iter()
        .find(|r| int(&r[0]) == Some(mark.last_id));
    let imported_time = mark.last_time.as_deref().and_then(naive);
    let holds = match (&at_mark, imported_time) {
        (Some(row), Some(imported)) => row[1]
            .as_deref()
            .and_then(naive)
            .is_none_or(|t| t == imported),
        // A mark without a time (an unreadable row): the row is there, nothing to tell by.
        (Some(_), None) => true,
        (None, _) => false,
    };
    if holds {
        return Ok(None);
    }
    let Some(imported) = imported_time else {
        eprintln!(
            "warning: {table}: the row at the last import's mark (id {}) is gone, and the mark \
             keeps no time to resume by: if the Python server's log was emptied since, its new \
             rows up to id {} are not imported",
            mark.last_id, mark.last_id
        );
        return Ok(None);
    };
    // New rows get ids above every row left: the first row newer than the last one imported
    // starts them.
    let mut after = 0;
    loop {
        let rows = db.page(table, &["id", "request_time"], after, PAGE).await?;
        let Some(last) = rows.last().and_then(|r| int(&r[0])) else {
            return Ok(None);
        };
        let first_new = rows.iter().find(|r| {
            r[1].as_deref()
                .and_then(naive)
                .is_some_and(|t| t > imported)
        });
        if let Some(id) = first_new.and_then(|r| int(&r[0])) {
            if id <= mark.last_id {
                eprintln!(
                    "warning: {table}: the Python server's ids started again (the row at the \
                     last import's mark, id {}, is gone or another one: its log was emptied or \
                     its newest rows deleted); importing the rows written after the last one \
                     imported ({}), from id {id}",
                    mark.last_id,
                    mark.last_time.as_deref().unwrap_or_default()
                );
            }
            return Ok(Some(id - 1));
        }
        after = last;
    }
}

/// A naive time of the Python server as an instant read in UTC: for comparing its times with
/// each other, whatever its zone.
fn naive(text: &str) -> Option<SystemTime> {
    TimeZone::utc().instant_of_local(text)
}

/// What importing one table did.
#[derive(Debug, Default)]
pub struct Imported {
    pub rows: u64,
    /// Rows that could not be read (no time, a time that is no date): counted, not imported.
    pub skipped: u64,
}

/// Imports `state.table` after its mark, a page per transaction.
pub async fn import_table(
    db: &mut PythonDb,
    store: &gemini_balance::store::SqliteStore,
    identity: &str,
    state: &TableState,
    zone: &TimeZone,
    redactor: &Redactor,
) -> Result<Imported, String> {
    let mut done = Imported::default();
    let mut after = state.after;
    let mut replaces_mark = state.replaces_mark;
    let columns: &[&str] = if state.table == "t_request_log" {
        &[
            "id",
            "request_time",
            "model_name",
            "api_key",
            "is_success",
            "status_code",
            "latency_ms",
        ]
    } else {
        &[
            "id",
            "request_time",
            "model_name",
            "gemini_key",
            "error_type",
            "error_log",
            "error_code",
            "request_msg",
        ]
    };
    loop {
        let rows = db.page(state.table, columns, after, PAGE).await?;
        let Some(last) = rows.last().and_then(|r| int(&r[0])) else {
            return Ok(done);
        };
        let mut batch = ImportBatch::new(identity, state.table, last);
        batch.last_time = rows.last().and_then(|r| r[1].clone());
        batch.replaces_mark = replaces_mark.take();
        for row in &rows {
            let converted = if state.table == "t_request_log" {
                request(row, zone).map(|r| batch.requests.push(r))
            } else {
                error(row, zone, redactor).map(|e| batch.errors.push(e))
            };
            if converted.is_none() {
                batch.skipped += 1;
            }
        }
        let (imported, skipped) = (
            (batch.requests.len() + batch.errors.len()) as u64,
            batch.skipped,
        );
        let written = store
            .import(batch)
            .map_err(|e| format!("{} into the store: {e}", state.table))?;
        if written {
            done.rows += imported;
            done.skipped += skipped;
        }
        after = last;
    }
}

/// A request id for an imported row: its millisecond above 20 bits of its source id, as the
/// usage layer makes ids (so a lone attempt is found by its time, as a live one is).
fn request_id(at: SystemTime, source_id: i64) -> RequestId {
    RequestId::at(at, source_id as u64)
}

/// `t_request_log`: id, request_time, model_name, api_key, is_success, status_code, latency_ms.
fn request(row: &Row, zone: &TimeZone) -> Option<RequestRecord> {
    let id = int(&row[0])?;
    let at = zone.instant_of_local(row[1].as_deref()?)?;
    let model = text(&row[2]);
    let key = key_id(&row[3]);
    let success = matches!(
        row[4].as_deref().map(str::trim),
        Some("1" | "true" | "True")
    );
    let status = status(&row[5]);
    let latency = Duration::from_millis(
        int(&row[6])
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0),
    );
    let mut record = RequestRecord::new(request_id(at, id), at);
    record.protocol = ApiFlavor::Gemini;
    record.route = ROUTE.to_owned();
    record.model = model.clone();
    record.key = key.clone();
    record.status = status.unwrap_or(0);
    record.success = success;
    record.attempts = 1;
    record.latency = latency;
    record.completion = if status.is_some() {
        Completion::Complete
    } else {
        Completion::NoResponse
    };
    if let Some(key) = key {
        record.attempt_log.push(AttemptRecord {
            at,
            key,
            model,
            status,
            class: (!success).then(|| class(status, b"")),
            latency,
            error_message: None,
        });
    }
    Some(record)
}

/// `t_error_logs`: id, request_time, model_name, gemini_key, error_type, error_log, error_code,
/// request_msg.
fn error(row: &Row, zone: &TimeZone, redactor: &Redactor) -> Option<ImportedError> {
    let id = int(&row[0])?;
    let at = zone.instant_of_local(row[1].as_deref()?)?;
    let status = status(&row[6]);
    let body = row[5].as_deref().unwrap_or("");
    let mut error = ImportedError::new(request_id(at, id), at, class(status, body.as_bytes()));
    error.model = text(&row[2]);
    error.key = key_id(&row[3]);
    error.status = status;
    let message = match text(&row[4]) {
        Some(kind) => format!("[{kind}] {body}"),
        None => body.to_owned(),
    };
    error.message = Some(redactor.redact(&message)).filter(|m| !m.trim().is_empty());
    error.request_body = text(&row[7])
        .filter(|b| b != "null")
        .map(|b| redactor.redact(&b));
    Some(error)
}

/// The failure class of a status and error body, as the proxy classifies answers; a row
/// without a status is a transport failure (no answer), as an attempt without one is here.
fn class(status: Option<u16>, body: &[u8]) -> &'static str {
    let Some(status) = status.and_then(|s| StatusCode::from_u16(s).ok()) else {
        return "transport";
    };
    // The Python server wrote the upstream body, sometimes after some text of its own.
    let json = body
        .iter()
        .position(|b| *b == b'{' || *b == b'[')
        .map_or(&b""[..], |at| &body[at..]);
    match Classifier::new().classify(status, &HeaderMap::new(), json) {
        Err(class) => class.name(),
        // An error row with a 2xx (a stream that failed after its start).
        Ok(()) => "server_error",
    }
}

/// The id of the key in a row, as the pool computes it (`ApiKey` trims as it does).
fn key_id(value: &Option<String>) -> Option<KeyId> {
    let raw = value.as_deref()?.trim();
    if raw.is_empty() {
        return None;
    }
    Some(ApiKey::new(raw).map_or_else(|_| KeyId::of(raw), |k| k.id().clone()))
}

fn text(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn int(value: &Option<String>) -> Option<i64> {
    let v = value.as_deref()?.trim();
    v.parse()
        .ok()
        .or_else(|| v.parse::<f64>().ok().map(|x| x as i64))
}

/// An HTTP status; anything else (Python wrote exception text here at times) is none.
fn status(value: &Option<String>) -> Option<u16> {
    int(value)
        .and_then(|v| u16::try_from(v).ok())
        .filter(|v| (100..=999).contains(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AIzaSyA1234567890abcdefghijklmnopqrstuv";

    fn row(values: &[Option<&str>]) -> Row {
        values.iter().map(|v| v.map(str::to_owned)).collect()
    }

    #[test]
    fn rows_become_records_in_the_zone_of_the_python_clock() {
        let zone = TimeZone::named("Asia/Shanghai").unwrap();
        let r = request(
            &row(&[
                Some("5"),
                Some("2025-01-15 08:00:00.250000"),
                Some("gemini-2.5-flash"),
                Some(KEY),
                Some("0"),
                Some("429"),
                Some("120"),
            ]),
            &zone,
        )
        .unwrap();
        let ms = 1_736_899_200_250_u64;
        assert_eq!(r.at, SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
        assert_eq!(r.id.get(), (ms << 20) | 5);
        assert_eq!(r.key.as_ref().unwrap().mask(), "AIza…stuv");
        assert_eq!((r.status, r.success), (429, false));
        assert_eq!(r.attempt_log[0].class, Some("rate_limited"));
        // Exception text where a status belongs; no time: the row cannot be placed.
        let odd = row(&[
            Some("6"),
            Some("2025-01-15 08:00:00"),
            None,
            None,
            Some("0"),
            Some("Connection reset"),
            Some("3"),
        ]);
        let r = request(&odd, &zone).unwrap();
        assert_eq!((r.status, r.completion), (0, Completion::NoResponse));
        assert!(r.attempt_log.is_empty());
        let mut untimed = odd.clone();
        untimed[1] = None;
        assert!(request(&untimed, &zone).is_none());
    }

    #[test]
    fn error_rows_are_classified_and_redacted() {
        let zone = TimeZone::utc();
        let redactor = Redactor::new(["sk-ui-token".to_owned(), "relay-pw-123".to_owned()]);
        let body = format!(
            r#"{{"error": {{"code": 400, "message": "API key not valid. key={KEY} token sk-ui-token", "status": "INVALID_ARGUMENT", "details": [{{"reason": "API_KEY_INVALID"}}]}}}}"#
        );
        let e = error(
            &row(&[
                Some("1"),
                Some("2025-01-15 08:00:00"),
                Some("gemini-2.0-flash"),
                Some(KEY),
                Some("gemini-chat-non-stream"),
                Some(&body),
                Some("400"),
                Some(
                    r#"{"proxy": "http://u:relay-pw-123@h", "t": "sk-abcdefghijklmnopqrstuvwxyz"}"#,
                ),
            ]),
            &zone,
            &redactor,
        )
        .unwrap();
        assert_eq!(e.class, "key_rejected");
        let message = e.message.unwrap();
        assert!(
            message.starts_with("[gemini-chat-non-stream] {"),
            "{message}"
        );
        for secret in [
            KEY,
            "sk-ui-token",
            "relay-pw-123",
            "sk-abcdefghijklmnopqrstuvwxyz",
        ] {
            assert!(!message.contains(secret), "{message}");
            assert!(!e.request_body.as_deref().unwrap().contains(secret));
        }
        assert_eq!(class(Some(503), b"Service Unavailable"), "overloaded");
        assert_eq!(class(None, b""), "transport");
        assert_eq!(class(Some(200), b""), "server_error");
    }
}
