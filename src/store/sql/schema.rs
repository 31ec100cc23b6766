//! The schema and its migrations, versioned in the `schema_version` table.
//!
//! Tables are the SQLite store's (`docs/store.md`), with the types of each engine
//! (`dialect`). Migrations run under a lock (PostgreSQL: an advisory lock per schema; MySQL:
//! `GET_LOCK` per database), so instances starting together migrate once. A database whose
//! version is newer than [`SCHEMA_VERSION`] is refused: an older build must not write into a
//! schema it does not know.

use sqlx_core::any::{AnyConnection, AnyPool};
use sqlx_core::executor::Executor;
use sqlx_core::query::query;
use sqlx_core::query_scalar::query_scalar;

use super::dialect::{Col, Engine, Table};
use super::sql_error;
use crate::store::StoreError;

/// The schema version this build writes: one per entry of `MIGRATIONS`.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The tables each version adds, in order: a database at version `v` gets those of the
/// versions after `v`.
const MIGRATIONS: &[&[Table]] = &[V1, V2, V3];

const COUNTERS: [(&str, Col); 13] = [
    ("calls", Col::Int),
    ("successes", Col::Int),
    ("failures", Col::Int),
    ("prompt_tokens", Col::Int),
    ("candidates_tokens", Col::Int),
    ("thoughts_tokens", Col::Int),
    ("cached_tokens", Col::Int),
    ("tool_use_prompt_tokens", Col::Int),
    ("total_tokens", Col::Int),
    ("latency_ms", Col::Int),
    ("attempts", Col::Int),
    ("failed_attempts", Col::Int),
    ("rate_limited_attempts", Col::Int),
];

/// The 13 counter columns of a rollup row, in `Counts` order.
pub(crate) const COUNTER_COLUMNS: [&str; 13] = [
    "calls",
    "successes",
    "failures",
    "prompt_tokens",
    "candidates_tokens",
    "thoughts_tokens",
    "cached_tokens",
    "tool_use_prompt_tokens",
    "total_tokens",
    "latency_ms",
    "attempts",
    "failed_attempts",
    "rate_limited_attempts",
];

macro_rules! rollup_columns {
    ($bucket:literal) => {
        &[
            ("dim", Col::Name),
            ($bucket, Col::Int),
            ("value", Col::Value),
            COUNTERS[0],
            COUNTERS[1],
            COUNTERS[2],
            COUNTERS[3],
            COUNTERS[4],
            COUNTERS[5],
            COUNTERS[6],
            COUNTERS[7],
            COUNTERS[8],
            COUNTERS[9],
            COUNTERS[10],
            COUNTERS[11],
            COUNTERS[12],
        ]
    };
}

/// Version 1: the logs, the rollups, fingerprints, key state and settings.
const V1: &[Table] = &[
    Table {
        name: "request_log",
        columns: &[
            ("id", Col::Id),
            ("request_id", Col::Int),
            ("at_ms", Col::Int),
            ("protocol", Col::Name),
            ("route", Col::Text),
            ("model", Col::NameNull),
            ("key_id", Col::NameNull),
            ("key_mask", Col::NameNull),
            ("client_id", Col::NameNull),
            ("client_mask", Col::NameNull),
            ("status", Col::Int),
            ("success", Col::Int),
            ("attempts", Col::Int),
            ("latency_ms", Col::Int),
            ("ttfb_ms", Col::IntNull),
            ("streamed", Col::Int),
            ("completion", Col::Name),
            ("prompt_tokens", Col::Int),
            ("candidates_tokens", Col::Int),
            ("thoughts_tokens", Col::Int),
            ("cached_tokens", Col::Int),
            ("tool_use_prompt_tokens", Col::Int),
            ("total_tokens", Col::Int),
            // The latency of the request's one attempt when the row stands for it (no
            // attempt_log row then), as in SQLite's schema version 3.
            ("lone_attempt_latency_ms", Col::IntNull),
        ],
        key: &[],
        indexes: &[("request_log_at", &["at_ms"])],
    },
    Table {
        name: "attempt_log",
        columns: &[
            ("id", Col::Id),
            ("request_id", Col::Int),
            ("at_ms", Col::Int),
            ("key_id", Col::Name),
            ("key_mask", Col::Name),
            ("model", Col::NameNull),
            ("status", Col::IntNull),
            ("class", Col::NameNull),
            ("latency_ms", Col::Int),
        ],
        key: &[],
        indexes: &[
            ("attempt_log_at", &["at_ms"]),
            ("attempt_log_request", &["request_id"]),
        ],
    },
    Table {
        name: "error_log",
        columns: &[
            ("id", Col::Id),
            ("at_ms", Col::Int),
            ("request_id", Col::Int),
            ("key_id", Col::Name),
            ("key_mask", Col::Name),
            ("model", Col::NameNull),
            ("status", Col::IntNull),
            ("class", Col::Name),
            ("message", Col::TextNull),
            ("request_body", Col::TextNull),
        ],
        key: &[],
        indexes: &[
            ("error_log_at", &["at_ms"]),
            ("error_log_key_at", &["key_id", "at_ms"]),
        ],
    },
    Table {
        name: "usage_minute",
        columns: rollup_columns!("minute_ms"),
        key: &["dim", "minute_ms", "value"],
        // Retention deletes by bucket alone, which the key (dimension first) cannot serve.
        indexes: &[("usage_minute_at", &["minute_ms"])],
    },
    Table {
        name: "usage_hour",
        columns: rollup_columns!("hour_ms"),
        key: &["dim", "hour_ms", "value"],
        indexes: &[("usage_hour_at", &["hour_ms"])],
    },
    Table {
        name: "fingerprint",
        columns: &[("kind", Col::Name), ("id", Col::Name), ("mask", Col::Name)],
        key: &["kind", "id"],
        indexes: &[],
    },
    Table {
        name: "key_state",
        columns: &[
            ("key_id", Col::Name),
            ("key_mask", Col::Name),
            ("status", Col::Name),
            ("disabled_kind", Col::NameNull),
            ("disabled_status", Col::IntNull),
            ("disabled_detail", Col::TextNull),
            ("disabled_count", Col::IntNull),
            ("consecutive_failures", Col::Int),
            ("cooldowns", Col::Text),
            ("requests", Col::Int),
            ("successes", Col::Int),
            ("failures", Col::Int),
            ("weight", Col::Int),
            ("last_used_ms", Col::IntNull),
            ("last_error_class", Col::NameNull),
            ("last_error_status", Col::IntNull),
            ("last_error_detail", Col::TextNull),
            ("last_error_ms", Col::IntNull),
            ("updated_ms", Col::Int),
        ],
        key: &["key_id"],
        indexes: &[],
    },
    Table {
        name: "settings",
        columns: &[
            ("name", Col::Name),
            ("value", Col::Text),
            ("updated_ms", Col::Int),
        ],
        key: &["name"],
        indexes: &[],
    },
];

