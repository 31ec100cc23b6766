//! Bringing another system's logs into the store once: [`SqliteStore::import`] writes an
//! [`ImportBatch`] and moves its source's [`ImportMark`] in the same transaction.
//!
//! The proxy's `import` brings the Python Gemini-Balance server's request and error logs over
//! this way. A batch's request records are written as the writer writes records (request and
//! attempt rows, rollups, fingerprints), except that their failed attempts get no error row:
//! the source's own error rows come separately, as [`ImportedError`]s, with their messages.
//! Messages and bodies pass through [`redact_keys`](crate::redact::redact_keys) as every
//! stored message does; a caller that knows other secrets removes them first.
//!
//! The mark is the highest source row id imported per source and source table, so a later run
//! starts after it: importing twice adds nothing the second time, and a run that stopped
//! between batches resumes where it stopped. It also keeps the source's own time of that row
//! ([`ImportMark::last_time`]): a source whose ids start again after its table was emptied
//! (SQLite's `INTEGER PRIMARY KEY` without `AUTOINCREMENT` reuses them) shows a different row
//! at the mark, and the caller then resumes by time instead, moving the mark down with
//! [`ImportBatch::replaces_mark`].
//!
//! Settings are brought over by the caller; the store remembers, per source and setting, a
//! fingerprint of the value last imported ([`ImportedSettings`]), so that a later run can tell
//! a value that changed at the source from one changed here since.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use gemini_balance::keys::KeyId;
//! use gemini_balance::store::sqlite::{ImportBatch, ImportedError};
//! use gemini_balance::store::SqliteStore;
//! use gemini_balance::usage::RequestRecord;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let store = SqliteStore::open(dir.path().join("usage.db"))?;
//! let at = SystemTime::now() - Duration::from_secs(3600);
//!
//! // Rows 1 and 2 of the other system's request log.
//! let mut batch = ImportBatch::new("old-server", "requests", 2);
//! let mut request = RequestRecord::new(1, at);
//! request.status = 200;
//! request.success = true;
//! batch.requests.push(request);
//! let mut error = ImportedError::new(2, at, "rate_limited");
//! error.key = Some(KeyId::of("AIzaSyA1234567890abcdefghijklmnopqrstuv"));
//! error.status = Some(429);
//! batch.errors.push(error);
//!
//! assert!(store.import(batch.clone())?);
//! // Already imported: nothing is written again.
//! assert!(!store.import(batch)?);
//! assert_eq!(store.import_mark("old-server", "requests")?.unwrap().last_id, 2);
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, HashSet};
use std::time::SystemTime;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::rollup::Rollup;
use super::time::ms_of;
use super::writer::{
    clean_body, clean_text, insert_records, INSERT_ERROR, INSERT_FINGERPRINT, MAX_BODY_BYTES,
    MAX_MESSAGE_CHARS,
};
use super::{sql_error, SqliteStore};
use crate::keys::KeyId;
use crate::store::StoreError;
use crate::usage::{RequestId, RequestRecord};

/// Rows of another system's logs, written by [`SqliteStore::import`] in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportBatch {
    /// Who the rows come from: a name that stays the same for the same source.
    pub source: String,
    /// Which of its tables they come from.
    pub table: String,
    /// The highest source row id in this batch (rows that could not be converted included):
    /// the source's mark once the batch is written.
    pub last_id: i64,
    /// The source's time of the row `last_id`, as the source wrote it: kept with the mark
    /// ([`ImportMark::last_time`]).
    pub last_time: Option<String>,
    /// Set when the source's ids started again below the mark (its table was emptied): the
    /// batch is written, and the mark moved to `last_id` even though it is lower, only while
    /// the mark is still at this id. `None`: the batch is written only above the mark.
    pub replaces_mark: Option<i64>,
    /// Source rows read as requests: written as records are (rows, attempts, rollups), but
    /// without error rows for their failed attempts.
    pub requests: Vec<RequestRecord>,
    /// Source rows read as errors: written to the error log as they are.
    pub errors: Vec<ImportedError>,
    /// Source rows read but not imported (unreadable): counted in the mark's `rows`.
    pub skipped: u64,
}

