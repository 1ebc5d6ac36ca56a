//! The queue crate's error type. SQLSTATE codes are mapped to variants here
//! and only here, so callers can branch on what went wrong without parsing
//! messages.

use tokio_postgres::error::SqlState;

/// Result alias for every queue operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong talking to the queue.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database URL could not be parsed or names an unsupported option.
    #[error("invalid database URL: {0}")]
    Config(String),

    /// The server could not be reached or refused the connection.
    #[error("cannot connect to PostgreSQL at {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },

    /// A host name in the URL could not be resolved.
    #[error("cannot resolve database host {host:?}: {message}")]
    Resolve { host: String, message: String },

    /// The job names a queue that was never created.
    #[error("unknown queue {0:?} (create it with `drove queues create {0}`)")]
    UnknownQueue(String),

    /// A queue, job kind or other name is not acceptable.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: &'static str,
    },

    /// A job id that does not exist (or was pruned).
    #[error("job {0} not found")]
    JobNotFound(i64),

    /// The operation does not apply to the job in its current state.
    #[error("job {id} is {state}: {action} needs {needs}")]
    WrongState {
        id: i64,
        state: String,
        action: &'static str,
        needs: &'static str,
    },

    /// The schema has not been migrated, is older than this binary, or
    /// newer in a way this binary cannot use.
    #[error("schema {schema:?} is at version {found}, {}", schema_hint(*.found, *.wanted, *.oldest_reader))]
    SchemaVersion {
        schema: String,
        found: i32,
        /// This binary's version.
        wanted: i32,
        /// The oldest binary's version the schema works with.
        oldest_reader: i32,
    },

    /// The schema's tables are missing.
    #[error("drove tables not found ({0}); run `drove migrate` for this schema")]
    NotMigrated(String),

    /// An operation did not finish within its deadline.
    #[error("{0} timed out")]
    Timeout(&'static str),

    /// Any other database error.
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

fn schema_hint(found: i32, wanted: i32, oldest_reader: i32) -> String {
    if found < wanted {
        format!("this binary needs {wanted} (run `drove migrate`)")
    } else {
        format!(
            "which needs a drove binary for schema {oldest_reader} or later; this one is for {wanted}: upgrade it"
        )
    }
}

impl Error {
    /// True when retrying later may succeed: the connection broke, the server
    /// is restarting or shutting down, or a statement timed out.
    pub fn is_transient(&self) -> bool {
        match self {
            // The server answered with an error (bad password, no such
            // database): retrying will not help, unless it is starting up.
            Error::Connect { source, .. } => source
                .as_db_error()
                .is_none_or(|db| db.code().code().starts_with("57P")),
            Error::Resolve { .. } | Error::Timeout(_) => true,
            Error::Db(e) => {
                e.is_closed()
                    || e.code().is_none()
                    || e.code().is_some_and(|c| {
                        c.code().starts_with("08") // connection exception
                            || c.code().starts_with("57P") // admin/crash shutdown, cannot connect now
                            || *c == SqlState::T_R_SERIALIZATION_FAILURE
                            || *c == SqlState::T_R_DEADLOCK_DETECTED
                            || *c == SqlState::QUERY_CANCELED
                    })
            }
            _ => false,
        }
    }

    /// Maps database errors raised by drove's own SQL to their variants.
    pub(crate) fn from_db(e: tokio_postgres::Error) -> Error {
        if let Some(db) = e.as_db_error() {
            if db.code().code() == "DRV01" {
                let queue = db
                    .message()
                    .split('"')
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
                return Error::UnknownQueue(queue);
            }
            if *db.code() == SqlState::UNDEFINED_TABLE
                || *db.code() == SqlState::INVALID_SCHEMA_NAME
            {
                return Error::NotMigrated(db.message().to_string());
            }
        }
        Error::Db(e)
    }
}

/// `?` on a tokio-postgres call inside this crate goes through [`Error::from_db`].
pub(crate) trait DbResultExt<T> {
    fn db(self) -> Result<T>;
}

impl<T> DbResultExt<T> for std::result::Result<T, tokio_postgres::Error> {
    fn db(self) -> Result<T> {
        self.map_err(Error::from_db)
    }
}
