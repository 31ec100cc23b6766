//! Everything that differs between PostgreSQL and MySQL/MariaDB, in one place: placeholders,
//! column types, upserts, chunked deletes. The rest of the store writes one SQL text with `?`
//! placeholders and neutral functions.

use std::fmt::Write as _;

/// The database engine of a [`SqlStore`](super::SqlStore), from its URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Engine {
    /// PostgreSQL (`postgres://`, `postgresql://`; feature `postgres`).
    Postgres,
    /// MySQL or MariaDB (`mysql://`, `mariadb://`; feature `mysql`).
    MySql,
}

impl Engine {
    /// The engine a URL names, if this build has it.
    pub fn of_url(url: &str) -> Option<Engine> {
        let scheme = url.split_once("://")?.0.to_ascii_lowercase();
        match scheme.as_str() {
            #[cfg(feature = "postgres")]
            "postgres" | "postgresql" => Some(Engine::Postgres),
            #[cfg(feature = "mysql")]
            "mysql" | "mariadb" => Some(Engine::MySql),
            _ => None,
        }
    }

    /// `Postgres` or `MySQL`, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Postgres => "PostgreSQL",
            Engine::MySql => "MySQL",
        }
    }

    /// `sql` with its `?` placeholders numbered (`$1`, `$2`, …) for PostgreSQL. The store's
    /// own statements hold no `?` in literals.
    pub(crate) fn sql(self, sql: &str) -> String {
        match self {
            Engine::MySql => sql.to_owned(),
            Engine::Postgres => {
                let mut out = String::with_capacity(sql.len() + 16);
                let mut n = 0;
                for c in sql.chars() {
                    if c == '?' {
                        n += 1;
                        let _ = write!(out, "${n}");
                    } else {
                        out.push(c);
                    }
                }
                out
            }
        }
    }

    /// `rows` groups of `cols` placeholders: `(?, ?), (?, ?)`.
    pub(crate) fn values(rows: usize, cols: usize) -> String {
        let one = format!("({})", vec!["?"; cols].join(", "));
        vec![one; rows].join(", ")
    }

    /// A sum as a 64-bit integer (MySQL's `SUM` is a decimal, PostgreSQL's a numeric), 0 over
    /// no rows.
    pub(crate) fn sum(self, expr: &str) -> String {
        match self {
            Engine::Postgres => format!("CAST(COALESCE(SUM({expr}), 0) AS BIGINT)"),
            Engine::MySql => format!("CAST(COALESCE(SUM({expr}), 0) AS SIGNED)"),
        }
    }

    /// The end of a multi-row `INSERT INTO {table} AS t …` that adds `add` columns to an
    /// existing row with the same `key` (rollups), or replaces `set` columns (key state,
    /// settings).
    pub(crate) fn on_conflict(self, key: &[&str], add: &[&str], set: &[&str]) -> String {
        let parts: Vec<String> = match self {
            Engine::Postgres => add
                .iter()
                .map(|c| format!("{c} = t.{c} + EXCLUDED.{c}"))
                .chain(set.iter().map(|c| format!("{c} = EXCLUDED.{c}")))
                .collect(),
            Engine::MySql => add
                .iter()
                .map(|c| format!("{c} = {c} + VALUES({c})"))
                .chain(set.iter().map(|c| format!("{c} = VALUES({c})")))
                .collect(),
        };
        match self {
            Engine::Postgres => format!(
                " ON CONFLICT ({}) DO UPDATE SET {}",
                key.join(", "),
                parts.join(", ")
            ),
            Engine::MySql => format!(" ON DUPLICATE KEY UPDATE {}", parts.join(", ")),
        }
    }

    /// `INSERT INTO {table}` with the alias PostgreSQL's upsert refers to.
    pub(crate) fn insert_into(self, table: &str) -> String {
        match self {
            Engine::Postgres => format!("INSERT INTO {table} AS t"),
            Engine::MySql => format!("INSERT INTO {table}"),
        }
    }

    /// An insert that skips rows whose key exists: `(start, end)` around `table (cols) VALUES …`.
    pub(crate) fn insert_ignore(self) -> (&'static str, &'static str) {
        match self {
            Engine::Postgres => ("INSERT INTO", " ON CONFLICT DO NOTHING"),
            Engine::MySql => ("INSERT IGNORE INTO", ""),
        }
    }

    /// Deletes at most `?2` rows of `table` where `column < ?1`.
    pub(crate) fn delete_before(self, table: &str, column: &str) -> String {
        match self {
            Engine::Postgres => format!(
                "DELETE FROM {table} WHERE ctid IN \
                 (SELECT ctid FROM {table} WHERE {column} < ? LIMIT ?)"
            ),
            Engine::MySql => format!("DELETE FROM {table} WHERE {column} < ? LIMIT ?"),
        }
    }

    /// A column type.
    pub(crate) fn column(self, ty: Col) -> &'static str {
        match (self, ty) {
            (Engine::Postgres, Col::Id) => "BIGSERIAL PRIMARY KEY",
            (Engine::MySql, Col::Id) => "BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY",
            (_, Col::Int) => "BIGINT NOT NULL",
            (_, Col::IntNull) => "BIGINT",
            (_, Col::Name) => "VARCHAR(255) NOT NULL",
            (_, Col::NameNull) => "VARCHAR(255)",
            (_, Col::Value) => "VARCHAR(300) NOT NULL",
            // MySQL's TEXT holds 65,535 bytes, less than a kept request body (64 KiB) and
            // strict mode refuses what is longer; MEDIUMTEXT holds 16 MiB.
            (Engine::MySql, Col::Text) => "MEDIUMTEXT NOT NULL",
            (Engine::MySql, Col::TextNull) => "MEDIUMTEXT",
            (Engine::Postgres, Col::Text) => "TEXT NOT NULL",
            (Engine::Postgres, Col::TextNull) => "TEXT",
        }
    }

    /// What follows `CREATE TABLE …(…)`: InnoDB, UTF-8 and binary comparison on MySQL (ids,
    /// models and prefixes compare byte by byte, as on PostgreSQL).
    pub(crate) fn table_options(self) -> &'static str {
        match self {
            Engine::Postgres => "",
            Engine::MySql => " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        }
    }

    /// Statements that create `table`, `IF NOT EXISTS`.
    pub(crate) fn create_table(self, table: &Table) -> Vec<String> {
        let mut parts: Vec<String> = table
            .columns
            .iter()
            .map(|(name, ty)| format!("{name} {}", self.column(*ty)))
            .collect();
        if !table.key.is_empty() {
            parts.push(format!("PRIMARY KEY ({})", table.key.join(", ")));
        }
        let mut out = Vec::new();
        match self {
            Engine::MySql => {
                for (name, cols) in table.indexes {
                    parts.push(format!("INDEX {name} ({})", cols.join(", ")));
                }
            }
            Engine::Postgres => {
                for (name, cols) in table.indexes {
                    out.push(format!(
                        "CREATE INDEX IF NOT EXISTS {name} ON {} ({})",
                        table.name,
                        cols.join(", ")
                    ));
                }
            }
        }
        out.insert(
            0,
            format!(
                "CREATE TABLE IF NOT EXISTS {} ({}){}",
                table.name,
                parts.join(", "),
                self.table_options()
            ),
        );
        out
    }
}

