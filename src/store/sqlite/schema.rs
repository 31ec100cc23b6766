//! The schema and its migrations, versioned with `PRAGMA user_version`.
//!
//! Migration *n* takes a database from version *n − 1* to *n*, in one transaction with the
//! version bump, so a crash leaves either the old or the new version. A database whose version
//! is newer than [`SCHEMA_VERSION`] is refused: an older build must not write into a schema it
//! does not know. `docs/store.md` describes every table.

use rusqlite::Connection;

use super::sql_error;
use crate::store::StoreError;

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = 6;

/// Version 1: the raw logs, key state and settings.
const V1: &str = r#"
CREATE TABLE request_log (
    id                     INTEGER PRIMARY KEY,
    request_id             INTEGER NOT NULL,
    at_ms                  INTEGER NOT NULL,
    protocol               TEXT    NOT NULL,
    route                  TEXT    NOT NULL,
    model                  TEXT,
    key_id                 TEXT,
    key_mask               TEXT,
    client_id              TEXT,
    client_mask            TEXT,
    status                 INTEGER NOT NULL,
    success                INTEGER NOT NULL,
    attempts               INTEGER NOT NULL,
    latency_ms             INTEGER NOT NULL,
    ttfb_ms                INTEGER,
    streamed               INTEGER NOT NULL,
    completion             TEXT    NOT NULL,
    prompt_tokens          INTEGER NOT NULL DEFAULT 0,
    candidates_tokens      INTEGER NOT NULL DEFAULT 0,
    thoughts_tokens        INTEGER NOT NULL DEFAULT 0,
    cached_tokens          INTEGER NOT NULL DEFAULT 0,
    tool_use_prompt_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens           INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX request_log_at ON request_log (at_ms);

CREATE TABLE attempt_log (
    id         INTEGER PRIMARY KEY,
    request_id INTEGER NOT NULL,
    at_ms      INTEGER NOT NULL,
    key_id     TEXT    NOT NULL,
    key_mask   TEXT    NOT NULL,
    model      TEXT,
    status     INTEGER,
    class      TEXT,
    latency_ms INTEGER NOT NULL
);
CREATE INDEX attempt_log_at ON attempt_log (at_ms);
CREATE INDEX attempt_log_request ON attempt_log (request_id);

CREATE TABLE error_log (
    id           INTEGER PRIMARY KEY,
    at_ms        INTEGER NOT NULL,
    request_id   INTEGER NOT NULL,
    key_id       TEXT    NOT NULL,
    key_mask     TEXT    NOT NULL,
    model        TEXT,
    status       INTEGER,
    class        TEXT    NOT NULL,
    message      TEXT,
    request_body TEXT
);
CREATE INDEX error_log_at ON error_log (at_ms);

CREATE TABLE key_state (
    key_id               TEXT    PRIMARY KEY,
    key_mask             TEXT    NOT NULL,
    status               TEXT    NOT NULL,
    disabled_kind        TEXT,
    disabled_status      INTEGER,
    disabled_detail      TEXT,
    disabled_count       INTEGER,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    cooldowns            TEXT    NOT NULL DEFAULT '[]',
    requests             INTEGER NOT NULL DEFAULT 0,
    successes            INTEGER NOT NULL DEFAULT 0,
    failures             INTEGER NOT NULL DEFAULT 0,
    weight               INTEGER NOT NULL DEFAULT 1,
    last_used_ms         INTEGER,
    last_error_class     TEXT,
    last_error_status    INTEGER,
    last_error_detail    TEXT,
    last_error_ms        INTEGER,
    updated_ms           INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE settings (
    name       TEXT    PRIMARY KEY,
    value      TEXT    NOT NULL,
    updated_ms INTEGER NOT NULL
) WITHOUT ROWID;
"#;

/// Version 2: the usage rollups (per minute and per hour, one row per bucket × dimension value),
/// the id → fingerprint table they name, the per-key index of the error log, and a backfill of
/// the rollups from the raw logs already there.
///
/// The request log has no per-key index on purpose: with many keys used round-robin, its
/// inserts land all over the index and cost about a third of the writer's time (measured in
/// `docs/performance.md`); per-key figures come from the rollups instead.
const V2: &str = r#"
CREATE TABLE usage_minute (
    dim                   TEXT    NOT NULL,
    minute_ms             INTEGER NOT NULL,
    value                 TEXT    NOT NULL,
    calls                 INTEGER NOT NULL DEFAULT 0,
    successes             INTEGER NOT NULL DEFAULT 0,
    failures              INTEGER NOT NULL DEFAULT 0,
    prompt_tokens         INTEGER NOT NULL DEFAULT 0,
    candidates_tokens     INTEGER NOT NULL DEFAULT 0,
    thoughts_tokens       INTEGER NOT NULL DEFAULT 0,
    cached_tokens         INTEGER NOT NULL DEFAULT 0,
    tool_use_prompt_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens          INTEGER NOT NULL DEFAULT 0,
    latency_ms            INTEGER NOT NULL DEFAULT 0,
    attempts              INTEGER NOT NULL DEFAULT 0,
    failed_attempts       INTEGER NOT NULL DEFAULT 0,
    rate_limited_attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (dim, minute_ms, value)
) WITHOUT ROWID;

CREATE TABLE usage_hour (
    dim                   TEXT    NOT NULL,
    hour_ms               INTEGER NOT NULL,
    value                 TEXT    NOT NULL,
    calls                 INTEGER NOT NULL DEFAULT 0,
    successes             INTEGER NOT NULL DEFAULT 0,
    failures              INTEGER NOT NULL DEFAULT 0,
    prompt_tokens         INTEGER NOT NULL DEFAULT 0,
    candidates_tokens     INTEGER NOT NULL DEFAULT 0,
    thoughts_tokens       INTEGER NOT NULL DEFAULT 0,
    cached_tokens         INTEGER NOT NULL DEFAULT 0,
    tool_use_prompt_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens          INTEGER NOT NULL DEFAULT 0,
    latency_ms            INTEGER NOT NULL DEFAULT 0,
    attempts              INTEGER NOT NULL DEFAULT 0,
    failed_attempts       INTEGER NOT NULL DEFAULT 0,
    rate_limited_attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (dim, hour_ms, value)
) WITHOUT ROWID;

CREATE TABLE fingerprint (
    kind TEXT NOT NULL,
    id   TEXT NOT NULL,
    mask TEXT NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;

CREATE INDEX error_log_key_at ON error_log (key_id, at_ms);

INSERT OR IGNORE INTO fingerprint (kind, id, mask)
    SELECT 'key', key_id, max(key_mask) FROM request_log WHERE key_id IS NOT NULL GROUP BY key_id;
INSERT OR IGNORE INTO fingerprint (kind, id, mask)
    SELECT 'key', key_id, max(key_mask) FROM attempt_log GROUP BY key_id;
INSERT OR IGNORE INTO fingerprint (kind, id, mask)
    SELECT 'client', client_id, max(client_mask) FROM request_log WHERE client_id IS NOT NULL GROUP BY client_id;

-- Backfill: the request-level counters per dimension, then the attempt-level ones
-- (`key_model` goes to the hour table only).
CREATE TEMP TABLE backfill AS
    SELECT d.dim AS dim, r.at_ms - (r.at_ms % 60000) AS minute_ms,
           CASE d.dim WHEN 'key' THEN coalesce(r.key_id, '')
                      WHEN 'model' THEN coalesce(r.model, '')
                      WHEN 'client' THEN coalesce(r.client_id, '')
                      WHEN 'key_model' THEN coalesce(r.key_id, '') || '/' || coalesce(r.model, '')
                      ELSE '' END AS value,
           1 AS calls, (r.success != 0) AS successes, (r.success = 0) AS failures,
           r.prompt_tokens, r.candidates_tokens, r.thoughts_tokens, r.cached_tokens,
           r.tool_use_prompt_tokens, r.total_tokens, r.latency_ms,
           0 AS attempts, 0 AS failed_attempts, 0 AS rate_limited_attempts
    FROM request_log r, (SELECT '' AS dim UNION ALL SELECT 'key' UNION ALL SELECT 'model'
                         UNION ALL SELECT 'client' UNION ALL SELECT 'key_model') d
    UNION ALL
    SELECT d.dim, a.at_ms - (a.at_ms % 60000),
           CASE d.dim WHEN 'key' THEN a.key_id
                      WHEN 'model' THEN coalesce(a.model, r.model, '')
                      WHEN 'client' THEN coalesce(r.client_id, '')
                      WHEN 'key_model' THEN a.key_id || '/' || coalesce(a.model, r.model, '')
                      ELSE '' END,
           0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
           1, (a.class IS NOT NULL), (a.class = 'rate_limited')
    FROM attempt_log a LEFT JOIN request_log r ON r.request_id = a.request_id,
         (SELECT '' AS dim UNION ALL SELECT 'key' UNION ALL SELECT 'model'
          UNION ALL SELECT 'client' UNION ALL SELECT 'key_model') d;

INSERT INTO usage_minute
    SELECT dim, minute_ms, value, sum(calls), sum(successes), sum(failures), sum(prompt_tokens),
           sum(candidates_tokens), sum(thoughts_tokens), sum(cached_tokens),
           sum(tool_use_prompt_tokens), sum(total_tokens), sum(latency_ms), sum(attempts),
           sum(failed_attempts), sum(coalesce(rate_limited_attempts, 0))
    FROM backfill WHERE dim != 'key_model' GROUP BY dim, minute_ms, value;
INSERT INTO usage_hour
    SELECT dim, minute_ms - (minute_ms % 3600000), value, sum(calls), sum(successes),
           sum(failures), sum(prompt_tokens), sum(candidates_tokens), sum(thoughts_tokens),
           sum(cached_tokens), sum(tool_use_prompt_tokens), sum(total_tokens), sum(latency_ms),
           sum(attempts), sum(failed_attempts), sum(coalesce(rate_limited_attempts, 0))
    FROM backfill GROUP BY dim, minute_ms - (minute_ms % 3600000), value;
DROP TABLE backfill;
"#;

/// Version 3: a request served by its first attempt, which succeeded with the status the client
/// got, keeps that attempt in its own row instead of a row of `attempt_log`:
/// `lone_attempt_latency_ms` is the attempt's latency (until the response head), and the
/// attempt's key, model and status are the request's own. `NULL` means the request's attempts
/// are the `attempt_log` rows with its `request_id` (every request written before version 3).
///
/// Nearly every request is such a request, and its attempt row (with two index entries) was
/// about a third of the writer's cost per record (`docs/performance.md`).
const V3: &str = r#"
ALTER TABLE request_log ADD COLUMN lone_attempt_latency_ms INTEGER;
"#;

/// Version 4: how far each import from another system's logs has come (see
/// [`super::import`]): per source and source table, the highest source row id imported, so that
/// running an import again adds nothing.
const V4: &str = r#"
CREATE TABLE import_mark (
    source       TEXT    NOT NULL,
    source_table TEXT    NOT NULL,
    last_id      INTEGER NOT NULL,
    rows         INTEGER NOT NULL,
    updated_ms   INTEGER NOT NULL,
    PRIMARY KEY (source, source_table)
) WITHOUT ROWID;
"#;

/// Version 5: what an import needs to run again safely (see [`super::import`]): the source's
/// time of the row at each mark (`import_mark.last_time`), to notice a source whose row ids
/// started again, and per source and setting the fingerprint of the value last imported
/// (`import_setting`), so that a later import brings over only what changed there. The
/// fingerprint is a SHA-256, never the value.
const V5: &str = r#"
ALTER TABLE import_mark ADD COLUMN last_time TEXT;
CREATE TABLE import_setting (
    source      TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (source, name)
) WITHOUT ROWID;
"#;

/// Version 6: client quotas (`crate::quota`): each identity's name and own limits (JSON;
/// the id `*` holds the default limits), and the use of each window added up over every
/// instance that shares the database.
const V6: &str = r#"
CREATE TABLE quota_limit (
    client     TEXT    PRIMARY KEY,
    name       TEXT,
    limits     TEXT,
    updated_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE quota_use (
    client   TEXT    NOT NULL,
    win      TEXT    NOT NULL,
    bucket   INTEGER NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    tokens   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (win, bucket, client)
) WITHOUT ROWID;
"#;

/// Every migration, in order: `MIGRATIONS[n]` takes version `n` to `n + 1`.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6];

/// The database's `user_version`.
pub(crate) fn version(conn: &Connection) -> Result<u32, StoreError> {
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sql_error("reading the schema version"))?;
    Ok(u32::try_from(v).unwrap_or(0))
}

/// Brings the database to [`SCHEMA_VERSION`]; refuses one that is newer.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    migrate_to(conn, SCHEMA_VERSION)
}

/// Brings the database to `target` (tests use it to build an old database).
pub(crate) fn migrate_to(conn: &mut Connection, target: u32) -> Result<(), StoreError> {
    let current = version(conn)?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::new(format!(
            "the database has schema version {current}, newer than the {SCHEMA_VERSION} this \
             build of gemini-balance knows; use a newer build (or another database file)"
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let to = index as u32 + 1;
        if to <= current || to > target {
            continue;
        }
        let tx = conn
            .transaction()
            .map_err(sql_error("starting a migration"))?;
        tx.execute_batch(sql)
            .map_err(sql_error(format!("migrating the schema to version {to}")))?;
        tx.pragma_update(None, "user_version", to)
            .map_err(sql_error("setting the schema version"))?;
        tx.commit()
            .map_err(sql_error(format!("committing schema version {to}")))?;
        tracing::info!(version = to, "store schema migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'index') ORDER BY name",
            )
            .unwrap();
        let names = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        names
    }

    #[test]
    fn migrates_step_by_step_and_is_idempotent() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_to(&mut conn, 1).unwrap();
        assert_eq!(version(&conn).unwrap(), 1);
        assert!(tables(&conn).contains(&"request_log".to_owned()));
        assert!(!tables(&conn).contains(&"usage_minute".to_owned()));
        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn).unwrap(), SCHEMA_VERSION);
        let after = tables(&conn);
        for name in [
            "usage_minute",
            "usage_hour",
            "fingerprint",
            "error_log_key_at",
        ] {
            assert!(after.contains(&name.to_owned()), "{name} missing");
        }
        let lone: i64 = conn
            .query_row(
                "SELECT count(*) FROM pragma_table_info('request_log') \
                 WHERE name = 'lone_attempt_latency_ms'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(lone, 1, "version 3's column");
        assert!(
            after.contains(&"import_mark".to_owned()),
            "version 4's table"
        );
        assert!(
            after.contains(&"import_setting".to_owned()),
            "version 5's table"
        );
        for name in ["quota_limit", "quota_use"] {
            assert!(after.contains(&name.to_owned()), "version 6's {name}");
        }
        // Running again changes nothing.
        migrate(&mut conn).unwrap();
        assert_eq!(tables(&conn), after);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = migrate(&mut conn).unwrap_err().to_string();
        assert!(err.contains("newer"), "{err}");
        assert!(tables(&conn).is_empty(), "nothing was created");
    }
}
