//! A connection to one configured database for unidb's own work. On SQLite it is an
//! in-process session, so every statement goes through the same rewriting and side
//! catalog as a client's. On PostgreSQL, migrations use a direct connection outside
//! the pool (session state such as an advisory lock must stay on one server); the
//! demo goes through the pool like any client.

use std::sync::Arc;

use tokio::io::DuplexStream;

use crate::backend::postgres::Stream;
use crate::backend::sqlite::SqliteDb;
use crate::config::{DatabaseConfig, PostgresConfig};
use crate::frontend::local::Paused;
use crate::protocol::client::{Client, ClientError, ResultSet};
use crate::server::{Database, ServerState};

/// Which engine a database runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

enum Conn {
    Local(Client<DuplexStream>),
    Direct(Client<Stream>),
}

/// An open connection to a configured database.
pub struct Target {
    pub database: String,
    pub backend: Backend,
    /// The SQLite database itself (backups, restore, schema listing).
    pub sqlite: Option<Arc<SqliteDb>>,
    /// `sqlite data/app.db`, `postgres db.internal:5432/app`: for messages.
    pub describe: String,
    conn: Conn,
}

impl Target {
    /// The connection migrations run on: an in-process session on SQLite, a direct
    /// connection on PostgreSQL (time zone UTC, `application_name` 'unidb migrate').
    pub async fn for_migrations(
        state: &Arc<ServerState>,
        database: &str,
        user: &str,
    ) -> Result<Target, String> {
        match database_of(state, database)? {
            (Database::Sqlite(db), _) => {
                Self::local(state, database, user, Some(db), Paused::Exempt).await
            }
            (Database::Postgres(_), DatabaseConfig::Postgres(pg)) => {
                let mut t = Self::direct(database, pg).await?;
                t.execute("SET TimeZone = 'UTC'; SET application_name = 'unidb migrate'")
                    .await
                    .map_err(|e| format!("database {database}: {e}"))?;
                Ok(t)
            }
            _ => Err(format!(
                "database {database}: backend and configuration disagree"
            )),
        }
    }

    /// A connection through unidb like a client's: a session on SQLite, the pool on
    /// PostgreSQL.
    pub async fn through_unidb(
        state: &Arc<ServerState>,
        database: &str,
        user: &str,
    ) -> Result<Target, String> {
        let sqlite = match database_of(state, database)? {
            (Database::Sqlite(db), _) => Some(db),
            _ => None,
        };
        Self::local(state, database, user, sqlite, Paused::Wait).await
    }

    async fn local(
        state: &Arc<ServerState>,
        database: &str,
        user: &str,
        sqlite: Option<Arc<SqliteDb>>,
        paused: Paused,
    ) -> Result<Target, String> {
        let (_, config) = database_of(state, database)?;
        let describe = describe(config);
        let client = crate::frontend::local::connect(state, database, user, "unidb", paused)
            .await
            .map_err(|e| format!("database {database} ({describe}): {e}"))?;
        Ok(Target {
            database: database.to_string(),
            backend: if sqlite.is_some() {
                Backend::Sqlite
            } else {
                Backend::Postgres
            },
            sqlite,
            describe,
            conn: Conn::Local(client),
        })
    }

    /// A direct connection to a PostgreSQL database, outside any pool.
    pub async fn direct(database: &str, config: &PostgresConfig) -> Result<Target, String> {
        let describe = describe(&DatabaseConfig::Postgres(config.clone()));
        let client = crate::backend::postgres::connect_direct(config)
            .await
            .map_err(|e| format!("database {database} ({describe}): {e:#}"))?;
        Ok(Target {
            database: database.to_string(),
            backend: Backend::Postgres,
            sqlite: None,
            describe,
            conn: Conn::Direct(client),
        })
    }

    /// Runs `sql` (one or more statements) and returns one result per statement.
    pub async fn query(&mut self, sql: &str) -> Result<Vec<ResultSet>, ClientError> {
        match &mut self.conn {
            Conn::Local(c) => c.query(sql).await,
            Conn::Direct(c) => c.query(sql).await,
        }
    }

    /// The rows of the last statement of `sql`.
    pub async fn rows(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, ClientError> {
        Ok(self
            .query(sql)
            .await?
            .pop()
            .map(|r| r.rows)
            .unwrap_or_default())
    }

    /// Runs `sql`, ignoring any rows.
    pub async fn execute(&mut self, sql: &str) -> Result<(), ClientError> {
        self.query(sql).await.map(|_| ())
    }

    /// Notices the server sent during the last statement.
    pub fn notices(&self) -> &[String] {
        match &self.conn {
            Conn::Local(c) => &c.notices,
            Conn::Direct(c) => &c.notices,
        }
    }

    /// Whether a transaction is open on the connection.
    pub fn in_transaction(&self) -> bool {
        match &self.conn {
            Conn::Local(c) => c.in_transaction(),
            Conn::Direct(c) => c.in_transaction(),
        }
    }

    pub async fn close(self) {
        match self.conn {
            Conn::Local(c) => c.close().await,
            Conn::Direct(c) => c.close().await,
        }
    }
}

fn database_of<'a>(
    state: &'a ServerState,
    database: &str,
) -> Result<(Database, &'a DatabaseConfig), String> {
    match (
        state.databases.get(database),
        state.config.databases.get(database),
    ) {
        (Some(db), Some(config)) => Ok((db.clone(), config)),
        _ => Err(format!(
            "database `{database}` is not configured (configured: {})",
            state.database_names()
        )),
    }
}

fn describe(config: &DatabaseConfig) -> String {
    match config {
        DatabaseConfig::Sqlite(s) => format!("sqlite {}", s.path.display()),
        DatabaseConfig::Postgres(p) => match p.upstream() {
            Ok(up) => format!("postgres {}/{}", up.address(), up.dbname),
            Err(_) => "postgres".to_string(),
        },
    }
}

/// `'text'` as a SQL string literal (standard_conforming_strings).
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `"name"` as a SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
