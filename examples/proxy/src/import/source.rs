//! The Python server's database, read: its SQLite file, or its MySQL database (feature
//! `mysql`), through one interface whose rows are text (each dialect casts), so that the rest of
//! the import reads both alike.
//!
//! The tables are those its SQLAlchemy models create (`app/database/models.py`): `t_settings`,
//! `t_error_logs`, `t_request_log` and `t_file_records`. Nothing is written to it.

use std::collections::HashMap;
use std::path::PathBuf;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

/// Which database the import reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// A SQLite file (the Python server's `data/<SQLITE_DATABASE>`).
    Sqlite(PathBuf),
    /// MySQL, from the `MYSQL_*` settings as the Python server builds its URL.
    MySqlSettings,
    /// MySQL at a `mysql://` URL.
    MySqlUrl(String),
}

/// The SQL flavour of the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    MySql,
}

/// Characters read at most of the log columns that can be long (`request_msg` holds whole
/// request bodies, base64 images included): what the store keeps of them (2,000 characters of a
/// message, 64 KiB of a body), plus a margin, so that a secret cut at the end of what is read
/// lies wholly past the store's own cut and is never stored in part.
fn read_at_most(column: &str) -> Option<usize> {
    match column {
        "error_log" => Some(4 * 1024),
        "request_msg" => Some(65 * 1024),
        _ => None,
    }
}

impl Dialect {
    /// A column read as text.
    fn text(self, column: &str) -> String {
        match self {
            Dialect::Sqlite => column.to_owned(),
            Dialect::MySql => format!("CAST({column} AS CHAR)"),
        }
    }

    /// The first `chars` characters of a column, read as text.
    fn prefix(self, column: &str, chars: usize) -> String {
        match self {
            Dialect::Sqlite => format!("substr({column}, 1, {chars})"),
            Dialect::MySql => format!("LEFT(CAST({column} AS CHAR), {chars})"),
        }
    }

    /// `t_settings.key` (`key` is a reserved word in MySQL).
    fn key_column(self) -> &'static str {
        match self {
            Dialect::Sqlite => "\"key\"",
            Dialect::MySql => "`key`",
        }
    }
}

/// A row, every column as text (`None` for NULL).
pub type Row = Vec<Option<String>>;

/// An open source database.
pub struct PythonDb {
    inner: Inner,
    /// What to call it in messages (a path, or a URL without its password).
    pub shown: String,
}

enum Inner {
    Sqlite(Connection),
    #[cfg(feature = "mysql")]
    MySql(super::mysql::MySql),
}

impl PythonDb {
    /// Opens the source (read-only for a file) and checks that it is a Gemini-Balance database.
    pub async fn open(spec: &Spec, vars: &HashMap<String, String>) -> Result<PythonDb, String> {
        let mut db = PythonDb::connect(spec, vars).await?;
        if !db.has_table("t_settings").await? {
            return Err(format!(
                "{}: no t_settings table: not a Gemini-Balance database",
                db.shown
            ));
        }
        Ok(db)
    }

    /// Opens the source (read-only for a file), whatever it holds.
    pub async fn connect(spec: &Spec, vars: &HashMap<String, String>) -> Result<PythonDb, String> {
        let db = match spec {
            Spec::Sqlite(path) => {
                if !path.is_file() {
                    return Err(format!("{}: no such file", path.display()));
                }
                let conn = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(|e| format!("{}: {e}", path.display()))?;
                PythonDb {
                    inner: Inner::Sqlite(conn),
                    shown: format!("{} (SQLite)", path.display()),
                }
            }
            #[cfg(feature = "mysql")]
            Spec::MySqlSettings | Spec::MySqlUrl(_) => {
                let (mysql, shown) = super::mysql::MySql::connect(spec, vars).await?;
                PythonDb {
                    inner: Inner::MySql(mysql),
                    shown,
                }
            }
            #[cfg(not(feature = "mysql"))]
            Spec::MySqlSettings | Spec::MySqlUrl(_) => {
                let _ = vars;
                return Err(
                    "this build reads no MySQL: build it with the `mysql` feature (on by default)"
                        .to_owned(),
                );
            }
        };
        Ok(db)
    }

    fn dialect(&self) -> Dialect {
        match self.inner {
            Inner::Sqlite(_) => Dialect::Sqlite,
            #[cfg(feature = "mysql")]
            Inner::MySql(_) => Dialect::MySql,
        }
    }

    /// Runs `sql` with integer arguments (`?` placeholders in both dialects).
    async fn rows(&mut self, sql: &str, args: &[i64]) -> Result<Vec<Row>, String> {
        let shown = &self.shown;
        match &mut self.inner {
            Inner::Sqlite(conn) => {
                let failed = |e: rusqlite::Error| format!("{shown}: {e}");
                let mut stmt = conn.prepare(sql).map_err(failed)?;
                let columns = stmt.column_count();
                let mut rows = stmt
                    .query(rusqlite::params_from_iter(args.iter()))
                    .map_err(failed)?;
                let mut out = Vec::new();
                while let Some(row) = rows.next().map_err(failed)? {
                    let mut values = Vec::with_capacity(columns);
                    for i in 0..columns {
                        values.push(text_of(row.get_ref(i).map_err(failed)?));
                    }
                    out.push(values);
                }
                Ok(out)
            }
            #[cfg(feature = "mysql")]
            Inner::MySql(db) => db
                .rows(sql, args)
                .await
                .map_err(|e| format!("{shown}: {e}")),
        }
    }

