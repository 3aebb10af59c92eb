//! insightface / MXNet RecordIO datasets (`train.rec` + `train.idx`).
//!
//! # File format
//!
//! A `.rec` file is a sequence of records, each
//! `[u32 LE magic 0xced7230a][u32 LE lrecord][payload][zero padding to 4 bytes]`, where the
//! payload length is `lrecord & (2^29 - 1)` and `cflag = lrecord >> 29`: 0 for a whole record,
//! 1 / 2 / 3 for the start / middle / end of a split record. The writer (dmlc-core) splits a
//! payload wherever the magic number appears at a 4-byte aligned position, dropping those four
//! bytes; the reader re-inserts the magic between the parts.
//!
//! A payload is the header `{flag: u32, label: f32, id: u64, id2: u64}` (24 bytes, LE),
//! then `flag` extra `f32` labels when `flag > 0`, then the encoded image (JPEG or PNG).
//!
//! The `.idx` file beside the `.rec` holds text lines `key\toffset`.
//!
//! insightface's face datasets add a layout on top: record 0 is a header whose labels
//! `[a, b)` are the ids of the identity records; image records are ids `1..a`; identity record
//! `k` holds the labels `[start, end)`, the image record ids of that identity. An image's class
//! is its header `label` (or the first extra label when `flag > 0`). Files without that header
//! record (record 0 with `flag == 0`) are read as plain lists of all keys, like insightface does.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use image::RgbImage;

use super::error::{DataError, Result};
use super::folder::{decode_rgb, image_error, ImageFolder};
use crate::util::fs::Staged;
use crate::util::progress::{NoProgress, Progress};

/// RecordIO magic number.
pub const MAGIC: u32 = 0xced7_230a;
/// Size of the packed image-record header.
pub const HEADER_SIZE: usize = 24;
/// Largest payload part a record can hold (29-bit length field).
pub const MAX_PART_LEN: u32 = (1 << 29) - 1;

const MAGIC_BYTES: [u8; 4] = MAGIC.to_le_bytes();
/// Refuse rejoined records larger than this (a sanity bound, far above any face image).
const MAX_RECORD_LEN: usize = 1 << 30;

/// The header that insightface's `mx.recordio.pack` puts before each payload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordHeader {
    /// Number of extra `f32` labels following the header (0 = `label` is the label).
    pub flag: u32,
    /// The label when `flag == 0`.
    pub label: f32,
    /// Record id.
    pub id: u64,
    /// Secondary id (0 in insightface files).
    pub id2: u64,
}

/// A parsed payload: header, extra labels and the remaining (image) bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct UnpackedRecord<'a> {
    /// The fixed header.
    pub header: RecordHeader,
    /// The `header.flag` extra labels.
    pub labels: Vec<f32>,
    /// The bytes after the labels (an encoded image for image records).
    pub data: &'a [u8],
}

/// Packs a payload like `mx.recordio.pack`: when `labels` is not empty, `flag` is set to its
/// length and the labels follow the header.
pub fn pack_payload(header: &RecordHeader, labels: &[f32], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_SIZE + 4 * labels.len() + data.len());
    let flag = if labels.is_empty() { header.flag } else { labels.len() as u32 };
    out.extend_from_slice(&flag.to_le_bytes());
    let label = if labels.is_empty() { header.label } else { 0.0 };
    out.extend_from_slice(&label.to_le_bytes());
    out.extend_from_slice(&header.id.to_le_bytes());
    out.extend_from_slice(&header.id2.to_le_bytes());
    for l in labels {
        out.extend_from_slice(&l.to_le_bytes());
    }
    out.extend_from_slice(data);
    out
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

/// Parses a payload (the inverse of [`pack_payload`]); `path` and `record` name it in errors.
pub fn unpack_payload<'a>(
    payload: &'a [u8],
    path: &Path,
    record: usize,
) -> Result<UnpackedRecord<'a>> {
    let corrupt = |what: String| DataError::corrupt(path, Some(record), what);
    let (Some(flag), Some(label_bits), Some(id), Some(id2)) =
        (le_u32(payload, 0), le_u32(payload, 4), le_u64(payload, 8), le_u64(payload, 16))
    else {
        return Err(corrupt(format!(
            "payload of {} bytes is shorter than the {HEADER_SIZE}-byte record header",
            payload.len()
        )));
    };
    let header = RecordHeader { flag, label: f32::from_bits(label_bits), id, id2 };
    let labels_len = (flag as usize).checked_mul(4).filter(|n| HEADER_SIZE + n <= payload.len());
    let Some(labels_len) = labels_len else {
        return Err(corrupt(format!(
            "header announces {flag} labels but the payload has only {} bytes",
            payload.len()
        )));
    };
    let labels = payload[HEADER_SIZE..HEADER_SIZE + labels_len]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(UnpackedRecord { header, labels, data: &payload[HEADER_SIZE + labels_len..] })
}

/// Frames one payload as RecordIO bytes exactly like dmlc-core's `RecordIOWriter::WriteRecord`:
/// aligned occurrences of the magic split the record into cflag 1/2/3 parts. Returns the bytes
/// and the number of parts (1 for an unsplit record).
pub fn encode_record(payload: &[u8]) -> std::result::Result<(Vec<u8>, usize), String> {
    if payload.len() > MAX_PART_LEN as usize {
        return Err(format!("payload of {} bytes exceeds the 2^29-1 byte limit", payload.len()));
    }
    let len = payload.len();
    let mut out = Vec::with_capacity(len + 16);
    let mut parts = 0;
    let mut dptr = 0usize;
    let lower_align = len & !3;
    let mut i = 0;
    while i < lower_align {
        if payload[i..i + 4] == MAGIC_BYTES {
            let cflag: u32 = if dptr == 0 { 1 } else { 2 };
            out.extend_from_slice(&MAGIC_BYTES);
            out.extend_from_slice(&((cflag << 29) | (i - dptr) as u32).to_le_bytes());
            out.extend_from_slice(&payload[dptr..i]);
            dptr = i + 4;
            parts += 1;
        }
        i += 4;
    }
    let cflag: u32 = if dptr != 0 { 3 } else { 0 };
    out.extend_from_slice(&MAGIC_BYTES);
    out.extend_from_slice(&((cflag << 29) | (len - dptr) as u32).to_le_bytes());
    out.extend_from_slice(&payload[dptr..]);
    parts += 1;
    let pad = (4 - len % 4) % 4;
    out.extend(std::iter::repeat_n(0u8, pad));
    Ok((out, parts))
}

