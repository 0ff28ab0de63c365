//! The PostgreSQL back end, for two or three daemons sharing one state: the connection (a
//! direct session served by a thread of its own, so the synchronous store works from any
//! task), its settings (`sslmode` as libpq defines it, the password from a systemd credential
//! or a passfile and never from the URL), and the schema, created or upgraded under an
//! advisory lock so daemons starting together never race.

use super::StateError;
use super::db::{Conn, Db, Engine, Job, Row, Value};
use super::store::Store;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// The schema version this binary writes in PostgreSQL.
const SCHEMA_VERSION: i64 = 1;

/// The whole schema: SQLite's tables at its version 11 (every integer 64-bit; `replacements`
/// has the `rowid` column SQLite gives every table), and the leases.
const SCHEMA: &str = "
CREATE TABLE journal (id BIGSERIAL PRIMARY KEY, grp TEXT NOT NULL, intent TEXT NOT NULL,
                      created_at TEXT NOT NULL, settled_at TEXT, outcome TEXT);
CREATE TABLE memory (grp TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE decisions (id BIGSERIAL PRIMARY KEY, grp TEXT NOT NULL, at TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX decisions_by_group ON decisions (grp, id);
CREATE TABLE paused (grp TEXT PRIMARY KEY, since TEXT NOT NULL, reason TEXT);
CREATE TABLE deleted (grp TEXT NOT NULL, droplet BIGINT NOT NULL, since TEXT NOT NULL,
                      PRIMARY KEY (grp, droplet));
CREATE TABLE unlisted (grp TEXT NOT NULL, name TEXT NOT NULL, droplet BIGINT, since TEXT NOT NULL,
                       PRIMARY KEY (grp, name));
CREATE TABLE series (id BIGSERIAL PRIMARY KEY, grp TEXT NOT NULL, droplet BIGINT NOT NULL,
                     labels TEXT NOT NULL, UNIQUE (grp, droplet, labels));
CREATE TABLE samples (series BIGINT NOT NULL, t BIGINT NOT NULL, v BIGINT NOT NULL);
CREATE INDEX samples_by_series ON samples (series, t);
CREATE INDEX samples_by_time ON samples (t);
CREATE TABLE sizes (grp TEXT NOT NULL, minute BIGINT NOT NULL, current BIGINT NOT NULL,
                    desired BIGINT NOT NULL, min BIGINT NOT NULL, max BIGINT NOT NULL,
                    PRIMARY KEY (grp, minute));
CREATE TABLE draining (grp TEXT NOT NULL, droplet BIGINT NOT NULL, since TEXT NOT NULL,
                       deadline TEXT NOT NULL, prepared BIGINT NOT NULL, PRIMARY KEY (grp, droplet));
CREATE TABLE replacements (rowid BIGSERIAL, grp TEXT NOT NULL, old BIGINT NOT NULL,
                           new_name TEXT NOT NULL, reason TEXT NOT NULL, started TEXT NOT NULL,
                           phase TEXT NOT NULL, failure TEXT, ended TEXT, outcome TEXT,
                           acknowledged BIGINT NOT NULL DEFAULT 0);
CREATE INDEX replacements_by_group ON replacements (grp, started);
CREATE TABLE refresh_paused (grp TEXT PRIMARY KEY, since TEXT NOT NULL);
CREATE TABLE leases (grp TEXT PRIMARY KEY, holder TEXT NOT NULL, token BIGINT NOT NULL,
                     expires_at TIMESTAMPTZ NOT NULL);
";

/// The tables `state migrate` copies, in order, with their columns.
pub const TABLES: &[(&str, &str)] = &[
    (
        "journal",
        "id, grp, intent, created_at, settled_at, outcome",
    ),
    ("memory", "grp, body"),
    ("decisions", "id, grp, at, body"),
    ("paused", "grp, since, reason"),
    ("deleted", "grp, droplet, since"),
    ("unlisted", "grp, name, droplet, since"),
    ("series", "id, grp, droplet, labels"),
    ("samples", "series, t, v"),
    ("sizes", "grp, minute, current, desired, min, max"),
    ("draining", "grp, droplet, since, deadline, prepared"),
    (
        "replacements",
        "grp, old, new_name, reason, started, phase, failure, ended, outcome, acknowledged",
    ),
    ("refresh_paused", "grp, since"),
];

/// The advisory lock key under which the schema is created or upgraded.
const SCHEMA_LOCK: i64 = 0x646f_7363_616c_6572; // "doscaler"

/// How long one statement may run on the server, and how long a caller waits for an answer.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

/// The systemd credential holding the database password.
pub const PASSWORD_CREDENTIAL: &str = "postgres-password";

/// Connects to `url`, creates or upgrades the schema, and returns the store.
pub fn open(url: &str, credentials_dir: Option<&Path>) -> Result<Store, StateError> {
    let settings = Settings::parse(url, credentials_dir)?;
    let described = settings.described.clone();
    let connection = Connection::start(settings)?;
    connection.run(Box::new(migrate), true)?;
    let store = Store::over(Db::Postgres(connection), described, None);
    store.prune()?;
    Ok(store)
}

fn migrate(conn: &mut dyn Conn) -> Result<(), StateError> {
    conn.execute(
        "SELECT pg_advisory_xact_lock(?1)::text",
        &[SCHEMA_LOCK.into()],
    )?;
    conn.batch("CREATE TABLE IF NOT EXISTS do_scaler_schema (version BIGINT NOT NULL)")?;
    let version = conn
        .query("SELECT version FROM do_scaler_schema", &[])?
        .first()
        .map(|row| row.int(0))
        .transpose()?;
    match version {
        None => {
            conn.batch(SCHEMA)?;
            conn.execute(
                "INSERT INTO do_scaler_schema (version) VALUES (?1)",
                &[SCHEMA_VERSION.into()],
            )?;
            Ok(())
        }
        Some(version) if version > SCHEMA_VERSION => Err(StateError::Store(format!(
            "the PostgreSQL state has schema version {version}, newer than this do-scaler ({SCHEMA_VERSION}): upgrade do-scaler on every node"
        ))),
        Some(_) => Ok(()),
    }
}

/// How TLS is used, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never.
    Disable,
    /// Plain first; TLS only if the server insists.
    Allow,
    /// TLS if the server offers it, unverified (libpq's default).
    Prefer,
    /// TLS always, unverified (verified as `verify-ca` when `sslrootcert` is given).
    Require,
    /// TLS always; the server's certificate must chain to `sslrootcert`.
    VerifyCa,
    /// As `verify-ca`, and the certificate must name the host.
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> Option<SslMode> {
        Some(match text {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }
}

/// A parsed and checked `state` URL.
#[derive(Clone)]
pub struct Settings {
    config: postgres::Config,
    /// The TLS mode.
    pub ssl_mode: SslMode,
    /// The CA file the server's certificate must chain to.
    pub root_cert: Option<PathBuf>,
    /// The URL without its query, for messages.
    pub described: String,
}

fn bad(url_text: &str, why: impl std::fmt::Display) -> StateError {
    StateError::Store(format!("state `{url_text}`: {why}"))
}

impl Settings {
    /// Parses `url`, takes the password from the credential or a passfile, and checks the
    /// TLS settings. A password inside the URL is refused: the URL lives in a config file.
    pub fn parse(url: &str, credentials_dir: Option<&Path>) -> Result<Settings, StateError> {
        let parsed = url::Url::parse(url).map_err(|e| bad("postgres://…", e))?;
        let mut shown = parsed.clone();
        shown.set_query(None);
        let _ = shown.set_password(None);
        let described = shown.to_string();
        if parsed.password().is_some() {
            return Err(bad(
                &described,
                format!(
                    "the URL holds a password, and the URL lives in a configuration file: remove it and put the password in the systemd credential `{PASSWORD_CREDENTIAL}` (LoadCredential=) or a passfile (mode 0600)"
                ),
            ));
        }
        let mut ssl_mode = SslMode::Prefer;
        let mut root_cert = None;
        let mut passfile = None;
        let mut kept = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in parsed.query_pairs() {
            match key.as_ref() {
                "sslmode" => {
                    ssl_mode = SslMode::parse(&value).ok_or_else(|| {
                        bad(
                            &described,
                            format!(
                                "sslmode `{value}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
                            ),
                        )
                    })?
                }
                "sslrootcert" => root_cert = Some(PathBuf::from(value.as_ref())),
                "passfile" => passfile = Some(PathBuf::from(value.as_ref())),
                "password" => {
                    return Err(bad(
                        &described,
                        format!(
                            "`password=` puts the password in a configuration file: use the systemd credential `{PASSWORD_CREDENTIAL}` or a passfile"
                        ),
                    ));
                }
                _ => {
                    kept.append_pair(&key, &value);
                }
            }
        }
        if matches!(ssl_mode, SslMode::VerifyCa | SslMode::VerifyFull) && root_cert.is_none() {
            return Err(bad(
                &described,
                "sslmode verify-ca and verify-full need `sslrootcert=` naming the CA file (for Managed PostgreSQL, its \"CA certificate\" download)",
            ));
        }
        let mut rebuilt = parsed.clone();
        let query = kept.finish();
        rebuilt.set_query((!query.is_empty()).then_some(query.as_str()));
        let mut config: postgres::Config =
            rebuilt.as_str().parse().map_err(|e| bad(&described, e))?;
        config
            .connect_timeout(Duration::from_secs(5))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .tcp_user_timeout(Duration::from_secs(15))
            .application_name("do-scaler")
            .options(&format!(
                "-c statement_timeout={}",
                STATEMENT_TIMEOUT.as_millis()
            ));
        if config.get_ports().contains(&25061) {
            tracing::warn!(
                state = %described,
                "port 25061 is a DigitalOcean connection pool; do-scaler needs a direct connection (port 25060)"
            );
        }
        if let Some(password) = find_password(&config, credentials_dir, passfile, &described)? {
            config.password(password);
        }
        Ok(Settings {
            config,
            ssl_mode,
            root_cert,
            described,
        })
    }

    fn connect(&self) -> Result<postgres::Client, StateError> {
        let fail = |e: postgres::Error| {
            StateError::Store(format!("cannot connect to {}: {e}", self.described))
        };
        let mut config = self.config.clone();
        match self.ssl_mode {
            SslMode::Disable => config.connect(postgres::NoTls).map_err(fail),
            SslMode::Allow => config.connect(postgres::NoTls).or_else(|_| {
                config.ssl_mode(postgres::config::SslMode::Require);
                config.connect(self.tls()?).map_err(fail)
            }),
            SslMode::Prefer => {
                config.ssl_mode(postgres::config::SslMode::Prefer);
                config.connect(self.tls()?).map_err(fail)
            }
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                config.ssl_mode(postgres::config::SslMode::Require);
                config.connect(self.tls()?).map_err(fail)
            }
        }
    }

    fn tls(&self) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StateError> {
        super::postgres_tls::connector(self.ssl_mode, self.root_cert.as_deref())
            .map_err(|e| bad(&self.described, e))
    }
}

/// The password: the systemd credential first, then the passfile (`passfile=`, `PGPASSFILE`,
/// `~/.pgpass`), which must not be readable by others.
fn find_password(
    config: &postgres::Config,
    credentials_dir: Option<&Path>,
    passfile: Option<PathBuf>,
    described: &str,
) -> Result<Option<Vec<u8>>, StateError> {
    if let Some(dir) = credentials_dir {
        // As named, or as the unit's directory load names it (`do-scaler_postgres-password`).
        let path = crate::config::credentials::credential_path(dir, PASSWORD_CREDENTIAL);
        if let Ok(text) = std::fs::read_to_string(&path) {
            return Ok(Some(
                text.trim_end_matches(['\r', '\n']).as_bytes().to_vec(),
            ));
        }
    }
    let explicit = passfile.is_some() || std::env::var_os("PGPASSFILE").is_some();
    let path = passfile
        .or_else(|| std::env::var_os("PGPASSFILE").map(PathBuf::from))
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".pgpass")));
    let Some(path) = path else {
        return Ok(None);
    };
    let metadata = match std::fs::metadata(&path) {
        Ok(metadata) => metadata,
        Err(_) if !explicit => return Ok(None),
        Err(e) => return Err(bad(described, format!("passfile {}: {e}", path.display()))),
    };
    use std::os::unix::fs::PermissionsExt;
    if metadata.permissions().mode() & 0o077 != 0 {
        return Err(bad(
            described,
            format!(
                "passfile {} can be read by others: `chmod 600 {}`",
                path.display(),
                path.display()
            ),
        ));
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| bad(described, format!("passfile {}: {e}", path.display())))?;
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "localhost".to_string(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().unwrap_or_default().to_string();
    let database = config.get_dbname().unwrap_or(&user).to_string();
    Ok(passfile_password(&text, [&host, &port, &database, &user]).map(String::into_bytes))
}

