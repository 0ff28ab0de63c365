//! `do-scaler state migrate`: copies a SQLite state into an empty PostgreSQL one, every table in
//! one transaction, so an operator moving to two daemons keeps the journal, cooldown clocks,
//! decisions, history, pauses, drains and replacements.

use super::db::{Engine, Value};
use super::{StateError, Store};

/// Copies every table of `from` (SQLite) into `to` (PostgreSQL, holding no do-scaler state
/// yet); returns the rows copied per table.
pub fn sqlite_to_postgres(from: &Store, to: &Store) -> Result<Vec<(String, usize)>, StateError> {
    if from.engine() != Engine::Sqlite || to.engine() != Engine::Postgres {
        return Err(StateError::Store(
            "state migrate copies a SQLite file into PostgreSQL: --from PATH --to postgres://…"
                .into(),
        ));
    }
    let mut tables = Vec::new();
    for (table, columns) in super::postgres::TABLES {
        let sql = format!("SELECT {columns} FROM {table}");
        let rows = from.db.run(move |conn| conn.query(&sql, &[]))?;
        tables.push((table.to_string(), columns.to_string(), rows));
    }
    to.db.transaction(move |conn| {
        for table in ["journal", "memory", "decisions", "leases"] {
            let sql = format!("SELECT COUNT(*) FROM {table}");
            let count = conn
                .query_row(&sql, &[])?
                .map_or(Ok(0), |row| row.int(0))?;
            if count > 0 {
                return Err(StateError::Store(format!(
                    "{} already holds do-scaler state ({count} rows in `{table}`): state migrate copies only into an empty database",
                    "the PostgreSQL database"
                )));
            }
        }
        let mut copied = Vec::new();
        for (table, columns, rows) in tables {
            let width = columns.split(',').count();
            let marks: Vec<String> = (1..=width).map(|i| format!("?{i}")).collect();
            let sql = format!(
                "INSERT INTO {table} ({columns}) VALUES ({})",
                marks.join(", ")
            );
            for row in &rows {
                let values: Vec<Value> = row.0.clone();
                conn.execute(&sql, &values)?;
            }
            copied.push((table, rows.len()));
        }
        // Ids were copied as they were: the sequences go on after them.
        for table in ["journal", "decisions", "series"] {
            let sql = format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)::text"
            );
            conn.query(&sql, &[])?;
        }
        Ok(copied)
    })
}