impl ImportBatch {
    /// An empty batch of `source`'s `table` up to row `last_id`.
    pub fn new(source: impl Into<String>, table: impl Into<String>, last_id: i64) -> Self {
        ImportBatch {
            source: source.into(),
            table: table.into(),
            last_id,
            last_time: None,
            replaces_mark: None,
            requests: Vec::new(),
            errors: Vec::new(),
            skipped: 0,
        }
    }

    fn rows(&self) -> u64 {
        (self.requests.len() + self.errors.len()) as u64 + self.skipped
    }
}

/// One failed upstream attempt from another system's error log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportedError {
    /// The request id it is filed under (see [`ErrorEntry::request_id`](super::logs::ErrorEntry)).
    pub request_id: RequestId,
    /// When the attempt started.
    pub at: SystemTime,
    /// The key used, when known.
    pub key: Option<KeyId>,
    /// The model.
    pub model: Option<String>,
    /// The upstream status.
    pub status: Option<u16>,
    /// The failure class name (`rate_limited`, `key_rejected`, ...).
    pub class: String,
    /// The message (keys are redacted again when written; cut to 2,000 bytes).
    pub message: Option<String>,
    /// The request body, when the source kept it (redacted and cut like recorded bodies).
    pub request_body: Option<String>,
}

impl ImportedError {
    /// An error at `at` of class `class`, filed under `request_id`, with nothing else known.
    pub fn new(request_id: impl Into<RequestId>, at: SystemTime, class: impl Into<String>) -> Self {
        ImportedError {
            request_id: request_id.into(),
            at,
            key: None,
            model: None,
            status: None,
            class: class.into(),
            message: None,
            request_body: None,
        }
    }
}

/// How far the import of one source table has come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ImportMark {
    /// The highest source row id imported.
    pub last_id: i64,
    /// The source's time of the row `last_id`, as the source wrote it (`None` when the batch
    /// did not say, or before schema version 5): a different time there later means the
    /// source's ids started again.
    pub last_time: Option<String>,
    /// Source rows imported (or skipped as unreadable) so far.
    pub rows: u64,
    /// When the mark last moved (ms since the epoch).
    pub updated_ms: i64,
}

/// The mark of `source`'s `table`; `None` before its first import, or in a database older
/// than schema version 4 (opened read-only, not migrated).
pub fn import_mark(
    conn: &Connection,
    source: &str,
    table: &str,
) -> Result<Option<ImportMark>, StoreError> {
    let has_table: bool = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'import_mark'",
            [],
            |r| r.get::<_, i64>(0).map(|n| n > 0),
        )
        .map_err(sql_error("reading the import marks"))?;
    if !has_table {
        return Ok(None);
    }
    // A version 4 database (read-only: not migrated) has no `last_time`.
    let last_time = if super::schema::version(conn)? >= 5 {
        "last_time"
    } else {
        "NULL"
    };
    conn.query_row(
        &format!(
            "SELECT last_id, rows, updated_ms, {last_time} FROM import_mark \
             WHERE source = ?1 AND source_table = ?2"
        ),
        params![source, table],
        |r| {
            Ok(ImportMark {
                last_id: r.get(0)?,
                last_time: r.get(3)?,
                rows: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                updated_ms: r.get(2)?,
            })
        },
    )
    .optional()
    .map_err(sql_error("reading the import marks"))
}

impl SqliteStore {
    /// Writes `batch` and moves its mark, in one transaction, after everything queued before
    /// is committed. Returns `false`, writing nothing, when the mark is already at or past the
    /// batch's `last_id` (the batch was imported before), or, for a batch that
    /// [replaces the mark](ImportBatch::replaces_mark), when the mark is no longer where the
    /// batch expects it. Blocks.
    pub fn import(&self, batch: ImportBatch) -> Result<bool, StoreError> {
        self.exec(move |conn| write(conn, &batch))
    }

