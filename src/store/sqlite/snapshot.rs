//! One read transaction per answer.
//!
//! In WAL mode a statement run outside a transaction reads the database as it is when that
//! statement starts. An answer made of several statements (the windows of a summary, a count
//! and its page) could then straddle a commit of the writer and disagree with itself: a
//! summary once said 3 calls in the last 24 hours and none in the last hour. Inside one
//! transaction every statement reads the snapshot the first one took.

use rusqlite::Connection;

use super::sql_error;
use crate::store::StoreError;

/// Runs `f` in one read transaction on `conn`, so that everything it reads is one snapshot,
/// whatever the writer commits meanwhile. Inside a transaction already (the caller's, or an
/// outer `snapshot`), `f` runs in that one.
pub(crate) fn snapshot<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    if !conn.is_autocommit() {
        return f(conn);
    }
    // Deferred: the snapshot is taken by the first read. Ending it (also when `f` panics)
    // rolls back whatever transaction is open, even one `f` began itself, so no snapshot
    // outlives the call; for a reader that only releases it.
    let tx = conn
        .unchecked_transaction()
        .map_err(sql_error("starting a read transaction"))?;
    let out = f(&tx);
    let ended = tx.finish().map_err(sql_error("ending a read transaction"));
    let out = out?;
    ended?;
    Ok(out)
}