/// Version 2: the last batch each writer committed, so a batch whose commit went through but
/// whose answer was lost (the connection cut at that moment) is not written again on retry.
const V2: &[Table] = &[Table {
    name: "writer_mark",
    columns: &[
        ("writer", Col::Name),
        ("seq", Col::Int),
        ("updated_ms", Col::Int),
    ],
    key: &["writer"],
    indexes: &[("writer_mark_at", &["updated_ms"])],
}];

/// Version 3: client quotas (`crate::quota`), as in SQLite's schema version 6.
const V3: &[Table] = &[
    Table {
        name: "quota_limit",
        columns: &[
            ("client", Col::Name),
            ("name", Col::TextNull),
            ("limits", Col::TextNull),
            ("updated_ms", Col::Int),
        ],
        key: &["client"],
        indexes: &[],
    },
    Table {
        name: "quota_use",
        columns: &[
            ("client", Col::Name),
            ("win", Col::Name),
            ("bucket", Col::Int),
            ("requests", Col::Int),
            ("tokens", Col::Int),
        ],
        key: &["win", "bucket", "client"],
        indexes: &[],
    },
];

/// Creates or migrates the schema; refuses a newer one.
pub(crate) async fn migrate(pool: &AnyPool, engine: Engine) -> Result<(), StoreError> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(sql_error("connecting to the database"))?;
    let (lock, unlock) = match engine {
        Engine::Postgres => (
            "SELECT CAST(1 AS BIGINT) FROM (SELECT pg_advisory_lock(hashtext(current_schema()))) l",
            "SELECT CAST(1 AS BIGINT) FROM (SELECT pg_advisory_unlock(hashtext(current_schema()))) l",
        ),
        Engine::MySql => (
            "SELECT CAST(GET_LOCK(CONCAT('gemini_balance_migrate.', DATABASE()), 60) AS SIGNED)",
            "SELECT CAST(RELEASE_LOCK(CONCAT('gemini_balance_migrate.', DATABASE())) AS SIGNED)",
        ),
    };
    let locked = query_scalar::<_, Option<i64>>(lock)
        .fetch_one(&mut *conn)
        .await
        .map_err(sql_error("taking the migration lock"))?;
    // MySQL's GET_LOCK answers 0 after its timeout and NULL on an error, instead of failing.
    if locked != Some(1) {
        return Err(StoreError::new(
            "taking the migration lock: another instance held it for 60 s (or the server \
             refused it)",
        ));
    }
    let result = migrate_locked(&mut conn, engine).await;
    let _ = query_scalar::<_, Option<i64>>(unlock)
        .fetch_one(&mut *conn)
        .await;
    result
}

async fn migrate_locked(conn: &mut AnyConnection, engine: Engine) -> Result<(), StoreError> {
    let create = format!(
        "CREATE TABLE IF NOT EXISTS schema_version (id BIGINT NOT NULL PRIMARY KEY, \
         version BIGINT NOT NULL){}",
        engine.table_options()
    );
    conn.execute(create.as_str())
        .await
        .map_err(sql_error("creating the schema_version table"))?;
    let version: Option<i64> = query_scalar("SELECT version FROM schema_version WHERE id = 1")
        .fetch_optional(&mut *conn)
        .await
        .map_err(sql_error("reading the schema version"))?;
    match version {
        Some(v) if v > SCHEMA_VERSION => Err(StoreError::new(format!(
            "the database's schema is version {v}, newer than this build's ({SCHEMA_VERSION}): \
             refusing to write into it (run a newer build)"
        ))),
        Some(v) if v == SCHEMA_VERSION => Ok(()),
        from => {
            let from = from.unwrap_or(0).max(0) as usize;
            for tables in &MIGRATIONS[from..] {
                for table in *tables {
                    for statement in engine.create_table(table) {
                        conn.execute(statement.as_str())
                            .await
                            .map_err(sql_error(format!("creating table {}", table.name)))?;
                    }
                }
            }
            let sql = if from == 0 {
                "INSERT INTO schema_version (id, version) VALUES (1, ?)"
            } else {
                "UPDATE schema_version SET version = ? WHERE id = 1"
            };
            query(&engine.sql(sql))
                .bind(SCHEMA_VERSION)
                .execute(&mut *conn)
                .await
                .map_err(sql_error("recording the schema version"))?;
            if from > 0 {
                tracing::info!(from, to = SCHEMA_VERSION, "store schema migrated");
            }
            Ok(())
        }
    }
}
