//! The disk spool: every batch is appended here before it is sent and removed
//! only once the registry has acknowledged it, so an outage or a restart
//! (kill -9 included) loses nothing.
//!
//! Layout: `DIR/streams/<epoch>-<stream id>/<first sequence>.seg`. A stream
//! is one sequence space on the uplink (its id goes in the Hello). Batches
//! are appended to the newest stream; when the uplink comes back with a
//! backlog, the spool starts a new stream for live data and the older ones
//! are replayed beside it, paced. A record is
//! `len u32 LE | crc32 u32 LE | sequence u64 LE | payload` with the CRC over
//! sequence and payload; a torn or corrupted tail found at open is cut off
//! and reported, never a panic. When the spool is full the oldest segment is
//! dropped and counted.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rand::Rng;

use crate::error::SpoolError;

const HEADER: usize = 16;

/// One record's place in a segment.
#[derive(Debug, Clone, Copy)]
struct Entry {
    sequence: u64,
    offset: u64,
    len: u32,
    /// When it was appended (ms since epoch; for recovered records, when the
    /// spool was opened).
    appended_ms: i64,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    bytes: u64,
    entries: Vec<Entry>,
}

/// One sequence space.
#[derive(Debug)]
struct Stream {
    id: String,
    dir: PathBuf,
    segments: VecDeque<Segment>,
    next_sequence: u64,
}

impl Stream {
    fn first_unacked(&self) -> Option<u64> {
        self.segments
            .iter()
            .flat_map(|s| s.entries.first())
            .map(|e| e.sequence)
            .next()
    }

    fn records(&self) -> u64 {
        self.segments.iter().map(|s| s.entries.len() as u64).sum()
    }
}

/// What was dropped to make room.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// Batches dropped.
    pub batches: u64,
    /// Bytes freed.
    pub bytes: u64,
}

/// The spool.
#[derive(Debug)]
pub struct Spool {
    root: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    fsync: bool,
    /// By epoch; the last one takes appends.
    streams: BTreeMap<u64, Stream>,
    file: Option<File>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Spool {
    /// Opens (or creates) the spool under `dir`, recovering every stream.
    ///
    /// # Errors
    /// `SpoolError::Io` when the directory cannot be used.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        segment_bytes: u64,
        fsync: bool,
    ) -> Result<Self, SpoolError> {
        let root = dir.join("streams");
        fs::create_dir_all(&root).map_err(io(&root))?;
        let mut streams = BTreeMap::new();
        for entry in fs::read_dir(&root).map_err(io(&root))? {
            let entry = entry.map_err(io(&root))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((epoch, id)) = name.split_once('-') else {
                continue;
            };
            let Ok(epoch) = epoch.parse::<u64>() else {
                continue;
            };
            let stream = recover_stream(&entry.path(), id)?;
            streams.insert(epoch, stream);
        }
        let mut spool = Spool {
            root,
            max_bytes,
            segment_bytes,
            fsync,
            streams,
            file: None,
        };
        // Remove fully acknowledged (empty) old streams; keep the newest.
        let newest = spool.streams.keys().next_back().copied();
        let empty: Vec<u64> = spool
            .streams
            .iter()
            .filter(|(e, s)| Some(**e) != newest && s.records() == 0)
            .map(|(e, _)| *e)
            .collect();
        for epoch in empty {
            spool.remove_stream(epoch)?;
        }
        if spool.streams.is_empty() {
            spool.new_stream()?;
        }
        Ok(spool)
    }

    fn new_stream(&mut self) -> Result<u64, SpoolError> {
        let epoch = self.streams.keys().next_back().map_or(1, |e| e + 1);
        let id: String = {
            let mut rng = rand::rng();
            (0..16)
                .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
                .collect()
        };
        let dir = self.root.join(format!("{epoch:08}-{id}"));
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        self.streams.insert(
            epoch,
            Stream {
                id,
                dir,
                segments: VecDeque::new(),
                next_sequence: 1,
            },
        );
        self.file = None;
        Ok(epoch)
    }

    fn remove_stream(&mut self, epoch: u64) -> Result<(), SpoolError> {
        if let Some(stream) = self.streams.remove(&epoch) {
            fs::remove_dir_all(&stream.dir).map_err(io(&stream.dir))?;
        }
        Ok(())
    }

    /// Epoch and id of the stream that takes appends.
    pub fn live(&self) -> (u64, String) {
        self.streams
            .iter()
            .next_back()
            .map(|(e, s)| (*e, s.id.clone()))
            .unwrap_or_default()
    }

