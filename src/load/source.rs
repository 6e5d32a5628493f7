//! Byte sources: where a model file's bytes come from. The loader reads each file front to back
//! (headers first, then tensors in offset order), so a source can be a file read in chunks, bytes
//! already in memory, or, later, a network stream that only moves forward.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One model file, read by byte range.
pub trait ByteSource {
    /// The file's name, for messages (`model.safetensors`, a path, ...).
    fn name(&self) -> &str;
    /// The file's size in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` with the bytes at `offset..offset + buf.len()`. Callers read ranges in
    /// increasing offset order and never past `size()`.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()>;
}

/// A file on disk, read a range at a time (never held whole).
pub struct FileSource {
    path: PathBuf,
    name: String,
    file: std::fs::File,
    size: u64,
    /// Where the next read starts without a seek.
    pos: u64,
}

/// Checks that `path` is a regular file (not a directory, a FIFO or a device, which could
/// block the open or never end) before it is opened; returns its size.
pub fn regular_file(path: &Path) -> Result<u64> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::Input(format!("{}: is a directory, not a file", path.display())));
    }
    if !meta.is_file() {
        return Err(Error::Input(format!("{}: not a regular file", path.display())));
    }
    Ok(meta.len())
}

/// A small file read whole (a config, an index, a tokenizer), after checking that it is a
/// regular file of at most `max` bytes.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>> {
    let size = regular_file(path)?;
    if size > max {
        return Err(Error::Input(format!("{}: {size} bytes, more than the {max} such a file may have", path.display())));
    }
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Bytes a config.json, generation_config.json, tokenizer_config.json or
/// model.safetensors.index.json may have (real ones are kilobytes to a few megabytes).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// Bytes a tokenizer.json may have (the largest real ones are tens of megabytes).
pub const MAX_TOKENIZER_BYTES: u64 = 128 << 20;

impl FileSource {
    pub fn open(path: &Path) -> Result<FileSource> {
        regular_file(path)?;
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| path.display().to_string());
        Ok(FileSource { path: path.to_path_buf(), name, file, size: meta.len(), pos: 0 })
    }
}

impl ByteSource for FileSource {
    fn name(&self) -> &str {
        &self.name
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        if offset != self.pos {
            self.file.seek(SeekFrom::Start(offset)).map_err(|e| Error::io(&self.path, e))?;
        }
        self.file.read_exact(buf).map_err(|e| Error::io(&self.path, e))?;
        self.pos = offset + buf.len() as u64;
        Ok(())
    }
}

/// Opens a fresh `ByteSource` over one file each time a model is opened from it: for files the
/// caller reads a range at a time without holding them (a browser's `Blob`: a picked file, or
/// one from its cache), which are not paths.
#[derive(Clone)]
pub struct Opener(Arc<dyn Fn() -> Result<Box<dyn ByteSource>>>);

impl Opener {
    pub fn new(open: impl Fn() -> Result<Box<dyn ByteSource>> + 'static) -> Opener {
        Opener(Arc::new(open))
    }

    pub fn open(&self) -> Result<Box<dyn ByteSource>> {
        (self.0)()
    }
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Opener")
    }
}

/// One file a caller holds: its bytes in memory, or an `Opener` that reads it a range at a
/// time.
#[derive(Clone, Debug)]
pub enum FileData {
    Bytes(Bytes),
    Opener(Opener),
}

impl FileData {
    /// A source over the file; `name` names it in messages.
    pub fn open(&self, name: &str) -> Result<Box<dyn ByteSource>> {
        match self {
            FileData::Bytes(b) => Ok(Box::new(MemorySource::new(name, b.clone()))),
            FileData::Opener(o) => o.open(),
        }
    }
}

impl From<Bytes> for FileData {
    fn from(b: Bytes) -> FileData {
        FileData::Bytes(b)
    }
}

impl From<Opener> for FileData {
    fn from(o: Opener) -> FileData {
        FileData::Opener(o)
    }
}

/// The bytes of one file, in memory (the browser's fetched files, the binary's built-in model).
#[derive(Clone)]
pub enum Bytes {
    /// Borrowed for the program's life (`include_bytes!`).
    Static(&'static [u8]),
    /// Owned, shared by clones without a copy.
    Shared(Arc<Vec<u8>>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Static(b) => b,
            Bytes::Shared(b) => b,
        }
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bytes({} bytes)", self.len())
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Bytes {
        Bytes::Shared(Arc::new(v))
    }
}

impl From<&'static [u8]> for Bytes {
    fn from(b: &'static [u8]) -> Bytes {
        Bytes::Static(b)
    }
}