/// The password of the first passfile line matching `host:port:database:user` (`*` matches
/// anything; `\:` and `\\` escape), as libpq reads `.pgpass`.
pub fn passfile_password(text: &str, wanted: [&str; 4]) -> Option<String> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => field.extend(chars.next()),
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut field)),
                c => field.push(c),
            }
        }
        fields.push(field);
        if fields.len() == 5
            && fields[..4]
                .iter()
                .zip(wanted)
                .all(|(have, want)| have == "*" || have == want)
        {
            return fields.pop();
        }
    }
    None
}

/// The PostgreSQL connection: a thread owns the session and runs each job in turn, so the
/// synchronous client never runs inside the daemon's async runtime. A lost session is opened
/// again for the next job.
pub struct Connection {
    jobs: mpsc::Sender<Work>,
    described: String,
}

type Work = Box<dyn FnOnce(&mut Worker) + Send>;

struct Worker {
    settings: Settings,
    client: Option<postgres::Client>,
    /// Statements prepared on this session, by their text: each is parsed once, so a
    /// statement costs one round trip instead of two.
    statements: std::collections::HashMap<String, postgres::Statement>,
}

/// Prepared statements kept per session before the cache starts afresh (the sample inserts'
/// last batch varies in size).
const STATEMENTS_KEPT: usize = 128;

