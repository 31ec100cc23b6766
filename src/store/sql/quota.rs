//! Client quotas on PostgreSQL and MySQL (schema version 2): `quota_limit` and `quota_use`,
//! shared by every instance on the database.

use std::time::SystemTime;

use sqlx_core::any::AnyPool;
use sqlx_core::query::query;
use sqlx_core::row::Row;

use super::dialect::Engine;
use super::{sql_error, SqlStore};
use crate::quota::{oldest_kept, Limits, QuotaRow, QuotaStore, QuotaUse, Window};
use crate::store::time::ms_of;
use crate::store::StoreError;
use crate::BoxError;

/// Rows per multi-row insert.
const CHUNK: usize = 200;

fn limits_text(limits: Option<&Limits>) -> Option<String> {
    limits.and_then(|l| serde_json::to_string(l).ok())
}

fn text(row: &sqlx_core::any::AnyRow, i: usize) -> Option<String> {
    match row.try_get::<Option<String>, _>(i) {
        Ok(v) => v,
        Err(_) => row
            .try_get::<Option<Vec<u8>>, _>(i)
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned()),
    }
}

async fn rows(pool: &AnyPool, engine: Engine) -> Result<Vec<QuotaRow>, StoreError> {
    let sql = engine.sql("SELECT client, name, limits FROM quota_limit ORDER BY client");
    let rows = query(&sql)
        .fetch_all(pool)
        .await
        .map_err(sql_error("reading quotas"))?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            Some(QuotaRow {
                id: text(row, 0)?,
                name: text(row, 1),
                limits: text(row, 2).and_then(|t| match serde_json::from_str(&t) {
                    Ok(limits) => Some(limits),
                    Err(e) => {
                        tracing::warn!(error = %e, "an unreadable quota limit in the store is ignored");
                        None
                    }
                }),
            })
        })
        .collect())
}

async fn save(pool: &AnyPool, engine: Engine, row: QuotaRow) -> Result<(), StoreError> {
    if row.name.is_none() && row.limits.is_none() {
        query(&engine.sql("DELETE FROM quota_limit WHERE client = ?"))
            .bind(row.id)
            .execute(pool)
            .await
            .map_err(sql_error("deleting a quota"))?;
        return Ok(());
    }
    let sql = engine.sql(&format!(
        "{} (client, name, limits, updated_ms) VALUES (?, ?, ?, ?){}",
        engine.insert_into("quota_limit"),
        engine.on_conflict(&["client"], &[], &["name", "limits", "updated_ms"])
    ));
    query(&sql)
        .bind(row.id)
        .bind(row.name)
        .bind(limits_text(row.limits.as_ref()))
        .bind(ms_of(SystemTime::now()))
        .execute(pool)
        .await
        .map_err(sql_error("saving a quota"))?;
    Ok(())
}

async fn exchange(
    pool: &AnyPool,
    engine: Engine,
    add: Vec<QuotaUse>,
    current: [(Window, i64); 3],
) -> Result<Vec<QuotaUse>, StoreError> {
    // One row per (window, bucket, client), in one order: PostgreSQL refuses a multi-row
    // upsert that touches a row twice ("cannot affect row a second time"; the same window's use
    // can come twice, say rolled over during a failed exchange and given back), and instances
    // locking rows in the same order cannot deadlock each other.
    let mut merged: std::collections::BTreeMap<(&'static str, i64, String), (u64, u64)> =
        std::collections::BTreeMap::new();
    for u in add {
        // An identity the `client` column cannot hold (over 250 bytes, or a NUL PostgreSQL
        // refuses) would fail every exchange from now on: its use stays local.
        if u.id.len() > 250 || u.id.contains('\0') {
            tracing::warn!(
                bytes = u.id.len(),
                "a quota identity too long for the database (or with a NUL) is not shared"
            );
            continue;
        }
        let row = merged
            .entry((u.window.as_str(), u.bucket, u.id))
            .or_default();
        row.0 = row.0.saturating_add(u.requests);
        row.1 = row.1.saturating_add(u.tokens);
    }
    let add: Vec<QuotaUse> = merged
        .into_iter()
        .filter_map(|((window, bucket, id), (requests, tokens))| {
            Some(QuotaUse {
                id,
                window: Window::ALL.into_iter().find(|w| w.as_str() == window)?,
                bucket,
                requests,
                tokens,
            })
        })
        .collect();
    let mut tx = pool
        .begin()
        .await
        .map_err(sql_error("starting a quota exchange"))?;
    for chunk in add.chunks(CHUNK) {
        let sql = engine.sql(&format!(
            "{} (client, win, bucket, requests, tokens) VALUES {}{}",
            engine.insert_into("quota_use"),
            Engine::values(chunk.len(), 5),
            engine.on_conflict(&["win", "bucket", "client"], &["requests", "tokens"], &[])
        ));
        let mut q = query(&sql);
        for u in chunk {
            q = q
                .bind(u.id.clone())
                .bind(u.window.as_str())
                .bind(u.bucket)
                .bind(i64::try_from(u.requests).unwrap_or(i64::MAX))
                .bind(i64::try_from(u.tokens).unwrap_or(i64::MAX));
        }
        q.execute(&mut *tx)
            .await
            .map_err(sql_error("adding quota use"))?;
    }
    for (window, bucket) in current {
        query(&engine.sql("DELETE FROM quota_use WHERE win = ? AND bucket < ?"))
            .bind(window.as_str())
            .bind(oldest_kept(window, bucket))
            .execute(&mut *tx)
            .await
            .map_err(sql_error("deleting old quota use"))?;
    }
    let mut totals = Vec::new();
    for (window, bucket) in current {
        let rows = query(
            &engine
                .sql("SELECT client, requests, tokens FROM quota_use WHERE win = ? AND bucket = ?"),
        )
        .bind(window.as_str())
        .bind(bucket)
        .fetch_all(&mut *tx)
        .await
        .map_err(sql_error("reading quota use"))?;
        for row in &rows {
            let Some(id) = text(row, 0) else { continue };
            let int = |i| row.try_get::<i64, _>(i).ok().unwrap_or(0);
            totals.push(QuotaUse {
                id,
                window,
                bucket,
                requests: u64::try_from(int(1)).unwrap_or(0),
                tokens: u64::try_from(int(2)).unwrap_or(0),
            });
        }
    }
    tx.commit()
        .await
        .map_err(sql_error("committing quota use"))?;
    Ok(totals)
}

/// Every query runs on the store's runtime, over its connection pool.
impl QuotaStore for SqlStore {
    fn quota_rows(&self) -> Result<Vec<QuotaRow>, BoxError> {
        let (pool, engine) = (self.pool(), self.inner.engine);
        Ok(self.block(async move { rows(&pool, engine).await })?)
    }

    fn save_quota_row(&self, row: &QuotaRow) -> Result<(), BoxError> {
        if let Some(name) = &row.name {
            crate::store::settings::refuse_secret("quota name", name)?;
        }
        let (pool, engine, row) = (self.pool(), self.inner.engine, row.clone());
        Ok(self.block(async move { save(&pool, engine, row).await })?)
    }

    fn exchange_quota_use(
        &self,
        add: &[QuotaUse],
        current: &[(Window, i64); 3],
    ) -> Result<Vec<QuotaUse>, BoxError> {
        let (pool, engine) = (self.pool(), self.inner.engine);
        let (add, current) = (add.to_vec(), *current);
        Ok(self.block(async move { exchange(&pool, engine, add, current).await })?)
    }
}
