//! Errors a client can see: a PostgreSQL SQLSTATE, a message a person can act on,
//! and optionally a detail and a hint. Everything that reaches a client passes
//! through [`PgError`], so every failure becomes an `ErrorResponse`.

use std::fmt;

/// SQLSTATE codes used across the crate, named as in PostgreSQL's errcodes.
pub mod code {
    pub const SUCCESSFUL_COMPLETION: &str = "00000";
    pub const CONNECTION_FAILURE: &str = "08006";
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const INVALID_PARAMETER_VALUE: &str = "22023";
    pub const DIVISION_BY_ZERO: &str = "22012";
    pub const INVALID_REGULAR_EXPRESSION: &str = "2201B";
    pub const INVALID_ARGUMENT_FOR_LOG: &str = "2201E";
    pub const INVALID_ARGUMENT_FOR_POWER: &str = "2201F";
    pub const AMBIGUOUS_COLUMN: &str = "42702";
    pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
    pub const BAD_COPY_FILE_FORMAT: &str = "22P04";
    pub const CARDINALITY_VIOLATION: &str = "21000";
    pub const STRING_DATA_RIGHT_TRUNCATION: &str = "22001";
    pub const DEPENDENT_OBJECTS_STILL_EXIST: &str = "2BP01";
    pub const INVALID_BINARY_REPRESENTATION: &str = "22P03";
    pub const NUMERIC_VALUE_OUT_OF_RANGE: &str = "22003";
    pub const DATETIME_FIELD_OVERFLOW: &str = "22008";
    pub const INVALID_DATETIME_FORMAT: &str = "22007";
    pub const INTEGRITY_CONSTRAINT_VIOLATION: &str = "23000";
    pub const NOT_NULL_VIOLATION: &str = "23502";
    pub const FOREIGN_KEY_VIOLATION: &str = "23503";
    pub const UNIQUE_VIOLATION: &str = "23505";
    pub const CHECK_VIOLATION: &str = "23514";
    pub const INVALID_CURSOR_NAME: &str = "34000";
    pub const ACTIVE_SQL_TRANSACTION: &str = "25001";
    pub const NO_ACTIVE_SQL_TRANSACTION: &str = "25P01";
    pub const IN_FAILED_SQL_TRANSACTION: &str = "25P02";
    pub const INVALID_SQL_STATEMENT_NAME: &str = "26000";
    pub const INVALID_AUTHORIZATION_SPECIFICATION: &str = "28000";
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const INVALID_CATALOG_NAME: &str = "3D000";
    pub const SERIALIZATION_FAILURE: &str = "40001";
    pub const SYNTAX_ERROR: &str = "42601";
    pub const UNDEFINED_COLUMN: &str = "42703";
    pub const UNDEFINED_FUNCTION: &str = "42883";
    pub const UNDEFINED_TABLE: &str = "42P01";
    pub const UNDEFINED_OBJECT: &str = "42704";
    pub const DUPLICATE_TABLE: &str = "42P07";
    pub const DUPLICATE_PREPARED_STATEMENT: &str = "42P05";
    pub const DATATYPE_MISMATCH: &str = "42804";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    pub const DISK_FULL: &str = "53100";
    pub const OUT_OF_MEMORY: &str = "53200";
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
    pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
    pub const LOCK_NOT_AVAILABLE: &str = "55P03";
    pub const QUERY_CANCELED: &str = "57014";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
    pub const IDLE_SESSION_TIMEOUT: &str = "57P05";
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    pub const CONFIG_FILE_ERROR: &str = "F0000";
    pub const DATA_CORRUPTED: &str = "XX001";
    pub const INTERNAL_ERROR: &str = "XX000";