/// Where record bytes come from.
#[derive(Debug)]
enum Source {
    File(Mutex<File>),
    Memory(Vec<u8>),
}

/// Record key -> byte offset map (dense vector when keys are dense, sorted pairs otherwise).
#[derive(Debug)]
enum Offsets {
    Dense(Vec<u64>),
    Sparse(Vec<(usize, u64)>),
}

const NO_OFFSET: u64 = u64::MAX;

impl Offsets {
    fn get(&self, key: usize) -> Option<u64> {
        match self {
            Offsets::Dense(v) => v.get(key).copied().filter(|o| *o != NO_OFFSET),
            Offsets::Sparse(v) => v.binary_search_by_key(&key, |p| p.0).ok().map(|i| v[i].1),
        }
    }
}

/// Random-access reader of an indexed RecordIO face dataset.
#[derive(Debug)]
pub struct RecordReader {
    rec_path: PathBuf,
    idx_path: PathBuf,
    source: Source,
    file_len: u64,
    keys: Vec<usize>,
    offsets: Offsets,
    image_keys: Vec<usize>,
    identities: Vec<Range<usize>>,
    header_range: Option<(usize, usize)>,
}

/// Converts a float label to an index, or explains why it is not one.
fn label_index(v: f32) -> std::result::Result<usize, String> {
    if !v.is_finite() || v < 0.0 || v.fract() != 0.0 || v > 1.0e9 {
        return Err(format!("label {v} is not a non-negative integer"));
    }
    Ok(v as usize)
}

/// Parses `.idx` text into sorted `(key, offset)` pairs, checking offsets against `file_len`.
fn parse_idx(
    text: &str,
    idx_path: &Path,
    rec_path: &Path,
    file_len: u64,
) -> Result<Vec<(usize, u64)>> {
    let mut pairs = Vec::new();
    for (line_no, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut it = line.split_whitespace();
        let (Some(k), Some(o), None) = (it.next(), it.next(), it.next()) else {
            return Err(DataError::corrupt(
                idx_path,
                Some(line_no),
                format!("expected \"key<TAB>offset\", found {line:?}"),
            ));
        };
        let (Ok(key), Ok(offset)) = (k.parse::<usize>(), o.parse::<u64>()) else {
            return Err(DataError::corrupt(
                idx_path,
                Some(line_no),
                format!("expected two non-negative integers, found {line:?}"),
            ));
        };
        if offset.checked_add(8).is_none_or(|end| end > file_len) {
            return Err(DataError::OffsetPastEnd {
                idx_path: idx_path.to_path_buf(),
                rec_path: rec_path.to_path_buf(),
                key,
                offset,
                file_len,
            });
        }
        pairs.push((key, offset));
    }
    pairs.sort_unstable();
    for w in pairs.windows(2) {
        if w[0].0 == w[1].0 {
            return Err(DataError::corrupt(
                idx_path,
                None,
                format!("key {} appears twice", w[0].0),
            ));
        }
    }
    if pairs.is_empty() {
        return Err(DataError::Empty {
            path: idx_path.to_path_buf(),
            what: "index has no \"key<TAB>offset\" line".into(),
        });
    }
    Ok(pairs)
}