/// Column types the schema uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Col {
    /// An auto-increment 64-bit primary key.
    Id,
    Int,
    IntNull,
    /// Short indexed text (ids, masks, models, classes): up to 255 characters.
    Name,
    NameNull,
    /// A rollup value (`{key id}/{model}`).
    Value,
    Text,
    TextNull,
}

/// A table of the schema.
#[derive(Debug)]
pub(crate) struct Table {
    pub name: &'static str,
    pub columns: &'static [(&'static str, Col)],
    pub key: &'static [&'static str],
    pub indexes: &'static [(&'static str, &'static [&'static str])],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(
            Engine::Postgres.sql("a = ? AND b IN (?, ?)"),
            "a = $1 AND b IN ($2, $3)"
        );
        assert_eq!(Engine::MySql.sql("a = ?"), "a = ?");
        assert_eq!(Engine::values(2, 3), "(?, ?, ?), (?, ?, ?)");
    }

    #[test]
    fn upserts_per_engine() {
        assert_eq!(
            Engine::Postgres.on_conflict(&["k"], &["n"], &["m"]),
            " ON CONFLICT (k) DO UPDATE SET n = t.n + EXCLUDED.n, m = EXCLUDED.m"
        );
        assert_eq!(
            Engine::MySql.on_conflict(&["k"], &["n"], &["m"]),
            " ON DUPLICATE KEY UPDATE n = n + VALUES(n), m = VALUES(m)"
        );
    }

    #[test]
    fn engines_from_urls() {
        #[cfg(feature = "postgres")]
        assert_eq!(Engine::of_url("postgres://u@h/db"), Some(Engine::Postgres));
        #[cfg(feature = "mysql")]
        assert_eq!(Engine::of_url("MySQL://root@h:3306/x"), Some(Engine::MySql));
        assert_eq!(Engine::of_url("sqlite://x"), None);
        assert_eq!(Engine::of_url("nonsense"), None);
    }
}