    /// The static code equal to `s` among those used by unidb (`XX000` otherwise).
    /// The constant for a SQLSTATE received as text (from a function error or a
    /// server), so that it can be sent on; unknown codes become `XX000`.
    pub fn lookup(s: &str) -> &'static str {
        const ALL: &[&str] = &[
            SUCCESSFUL_COMPLETION,
            CONNECTION_FAILURE,
            PROTOCOL_VIOLATION,
            FEATURE_NOT_SUPPORTED,
            INVALID_PARAMETER_VALUE,
            DIVISION_BY_ZERO,
            INVALID_REGULAR_EXPRESSION,
            INVALID_ARGUMENT_FOR_LOG,
            INVALID_ARGUMENT_FOR_POWER,
            AMBIGUOUS_COLUMN,
            INVALID_TEXT_REPRESENTATION,
            BAD_COPY_FILE_FORMAT,
            CARDINALITY_VIOLATION,
            STRING_DATA_RIGHT_TRUNCATION,
            DEPENDENT_OBJECTS_STILL_EXIST,
            INVALID_BINARY_REPRESENTATION,
            NUMERIC_VALUE_OUT_OF_RANGE,
            DATETIME_FIELD_OVERFLOW,
            INVALID_DATETIME_FORMAT,
            INTEGRITY_CONSTRAINT_VIOLATION,
            NOT_NULL_VIOLATION,
            FOREIGN_KEY_VIOLATION,
            UNIQUE_VIOLATION,
            CHECK_VIOLATION,
            INVALID_CURSOR_NAME,
            ACTIVE_SQL_TRANSACTION,
            NO_ACTIVE_SQL_TRANSACTION,
            IN_FAILED_SQL_TRANSACTION,
            INVALID_SQL_STATEMENT_NAME,
            INVALID_AUTHORIZATION_SPECIFICATION,
            INVALID_PASSWORD,
            INVALID_CATALOG_NAME,
            SERIALIZATION_FAILURE,
            SYNTAX_ERROR,
            UNDEFINED_COLUMN,
            UNDEFINED_FUNCTION,
            UNDEFINED_TABLE,
            UNDEFINED_OBJECT,
            DUPLICATE_TABLE,
            DUPLICATE_PREPARED_STATEMENT,
            DATATYPE_MISMATCH,
            TOO_MANY_CONNECTIONS,
            DISK_FULL,
            OUT_OF_MEMORY,
            PROGRAM_LIMIT_EXCEEDED,
            OBJECT_NOT_IN_PREREQUISITE_STATE,
            LOCK_NOT_AVAILABLE,
            QUERY_CANCELED,
            ADMIN_SHUTDOWN,
            CANNOT_CONNECT_NOW,
            IDLE_SESSION_TIMEOUT,
            INSUFFICIENT_PRIVILEGE,
            CONFIG_FILE_ERROR,
            DATA_CORRUPTED,
            INTERNAL_ERROR,
        ];
        ALL.iter()
            .find(|c| **c == s)
            .copied()
            .unwrap_or(INTERNAL_ERROR)
    }
}

/// Severity of an error sent to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session continues.
    Error,
    /// The session is being closed by the server.
    Fatal,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// An error as a PostgreSQL client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl PgError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        PgError {
            severity: Severity::Error,
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn fatal(code: &'static str, message: impl Into<String>) -> Self {
        PgError {
            severity: Severity::Fatal,
            ..PgError::new(code, message)
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// `0A000` for a construct that has no faithful translation.
    pub fn unsupported(what: impl fmt::Display) -> Self {
        PgError::new(
            code::FEATURE_NOT_SUPPORTED,
            format!("{what} is not supported"),
        )
    }

    pub fn protocol(message: impl Into<String>) -> Self {
        PgError::fatal(code::PROTOCOL_VIOLATION, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        PgError::new(code::INTERNAL_ERROR, message)
    }

    pub fn canceled() -> Self {
        PgError::new(
            code::QUERY_CANCELED,
            "canceling statement due to user request",
        )
    }
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.severity.as_str(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for PgError {}

pub type PgResult<T> = Result<T, PgError>;