    /// [`import_mark`] on the store's reader. Blocks.
    pub fn import_mark(&self, source: &str, table: &str) -> Result<Option<ImportMark>, StoreError> {
        self.read(|c| import_mark(c, source, table))
    }

    /// [`imported_settings`] on the store's reader. Blocks.
    pub fn imported_settings(&self, source: &str) -> Result<ImportedSettings, StoreError> {
        self.read(|c| imported_settings(c, source))
    }

    /// Remembers `values` (setting name, value text) as `source`'s at this import, in one
    /// transaction: only their [fingerprints](ImportedSettings::fingerprint) are written.
    /// Blocks.
    pub fn remember_imported_settings(
        &self,
        source: &str,
        values: Vec<(String, String)>,
    ) -> Result<(), StoreError> {
        let memory = ImportedSettings::empty(source);
        let rows: Vec<(String, String)> = values
            .into_iter()
            .map(|(name, text)| {
                let fingerprint = memory.fingerprint(&name, &text);
                (name, fingerprint)
            })
            .collect();
        let source = source.to_owned();
        self.exec(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql_error("starting to remember imported settings"))?;
            let now = ms_of(SystemTime::now());
            for (name, fingerprint) in &rows {
                tx.execute(
                    "INSERT INTO import_setting (source, name, fingerprint, updated_ms) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (source, name) DO UPDATE SET \
                     fingerprint = excluded.fingerprint, updated_ms = excluded.updated_ms",
                    params![source, name, fingerprint, now],
                )
                .map_err(sql_error(format!("remembering imported setting {name}")))?;
            }
            tx.commit()
                .map_err(sql_error("committing the imported settings"))
        })
    }
}

/// What another system's settings were when they were last imported from it: per setting, a
/// fingerprint of the value's text (a SHA-256 of the source, the name and the text; never the
/// value, which may be a secret). A later import compares the source's value and the value in
/// effect here with it, to tell which side changed since.
///
/// ```
/// use gemini_balance::store::SqliteStore;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// let store = SqliteStore::open(dir.path().join("usage.db"))?;
/// store.remember_imported_settings("old-server", vec![("MAX_RETRIES".into(), "5".into())])?;
/// let last = store.imported_settings("old-server")?;
/// assert_eq!(last.is_last("MAX_RETRIES", "5"), Some(true));
/// assert_eq!(last.is_last("MAX_RETRIES", "7"), Some(false));
/// assert_eq!(last.is_last("TIME_OUT", "300"), None);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedSettings {
    source: String,
    /// Setting name → fingerprint.
    fingerprints: BTreeMap<String, String>,
}

impl ImportedSettings {
    /// Nothing imported from `source` yet.
    pub fn empty(source: &str) -> Self {
        ImportedSettings {
            source: source.to_owned(),
            fingerprints: BTreeMap::new(),
        }
    }