impl RecordReader {
    /// Opens `rec_path` and the `.idx` file beside it (same stem), reading the header and
    /// identity records when present.
    pub fn open(rec_path: impl AsRef<Path>) -> Result<Self> {
        let rec_path = rec_path.as_ref().to_path_buf();
        let idx_path = rec_path.with_extension("idx");
        let file = File::open(&rec_path).map_err(|e| DataError::io(&rec_path, e))?;
        let file_len = file.metadata().map_err(|e| DataError::io(&rec_path, e))?.len();
        let text = match std::fs::read(&idx_path) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DataError::MissingIndex { rec_path, idx_path })
            }
            Err(e) => return Err(DataError::io(&idx_path, e)),
        };
        Self::build(rec_path, idx_path, Source::File(Mutex::new(file)), file_len, &text)
    }

    /// Reads a dataset held in memory: `rec` bytes and `.idx` text; `rec_path` is only used
    /// to name the data in errors (the index is named `<rec_path stem>.idx`).
    pub fn from_bytes(rec_path: impl Into<PathBuf>, rec: Vec<u8>, idx_text: &str) -> Result<Self> {
        let rec_path = rec_path.into();
        let idx_path = rec_path.with_extension("idx");
        let file_len = rec.len() as u64;
        Self::build(rec_path, idx_path, Source::Memory(rec), file_len, idx_text)
    }

    fn build(
        rec_path: PathBuf,
        idx_path: PathBuf,
        source: Source,
        file_len: u64,
        idx_text: &str,
    ) -> Result<Self> {
        let pairs = parse_idx(idx_text, &idx_path, &rec_path, file_len)?;
        let keys: Vec<usize> = pairs.iter().map(|p| p.0).collect();
        let max_key = keys.last().copied().unwrap_or(0);
        let offsets = if max_key <= pairs.len().saturating_mul(2) + 1024 {
            let mut dense = vec![NO_OFFSET; max_key + 1];
            for (k, o) in &pairs {
                dense[*k] = *o;
            }
            Offsets::Dense(dense)
        } else {
            Offsets::Sparse(pairs)
        };
        let mut reader = RecordReader {
            rec_path,
            idx_path,
            source,
            file_len,
            keys,
            offsets,
            image_keys: Vec::new(),
            identities: Vec::new(),
            header_range: None,
        };
        reader.read_layout()?;
        Ok(reader)
    }

    /// Reads record 0 and the identity records, filling `image_keys` and `identities`.
    fn read_layout(&mut self) -> Result<()> {
        let header0 = if self.offsets.get(0).is_some() {
            let payload = self.read_record(0)?;
            let rec = unpack_payload(&payload, &self.rec_path, 0)?;
            if rec.header.flag > 0 {
                Some(rec.labels)
            } else {
                None
            }
        } else {
            None
        };
        let Some(labels) = header0 else {
            self.image_keys = self.keys.clone();
            return Ok(());
        };
        let bad = |what: String| DataError::LabelOutOfRange {
            path: self.rec_path.clone(),
            record: Some(0),
            what,
        };
        let (Some(&la), Some(&lb)) = (labels.first(), labels.get(1)) else {
            return Err(bad(format!("header record has {} labels, expected 2", labels.len())));
        };
        let a = label_index(la).map_err(&bad)?;
        let b = label_index(lb).map_err(&bad)?;
        if a < 1 || b < a {
            return Err(bad(format!("header range [{a}, {b}) is not a valid record-id range")));
        }
        for key in 1..b {
            if self.offsets.get(key).is_none() {
                return Err(DataError::corrupt(
                    &self.idx_path,
                    None,
                    format!("header record 0 announces ids 1..{b} but key {key} is missing"),
                ));
            }
        }
        let mut identities = Vec::with_capacity(b - a);
        for key in a..b {
            let payload = self.read_record(key)?;
            let rec = unpack_payload(&payload, &self.rec_path, key)?;
            let bad = |what: String| DataError::LabelOutOfRange {
                path: self.rec_path.clone(),
                record: Some(key),
                what,
            };
            let (Some(&s), Some(&e)) = (rec.labels.first(), rec.labels.get(1)) else {
                return Err(bad(format!(
                    "identity record has {} labels, expected [start, end)",
                    rec.labels.len()
                )));
            };
            let start = label_index(s).map_err(&bad)?;
            let end = label_index(e).map_err(&bad)?;
            if start < 1 || end < start || end > a {
                return Err(bad(format!(
                    "identity range [{start}, {end}) outside image ids [1, {a})"
                )));
            }
            identities.push(start..end);
        }
        self.image_keys = (1..a).collect();
        self.identities = identities;
        self.header_range = Some((a, b));
        Ok(())
    }

    /// The `.rec` file.
    pub fn rec_path(&self) -> &Path {
        &self.rec_path
    }

    /// The `.idx` file.
    pub fn idx_path(&self) -> &Path {
        &self.idx_path
    }

    /// Number of image records.
    pub fn len(&self) -> usize {
        self.image_keys.len()
    }

    /// Whether there is no image record.
    pub fn is_empty(&self) -> bool {
        self.image_keys.is_empty()
    }

    /// All keys of the `.idx` file, sorted.
    pub fn keys(&self) -> &[usize] {
        &self.keys
    }

    /// Record keys of the images, in dataset order.
    pub fn image_keys(&self) -> &[usize] {
        &self.image_keys
    }

    /// The `[a, b)` identity-record range of the header record, when the file has one.
    pub fn header_range(&self) -> Option<(usize, usize)> {
        self.header_range
    }

    /// Image-record id range of each identity (empty for files without a header record).
    pub fn identities(&self) -> &[Range<usize>] {
        &self.identities
    }

    /// Number of identities from the identity records, when the file has them.
    pub fn num_classes(&self) -> Option<usize> {
        self.header_range.map(|_| self.identities.len())
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        match &self.source {
            Source::Memory(m) => {
                let start =
                    usize::try_from(offset).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
                let src = start
                    .checked_add(buf.len())
                    .and_then(|end| m.get(start..end))
                    .ok_or(std::io::ErrorKind::UnexpectedEof)?;
                buf.copy_from_slice(src);
                Ok(())
            }
            Source::File(f) => {
                let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
                f.seek(SeekFrom::Start(offset))?;
                f.read_exact(buf)
            }
        }
    }

    /// Reads the raw payload of record `key`, rejoining split parts.
    pub fn read_record(&self, key: usize) -> Result<Vec<u8>> {
        let Some(start) = self.offsets.get(key) else {
            return Err(DataError::corrupt(
                &self.idx_path,
                Some(key),
                format!("key {key} is not in the index"),
            ));
        };
        let truncated = |offset: u64, what: String| DataError::Truncated {
            path: self.rec_path.clone(),
            offset,
            record: Some(key),
            what,
        };
        let mut out: Vec<u8> = Vec::new();
        let mut pos = start;
        let mut first = true;
        loop {
            if pos.checked_add(8).is_none_or(|e| e > self.file_len) {
                return Err(truncated(pos, "expected an 8-byte record header".into()));
            }
            let mut head = [0u8; 8];
            self.read_exact_at(pos, &mut head).map_err(|e| DataError::io(&self.rec_path, e))?;
            let magic = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            if magic != MAGIC {
                return Err(DataError::BadMagic {
                    path: self.rec_path.clone(),
                    offset: pos,
                    found: magic,
                });
            }
            let lrec = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            let cflag = lrec >> 29;
            let len = (lrec & MAX_PART_LEN) as usize;
            let ok = if first { cflag == 0 || cflag == 1 } else { cflag == 2 || cflag == 3 };
            if !ok {
                return Err(DataError::corrupt(
                    &self.rec_path,
                    Some(key),
                    format!(
                        "record part at offset {pos} has cflag {cflag}, expected {}",
                        if first { "0 or 1" } else { "2 or 3 (continuation)" }
                    ),
                ));
            }
            let padded = (len as u64 + 3) & !3;
            let data_end = pos + 8 + len as u64;
            if pos + 8 + padded > self.file_len {
                return Err(truncated(pos + 8, format!("record part announces {len} bytes")));
            }
            if out.len() + len + 4 > MAX_RECORD_LEN {
                return Err(DataError::corrupt(
                    &self.rec_path,
                    Some(key),
                    "record larger than 1 GiB",
                ));
            }
            let old = out.len();
            out.resize(old + len, 0);
            self.read_exact_at(pos + 8, &mut out[old..])
                .map_err(|e| DataError::io(&self.rec_path, e))?;
            debug_assert!(data_end <= self.file_len);
            pos += 8 + padded;
            if cflag == 0 || cflag == 3 {
                return Ok(out);
            }
            out.extend_from_slice(&MAGIC_BYTES);
            first = false;
        }
    }

    /// Label and encoded image bytes of image `index` (0-based over the image records).
    ///
    /// The label is the header label (or the first extra label when `flag > 0`); it must be a
    /// non-negative integer, below the number of identities when the file has identity records.
    pub fn get(&self, index: usize) -> Result<(usize, Vec<u8>)> {
        let Some(&key) = self.image_keys.get(index) else {
            return Err(DataError::IndexOutOfRange {
                path: self.rec_path.clone(),
                index,
                len: self.image_keys.len(),
            });
        };
        let payload = self.read_record(key)?;
        let rec = unpack_payload(&payload, &self.rec_path, key)?;
        let raw = if rec.header.flag > 0 {
            rec.labels.first().copied().unwrap_or(rec.header.label)
        } else {
            rec.header.label
        };
        let bad = |what: String| DataError::LabelOutOfRange {
            path: self.rec_path.clone(),
            record: Some(key),
            what,
        };
        let label = label_index(raw).map_err(bad)?;
        if let Some(n) = self.num_classes() {
            if label >= n {
                return Err(bad(format!("label {label} >= number of identities {n}")));
            }
        } else if label >= self.image_keys.len() {
            // Without identity records the class table is sized by the largest label; dense
            // labels 0..C-1, as insightface writes them, are below the number of records.
            let n = self.image_keys.len();
            let offset = self.offsets.get(key).unwrap_or(NO_OFFSET);
            return Err(bad(format!(
                "label {label} of the record at byte offset {offset} is not below the {n} \
                 records of a file without identity records (expected dense labels 0..C-1)"
            )));
        }
        let start = payload.len() - rec.data.len();
        let mut payload = payload;
        payload.drain(..start);
        Ok((label, payload))
    }

    /// Decoded RGB image (resized to `side` when given) and label of image `index`.
    pub fn get_image(&self, index: usize, side: Option<u32>) -> Result<(RgbImage, usize)> {
        let (label, bytes) = self.get(index)?;
        let key = self.image_keys.get(index).copied();
        let img = decode_image(&bytes, &self.rec_path, key, side)?;
        Ok((img, label))
    }
}

