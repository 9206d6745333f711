//! [`LockError`]: the error vocabulary shared by the lock table, the gRPC server and client and
//! the lock runner, and its mapping to and from gRPC statuses (locket.md's error table).

use std::time::Duration;

use tonic::{Code, Status};

/// Why a lock operation failed.
///
/// The first five variants display as Locket's wire messages (`lock-collision`, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// The key is held by a different owner (Lock), or Release by a non-owner.
    #[error("lock-collision")]
    Collision,
    /// Fetch of a missing key (or of a row with an empty owner).
    #[error("resource-not-found")]
    NotFound,
    /// `ttl_in_seconds` ≤ 0.
    #[error("invalid-ttl")]
    InvalidTtl,
    /// Empty owner.
    #[error("invalid-owner")]
    InvalidOwner,
    /// Unknown or inconsistent type / type code.
    #[error("invalid-type")]
    InvalidType,
    /// The store cannot be reached: database down, Locket server unreachable.
    #[error("lock store unavailable: {0}")]
    Unavailable(String),
    /// The call did not finish within its timeout.
    #[error("lock call timed out after {0:?}")]
    Timeout(Duration),
    /// Bad connection string, driver or TLS material.
    #[error("invalid lock store configuration: {0}")]
    Config(String),
    /// Any other failure (unexpected database error, unexpected gRPC status).
    #[error("lock store error: {0}")]
    Internal(String),
}

impl LockError {
    /// The gRPC status the Locket server answers with for this error.
    pub fn to_status(&self) -> Status {
        match self {
            LockError::Collision => Status::already_exists("lock-collision"),
            LockError::NotFound => Status::not_found("resource-not-found"),
            LockError::InvalidTtl => Status::invalid_argument("invalid-ttl"),
            LockError::InvalidOwner => Status::invalid_argument("invalid-owner"),
            LockError::InvalidType => Status::not_found("invalid-type"),
            LockError::Unavailable(m) => Status::unavailable(m.clone()),
            LockError::Timeout(d) => Status::deadline_exceeded(format!("timed out after {d:?}")),
            LockError::Config(m) | LockError::Internal(m) => Status::internal(m.clone()),
        }
    }

    /// Interprets a gRPC status received from a Locket server.
    pub fn from_status(status: &Status) -> Self {
        let msg = status.message();
        match status.code() {
            Code::AlreadyExists => LockError::Collision,
            Code::InvalidArgument if msg == "invalid-ttl" => LockError::InvalidTtl,
            Code::InvalidArgument if msg == "invalid-owner" => LockError::InvalidOwner,
            Code::NotFound if msg == "invalid-type" => LockError::InvalidType,
            Code::NotFound => LockError::NotFound,
            Code::Unavailable | Code::Cancelled => LockError::Unavailable(format!(
                "{}: {}",
                status.code(),
                display_status_source(status)
            )),
            Code::DeadlineExceeded => LockError::Timeout(Duration::ZERO),
            // Transport failures (connection reset, TLS alerts) surface as Unknown with a source.
            Code::Unknown if std::error::Error::source(status).is_some() => LockError::Unavailable(
                format!("{}: {}", status.code(), display_status_source(status)),
            ),
            code => LockError::Internal(format!("{code}: {msg}")),
        }
    }

    /// True for failures that say nothing about who holds the lock (store unreachable, timeouts).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            LockError::Unavailable(_) | LockError::Timeout(_) | LockError::Internal(_)
        )
    }
}

fn display_status_source(status: &Status) -> String {
    use std::error::Error;
    let mut out = status.message().to_string();
    let mut src = status.source();
    while let Some(e) = src {
        let s = e.to_string();
        if !out.contains(&s) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&s);
        }
        src = e.source();
    }
    out
}

impl From<Status> for LockError {
    fn from(status: Status) -> Self {
        LockError::from_status(&status)
    }
}