/// A file whose bytes are in memory: a slice, a `Vec`, or `Bytes`.
pub struct MemorySource<B> {
    name: String,
    bytes: B,
}

impl<B: std::ops::Deref<Target = [u8]>> MemorySource<B> {
    pub fn new(name: &str, bytes: B) -> MemorySource<B> {
        MemorySource { name: name.to_string(), bytes }
    }
}

impl<B: std::ops::Deref<Target = [u8]>> ByteSource for MemorySource<B> {
    fn name(&self) -> &str {
        &self.name
    }
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let len = self.bytes.len();
        let start = usize::try_from(offset).ok().filter(|&s| s <= len);
        let range = start.and_then(|s| Some(s..s.checked_add(buf.len())?)).filter(|r| r.end <= len);
        let Some(range) = range else {
            return Err(Error::Input(format!("{}: a read of {} bytes at {offset} is past the end ({len} bytes)", self.name, buf.len())));
        };
        buf.copy_from_slice(&self.bytes[range]);
        Ok(())
    }
}

/// Bytes a header parser reads in small pieces, fetched from the source in larger blocks.
pub(crate) struct SeqReader<'s> {
    src: &'s mut dyn ByteSource,
    /// Bytes of the file from `buf_at` on.
    buf: Vec<u8>,
    buf_at: u64,
    /// The next byte the parser reads.
    pub(crate) pos: u64,
}

/// Bytes fetched per read while parsing a header.
const HEADER_BLOCK: u64 = 64 << 10;

impl<'s> SeqReader<'s> {
    pub(crate) fn new(src: &'s mut dyn ByteSource) -> SeqReader<'s> {
        SeqReader { src, buf: Vec::new(), buf_at: 0, pos: 0 }
    }

    pub(crate) fn size(&self) -> u64 {
        self.src.size()
    }

    pub(crate) fn remaining(&self) -> u64 {
        self.size().saturating_sub(self.pos)
    }

    /// The bytes fetched but not parsed yet, and the offset they start at.
    pub(crate) fn into_rest(mut self) -> (Vec<u8>, u64) {
        let parsed = ((self.pos - self.buf_at) as usize).min(self.buf.len());
        self.buf.drain(..parsed);
        (self.buf, self.pos)
    }

    /// The next `n` bytes; the caller has checked that the file has them.
    pub(crate) fn take(&mut self, n: u64) -> Result<&[u8]> {
        let end = self.pos + n;
        let have = self.buf_at + self.buf.len() as u64;
        if end > have {
            // Keep the unread tail, then read on from where the last read ended.
            let keep = (self.pos - self.buf_at) as usize;
            self.buf.drain(..keep.min(self.buf.len()));
            self.buf_at = self.pos;
            let have = self.buf_at + self.buf.len() as u64;
            let want = (end - have).max(HEADER_BLOCK).min(self.size() - have);
            let at = self.buf.len();
            self.buf.resize(at + want as usize, 0);
            self.src.read_at(have, &mut self.buf[at..])?;
        }
        let start = (self.pos - self.buf_at) as usize;
        self.pos = end;
        Ok(&self.buf[start..start + n as usize])
    }
}

/// A source some of whose bytes a header parser has already fetched: reads of those are
/// served from memory, so the source itself is still read only forward.
pub(crate) struct ReadAhead<'a> {
    src: Box<dyn ByteSource + 'a>,
    buf: Vec<u8>,
    buf_at: u64,
}

impl<'a> ReadAhead<'a> {
    pub(crate) fn new(src: Box<dyn ByteSource + 'a>, buf: Vec<u8>, buf_at: u64) -> ReadAhead<'a> {
        ReadAhead { src, buf, buf_at }
    }
}

impl ByteSource for ReadAhead<'_> {
    fn name(&self) -> &str {
        self.src.name()
    }
    fn size(&self) -> u64 {
        self.src.size()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = self.buf_at + self.buf.len() as u64;
        let mut done = 0;
        if offset >= self.buf_at && offset < end {
            let from = (offset - self.buf_at) as usize;
            done = buf.len().min(self.buf.len() - from);
            buf[..done].copy_from_slice(&self.buf[from..from + done]);
        }
        if done < buf.len() {
            // Past the fetched bytes: they are not needed again.
            self.buf = Vec::new();
            self.src.read_at(offset + done as u64, &mut buf[done..])?;
        }
        Ok(())
    }
}