/// Decodes image bytes taken from a container file, naming `path` and `record` on failure
/// (an image past the decoding caps of [`decode_rgb`] gives [`DataError::TooLarge`]).
pub fn decode_image(
    bytes: &[u8],
    path: &Path,
    record: Option<usize>,
    side: Option<u32>,
) -> Result<RgbImage> {
    decode_rgb(bytes, side).map(|(img, _)| img).map_err(|source| image_error(path, record, source))
}

/// Writer of indexed RecordIO files (`FILE.rec` + `FILE.idx`). Both are written under hidden
/// temporary names beside their targets and moved in place by [`RecordWriter::finish`] (the
/// `.rec` last), so a pack stopped part-way leaves no truncated `.rec`, and a `.rec` is never
/// read with another pack's `.idx`. Dropped without `finish`, it removes what it wrote.
#[derive(Debug)]
pub struct RecordWriter {
    rec_path: PathBuf,
    idx_path: PathBuf,
    // Before `staged`: the files are closed before a drop removes them (Windows needs that).
    rec: BufWriter<File>,
    idx: BufWriter<File>,
    staged: Staged,
    pos: u64,
    records: usize,
    split_records: usize,
}

impl RecordWriter {
    /// Writes `rec_path` and the `.idx` beside it, replacing earlier ones once
    /// [`finish`](Self::finish) has both complete.
    pub fn create(rec_path: impl AsRef<Path>) -> Result<Self> {
        Self::create_with(rec_path, true)
    }

    /// [`create`](Self::create), refusing an existing `.rec` or `.idx` (naming it) unless
    /// `overwrite`.
    pub fn create_with(rec_path: impl AsRef<Path>, overwrite: bool) -> Result<Self> {
        let rec_path = rec_path.as_ref().to_path_buf();
        let idx_path = rec_path.with_extension("idx");
        let staged = Staged::files(&[rec_path.clone(), idx_path.clone()], overwrite)?;
        let create = |i: usize| {
            let path = staged.path(i);
            File::create(path).map(BufWriter::new).map_err(|e| DataError::io(path, e))
        };
        let (rec, idx) = (create(0)?, create(1)?);
        Ok(RecordWriter {
            rec_path,
            idx_path,
            rec,
            idx,
            staged,
            pos: 0,
            records: 0,
            split_records: 0,
        })
    }

    /// Appends a raw payload under `key` (splitting it at aligned magic numbers).
    pub fn write_payload(&mut self, key: usize, payload: &[u8]) -> Result<()> {
        let (bytes, parts) = encode_record(payload)
            .map_err(|what| DataError::corrupt(&self.rec_path, Some(key), what))?;
        self.rec.write_all(&bytes).map_err(|e| DataError::io(&self.rec_path, e))?;
        writeln!(self.idx, "{key}\t{}", self.pos).map_err(|e| DataError::io(&self.idx_path, e))?;
        self.pos += bytes.len() as u64;
        self.records += 1;
        if parts > 1 {
            self.split_records += 1;
        }
        Ok(())
    }

    /// Packs `header`, `labels` and `data` like `mx.recordio.pack` and appends it under `key`.
    pub fn write_record(
        &mut self,
        key: usize,
        header: &RecordHeader,
        labels: &[f32],
        data: &[u8],
    ) -> Result<()> {
        self.write_payload(key, &pack_payload(header, labels, data))
    }

    /// Number of records written.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Number of records that had to be split because they contained the magic number.
    pub fn split_records(&self) -> usize {
        self.split_records
    }

    /// Bytes written to the `.rec` file so far.
    pub fn bytes(&self) -> u64 {
        self.pos
    }

    /// Flushes both files and moves them in place, the `.idx` first.
    pub fn finish(mut self) -> Result<()> {
        self.rec.flush().map_err(|e| DataError::io(&self.rec_path, e))?;
        self.idx.flush().map_err(|e| DataError::io(&self.idx_path, e))?;
        let RecordWriter { rec, idx, staged, .. } = self;
        // Closed before the move: Windows cannot rename an open file.
        drop((rec, idx));
        staged.commit().map_err(DataError::from)
    }
}