impl Connection {
    /// Starts the connection's thread and connects once on it (so a wrong URL fails at start;
    /// the synchronous client never runs on an async runtime's thread).
    fn start(settings: Settings) -> Result<Connection, StateError> {
        let described = settings.described.clone();
        let (jobs, inbox) = mpsc::channel::<Work>();
        let (ready, connected) = mpsc::channel();
        std::thread::Builder::new()
            .name("do-scaler-postgres".into())
            .spawn(move || {
                let client = match settings.connect() {
                    Ok(client) => client,
                    Err(error) => {
                        let _ = ready.send(Err(error));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                let mut worker = Worker {
                    settings,
                    client: Some(client),
                    statements: std::collections::HashMap::new(),
                };
                while let Ok(work) = inbox.recv() {
                    work(&mut worker);
                }
            })
            .map_err(|e| StateError::Store(format!("cannot start the PostgreSQL thread: {e}")))?;
        connected
            .recv()
            .map_err(|_| StateError::Store("the PostgreSQL connection's thread ended".into()))??;
        Ok(Connection { jobs, described })
    }

    /// Runs `job` on the session (in a transaction when asked) and waits for its answer.
    pub(super) fn run<T: Send + 'static>(
        &self,
        job: Job<T>,
        transaction: bool,
    ) -> Result<T, StateError> {
        let (reply, answer) = mpsc::channel();
        let work: Work = Box::new(move |worker: &mut Worker| {
            let _ = reply.send(worker.run(job, transaction));
        });
        self.jobs
            .send(work)
            .map_err(|_| StateError::Store("the PostgreSQL connection's thread ended".into()))?;
        answer.recv_timeout(ANSWER_TIMEOUT).map_err(|_| {
            StateError::Store(format!(
                "{} did not answer within {}s",
                self.described,
                ANSWER_TIMEOUT.as_secs()
            ))
        })?
    }
}

impl Worker {
    fn run<T>(&mut self, job: Job<T>, transaction: bool) -> Result<T, StateError> {
        let client = match self.client.take() {
            Some(client) if !client.is_closed() => client,
            _ => {
                // A new session: statements prepared on the old one are gone with it.
                self.statements.clear();
                self.settings.connect()?
            }
        };
        let client = self.client.insert(client);
        if self.statements.len() > STATEMENTS_KEPT {
            self.statements.clear();
        }
        let statements = &mut self.statements;
        if !transaction {
            return job(&mut PgConn(client, statements));
        }
        let mut tx = client.transaction().map_err(pg_error)?;
        let value = job(&mut PgConn(&mut tx, statements))?;
        tx.commit().map_err(pg_error)?;
        Ok(value)
    }
}

fn pg_error(error: postgres::Error) -> StateError {
    let detail = error
        .as_db_error()
        .map(|db| format!("{}: {}", db.code().code(), db.message()));
    StateError::Store(match detail {
        Some(detail) => format!("PostgreSQL: {detail}"),
        None => format!("PostgreSQL: {error}"),
    })
}

/// `?N` parameters as PostgreSQL's `$N`.
pub fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

struct PgConn<'a, C: postgres::GenericClient>(
    &'a mut C,
    &'a mut std::collections::HashMap<String, postgres::Statement>,
);

