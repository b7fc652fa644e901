//! Errors of the model: unknown codes, unparsable times, and the
//! configuration error every Fieldlink process reports the same way.

use std::path::{Path, PathBuf};

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

/// A configuration file that cannot be used: every process (registry,
/// gateway) reports it the same way, naming the file and the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key or a bad value.
    #[error("{}{message}", file_prefix(file))]
    Parse {
        /// The file, when known.
        file: Option<PathBuf>,
        /// The parser's message: it names the key and the line.
        message: String,
    },
    /// Values that parse but cannot be used; one line per problem.
    #[error("{}invalid configuration:\n  {}", file_prefix(file), problems.join("\n  "))]
    Invalid {
        /// The file, when known.
        file: Option<PathBuf>,
        /// `key: what is wrong`, one per problem.
        problems: Vec<String>,
    },
}

fn file_prefix(file: &Option<PathBuf>) -> String {
    file.as_ref()
        .map(|f| format!("{}: ", f.display()))
        .unwrap_or_default()
}

impl ConfigError {
    /// The same error, naming the file it came from.
    pub fn in_file(self, path: &Path) -> Self {
        match self {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                file: Some(path.to_owned()),
                message,
            },
            ConfigError::Invalid { problems, .. } => ConfigError::Invalid {
                file: Some(path.to_owned()),
                problems,
            },
            other => other,
        }
    }

    /// Reads a config file's text.
    ///
    /// # Errors
    /// `ConfigError::Read` naming the file.
    pub fn read(path: &Path) -> Result<String, ConfigError> {
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })
    }

    /// A TOML parse error, without a file yet.
    pub fn parse(error: impl std::fmt::Display) -> ConfigError {
        ConfigError::Parse {
            file: None,
            message: error.to_string(),
        }
    }
}