/// What [`pack_folder`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PackStats {
    /// Image records written.
    pub images: usize,
    /// Identity records written.
    pub identities: usize,
    /// Images whose JPEG / PNG bytes were copied as they were.
    pub copied: usize,
    /// Images decoded and re-encoded as JPEG (quality 95).
    pub reencoded: usize,
    /// Records split because their payload contained the magic number.
    pub split_records: usize,
    /// Size of the `.rec` file.
    pub bytes: u64,
}

/// JPEG quality used when re-encoding images that are not JPEG or PNG.
pub const PACK_JPEG_QUALITY: u8 = 95;

/// Packs an identity-per-subfolder image folder (see [`ImageFolder`]) into `out_rec` and the
/// `.idx` beside it, in insightface's layout: header record 0 with labels `[N+1, N+1+C)`, image
/// records `1..=N` (label = identity), identity records `N+1..N+1+C` with labels
/// `[start, end)`. JPEG and PNG files are copied byte for byte (after checking their header);
/// other formats are decoded and re-encoded as JPEG. Earlier files at `out_rec` are replaced
/// once the new ones are complete ([`RecordWriter`]).
pub fn pack_folder(src_dir: impl AsRef<Path>, out_rec: impl AsRef<Path>) -> Result<PackStats> {
    pack_folder_with(src_dir, out_rec, true)
}

/// [`pack_folder`], refusing an existing `.rec` or `.idx` (naming it) unless `overwrite`.
pub fn pack_folder_with(
    src_dir: impl AsRef<Path>,
    out_rec: impl AsRef<Path>,
    overwrite: bool,
) -> Result<PackStats> {
    pack_folder_with_progress(src_dir, out_rec, overwrite, &NoProgress)
}

