//! Retention: old rows are deleted by the writer thread, a few thousand at a time, between
//! batches of new records, so a large purge never holds the write lock for long.

use std::sync::mpsc::SyncSender;
use std::time::Duration;

use rusqlite::Connection;

use crate::store::StoreError;

pub use crate::store::retention::Retention;
#[cfg(test)]
use crate::store::retention::DAY;

/// A table retention deletes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    Requests,
    Attempts,
    Errors,
    UsageMinutes,
    UsageHours,
}

impl Table {
    fn sql(self) -> &'static str {
        match self {
            Table::Requests => {
                "DELETE FROM request_log WHERE id IN \
                 (SELECT id FROM request_log WHERE at_ms < ?1 LIMIT ?2)"
            }
            Table::Attempts => {
                "DELETE FROM attempt_log WHERE id IN \
                 (SELECT id FROM attempt_log WHERE at_ms < ?1 LIMIT ?2)"
            }
            Table::Errors => {
                "DELETE FROM error_log WHERE id IN \
                 (SELECT id FROM error_log WHERE at_ms < ?1 LIMIT ?2)"
            }
            Table::UsageMinutes => {
                "DELETE FROM usage_minute WHERE (dim, minute_ms, value) IN \
                 (SELECT dim, minute_ms, value FROM usage_minute \
                  WHERE dim IN ('', 'key', 'model', 'client') AND minute_ms < ?1 LIMIT ?2)"
            }
            Table::UsageHours => {
                "DELETE FROM usage_hour WHERE (dim, hour_ms, value) IN \
                 (SELECT dim, hour_ms, value FROM usage_hour \
                  WHERE dim IN ('', 'key', 'model', 'client', 'key_model') AND hour_ms < ?1 \
                  LIMIT ?2)"
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Table::Requests => "request_log",
            Table::Attempts => "attempt_log",
            Table::Errors => "error_log",
            Table::UsageMinutes => "usage_minute",
            Table::UsageHours => "usage_hour",
        }
    }
}

/// Deleting rows older than a cutoff from some tables, one small statement per step.
#[derive(Debug)]
pub(crate) struct Purge {
    tables: Vec<Table>,
    cutoff_ms: i64,
    deleted: u64,
    reply: Option<SyncSender<Result<u64, StoreError>>>,
}

impl Purge {
    pub(crate) fn new(
        tables: Vec<Table>,
        cutoff_ms: i64,
        reply: Option<SyncSender<Result<u64, StoreError>>>,
    ) -> Self {
        Purge {
            tables,
            cutoff_ms,
            deleted: 0,
            reply,
        }
    }

    /// `true` when this purge covers `table` (so the schedule does not queue it twice).
    pub(crate) fn covers(&self, table: Table) -> bool {
        self.tables.contains(&table)
    }

    /// Deletes at most `limit` rows; `true` when the purge is finished (and answered).
    pub(crate) fn step(&mut self, conn: &Connection, limit: u32) -> bool {
        let Some(&table) = self.tables.first() else {
            self.answer(Ok(()));
            return true;
        };
        let result = conn
            .prepare_cached(table.sql())
            .and_then(|mut stmt| stmt.execute(rusqlite::params![self.cutoff_ms, limit]));
        match result {
            Ok(n) => {
                self.deleted += n as u64;
                if n < limit as usize {
                    self.tables.remove(0);
                    if n > 0 || self.deleted > 0 {
                        tracing::debug!(
                            table = table.name(),
                            deleted = self.deleted,
                            "old rows deleted"
                        );
                    }
                }
            }
            Err(e) => {
                tracing::warn!(table = table.name(), error = %e, "deleting old rows failed");
                self.tables.clear();
                self.answer(Err(StoreError::with_source(
                    format!("deleting old rows from {}", table.name()),
                    e,
                )));
                return true;
            }
        }
        if self.tables.is_empty() {
            self.answer(Ok(()));
            true
        } else {
            false
        }
    }

    /// `true` when a caller waits for this purge (it was asked for, not scheduled).
    pub(crate) fn has_reply(&self) -> bool {
        self.reply.is_some()
    }

    /// The caller waiting for this purge, if any.
    pub(crate) fn take_reply(&mut self) -> Option<SyncSender<Result<u64, StoreError>>> {
        self.reply.take()
    }

    fn answer(&mut self, result: Result<(), StoreError>) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(result.map(|()| self.deleted));
        }
    }
}

/// Bytes in the pages of the database that hold data (its size less its free pages).
pub(crate) fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let pragma = |name: &str| -> rusqlite::Result<u64> {
        conn.query_row(&format!("PRAGMA {name}"), [], |row| row.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))
    };
    let pages = pragma("page_count")?.saturating_sub(pragma("freelist_count")?);
    Ok(pages.saturating_mul(pragma("page_size")?))
}

/// Keeping the database under [`Retention::max_bytes`]: the oldest raw log rows (requests,
/// their attempts and errors, by time) deleted a step at a time until the pages in use hold at
/// most 90% of the budget.
#[derive(Debug)]
pub(crate) struct Budget {
    target: u64,
    deleted: u64,
}