    /// Whether `table` exists.
    pub async fn has_table(&mut self, table: &str) -> Result<bool, String> {
        let sql = match self.dialect() {
            Dialect::Sqlite => format!(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '{table}'"
            ),
            Dialect::MySql => format!(
                "SELECT CAST(count(*) AS CHAR) FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_name = '{table}'"
            ),
        };
        let rows = self.rows(&sql, &[]).await?;
        Ok(first_int(&rows).unwrap_or(0) > 0)
    }

    /// `t_settings` in insertion order: name and value (`NULL` read as `""`, as Python's
    /// `None` is written).
    pub async fn settings(&mut self) -> Result<Vec<(String, String)>, String> {
        let d = self.dialect();
        let sql = format!(
            "SELECT {}, {} FROM t_settings ORDER BY id",
            d.text(d.key_column()),
            d.text("value")
        );
        Ok(self
            .rows(&sql, &[])
            .await?
            .into_iter()
            .filter_map(|mut row| {
                let value = row.pop().flatten().unwrap_or_default();
                let key = row.pop().flatten()?;
                Some((key, value))
            })
            .collect())
    }

    /// A name for this database that stays the same wherever it is read from (a copied file,
    /// a moved server): the first settings row and when the Python server wrote it. The
    /// location when there is none.
    pub async fn identity(&mut self) -> Result<String, String> {
        let d = self.dialect();
        let sql = format!(
            "SELECT {}, {} FROM t_settings ORDER BY id LIMIT 1",
            d.text(d.key_column()),
            d.text("created_at")
        );
        let rows = self.rows(&sql, &[]).await?;
        Ok(match rows.first().map(|r| (&r[0], &r[1])) {
            Some((Some(key), Some(created))) => format!("gemini-balance:{key}@{created}"),
            _ => format!("gemini-balance:{}", self.shown),
        })
    }

    /// Rows of `table` after id `after`: how many, and the highest id.
    pub async fn count_after(&mut self, table: &str, after: i64) -> Result<(u64, i64), String> {
        let d = self.dialect();
        let sql = format!(
            "SELECT {}, {} FROM {table} WHERE id > ?",
            d.text("count(*)"),
            d.text("max(id)")
        );
        let rows = self.rows(&sql, &[after]).await?;
        let n = first_int(&rows).unwrap_or(0);
        let max = rows
            .first()
            .and_then(|r| r.get(1).cloned().flatten())
            .and_then(|v| v.parse().ok())
            .unwrap_or(after);
        Ok((u64::try_from(n).unwrap_or(0), max))
    }

    /// Up to `limit` rows of `table` after id `after`, by id: `columns` as text.
    pub async fn page(
        &mut self,
        table: &str,
        columns: &[&str],
        after: i64,
        limit: i64,
    ) -> Result<Vec<Row>, String> {
        let d = self.dialect();
        let list = columns
            .iter()
            .map(|c| match read_at_most(c) {
                Some(chars) => d.prefix(c, chars),
                None => d.text(c),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("SELECT {list} FROM {table} WHERE id > ? ORDER BY id LIMIT ?");
        self.rows(&sql, &[after, limit]).await
    }

    /// The distinct non-empty values of `table.column` (keys and tokens the logs name), or
    /// none when the table is missing.
    pub async fn distinct(&mut self, table: &str, column: &str) -> Result<Vec<String>, String> {
        if !self.has_table(table).await? {
            return Ok(Vec::new());
        }
        let d = self.dialect();
        let sql = format!(
            "SELECT DISTINCT {} FROM {table} WHERE {column} IS NOT NULL",
            d.text(column)
        );
        Ok(self
            .rows(&sql, &[])
            .await?
            .into_iter()
            .filter_map(|mut r| r.pop().flatten())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect())
    }
}

/// A SQLite value as text: SQLite keeps whatever was written, so a column may hold text where
/// its declared type says integer (the Python server wrote exception text into `status_code`).
fn text_of(value: ValueRef<'_>) -> Option<String> {
    match value {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(x) => Some(x.to_string()),
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
    }
}

fn first_int(rows: &[Row]) -> Option<i64> {
    rows.first()?.first()?.as_deref()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page of error rows holds no more of a huge `request_msg` or `error_log` than the
    /// store can keep (plus the margin), whatever the Python server stored.
    #[tokio::test]
    async fn long_log_columns_are_read_only_as_far_as_the_store_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("python.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE t_error_logs (id INTEGER PRIMARY KEY, error_log TEXT, request_msg JSON)",
        )
        .unwrap();
        let huge = "x".repeat(4 * 1024 * 1024);
        conn.execute(
            "INSERT INTO t_error_logs (error_log, request_msg) VALUES (?1, ?1)",
            [&huge],
        )
        .unwrap();
        drop(conn);
        let mut db = PythonDb::connect(&Spec::Sqlite(path), &HashMap::new())
            .await
            .unwrap();
        let rows = db
            .page("t_error_logs", &["id", "error_log", "request_msg"], 0, 10)
            .await
            .unwrap();
        let row = &rows[0];
        assert_eq!(row[0].as_deref(), Some("1"));
        assert_eq!(row[1].as_ref().map(String::len), Some(4 * 1024));
        assert_eq!(row[2].as_ref().map(String::len), Some(65 * 1024));
    }
}
