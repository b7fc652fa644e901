//! Errors of the model: unknown codes and unparsable times.

/// A code that is not one of the stable codes of its kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{code}` (expected one of: {})", expected.join(", "))]
pub struct UnknownCode {
    /// What kind of code (class, category, protocol, cloud).
    pub kind: &'static str,
    /// The code that was given.
    pub code: String,
    /// The codes that exist.
    pub expected: &'static [&'static str],
}

/// A time value that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimeError {
    /// Not an offset like `+08:00`.
    #[error("invalid UTC offset `{0}` (expected like +08:00, -05:30 or Z)")]
    Offset(String),
    /// Not a date like `2026-11-26`.
    #[error("invalid day `{0}` (expected an existing date as YYYY-MM-DD)")]
    Day(String),
}

/// A device id that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid device id `{id}`: {why}")]
pub struct InvalidDeviceId {
    /// The id as given (cut to 200 characters).
    pub id: String,
    /// What is wrong with it.
    pub why: &'static str,
}
