//! The one SQL surface both state back ends serve: statements with `?N` parameters over plain
//! values, run on SQLite (the embedded default) or on PostgreSQL (`postgres.rs`), so every table
//! module is written once and the same tests run against both. Statements are the portable
//! subset both engines agree on (`ON CONFLICT … DO …`, `RETURNING`, `BIGINT` columns).

use super::StateError;
use std::sync::Mutex;

/// A parameter or a column's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer (every integer column is 64-bit on both engines).
    Int(i64),
    /// A float.
    Real(f64),
    /// Text.
    Text(String),
}

impl From<&str> for Value {
    fn from(text: &str) -> Value {
        Value::Text(text.to_string())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Value {
        Value::Text(text)
    }
}

impl From<&String> for Value {
    fn from(text: &String) -> Value {
        Value::Text(text.clone())
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Int(n)
    }
}

impl From<u32> for Value {
    fn from(n: u32) -> Value {
        Value::Int(i64::from(n))
    }
}

impl From<u64> for Value {
    /// Droplet ids and entry ids fit in an i64 (DigitalOcean's ids are below 2^53).
    fn from(n: u64) -> Value {
        Value::Int(n as i64)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Int(i64::from(b))
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Value {
        value.map_or(Value::Null, Into::into)
    }
}

/// One result row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn at(&self, index: usize) -> Result<&Value, StateError> {
        self.0
            .get(index)
            .ok_or_else(|| StateError::Store(format!("no column {index} in a result row")))
    }

    /// Column `index` as an integer.
    pub fn int(&self, index: usize) -> Result<i64, StateError> {
        self.opt_int(index)?
            .ok_or_else(|| StateError::Store(format!("column {index} is NULL")))
    }

    /// Column `index` as an integer, or `None` for NULL.
    pub fn opt_int(&self, index: usize) -> Result<Option<i64>, StateError> {
        match self.at(index)? {
            Value::Null => Ok(None),
            Value::Int(n) => Ok(Some(*n)),
            other => Err(StateError::Store(format!(
                "column {index} is {other:?}, not an integer"
            ))),
        }
    }

    /// Column `index` as text.
    pub fn text(&self, index: usize) -> Result<String, StateError> {
        self.opt_text(index)?
            .ok_or_else(|| StateError::Store(format!("column {index} is NULL")))
    }

    /// Column `index` as text, or `None` for NULL.
    pub fn opt_text(&self, index: usize) -> Result<Option<String>, StateError> {
        match self.at(index)? {
            Value::Null => Ok(None),
            Value::Text(text) => Ok(Some(text.clone())),
            other => Err(StateError::Store(format!(
                "column {index} is {other:?}, not text"
            ))),
        }
    }
}

/// A connection a statement runs on (inside a transaction or not).
pub trait Conn {
    /// Runs a statement; returns the rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StateError>;
    /// Runs a query; returns its rows.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StateError>;
    /// Runs statements separated by `;`, without parameters (schema changes).
    fn batch(&mut self, sql: &str) -> Result<(), StateError>;
    /// Which engine this is (for the few statements that differ).
    fn engine(&self) -> Engine;
}

impl dyn Conn + '_ {
    /// The first row of a query, if any.
    pub fn query_row(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>, StateError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
}

/// The engine behind a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// SQLite, one process.
    Sqlite,
    /// PostgreSQL, shared by several daemons.
    Postgres,
}

/// Work that runs on a connection: it owns what it needs, so it can run on the PostgreSQL
/// connection's own thread.
pub type Job<T> = Box<dyn FnOnce(&mut dyn Conn) -> Result<T, StateError> + Send>;

/// A state database connection of either engine.
pub enum Db {
    /// An SQLite connection (the process holds the database's writer lock).
    Sqlite(Mutex<rusqlite::Connection>),
    /// A PostgreSQL connection served by its own thread.
    Postgres(super::postgres::Connection),
}

impl Db {
    /// The engine.
    pub fn engine(&self) -> Engine {
        match self {
            Db::Sqlite(_) => Engine::Sqlite,
            Db::Postgres(_) => Engine::Postgres,
        }
    }

