//! The gateway's own record of what it produced: per sealed batch, one line
//! per device and day, `device_id,day,points` (good or uncertain points, the
//! ones the registry counts), appended right after the batch is spooled.
//! Evaluators and tests reconcile the registry's running logs with it.

use std::io::Write;
use std::path::Path;

use fieldlink_model::{Day, UtcOffset};

/// An open ledger file.
#[derive(Debug)]
pub struct Ledger {
    file: std::fs::File,
    offset: UtcOffset,
    lines: String,
}

impl Ledger {
    /// Opens (appends to) `path`; days are cut at `offset`.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(path: &Path, offset: UtcOffset) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Ledger {
            file,
            offset,
            lines: String::new(),
        })
    }

    /// The offset days are cut at.
    pub fn offset(&self) -> UtcOffset {
        self.offset
    }

    /// Adds a line for the batch being recorded.
    pub(crate) fn add(&mut self, device_id: &str, day: Day, points: u64) {
        use std::fmt::Write as _;
        let _ = writeln!(self.lines, "{device_id},{day},{points}");
    }

    /// Forgets the lines added since the last flush.
    pub(crate) fn discard(&mut self) {
        self.lines.clear();
    }

    /// Appends the lines added since the last flush.
    pub(crate) fn flush(&mut self) -> std::io::Result<()> {
        let result = self.file.write_all(self.lines.as_bytes());
        self.lines.clear();
        result
    }
}