    /// Epochs and ids of every stream, oldest first.
    pub fn streams(&self) -> Vec<(u64, String)> {
        self.streams
            .iter()
            .map(|(e, s)| (*e, s.id.clone()))
            .collect()
    }

    /// Starts a new live stream if the current one has unacknowledged
    /// batches, so that live data need not wait behind the backlog.
    /// Returns the live epoch.
    ///
    /// # Errors
    /// `SpoolError::Io` when the directory cannot be created.
    pub fn rotate_if_backlog(&mut self) -> Result<u64, SpoolError> {
        let (epoch, _) = self.live();
        let backlog = self.streams.get(&epoch).is_some_and(|s| s.records() > 0);
        if backlog {
            self.new_stream()
        } else {
            Ok(epoch)
        }
    }

    /// Appends a batch (its encoding, without the sequence) to the live
    /// stream; returns its epoch and sequence, and what was dropped to make room.
    ///
    /// # Errors
    /// `SpoolError` when the batch cannot be written.
    pub fn append(&mut self, payload: &[u8]) -> Result<(u64, u64, Dropped), SpoolError> {
        let size = (HEADER + payload.len()) as u64;
        if size > self.segment_bytes {
            return Err(SpoolError::TooLarge {
                size: payload.len(),
                limit: self.segment_bytes,
            });
        }
        let dropped = self.make_room(size)?;
        let (epoch, _) = self.live();
        let segment_bytes = self.segment_bytes;
        let stream = self.streams.get_mut(&epoch).ok_or_else(|| SpoolError::Io {
            path: self.root.clone(),
            source: std::io::Error::other("no live stream"),
        })?;
        let sequence = stream.next_sequence;
        let roll = stream
            .segments
            .back()
            .is_none_or(|s| s.bytes + size > segment_bytes);
        if roll || self.file.is_none() {
            if roll {
                let path = stream.dir.join(format!("{sequence:020}.seg"));
                stream.segments.push_back(Segment {
                    path,
                    bytes: 0,
                    entries: Vec::new(),
                });
            }
            let Some(segment) = stream.segments.back() else {
                unreachable!("a segment was just pushed")
            };
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&segment.path)
                .map_err(io(&segment.path))?;
            self.file = Some(file);
        }
        let Some(segment) = stream.segments.back_mut() else {
            unreachable!("a segment exists")
        };
        let mut record = Vec::with_capacity(HEADER + payload.len());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&sequence.to_le_bytes());
        crc.update(payload);
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc.finalize().to_le_bytes());
        record.extend_from_slice(&sequence.to_le_bytes());
        record.extend_from_slice(payload);
        if let Some(file) = self.file.as_mut() {
            file.write_all(&record).map_err(io(&segment.path))?;
            if self.fsync {
                file.sync_data().map_err(io(&segment.path))?;
            }
        }
        segment.entries.push(Entry {
            sequence,
            offset: segment.bytes,
            len: payload.len() as u32,
            appended_ms: now_ms(),
        });
        segment.bytes += size;
        stream.next_sequence += 1;
        Ok((epoch, sequence, dropped))
    }

    fn make_room(&mut self, size: u64) -> Result<Dropped, SpoolError> {
        let mut dropped = Dropped::default();
        while self.bytes() + size > self.max_bytes {
            let live = self.live().0;
            let Some((&epoch, stream)) = self
                .streams
                .iter_mut()
                .find(|(_, s)| !s.segments.is_empty())
            else {
                break;
            };
            // Never drop the segment being appended to.
            if epoch == live && stream.segments.len() == 1 {
                break;
            }
            if let Some(segment) = stream.segments.pop_front() {
                dropped.batches += segment.entries.len() as u64;
                dropped.bytes += segment.bytes;
                fs::remove_file(&segment.path).map_err(io(&segment.path))?;
            }
        }
        if dropped.batches > 0 {
            tracing::warn!(
                batches = dropped.batches,
                bytes = dropped.bytes,
                "spool full: dropped the oldest batches"
            );
        }
        Ok(dropped)
    }

    /// Drops every batch of stream `epoch` up to `sequence` (acknowledged).
    /// An old stream with nothing left is removed.
    ///
    /// # Errors
    /// `SpoolError::Io` when a segment cannot be removed.
    pub fn ack(&mut self, epoch: u64, sequence: u64) -> Result<(), SpoolError> {
        let live = self.live().0;
        let Some(stream) = self.streams.get_mut(&epoch) else {
            return Ok(());
        };
        loop {
            let removable = epoch != live || stream.segments.len() > 1;
            let Some(segment) = stream.segments.front_mut() else {
                break;
            };
            let keep = segment.entries.partition_point(|e| e.sequence <= sequence);
            if keep == segment.entries.len() && removable {
                let done = stream.segments.pop_front();
                if let Some(done) = done {
                    fs::remove_file(&done.path).map_err(io(&done.path))?;
                }
                continue;
            }
            segment.entries.drain(..keep);
            break;
        }
        // Bytes of a partly acked segment stay until the segment goes.
        if epoch != live && stream.records() == 0 {
            self.remove_stream(epoch)?;
        }
        Ok(())
    }

    /// Reads up to `max` batches of stream `epoch` after `after`, in order.
    ///
    /// # Errors
    /// `SpoolError` when a record cannot be read or fails its checksum.
    pub fn read_after(
        &self,
        epoch: u64,
        after: u64,
        max: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, SpoolError> {
        let mut out = Vec::new();
        let Some(stream) = self.streams.get(&epoch) else {
            return Ok(out);
        };
        for segment in &stream.segments {
            if segment.entries.last().is_none_or(|e| e.sequence <= after) {
                continue;
            }
            let mut file = File::open(&segment.path).map_err(io(&segment.path))?;
            let start = segment.entries.partition_point(|e| e.sequence <= after);
            for entry in &segment.entries[start..] {
                if out.len() >= max {
                    return Ok(out);
                }
                let payload = read_record(&mut file, &segment.path, entry)?;
                out.push((entry.sequence, payload));
            }
        }
        Ok(out)
    }

    /// Highest sequence appended to stream `epoch` (0 for none).
    pub fn last_sequence(&self, epoch: u64) -> u64 {
        self.streams.get(&epoch).map_or(0, |s| s.next_sequence - 1)
    }

    /// Oldest unacknowledged sequence of stream `epoch`.
    pub fn first_unacked(&self, epoch: u64) -> Option<u64> {
        self.streams.get(&epoch).and_then(Stream::first_unacked)
    }

    /// Age in milliseconds of the oldest unacknowledged batch (0 for none).
    pub fn oldest_age_ms(&self) -> u64 {
        let oldest = self
            .streams
            .values()
            .flat_map(|s| &s.segments)
            .flat_map(|s| s.entries.first())
            .map(|e| e.appended_ms)
            .min();
        oldest.map_or(0, |t| u64::try_from(now_ms() - t).unwrap_or(0))
    }

    /// Batches waiting in all streams.
    pub fn batches(&self) -> u64 {
        self.streams.values().map(Stream::records).sum()
    }

    /// Bytes on disk in all streams.
    pub fn bytes(&self) -> u64 {
        self.streams
            .values()
            .flat_map(|s| &s.segments)
            .map(|s| s.bytes)
            .sum()
    }
}

