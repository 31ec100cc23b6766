//! Client quotas in SQLite (schema version 6): `quota_limit` and `quota_use`, written by the
//! store's writer thread.

use std::time::SystemTime;

use rusqlite::{params, Connection};

use super::{sql_error, time, SqliteStore};
use crate::quota::{oldest_kept, Limits, QuotaRow, QuotaStore, QuotaUse, Window};
use crate::store::StoreError;
use crate::BoxError;

fn rows(conn: &Connection) -> Result<Vec<QuotaRow>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT client, name, limits FROM quota_limit ORDER BY client")
        .map_err(sql_error("reading quotas"))?;
    let rows = stmt
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, Option<String>>(1)?,
                row.get::<_, Option<String>>(2)?,
            ))
        })
        .map_err(sql_error("reading quotas"))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, name, limits) = row.map_err(sql_error("reading a quota row"))?;
        out.push(QuotaRow {
            id,
            name,
            limits: parse_limits(limits.as_deref()),
        });
    }
    Ok(out)
}

/// The stored limits; unreadable ones are no limits (and logged).
pub(crate) fn parse_limits(text: Option<&str>) -> Option<Limits> {
    let text = text?;
    match serde_json::from_str(text) {
        Ok(limits) => Some(limits),
        Err(e) => {
            tracing::warn!(error = %e, "an unreadable quota limit in the store is ignored");
            None
        }
    }
}

/// The limits as stored.
pub(crate) fn limits_text(limits: Option<&Limits>) -> Option<String> {
    limits.and_then(|l| serde_json::to_string(l).ok())
}

impl QuotaStore for SqliteStore {
    fn quota_rows(&self) -> Result<Vec<QuotaRow>, BoxError> {
        Ok(self.read(rows)?)
    }

    fn save_quota_row(&self, row: &QuotaRow) -> Result<(), BoxError> {
        if let Some(name) = &row.name {
            super::super::settings::refuse_secret("quota name", name)?;
        }
        let row = row.clone();
        self.exec(move |conn| {
            if row.name.is_none() && row.limits.is_none() {
                conn.execute("DELETE FROM quota_limit WHERE client = ?1", [&row.id])
                    .map_err(sql_error("deleting a quota"))?;
                return Ok(());
            }
            conn.execute(
                "INSERT INTO quota_limit (client, name, limits, updated_ms) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (client) DO UPDATE SET name = excluded.name, \
                 limits = excluded.limits, updated_ms = excluded.updated_ms",
                params![
                    row.id,
                    row.name,
                    limits_text(row.limits.as_ref()),
                    time::ms_of(SystemTime::now())
                ],
            )
            .map_err(sql_error("saving a quota"))?;
            Ok(())
        })?;
        Ok(())
    }

    fn exchange_quota_use(
        &self,
        add: &[QuotaUse],
        current: &[(Window, i64); 3],
    ) -> Result<Vec<QuotaUse>, BoxError> {
        let (add, current) = (add.to_vec(), *current);
        Ok(self.exec(move |conn| exchange(conn, &add, &current))?)
    }
}

fn exchange(
    conn: &mut Connection,
    add: &[QuotaUse],
    current: &[(Window, i64); 3],
) -> Result<Vec<QuotaUse>, StoreError> {
    let tx = conn
        .transaction()
        .map_err(sql_error("starting a quota exchange"))?;
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO quota_use (client, win, bucket, requests, tokens) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (win, bucket, client) DO UPDATE SET \
                 requests = requests + excluded.requests, tokens = tokens + excluded.tokens",
            )
            .map_err(sql_error("adding quota use"))?;
        for u in add {
            insert
                .execute(params![
                    u.id,
                    u.window.as_str(),
                    u.bucket,
                    i64::try_from(u.requests).unwrap_or(i64::MAX),
                    i64::try_from(u.tokens).unwrap_or(i64::MAX)
                ])
                .map_err(sql_error("adding quota use"))?;
        }
        for (window, bucket) in current {
            tx.execute(
                "DELETE FROM quota_use WHERE win = ?1 AND bucket < ?2",
                params![window.as_str(), oldest_kept(*window, *bucket)],
            )
            .map_err(sql_error("deleting old quota use"))?;
        }
    }
    let mut totals = Vec::new();
    {
        let mut select = tx
            .prepare_cached(
                "SELECT client, requests, tokens FROM quota_use WHERE win = ?1 AND bucket = ?2",
            )
            .map_err(sql_error("reading quota use"))?;
        for (window, bucket) in current {
            let rows = select
                .query_map(params![window.as_str(), bucket], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                })
                .map_err(sql_error("reading quota use"))?;
            for row in rows {
                let (id, requests, tokens) = row.map_err(sql_error("reading quota use"))?;
                totals.push(QuotaUse {
                    id,
                    window: *window,
                    bucket: *bucket,
                    requests: u64::try_from(requests).unwrap_or(0),
                    tokens: u64::try_from(tokens).unwrap_or(0),
                });
            }
        }
    }
    tx.commit().map_err(sql_error("committing quota use"))?;
    Ok(totals)
}