    /// The fingerprint of `text` as the value of `name` from this source: hex SHA-256 of the
    /// three, each preceded by its length (so no two triples read alike).
    pub fn fingerprint(&self, name: &str, text: &str) -> String {
        let mut hash = Sha256::new();
        for part in [self.source.as_str(), name, text] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `text` is the value of `name` last imported; `None` when `name` was never
    /// imported from this source.
    pub fn is_last(&self, name: &str, text: &str) -> Option<bool> {
        self.fingerprints
            .get(name)
            .map(|last| *last == self.fingerprint(name, text))
    }

    /// `true` when nothing was imported from this source.
    pub fn is_empty(&self) -> bool {
        self.fingerprints.is_empty()
    }
}

/// Every row of a store's `settings` table (name, value, time), on a connection of its own: what
/// an import's dry run shows as already set here, without opening the store (which would
/// migrate it). Unreadable rows are skipped and logged.
pub fn kept_settings(conn: &Connection) -> Result<Vec<super::Setting>, StoreError> {
    super::settings(conn)
}

/// What was last imported of `source`'s settings; empty before the first import, or in a
/// database older than schema version 5 (opened read-only, not migrated).
pub fn imported_settings(conn: &Connection, source: &str) -> Result<ImportedSettings, StoreError> {
    let mut memory = ImportedSettings::empty(source);
    if super::schema::version(conn)? < 5 {
        return Ok(memory);
    }
    let mut read = || -> rusqlite::Result<()> {
        let mut stmt =
            conn.prepare("SELECT name, fingerprint FROM import_setting WHERE source = ?1")?;
        let rows = stmt.query_map([source], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        for row in rows {
            let (name, fingerprint) = row?;
            memory.fingerprints.insert(name, fingerprint);
        }
        Ok(())
    };
    read().map_err(sql_error("reading the imported settings"))?;
    Ok(memory)
}

fn write(conn: &mut Connection, batch: &ImportBatch) -> Result<bool, StoreError> {
    let failed = sql_error(format!("importing {} of {}", batch.table, batch.source));
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_error("starting an import"))?;
    let mark = import_mark(&tx, &batch.source, &batch.table)?.map(|m| m.last_id);
    let already = match batch.replaces_mark {
        Some(expected) => mark != Some(expected),
        None => mark.is_some_and(|last| last >= batch.last_id),
    };
    if already {
        return Ok(false);
    }
    let result = (|| -> rusqlite::Result<()> {
        insert_records(&tx, &batch.requests, false)?;
        let mut rollup = Rollup::default();
        for record in &batch.requests {
            rollup.add(record);
        }
        super::rollup::write(rollup, &tx)?;
        let mut fingerprints: HashSet<(&str, String, &str)> = HashSet::new();
        for record in &batch.requests {
            let keys = record
                .key
                .iter()
                .chain(record.attempt_log.iter().map(|a| &a.key));
            for key in keys {
                fingerprints.insert(("key", key.hex(), key.mask()));
            }
            if let Some(client) = &record.client {
                fingerprints.insert(("client", client.hex(), client.mask()));
            }
        }
        let mut error = tx.prepare_cached(INSERT_ERROR)?;
        for e in &batch.errors {
            if let Some(key) = &e.key {
                fingerprints.insert(("key", key.hex(), key.mask()));
            }
            error.execute(params![
                ms_of(e.at),
                e.request_id.get() as i64,
                e.key.as_ref().map(KeyId::hex).unwrap_or_default(),
                e.key.as_ref().map(KeyId::mask).unwrap_or_default(),
                e.model,
                e.status,
                e.class,
                e.message
                    .as_deref()
                    .map(|m| clean_text(m, MAX_MESSAGE_CHARS)),
                e.request_body
                    .as_deref()
                    .map(|b| clean_body(b, MAX_BODY_BYTES)),
            ])?;
        }
        let mut fingerprint = tx.prepare_cached(INSERT_FINGERPRINT)?;
        for (kind, hex, mask) in &fingerprints {
            fingerprint.execute(params![kind, hex, mask])?;
        }
        tx.execute(
            "INSERT INTO import_mark (source, source_table, last_id, rows, updated_ms, \
             last_time) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (source, source_table) DO UPDATE SET \
             last_id = excluded.last_id, rows = rows + excluded.rows, \
             updated_ms = excluded.updated_ms, last_time = excluded.last_time",
            params![
                batch.source,
                batch.table,
                batch.last_id,
                i64::try_from(batch.rows()).unwrap_or(i64::MAX),
                ms_of(SystemTime::now()),
                batch.last_time,
            ],
        )?;
        Ok(())
    })();
    result.map_err(failed)?;
    tx.commit().map_err(sql_error("committing an import"))?;
    Ok(true)
}