impl Budget {
    /// A budget purge when the database holds more than `max_bytes`.
    pub(crate) fn over(conn: &Connection, max_bytes: u64) -> Option<Budget> {
        let used = match used_bytes(conn) {
            Ok(used) => used,
            Err(e) => {
                tracing::debug!(error = %e, "the database's size could not be read");
                return None;
            }
        };
        (used > max_bytes).then(|| {
            tracing::info!(
                used_bytes = used,
                max_bytes,
                "the database is over its size budget; deleting the oldest request log rows"
            );
            Budget {
                target: max_bytes / 10 * 9,
                deleted: 0,
            }
        })
    }

    /// Deletes the oldest `limit` rows or so.
    pub(crate) fn step(&mut self, conn: &Connection, limit: u32) -> BudgetStep {
        match self.try_step(conn, limit) {
            Ok(step) => step,
            Err(e) => {
                tracing::warn!(error = %e, "deleting rows to keep the database under its size budget failed; retrying later");
                BudgetStep::Under
            }
        }
    }

    fn try_step(&mut self, conn: &Connection, limit: u32) -> rusqlite::Result<BudgetStep> {
        use rusqlite::OptionalExtension;
        if used_bytes(conn)? <= self.target {
            tracing::info!(
                deleted = self.deleted,
                "the database is under its size budget again"
            );
            return Ok(BudgetStep::Under);
        }
        let limit = limit.max(1);
        // The time of the `limit`-th oldest row (or the newest, when there are fewer): every
        // row up to it goes, with the attempts of that time.
        let oldest = |table: &str| -> rusqlite::Result<Option<i64>> {
            let nth: Option<i64> = conn
                .query_row(
                    &format!("SELECT at_ms FROM {table} ORDER BY at_ms LIMIT 1 OFFSET ?1"),
                    [i64::from(limit) - 1],
                    |row| row.get(0),
                )
                .optional()?;
            match nth {
                Some(at) => Ok(Some(at)),
                None => conn.query_row(&format!("SELECT MAX(at_ms) FROM {table}"), [], |row| {
                    row.get(0)
                }),
            }
        };
        // Oldest first across the raw logs: up to the earliest of the tables' times.
        let at = [
            oldest("request_log")?,
            oldest("error_log")?,
            oldest("attempt_log")?,
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(at) = at {
            // One transaction: a reader never sees requests gone and their attempts left.
            let tx = conn.unchecked_transaction()?;
            for table in [Table::Requests, Table::Attempts, Table::Errors] {
                // The rows of one millisecond can outnumber `limit`: what is left of it goes
                // at the next step.
                let n = conn
                    .prepare_cached(table.sql())?
                    .execute(rusqlite::params![
                        at.saturating_add(1),
                        limit.saturating_mul(8)
                    ])?;
                self.deleted += n as u64;
            }
            tx.commit()?;
            return Ok(BudgetStep::More);
        }
        tracing::warn!(
            "the database is over its size budget with no log rows left to delete: the usage rollups and key state alone exceed it (looked at again in 10 minutes)"
        );
        Ok(BudgetStep::NothingLeft)
    }
}

/// What one step of a [`Budget`] left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BudgetStep {
    /// Still over: more to delete.
    More,
    /// Under the target (or the step failed: looked at again at the next check).
    Under,
    /// Over, with no log row left to delete.
    NothingLeft,
}

/// Which purges a retention run covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Due {
    /// The error and request logs.
    pub logs: bool,
    /// The usage rollups.
    pub rollups: bool,
}

/// The purges a retention run queues, for `now_ms`.
pub(crate) fn due(retention: &Retention, now_ms: i64, what: Due) -> Vec<(Vec<Table>, i64)> {
    let cutoff =
        |d: Duration| now_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let mut out = Vec::new();
    if what.logs {
        if let Some(d) = retention.error_logs {
            out.push((vec![Table::Errors], cutoff(d)));
        }
        if let Some(d) = retention.request_logs {
            out.push((vec![Table::Requests, Table::Attempts], cutoff(d)));
        }
    }
    if what.rollups {
        out.push((vec![Table::UsageMinutes], cutoff(retention.usage_minutes)));
        out.push((vec![Table::UsageHours], cutoff(retention.usage_hours)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_covers_what_is_due() {
        let retention = Retention {
            request_logs: Some(DAY),
            ..Retention::default()
        };
        let now = 100 * 86_400_000;
        let tables = |what| -> Vec<Table> {
            due(&retention, now, what)
                .into_iter()
                .flat_map(|(t, _)| t)
                .collect()
        };
        let logs = [Table::Errors, Table::Requests, Table::Attempts];
        let rollups = [Table::UsageMinutes, Table::UsageHours];
        let all: Vec<Table> = logs.iter().chain(&rollups).copied().collect();
        assert_eq!(
            tables(Due {
                logs: true,
                rollups: true
            }),
            all
        );
        assert_eq!(
            tables(Due {
                logs: true,
                rollups: false
            }),
            logs
        );
        assert_eq!(
            tables(Due {
                logs: false,
                rollups: true
            }),
            rollups
        );
        let cutoffs = due(
            &retention,
            now,
            Due {
                logs: true,
                rollups: false,
            },
        );
        assert_eq!(cutoffs[0].1, now - 7 * 86_400_000, "error logs: 7 days");
        assert_eq!(cutoffs[1].1, now - 86_400_000, "request logs: 1 day");
    }
}