impl<C: postgres::GenericClient> PgConn<'_, C> {
    /// The statement for `sql`, prepared once per session.
    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, StateError> {
        if let Some(statement) = self.1.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self
            .0
            .prepare(placeholders(sql).as_str())
            .map_err(pg_error)?;
        self.1.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }
}

impl<C: postgres::GenericClient> Conn for PgConn<'_, C> {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StateError> {
        let statement = self.statement(sql)?;
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
            params.iter().map(|p| p as _).collect();
        self.0.execute(&statement, &refs).map_err(pg_error)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StateError> {
        let statement = self.statement(sql)?;
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
            params.iter().map(|p| p as _).collect();
        let rows = self.0.query(&statement, &refs).map_err(pg_error)?;
        rows.iter().map(row_values).collect()
    }

    fn batch(&mut self, sql: &str) -> Result<(), StateError> {
        self.0.batch_execute(sql).map_err(pg_error)
    }

    fn engine(&self) -> Engine {
        Engine::Postgres
    }
}

fn row_values(row: &postgres::Row) -> Result<Row, StateError> {
    use postgres::types::Type;
    let mut values = Vec::with_capacity(row.len());
    for (index, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let value = if *ty == Type::INT8 {
            row.try_get::<_, Option<i64>>(index)
                .map(|v| v.map_or(Value::Null, Value::Int))
        } else if *ty == Type::INT4 {
            row.try_get::<_, Option<i32>>(index)
                .map(|v| v.map_or(Value::Null, |n| Value::Int(i64::from(n))))
        } else if *ty == Type::INT2 {
            row.try_get::<_, Option<i16>>(index)
                .map(|v| v.map_or(Value::Null, |n| Value::Int(i64::from(n))))
        } else if *ty == Type::BOOL {
            row.try_get::<_, Option<bool>>(index)
                .map(|v| v.map_or(Value::Null, |b| Value::Int(i64::from(b))))
        } else if *ty == Type::FLOAT8 {
            row.try_get::<_, Option<f64>>(index)
                .map(|v| v.map_or(Value::Null, Value::Real))
        } else {
            row.try_get::<_, Option<String>>(index)
                .map(|v| v.map_or(Value::Null, Value::Text))
        };
        values.push(
            value.map_err(|e| StateError::Store(format!("column `{}`: {e}", column.name())))?,
        );
    }
    Ok(Row(values))
}