    /// Runs `job` on the connection (outside a transaction).
    pub fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut dyn Conn) -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, StateError> {
        match self {
            Db::Sqlite(conn) => {
                let mut conn = conn.lock().map_err(|e| StateError::Store(e.to_string()))?;
                job(&mut SqliteConn(&mut conn))
            }
            Db::Postgres(conn) => conn.run(Box::new(job), false),
        }
    }

    /// Runs `job` in one transaction: all of it commits, or none of it on an error.
    pub fn transaction<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut dyn Conn) -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, StateError> {
        match self {
            Db::Sqlite(conn) => {
                let mut conn = conn.lock().map_err(|e| StateError::Store(e.to_string()))?;
                let transaction = conn.transaction().map_err(super::store::store_error)?;
                let mut wrapped = SqliteTx(transaction);
                let result = job(&mut wrapped)?;
                wrapped.0.commit().map_err(super::store::store_error)?;
                Ok(result)
            }
            Db::Postgres(conn) => conn.run(Box::new(job), true),
        }
    }

    /// Runs one statement.
    pub fn execute(&self, sql: &'static str, params: Vec<Value>) -> Result<u64, StateError> {
        self.run(move |conn| conn.execute(sql, &params))
    }

    /// Runs one query.
    pub fn query(&self, sql: &'static str, params: Vec<Value>) -> Result<Vec<Row>, StateError> {
        self.run(move |conn| conn.query(sql, &params))
    }

    /// The first row of one query, if any.
    pub fn query_row(
        &self,
        sql: &'static str,
        params: Vec<Value>,
    ) -> Result<Option<Row>, StateError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(n) => ToSqlOutput::Borrowed(ValueRef::Integer(*n)),
            Value::Real(x) => ToSqlOutput::Borrowed(ValueRef::Real(*x)),
            Value::Text(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
        })
    }
}

fn sqlite_execute(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[Value],
) -> Result<u64, StateError> {
    let mut statement = conn
        .prepare_cached(sql)
        .map_err(super::store::store_error)?;
    statement
        .execute(rusqlite::params_from_iter(params.iter()))
        .map(|n| n as u64)
        .map_err(super::store::store_error)
}

fn sqlite_query(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[Value],
) -> Result<Vec<Row>, StateError> {
    use rusqlite::types::ValueRef;
    let mut statement = conn
        .prepare_cached(sql)
        .map_err(super::store::store_error)?;
    let columns = statement.column_count();
    let mut rows = statement
        .query(rusqlite::params_from_iter(params.iter()))
        .map_err(super::store::store_error)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(super::store::store_error)? {
        let mut values = Vec::with_capacity(columns);
        for index in 0..columns {
            values.push(
                match row.get_ref(index).map_err(super::store::store_error)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(n) => Value::Int(n),
                    ValueRef::Real(x) => Value::Real(x),
                    ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
                        Value::Text(String::from_utf8_lossy(bytes).into_owned())
                    }
                },
            );
        }
        out.push(Row(values));
    }
    Ok(out)
}

/// An SQLite connection outside a transaction.
struct SqliteConn<'a>(&'a mut rusqlite::Connection);

impl Conn for SqliteConn<'_> {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StateError> {
        sqlite_execute(self.0, sql, params)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StateError> {
        sqlite_query(self.0, sql, params)
    }

    fn batch(&mut self, sql: &str) -> Result<(), StateError> {
        self.0.execute_batch(sql).map_err(super::store::store_error)
    }

    fn engine(&self) -> Engine {
        Engine::Sqlite
    }
}

/// An SQLite transaction.
struct SqliteTx<'a>(rusqlite::Transaction<'a>);

impl Conn for SqliteTx<'_> {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StateError> {
        sqlite_execute(&self.0, sql, params)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StateError> {
        sqlite_query(&self.0, sql, params)
    }

    fn batch(&mut self, sql: &str) -> Result<(), StateError> {
        self.0.execute_batch(sql).map_err(super::store::store_error)
    }

    fn engine(&self) -> Engine {
        Engine::Sqlite
    }
}
