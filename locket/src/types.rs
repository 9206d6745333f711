//! Plain lock data shared by the SQL table, the server, the client and the runner.

use crate::proto::TypeCode;

/// Type string stored for locks (`models.LockType`).
pub const LOCK_TYPE: &str = "lock";
/// Type string stored for presences (`models.PresenceType`).
pub const PRESENCE_TYPE: &str = "presence";

/// The two kinds of resource Locket stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockType {
    /// An exclusive lock (`"lock"`, `TypeCode::LOCK`).
    Lock,
    /// A presence record (`"presence"`, `TypeCode::PRESENCE`).
    Presence,
}

impl LockType {
    /// The string stored in the `type` column and sent in the deprecated `type` field.
    pub fn as_str(self) -> &'static str {
        match self {
            LockType::Lock => LOCK_TYPE,
            LockType::Presence => PRESENCE_TYPE,
        }
    }

    /// Parses a type string; `None` for anything but `"lock"` / `"presence"`.
    pub fn from_type_str(s: &str) -> Option<Self> {
        match s {
            LOCK_TYPE => Some(LockType::Lock),
            PRESENCE_TYPE => Some(LockType::Presence),
            _ => None,
        }
    }

    /// The protobuf type code.
    pub fn type_code(self) -> TypeCode {
        match self {
            LockType::Lock => TypeCode::Lock,
            LockType::Presence => TypeCode::Presence,
        }
    }

    /// Maps a protobuf type code; `None` for `UNKNOWN`.
    pub fn from_type_code(code: TypeCode) -> Option<Self> {
        match code {
            TypeCode::Lock => Some(LockType::Lock),
            TypeCode::Presence => Some(LockType::Presence),
            TypeCode::Unknown => None,
        }
    }
}

impl std::fmt::Display for LockType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a caller asks to lock: key, owner, value and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// The lock key (`path` column), e.g. `routing_api_lock`.
    pub key: String,
    /// The owner; must be non-empty to lock.
    pub owner: String,
    /// Free-form value stored with the lock.
    pub value: String,
    /// Lock or presence.
    pub lock_type: LockType,
}

impl Resource {
    /// A `lock`-type resource with an empty value.
    pub fn lock(key: impl Into<String>, owner: impl Into<String>) -> Self {
        Resource {
            key: key.into(),
            owner: owner.into(),
            value: String::new(),
            lock_type: LockType::Lock,
        }
    }

    /// A `presence`-type resource.
    pub fn presence(
        key: impl Into<String>,
        owner: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        Resource {
            key: key.into(),
            owner: owner.into(),
            value: value.into(),
            lock_type: LockType::Presence,
        }
    }
}

/// One row of the `locks` table as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRecord {
    /// `path`.
    pub key: String,
    /// `owner` (never empty for rows returned by fetch operations).
    pub owner: String,
    /// `value`.
    pub value: String,
    /// `type` as stored (normally `"lock"` or `"presence"`).
    pub lock_type: String,
    /// `modified_index`: 1 on insert, incremented by each refresh.
    pub modified_index: i64,
    /// `modified_id`: a GUID chosen on insert and kept by refreshes.
    pub modified_id: String,
    /// `ttl` in seconds.
    pub ttl: i64,
}

impl LockRecord {
    /// The protobuf type code of the stored type string (`UNKNOWN` if unrecognised).
    pub fn type_code(&self) -> TypeCode {
        LockType::from_type_str(&self.lock_type)
            .map(LockType::type_code)
            .unwrap_or(TypeCode::Unknown)
    }

    /// The record as a protobuf `Resource` (both `type` and `type_code` filled).
    #[allow(deprecated)]
    pub fn to_proto(&self) -> crate::proto::Resource {
        crate::proto::Resource {
            key: self.key.clone(),
            owner: self.owner.clone(),
            value: self.value.clone(),
            r#type: self.lock_type.clone(),
            type_code: self.type_code() as i32,
        }
    }
}
