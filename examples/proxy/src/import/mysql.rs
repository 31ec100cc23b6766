//! The Python server's MySQL database, through sqlx (feature `mysql`).
//!
//! Connected as the Python server connects (`app/database/connection.py`): `MYSQL_HOST`,
//! `MYSQL_PORT`, `MYSQL_USER`, `MYSQL_PASSWORD` and `MYSQL_DATABASE`, or `MYSQL_SOCKET` (a Unix
//! socket) when set, read in any case as its pydantic settings read them; or a `mysql://`
//! URL. Without TLS, as the Python server's `pymysql` URL has none (a server that requires TLS
//! refuses the connection, and says so). A server that does not answer within
//! [`CONNECT_TIMEOUT`] is an error, not a wait.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlSslMode};
use sqlx::{Connection, Row as _};

use super::source::{Row, Spec};

/// How long connecting may take (pymysql's own default is 10 s too).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One connection to the source.
pub struct MySql {
    conn: MySqlConnection,
}

impl MySql {
    /// Connects; returns the connection and how to name it (no password).
    pub async fn connect(
        spec: &Spec,
        vars: &HashMap<String, String>,
    ) -> Result<(MySql, String), String> {
        let var = |name: &str| {
            crate::settings::lookup(vars, name)
                .map(|v| v.trim())
                .unwrap_or("")
        };
        let (options, shown) = match spec {
            Spec::MySqlUrl(url) => {
                let options = MySqlConnectOptions::from_str(url)
                    .map_err(|e| format!("the MySQL URL: {e}"))?;
                let shown = format!(
                    "mysql://{}@{}:{}/{} (MySQL)",
                    options.get_username(),
                    options.get_host(),
                    options.get_port(),
                    options.get_database().unwrap_or("")
                );
                (options, shown)
            }
            _ => {
                let database = var("MYSQL_DATABASE");
                if database.is_empty() {
                    return Err(
                        "MYSQL_DATABASE is not set (.env or the environment): which database of the Python server to read"
                            .to_owned(),
                    );
                }
                let mut options = MySqlConnectOptions::new()
                    .username(var("MYSQL_USER"))
                    .database(database);
                let password = crate::settings::lookup(vars, "MYSQL_PASSWORD")
                    .map(String::as_str)
                    .unwrap_or("");
                if !password.is_empty() {
                    options = options.password(password);
                }
                let socket = var("MYSQL_SOCKET");
                let shown = if socket.is_empty() {
                    let host = match var("MYSQL_HOST") {
                        "" => "localhost",
                        host => host,
                    };
                    let port = match var("MYSQL_PORT") {
                        "" => 3306,
                        port => port.parse::<u16>().map_err(|_| {
                            format!("MYSQL_PORT: expected a port number, got {port:?}")
                        })?,
                    };
                    options = options.host(host).port(port);
                    format!(
                        "mysql://{}@{host}:{port}/{database} (MySQL)",
                        var("MYSQL_USER")
                    )
                } else {
                    options = options.socket(socket);
                    format!(
                        "mysql://{}@/{database}?unix_socket={socket} (MySQL)",
                        var("MYSQL_USER")
                    )
                };
                // Without TLS, as pymysql connects from the Python server's settings. A URL
                // keeps its own `ssl-mode`: this build has no TLS, so `REQUIRED` is refused by
                // the driver rather than quietly sent in clear.
                (options.ssl_mode(MySqlSslMode::Disabled), shown)
            }
        };
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, MySqlConnection::connect_with(&options))
            .await
            .map_err(|_| format!("{shown}: no answer within {} s", CONNECT_TIMEOUT.as_secs()))?
            .map_err(|e| format!("{shown}: {e}"))?;
        Ok((MySql { conn }, shown))
    }

    /// Runs `sql` (every column cast to text by the caller) with integer arguments.
    pub async fn rows(&mut self, sql: &str, args: &[i64]) -> Result<Vec<Row>, sqlx::Error> {
        let mut query = sqlx::query(sql);
        for arg in args {
            query = query.bind(*arg);
        }
        let rows = query.fetch_all(&mut self.conn).await?;
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| row.try_get::<Option<String>, _>(i))
                    .collect()
            })
            .collect()
    }
}
