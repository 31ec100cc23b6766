//! Which PostgreSQL and MySQL errors are worth a retry: one rule for everything that writes to
//! a networked database (the SQL store's writer, the shared key state's outbox).

/// Errors worth a retry: the connection (lost, refused, timed out), the server going away or
/// shutting down, a deadlock or serialization failure between instances. Anything else (a
/// missing table, a refused row, no permission) is permanent: retrying it would hold up every
/// later write behind it.
pub(crate) fn transient(e: &sqlx_core::Error) -> bool {
    use sqlx_core::Error as E;
    match e {
        E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => true,
        E::Protocol(_) => true,
        E::Database(db) => {
            let code = db.code().unwrap_or_default();
            // SQLSTATE classes 08 (connection), 40 (rollback: deadlock, serialization),
            // 57 (operator intervention: shutdown), 53 (insufficient resources); MySQL's
            // HY000 on shutdown, and its error numbers below.
            code.starts_with("08")
                || code.starts_with("40")
                || code.starts_with("57")
                || code.starts_with("53")
                || matches!(code.as_ref(), "HY000" if db.message().contains("shutdown"))
                || mysql_transient(db.as_ref())
        }
        _ => false,
    }
}

/// MySQL's error numbers worth a retry (`code()` is the SQLSTATE there, not the number):
/// 1205 lock wait timeout, 1213 deadlock, 1053 server shutdown.
#[cfg(feature = "mysql")]
fn mysql_transient(db: &dyn sqlx_core::error::DatabaseError) -> bool {
    db.try_downcast_ref::<sqlx_mysql::MySqlDatabaseError>()
        .is_some_and(|e| matches!(e.number(), 1205 | 1213 | 1053))
}

#[cfg(not(feature = "mysql"))]
fn mysql_transient(_: &dyn sqlx_core::error::DatabaseError) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_connections_are_retried_refusals_are_not() {
        assert!(transient(&sqlx_core::Error::PoolTimedOut));
        assert!(transient(&sqlx_core::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset
        ))));
        assert!(!transient(&sqlx_core::Error::RowNotFound));
        assert!(!transient(&sqlx_core::Error::ColumnNotFound("body".into())));
    }
}