/// [`pack_folder_with`], each image packed advancing `progress`.
pub fn pack_folder_with_progress(
    src_dir: impl AsRef<Path>,
    out_rec: impl AsRef<Path>,
    overwrite: bool,
    progress: &dyn Progress,
) -> Result<PackStats> {
    // Refused before the folder is scanned, which can take long.
    let mut w = RecordWriter::create_with(out_rec, overwrite)?;
    let folder = ImageFolder::open(src_dir)?;
    let n = folder.len();
    progress.start("packing images", n as u64);
    let classes = folder.num_classes();
    let mut stats = PackStats::default();
    let a = n + 1;
    let b = a + classes;
    let head = RecordHeader { flag: 0, label: 0.0, id: 0, id2: 0 };
    w.write_record(0, &head, &[a as f32, b as f32], &[])?;
    let mut ranges = vec![(usize::MAX, 0usize); classes];
    for (i, (path, label)) in folder.items().iter().enumerate() {
        let key = i + 1;
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let img_err = |source| DataError::Image { path: path.clone(), record: None, source };
        let format = image::guess_format(&bytes).map_err(img_err)?;
        let data = if matches!(format, image::ImageFormat::Jpeg | image::ImageFormat::Png) {
            image::ImageReader::with_format(std::io::Cursor::new(&bytes), format)
                .into_dimensions()
                .map_err(img_err)?;
            stats.copied += 1;
            bytes
        } else {
            let (rgb, _) = decode_rgb(&bytes, None).map_err(img_err)?;
            let mut out = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, PACK_JPEG_QUALITY)
                .encode_image(&rgb)
                .map_err(img_err)?;
            stats.reencoded += 1;
            out
        };
        let header = RecordHeader { flag: 0, label: *label as f32, id: key as u64, id2: 0 };
        w.write_record(key, &header, &[], &data)?;
        if let Some(r) = ranges.get_mut(*label) {
            r.0 = r.0.min(key);
            r.1 = r.1.max(key + 1);
        }
        progress.advance(1);
    }
    for (c, (start, end)) in ranges.iter().enumerate() {
        let key = a + c;
        let header = RecordHeader { flag: 0, label: 0.0, id: key as u64, id2: 0 };
        w.write_record(key, &header, &[*start as f32, *end as f32], &[])?;
    }
    stats.images = n;
    stats.identities = classes;
    stats.split_records = w.split_records();
    stats.bytes = w.bytes();
    w.finish()?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::rng::SplitMix64;
    use crate::util::test_util::temp_dir;
    use image::Rgb;
    use std::fs;

    fn png_bytes(seed: u64, side: u32) -> Vec<u8> {
        let mut r = SplitMix64::new(seed);
        let img = RgbImage::from_fn(side, side, |_, _| Rgb([r.below(256) as u8, 40, 200]));
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
        out
    }

    /// Builds an in-memory insightface-layout dataset: `classes` identities with `per` images.
    fn build_memory(classes: usize, per: usize, with_split: bool) -> (Vec<u8>, String) {
        let mut rec = Vec::new();
        let mut idx = String::new();
        let mut put = |key: usize, payload: Vec<u8>| {
            idx.push_str(&format!("{key}\t{}\n", rec.len()));
            rec.extend(encode_record(&payload).unwrap().0);
        };
        let n = classes * per;
        let (a, b) = (n + 1, n + 1 + classes);
        let h = RecordHeader { flag: 0, label: 0.0, id: 0, id2: 0 };
        put(0, pack_payload(&h, &[a as f32, b as f32], &[]));
        for k in 1..=n {
            let mut data = png_bytes(k as u64, 4);
            if with_split && k == 2 {
                // Put the magic at aligned offsets of the payload (header is 24 bytes) so that
                // the writer splits this record; the PNG decoder ignores trailing bytes.
                let pad = (4 - data.len() % 4) % 4;
                data.extend(std::iter::repeat_n(0, pad));
                data.extend_from_slice(&MAGIC_BYTES);
                data.extend_from_slice(b"mid!");
                data.extend_from_slice(&MAGIC_BYTES);
                data.extend_from_slice(&MAGIC_BYTES);
                data.extend_from_slice(b"end");
            }
            let h = RecordHeader { flag: 0, label: ((k - 1) / per) as f32, id: k as u64, id2: 0 };
            put(k, pack_payload(&h, &[], &data));
        }
        for c in 0..classes {
            let s = 1 + c * per;
            put(a + c, pack_payload(&h, &[s as f32, (s + per) as f32], &[]));
        }
        (rec, idx)
    }

    #[test]
    fn encode_matches_dmlc_layout() {
        // no magic: one part, padded to 4 bytes
        let (b, parts) = encode_record(&[1, 2, 3, 4, 5]).unwrap();
        assert_eq!(parts, 1);
        assert_eq!(b.len(), 8 + 8);
        assert_eq!(&b[..4], &MAGIC_BYTES);
        assert_eq!(u32::from_le_bytes([b[4], b[5], b[6], b[7]]), 5);
        // magic at offset 4: parts [0..4] (cflag 1), rest (cflag 3)
        let mut p = vec![9, 9, 9, 9];
        p.extend_from_slice(&MAGIC_BYTES);
        p.extend_from_slice(&[7, 7]);
        let (b, parts) = encode_record(&p).unwrap();
        assert_eq!(parts, 2);
        assert_eq!(u32::from_le_bytes([b[4], b[5], b[6], b[7]]), (1 << 29) | 4);
        assert_eq!(&b[8..12], &[9, 9, 9, 9]);
        assert_eq!(&b[12..16], &MAGIC_BYTES);
        assert_eq!(u32::from_le_bytes([b[16], b[17], b[18], b[19]]), (3 << 29) | 2);
        assert_eq!(&b[20..22], &[7, 7]);
        assert_eq!(b.len(), 24);
        // unaligned magic is not split
        let mut q = vec![0u8; 2];
        q.extend_from_slice(&MAGIC_BYTES);
        assert_eq!(encode_record(&q).unwrap().1, 1);
    }

    #[test]
    fn memory_round_trip_with_split_record() {
        let (rec, idx) = build_memory(3, 4, true);
        let r = RecordReader::from_bytes("/virtual/train.rec", rec, &idx).unwrap();
        assert_eq!(r.len(), 12);
        assert_eq!(r.num_classes(), Some(3));
        assert_eq!(r.header_range(), Some((13, 16)));
        assert_eq!(r.identities(), &[1..5, 5..9, 9..13]);
        for i in 0..12 {
            let (label, bytes) = r.get(i).unwrap();
            assert_eq!(label, i / 4);
            let expected = png_bytes(i as u64 + 1, 4);
            assert_eq!(&bytes[..expected.len()], &expected[..]);
            let (img, l2) = r.get_image(i, None).unwrap();
            assert_eq!((img.dimensions(), l2), ((4, 4), label));
        }
        // the split record came back with the magic numbers re-inserted
        let (_, bytes) = r.get(1).unwrap();
        let tail = &bytes[bytes.len() - 19..];
        let mut expected = MAGIC_BYTES.to_vec();
        expected.extend_from_slice(b"mid!");
        expected.extend_from_slice(&MAGIC_BYTES);
        expected.extend_from_slice(&MAGIC_BYTES);
        expected.extend_from_slice(b"end");
        assert_eq!(tail, &expected[..]);
        assert!(matches!(r.get(12), Err(DataError::IndexOutOfRange { index: 12, .. })));
    }

    #[test]
    fn pack_folder_then_read_back() {
        let dir = temp_dir("pack");
        let src = dir.join("src");
        for (c, name) in ["id_a", "id_b"].iter().enumerate() {
            fs::create_dir_all(src.join(name)).unwrap();
            for k in 0..3 {
                let img = RgbImage::from_fn(8, 8, |x, y| {
                    Rgb([(x * 30) as u8, (y * 30) as u8, (c * 100 + k) as u8])
                });
                let ext = ["png", "bmp", "jpg"][k];
                img.save(src.join(name).join(format!("{k}.{ext}"))).unwrap();
            }
        }
        // a PNG whose bytes contain the magic at an aligned payload offset forces a split
        let mut special = png_bytes(99, 4);
        let pad = (4 - special.len() % 4) % 4;
        special.extend(std::iter::repeat_n(0, pad));
        special.extend_from_slice(&MAGIC_BYTES);
        fs::write(src.join("id_b").join("9.png"), &special).unwrap();

        let out = dir.join("train.rec");
        let stats = pack_folder(&src, &out).unwrap();
        assert_eq!(stats.images, 7);
        assert_eq!(stats.identities, 2);
        assert_eq!(stats.copied, 5);
        assert_eq!(stats.reencoded, 2);
        assert_eq!(stats.split_records, 1);
        assert_eq!(stats.bytes, fs::metadata(&out).unwrap().len());
        let idx = fs::read_to_string(dir.join("train.idx")).unwrap();
        assert_eq!(idx.lines().count(), 1 + 7 + 2);
        assert!(idx.starts_with("0\t0\n"));

        let r = RecordReader::open(&out).unwrap();
        assert_eq!(r.len(), 7);
        assert_eq!(r.identities(), &[1..4, 4..8]);
        let labels: Vec<usize> = (0..7).map(|i| r.get(i).unwrap().0).collect();
        assert_eq!(labels, [0, 0, 0, 1, 1, 1, 1]);
        // PNG copied byte for byte, including the split record
        assert_eq!(r.get(6).unwrap().1, special);
        let (img, _) = r.get_image(0, None).unwrap();
        assert_eq!(img.get_pixel(3, 2), &Rgb([90, 60, 0]));
        let (img, _) = r.get_image(1, Some(16)).unwrap();
        assert_eq!(img.dimensions(), (16, 16));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn plain_file_without_header_lists_all_keys() {
        let mut rec = Vec::new();
        let mut idx = String::new();
        for (key, label) in [(5usize, 2.0f32), (7, 0.0), (6, 1.0)] {
            idx.push_str(&format!("{key}\t{}\n", rec.len()));
            let h = RecordHeader { flag: 0, label, id: key as u64, id2: 0 };
            rec.extend(encode_record(&pack_payload(&h, &[], &png_bytes(1, 2))).unwrap().0);
        }
        let r = RecordReader::from_bytes("plain.rec", rec, &idx).unwrap();
        assert_eq!(r.image_keys(), &[5, 6, 7]);
        assert_eq!(r.num_classes(), None);
        assert_eq!(r.get(0).unwrap().0, 2);
        assert_eq!(r.get(2).unwrap().0, 0);
    }

    #[test]
    fn bad_inputs_give_the_right_errors() {
        let (rec, idx) = build_memory(2, 2, false);

        // bad magic at the offset of record 1
        let off1: usize = idx.lines().nth(1).unwrap().split('\t').nth(1).unwrap().parse().unwrap();
        let mut bad = rec.clone();
        bad[off1] ^= 0xFF;
        let r = RecordReader::from_bytes("m.rec", bad, &idx).unwrap();
        match r.get(0) {
            Err(DataError::BadMagic { offset, path, .. }) => {
                assert_eq!(offset, off1 as u64);
                assert_eq!(path, PathBuf::from("m.rec"));
            }
            other => panic!("expected BadMagic, got {other:?}"),
        }

        // truncated .rec: identity records are read at open and are past the end now
        let cut = rec[..rec.len() - 10].to_vec();
        let keep: String = idx
            .lines()
            .filter(|l| {
                let o: usize = l.split('\t').nth(1).unwrap().parse().unwrap();
                o + 8 <= cut.len()
            })
            .map(|l| format!("{l}\n"))
            .collect();
        match RecordReader::from_bytes("t.rec", cut, &keep) {
            Err(DataError::Truncated { record: Some(k), .. }) => assert_eq!(k, 6),
            other => panic!("expected Truncated, got {other:?}"),
        }

        // .idx offset past the end
        let past = format!("{idx}99\t{}\n", rec.len() + 100);
        match RecordReader::from_bytes("p.rec", rec.clone(), &past) {
            Err(DataError::OffsetPastEnd { key: 99, offset, file_len, .. }) => {
                assert_eq!(offset, rec.len() as u64 + 100);
                assert_eq!(file_len, rec.len() as u64);
            }
            other => panic!("expected OffsetPastEnd, got {other:?}"),
        }

        // malformed .idx line
        assert!(matches!(
            RecordReader::from_bytes("i.rec", rec.clone(), "0\tzero\n"),
            Err(DataError::Corrupt { record: Some(0), .. })
        ));

        // label out of range: an image labelled 7 with only 2 identities
        let mut rec2 = Vec::new();
        let mut idx2 = String::new();
        let h = RecordHeader { flag: 0, label: 0.0, id: 0, id2: 0 };
        let mut put = |key: usize, payload: Vec<u8>| {
            idx2.push_str(&format!("{key}\t{}\n", rec2.len()));
            rec2.extend(encode_record(&payload).unwrap().0);
        };
        put(0, pack_payload(&h, &[2.0, 3.0], &[]));
        put(1, pack_payload(&RecordHeader { label: 7.0, ..h }, &[], &png_bytes(1, 2)));
        put(2, pack_payload(&h, &[1.0, 2.0], &[]));
        let r = RecordReader::from_bytes("l.rec", rec2.clone(), &idx2).unwrap();
        assert!(matches!(r.get(0), Err(DataError::LabelOutOfRange { record: Some(1), .. })));

        // identity range outside the image ids
        let mut rec3 = Vec::new();
        let mut idx3 = String::new();
        for (key, payload) in [
            (0usize, pack_payload(&h, &[2.0, 3.0], &[])),
            (1, pack_payload(&h, &[], &png_bytes(1, 2))),
            (2, pack_payload(&h, &[1.0, 5.0], &[])),
        ] {
            idx3.push_str(&format!("{key}\t{}\n", rec3.len()));
            rec3.extend(encode_record(&payload).unwrap().0);
        }
        assert!(matches!(
            RecordReader::from_bytes("r.rec", rec3, &idx3),
            Err(DataError::LabelOutOfRange { record: Some(2), .. })
        ));

        // corrupt image bytes name the record
        let mut rec4 = Vec::new();
        let h4 = RecordHeader { flag: 0, label: 0.0, id: 1, id2: 0 };
        rec4.extend(encode_record(&pack_payload(&h4, &[], b"not an image")).unwrap().0);
        let r = RecordReader::from_bytes("c.rec", rec4, "1\t0\n").unwrap();
        assert!(matches!(r.get_image(0, None), Err(DataError::Image { record: Some(1), .. })));
    }

    #[test]
    fn missing_index_and_missing_file() {
        let dir = temp_dir("missing");
        let rec = dir.join("x.rec");
        fs::write(&rec, encode_record(&[0u8; 24]).unwrap().0).unwrap();
        match RecordReader::open(&rec) {
            Err(DataError::MissingIndex { idx_path, .. }) => {
                assert_eq!(idx_path, dir.join("x.idx"))
            }
            other => panic!("expected MissingIndex, got {other:?}"),
        }
        assert!(matches!(RecordReader::open(dir.join("nope.rec")), Err(DataError::Io { .. })));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn plain_file_labels_must_be_below_the_record_count() {
        // 3 records without identity records: dense labels are below 3. 1e9 is exact in f32;
        // each record is 8 + 24 + 11 bytes padded to 44, so record 1 starts at byte 44.
        let mut rec = Vec::new();
        let mut idx = String::new();
        for (key, label) in [(0usize, 2.0f32), (1, 1.0e9), (2, 3.0)] {
            idx.push_str(&format!("{key}\t{}\n", rec.len()));
            let h = RecordHeader { flag: 0, label, id: key as u64, id2: 0 };
            rec.extend(encode_record(&pack_payload(&h, &[], b"image bytes")).unwrap().0);
        }
        assert_eq!(rec.len(), 3 * 44);
        let r = RecordReader::from_bytes("plain.rec", rec, &idx).unwrap();
        assert_eq!(r.get(0).unwrap(), (2, b"image bytes".to_vec()));
        for (index, label, offset) in [(1, "1000000000", 44), (2, "3", 88)] {
            match r.get(index) {
                Err(DataError::LabelOutOfRange { record: Some(key), what, .. }) => {
                    assert_eq!(key, index);
                    let expected = format!("label {label} of the record at byte offset {offset} ");
                    assert!(what.starts_with(&expected) && what.contains("3 records"), "{what}");
                }
                other => panic!("expected LabelOutOfRange for record {index}, got {other:?}"),
            }
        }
    }

    /// Byte range where `b` differs from `a`; a length change counts from the shorter end on.
    fn changed_range(a: &[u8], b: &[u8]) -> Range<usize> {
        if a == b {
            return 0..0;
        }
        let common = a.len().min(b.len());
        let lo = (0..common).find(|&i| a[i] != b[i]).unwrap_or(common);
        let hi = if a.len() == b.len() {
            (0..common).rev().find(|&i| a[i] != b[i]).map_or(common, |i| i + 1)
        } else {
            a.len().max(b.len())
        };
        lo..hi
    }

    /// One mutation of the `.rec` bytes or the `.idx` text, of kind `run % 5`.
    fn mutate_rec(rec: &[u8], idx: &str, run: usize, rng: &mut SplitMix64) -> (Vec<u8>, String) {
        let mut bytes = rec.to_vec();
        let mut text = idx.to_string();
        match run % 5 {
            // flip random bits
            0 | 1 => {
                for _ in 0..1 + rng.below(8) {
                    let i = rng.below(bytes.len());
                    bytes[i] ^= 1 << rng.below(8);
                }
            }
            // overwrite a random 4-byte word (lengths, flags, labels, magic)
            2 => {
                let i = rng.below(bytes.len() / 4) * 4;
                let v = rng.next_u64() as u32;
                bytes[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            3 => bytes.truncate(rng.below(bytes.len())),
            _ => {
                let mut t = text.into_bytes();
                let i = rng.below(t.len());
                t[i] = b"0123456789\t\nx-"[rng.below(14)];
                text = String::from_utf8_lossy(&t).into_owned();
            }
        }
        (bytes, text)
    }

    /// Whether an error message says where to look: a byte offset, a record or a key.
    fn names_the_place(e: &DataError) -> bool {
        let msg = e.to_string();
        msg.contains("offset") || msg.contains("(record ") || msg.contains("key ")
    }

    /// The dataset of [`build_memory`]`(3, 3, true)` and what it holds.
    struct RecSeed {
        rec: Vec<u8>,
        idx: String,
        /// Byte span of each record, and whether open reads it (record 0, identity records).
        spans: Vec<(Range<usize>, bool)>,
        /// Key, label and image bytes of each image record.
        images: Vec<(usize, usize, Vec<u8>)>,
    }

    fn rec_seed() -> RecSeed {
        let (rec, idx) = build_memory(3, 3, true);
        let r = RecordReader::from_bytes("seed.rec", rec.clone(), &idx).unwrap();
        let (a, b) = r.header_range().unwrap();
        // build_memory writes records in key order, so each ends where the next starts
        let starts: Vec<usize> =
            idx.lines().map(|l| l.split('\t').nth(1).unwrap().parse().unwrap()).collect();
        let spans = (0..starts.len())
            .map(|k| {
                let end = starts.get(k + 1).copied().unwrap_or(rec.len());
                (starts[k]..end, k == 0 || (a..b).contains(&k))
            })
            .collect();
        let images = (0..r.len())
            .map(|i| {
                let (label, bytes) = r.get(i).unwrap();
                (r.image_keys()[i], label, bytes)
            })
            .collect();
        RecSeed { rec, idx, spans, images }
    }

    /// Checks one mutated input: with the index and the records read at open untouched, the
    /// file opens with the seed's layout and every untouched image record reads back exactly
    /// as written; a truncated file is refused at open (its last record is read there); every
    /// error names a byte offset, a record or a key. Returns whether the file opened.
    fn check_rec_mutation(seed: &RecSeed, bytes: Vec<u8>, text: &str) -> bool {
        let touched = changed_range(&seed.rec, &bytes);
        let untouched = |s: &Range<usize>| touched.end <= s.start || s.end <= touched.start;
        let same_idx = text == seed.idx;
        let layout_kept =
            same_idx && seed.spans.iter().all(|(s, at_open)| !at_open || untouched(s));
        let truncated = bytes.len() < seed.rec.len();
        let r = match RecordReader::from_bytes("fuzz.rec", bytes, text) {
            Ok(r) => r,
            Err(e) => {
                assert!(!layout_kept, "refused with the layout untouched: {e}");
                assert!(names_the_place(&e), "{e}");
                return false;
            }
        };
        assert!(!(truncated && same_idx), "a truncated file opened");
        if layout_kept {
            assert_eq!(r.len(), seed.images.len());
            for (i, (key, label, data)) in seed.images.iter().enumerate() {
                if untouched(&seed.spans[*key].0) {
                    assert_eq!(r.get(i).unwrap(), (*label, data.clone()), "record {key}");
                }
            }
        }
        for i in 0..r.len().min(12) {
            if let Err(e) = r.get_image(i, None) {
                assert!(names_the_place(&e), "{e}");
            }
        }
        true
    }

    /// Opens `runs` mutations of the seed dataset, checking each; returns (opened, refused).
    fn fuzz_rec(runs: usize, rng_seed: u64) -> (usize, usize) {
        let seed = rec_seed();
        let mut rng = SplitMix64::new(rng_seed);
        let mut opened = 0;
        for run in 0..runs {
            let (bytes, text) = mutate_rec(&seed.rec, &seed.idx, run, &mut rng);
            if check_rec_mutation(&seed, bytes, &text) {
                opened += 1;
            }
        }
        (opened, runs - opened)
    }

    #[test]
    fn fuzz_mutations_read_back_or_name_the_place() {
        let runs = 3000;
        let (ok, err) = fuzz_rec(runs, 0xF0CC);
        println!("recordio fuzz: {runs} mutated inputs ({ok} opened, {err} rejected at open)");
        // both outcomes occur, so both sets of checks ran
        assert!(ok > 0 && err > 0, "{ok} opened, {err} rejected");
    }

    #[test]
    #[ignore = "1,000,000 inputs, minutes: cargo test --release fuzz_long -- --ignored --nocapture"]
    fn fuzz_long_rec() {
        let runs = 1_000_000;
        let (ok, err) = fuzz_rec(runs, 0xF0CC_0001);
        println!("recordio long fuzz: {runs} inputs, {ok} opened, {err} rejected at open");
        assert_eq!(ok + err, runs);
    }
}