impl postgres::types::ToSql for Value {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::Type;
        match self {
            Value::Null => Ok(postgres::types::IsNull::Yes),
            Value::Int(n) if *ty == Type::INT4 => i32::try_from(*n)?.to_sql(ty, out),
            Value::Int(n) if *ty == Type::INT2 => i16::try_from(*n)?.to_sql(ty, out),
            Value::Int(n) if *ty == Type::FLOAT8 => (*n as f64).to_sql(ty, out),
            Value::Int(n) if *ty == Type::BOOL => (*n != 0).to_sql(ty, out),
            Value::Int(n) => n.to_sql(ty, out),
            Value::Real(x) => x.to_sql(ty, out),
            Value::Text(text) => text.as_str().to_sql(ty, out),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// Whether `text` is a PostgreSQL `state` URL.
pub fn is_url(text: &str) -> bool {
    text.starts_with("postgres://") || text.starts_with("postgresql://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_become_dollar_numbers() {
        assert_eq!(
            placeholders("SELECT ?1, '?', ?12 WHERE a = ?"),
            "SELECT $1, '?', $12 WHERE a = ?"
        );
    }

    #[test]
    fn passfile_lines_match_as_libpq_reads_them() {
        let text = "# comment\nother:5432:*:*:nope\ndb.example:25060:*:doadmin:s3cr\\:et\n*:*:*:*:fallback\n";
        assert_eq!(
            passfile_password(text, ["db.example", "25060", "defaultdb", "doadmin"]).as_deref(),
            Some("s3cr:et")
        );
        assert_eq!(
            passfile_password(text, ["x", "1", "d", "u"]).as_deref(),
            Some("fallback")
        );
        assert_eq!(passfile_password("a:1:d:u:p\n", ["b", "1", "d", "u"]), None);
    }

    #[test]
    fn a_password_in_the_url_is_refused_without_echoing_it() {
        for url in [
            "postgres://doadmin:hunter2@db.example:25060/defaultdb",
            "postgres://doadmin@db.example:25060/defaultdb?password=hunter2",
        ] {
            let error = Settings::parse(url, None).err().unwrap().to_string();
            assert!(!error.contains("hunter2"), "{error}");
            assert!(error.contains(PASSWORD_CREDENTIAL), "{error}");
        }
    }

    #[test]
    fn sslmode_is_checked_and_verify_modes_need_a_ca() {
        let error = Settings::parse("postgres://u@h/db?sslmode=maybe", None)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("verify-full"), "{error}");
        let error = Settings::parse("postgres://u@h/db?sslmode=verify-full", None)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("sslrootcert"), "{error}");
        let settings = Settings::parse("postgres://u@h/db", None).unwrap();
        assert_eq!(settings.ssl_mode, SslMode::Prefer, "libpq's default");
        let settings = Settings::parse(
            "postgresql://u@h/db?sslmode=verify-ca&sslrootcert=/ca.crt",
            None,
        )
        .unwrap();
        assert_eq!(settings.ssl_mode, SslMode::VerifyCa);
        assert_eq!(settings.root_cert.as_deref(), Some(Path::new("/ca.crt")));
        assert_eq!(settings.described, "postgresql://u@h/db");
    }

    #[test]
    fn the_credential_comes_before_any_passfile() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PASSWORD_CREDENTIAL), "from-credential\n").unwrap();
        let settings = Settings::parse("postgres://u@h/db", Some(dir.path())).unwrap();
        assert_eq!(
            settings.config.get_password(),
            Some(&b"from-credential"[..])
        );
    }

    #[test]
    fn the_credential_is_found_under_the_units_directory_name_too() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("do-scaler_postgres-password"), "loaded").unwrap();
        let settings = Settings::parse("postgres://u@h/db", Some(dir.path())).unwrap();
        assert_eq!(settings.config.get_password(), Some(&b"loaded"[..]));
    }

    #[test]
    fn a_passfile_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgpass");
        std::fs::write(&path, "*:*:*:*:pw\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let url = format!("postgres://u@h/db?passfile={}", path.display());
        let error = Settings::parse(&url, None).err().unwrap().to_string();
        assert!(error.contains("chmod 600"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let settings = Settings::parse(&url, None).unwrap();
        assert_eq!(settings.config.get_password(), Some(&b"pw"[..]));
    }
}
