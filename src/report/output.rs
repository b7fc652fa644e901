//! Where the report goes: stdout, or a file that appears only once the
//! report is complete (written beside it under a temporary name, then
//! renamed), so a failed run never leaves a truncated report behind.

use std::fs::{self, File};
use std::io::{self, BufWriter, Stdout, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The destination of the report; write to it, then [`Output::finish`].
pub(super) struct Output {
    sink: Sink,
    /// Shown in write errors: `stdout` or the file's path.
    name: String,
}

enum Sink {
    Stdout(BufWriter<Stdout>),
    File {
        writer: BufWriter<File>,
        pending: Pending,
    },
}

/// A temporary file that is removed unless it was renamed into place.
struct Pending {
    tmp: PathBuf,
    dest: PathBuf,
    done: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl Output {
    /// Standard output.
    pub(super) fn stdout() -> Self {
        Output {
            sink: Sink::Stdout(BufWriter::new(io::stdout())),
            name: "stdout".to_owned(),
        }
    }

    /// The file `dest`, created on [`Output::finish`]; until then the
    /// report is written to a hidden file in the same directory.
    ///
    /// # Errors
    /// `dest` names no file, or the temporary file cannot be created.
    pub(super) fn file(dest: &Path) -> anyhow::Result<Self> {
        let name = dest
            .file_name()
            .with_context(|| format!("--output: `{}` names no file", dest.display()))?;
        let tmp = dest.with_file_name(format!(
            ".{}.{}.partial",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = File::create(&tmp)
            .with_context(|| format!("--output: cannot create {}", tmp.display()))?;
        Ok(Output {
            sink: Sink::File {
                writer: BufWriter::new(file),
                pending: Pending {
                    tmp,
                    dest: dest.to_owned(),
                    done: false,
                },
            },
            name: dest.display().to_string(),
        })
    }

    /// Flushes, and for a file moves it into place.
    ///
    /// # Errors
    /// The report cannot be written out or the file cannot be renamed.
    pub(super) fn finish(self) -> anyhow::Result<()> {
        let name = self.name;
        match self.sink {
            Sink::Stdout(mut writer) => writer
                .flush()
                .with_context(|| format!("cannot write the report to {name}")),
            Sink::File {
                writer,
                mut pending,
            } => {
                let file = writer
                    .into_inner()
                    .map_err(|e| e.into_error())
                    .with_context(|| format!("cannot write the report to {name}"))?;
                file.sync_all()
                    .with_context(|| format!("cannot write the report to {name}"))?;
                fs::rename(&pending.tmp, &pending.dest).with_context(|| {
                    format!(
                        "cannot move {} to {}",
                        pending.tmp.display(),
                        pending.dest.display()
                    )
                })?;
                pending.done = true;
                Ok(())
            }
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let result = match &mut self.sink {
            Sink::Stdout(w) => w.write(buf),
            Sink::File { writer, .. } => writer.write(buf),
        };
        result.map_err(|e| named(e, &self.name))
    }

    fn flush(&mut self) -> io::Result<()> {
        let result = match &mut self.sink {
            Sink::Stdout(w) => w.flush(),
            Sink::File { writer, .. } => writer.flush(),
        };
        result.map_err(|e| named(e, &self.name))
    }
}

/// An I/O error that says which destination failed.
fn named(error: io::Error, name: &str) -> io::Error {
    io::Error::new(
        error.kind(),
        format!("cannot write the report to {name}: {error}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_appears_only_when_finished() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("report.md");
        let mut out = Output::file(&dest).unwrap();
        out.write_all("# 表 1.1\n".as_bytes()).unwrap();
        assert!(!dest.exists());
        out.finish().unwrap();
        assert_eq!(fs::read_to_string(&dest).unwrap(), "# 表 1.1\n");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no leftovers");
    }

    #[test]
    fn a_failed_report_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("report.md");
        fs::write(&dest, "previous report").unwrap();
        let mut out = Output::file(&dest).unwrap();
        out.write_all(b"half a rep").unwrap();
        drop(out);
        assert_eq!(fs::read_to_string(&dest).unwrap(), "previous report");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no leftovers");
    }

    #[test]
    fn a_missing_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("no-such-dir").join("report.md");
        let err = Output::file(&dest).err().unwrap().to_string();
        assert!(err.starts_with("--output: cannot create "), "{err}");
        assert!(err.contains("no-such-dir"), "{err}");
    }
}