fn now_ms() -> i64 {
    fieldlink_model::now_unix_nanos() / 1_000_000
}

fn read_record(file: &mut File, path: &Path, entry: &Entry) -> Result<Vec<u8>, SpoolError> {
    let mut header = [0u8; HEADER];
    file.seek(SeekFrom::Start(entry.offset)).map_err(io(path))?;
    file.read_exact(&mut header).map_err(io(path))?;
    let mut payload = vec![0u8; entry.len as usize];
    file.read_exact(&mut payload).map_err(io(path))?;
    check_record(&header, &payload).map_err(|why| SpoolError::Corrupted {
        path: path.to_owned(),
        offset: entry.offset,
        why,
    })?;
    Ok(payload)
}

/// Checks a record's CRC; returns its sequence.
fn check_record(header: &[u8; HEADER], payload: &[u8]) -> Result<u64, String> {
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let sequence = u64::from_le_bytes([
        header[8], header[9], header[10], header[11], header[12], header[13], header[14],
        header[15],
    ]);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&sequence.to_le_bytes());
    hasher.update(payload);
    if hasher.finalize() != crc {
        return Err("checksum mismatch".to_owned());
    }
    Ok(sequence)
}

/// Rebuilds a stream's index from its segments, cutting off a torn tail.
fn recover_stream(dir: &Path, id: &str) -> Result<Stream, SpoolError> {
    let opened_ms = now_ms();
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    paths.sort();
    let mut segments = VecDeque::new();
    let mut next_sequence = 1;
    for path in paths {
        let data = fs::read(&path).map_err(io(&path))?;
        let mut entries = Vec::new();
        let mut offset = 0usize;
        let mut cut = None;
        while offset < data.len() {
            let Some(header) = data.get(offset..offset + HEADER) else {
                cut = Some("torn header".to_owned());
                break;
            };
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let Some(payload) = data.get(offset + HEADER..offset + HEADER + len) else {
                cut = Some("torn record".to_owned());
                break;
            };
            let mut fixed = [0u8; HEADER];
            fixed.copy_from_slice(header);
            match check_record(&fixed, payload) {
                Ok(sequence) => {
                    entries.push(Entry {
                        sequence,
                        offset: offset as u64,
                        len: len as u32,
                        appended_ms: opened_ms,
                    });
                    next_sequence = next_sequence.max(sequence + 1);
                    offset += HEADER + len;
                }
                Err(why) => {
                    cut = Some(why);
                    break;
                }
            }
        }
        if let Some(why) = cut {
            tracing::warn!(segment = %path.display(), offset, %why, "spool: cutting off a damaged tail");
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io(&path))?;
            file.set_len(offset as u64).map_err(io(&path))?;
        }
        segments.push_back(Segment {
            path,
            bytes: offset as u64,
            entries,
        });
    }
    Ok(Stream {
        id: id.to_owned(),
        dir: dir.to_owned(),
        segments,
        next_sequence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_read_ack_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20, 4096, false).unwrap();
        let (epoch, id) = spool.live();
        for i in 0..100u8 {
            let (e, seq, dropped) = spool.append(&[i; 100]).unwrap();
            assert_eq!((e, seq, dropped.batches), (epoch, u64::from(i) + 1, 0));
        }
        let read = spool.read_after(epoch, 40, 5).unwrap();
        assert_eq!(
            read.iter().map(|r| r.0).collect::<Vec<_>>(),
            [41, 42, 43, 44, 45]
        );
        assert_eq!(read[0].1, vec![40u8; 100]);
        spool.ack(epoch, 50).unwrap();
        assert_eq!(spool.first_unacked(epoch), Some(51));
        drop(spool);
        // Reopen: unacked batches are still there, same stream id and sequences.
        let mut spool = Spool::open(dir.path(), 1 << 20, 4096, false).unwrap();
        assert_eq!(spool.live(), (epoch, id));
        let rest = spool.read_after(epoch, 50, 1000).unwrap();
        assert!(rest.len() >= 50);
        assert_eq!(rest.last().unwrap().0, 100);
        assert_eq!(spool.append(b"next").unwrap().1, 101);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_earlier_records_survive() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20, 1 << 16, false).unwrap();
        for i in 0..10u8 {
            spool.append(&[i; 50]).unwrap();
        }
        let segment = spool.streams.values().next().unwrap().segments[0]
            .path
            .clone();
        drop(spool);
        let len = fs::metadata(&segment).unwrap().len();
        let file = OpenOptions::new().write(true).open(&segment).unwrap();
        file.set_len(len - 10).unwrap(); // a crash in the middle of the last write
        let mut spool = Spool::open(dir.path(), 1 << 20, 1 << 16, false).unwrap();
        let (epoch, _) = spool.live();
        assert_eq!(spool.read_after(epoch, 0, 100).unwrap().len(), 9);
        assert_eq!(spool.append(b"x").unwrap().1, 10);
    }

    #[test]
    fn a_full_spool_drops_the_oldest_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 8192, 4096, false).unwrap();
        let mut dropped = 0;
        for _ in 0..100 {
            dropped += spool.append(&[7; 200]).unwrap().2.batches;
        }
        assert!(dropped > 0);
        assert!(spool.bytes() <= 8192);
        let (epoch, _) = spool.live();
        assert_eq!(spool.batches() + dropped, 100);
        assert_eq!(
            spool.read_after(epoch, 0, 1000).unwrap().last().unwrap().0,
            100
        );
    }

    #[test]
    fn rotation_separates_backlog_from_live() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20, 4096, false).unwrap();
        let (old, _) = spool.live();
        spool.append(b"backlog").unwrap();
        let live = spool.rotate_if_backlog().unwrap();
        assert_ne!(live, old);
        assert_eq!(
            spool.append(b"live").unwrap(),
            (live, 1, Dropped::default())
        );
        spool.ack(live, 1).unwrap();
        assert_eq!(
            spool.rotate_if_backlog().unwrap(),
            live,
            "nothing waits in the live stream"
        );
        spool.ack(old, 1).unwrap();
        assert_eq!(spool.streams().len(), 1, "an acked old stream is removed");
    }
}
