//! insightface verification pair files (`lfw.bin`, `cfp_fp.bin`, `agedb_30.bin`, ...).
//!
//! Such a file is a Python pickle of the tuple `(bins, issame_list)`: `bins` is a list of
//! encoded images (JPEG / PNG bytes) and `issame_list` a list of booleans; pair `i` is images
//! `2i` and `2i + 1`. Files come from Python 3 (`pickle.dump(..., protocol=HIGHEST_PROTOCOL)`,
//! bytes as `BINBYTES` / `SHORT_BINBYTES`) and from the Python 2 era (protocol 2, images as `str`
//! i.e. `BINSTRING` / `SHORT_BINSTRING`), or from Python 3 with protocol 2, where bytes are
//! pickled as `_codecs.encode(latin1_text, 'latin1')`.
//!
//! The reader implements only the opcodes such files use (see [`read_pickle`]) and reports any
//! other opcode with its byte value and offset. A memo reference shares the value it names, as
//! in Python, and the images of a file may add up to at most 4 times its size + 1 MiB (an image
//! object listed a million times is refused, not copied a million times). The writer emits
//! protocol 4, loadable by Python 3.4+'s `pickle.load`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use image::RgbImage;

use super::error::{DataError, Result};
use super::recordio::decode_image;

/// A set of verification pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationSet {
    /// File the set was read from (used in error messages; empty for in-memory sets).
    pub source: PathBuf,
    /// Encoded images; pair `i` is `images[2i]`, `images[2i + 1]`.
    pub images: Vec<Vec<u8>>,
    /// Whether pair `i` shows the same identity.
    pub issame: Vec<bool>,
}

impl VerificationSet {
    /// Builds a set, checking that there are two images per label.
    pub fn new(images: Vec<Vec<u8>>, issame: Vec<bool>) -> Result<Self> {
        let set = VerificationSet { source: PathBuf::new(), images, issame };
        set.check()?;
        Ok(set)
    }

    fn check(&self) -> Result<()> {
        if !self.images.len().is_multiple_of(2) {
            return Err(DataError::OddImageCount {
                path: self.source.clone(),
                count: self.images.len(),
            });
        }
        if self.issame.len() * 2 != self.images.len() {
            return Err(DataError::LabelCountMismatch {
                path: self.source.clone(),
                images: self.images.len(),
                labels: self.issame.len(),
            });
        }
        Ok(())
    }

    /// Reads a `.bin` file.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = fs::read(path).map_err(|e| DataError::io(path, e))?;
        Self::from_pickle(&bytes, path)
    }

    /// Parses pickle bytes; `path` names the data in errors.
    pub fn from_pickle(bytes: &[u8], path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let (value, stop) = parse_pickle(bytes, &path)?;
        let bad = |what: String| {
            DataError::corrupt(
                &path,
                None,
                format!("top-level value ending at pickle byte offset {stop}: {what}"),
            )
        };
        let Value::Tuple(items) = value else {
            return Err(bad(format!(
                "expected a (bins, issame_list) tuple, found {}",
                value.kind()
            )));
        };
        let [bins, labels] = items.as_slice() else {
            return Err(bad(format!("expected a tuple of 2 items, found {}", items.len())));
        };
        let (Value::List(bins), Value::List(labels)) = (bins, labels) else {
            return Err(bad(format!(
                "expected (list, list), found ({}, {})",
                bins.kind(),
                labels.kind()
            )));
        };
        let images = copy_images(&bins.borrow(), bytes.len(), &path)?;
        let mut issame = Vec::with_capacity(labels.borrow().len());
        for (i, v) in labels.borrow().iter().enumerate() {
            match v {
                Value::Bool(b) => issame.push(*b),
                Value::Int(0) => issame.push(false),
                Value::Int(1) => issame.push(true),
                other => {
                    return Err(DataError::corrupt(
                        &path,
                        Some(i),
                        format!("label {i} is {}, expected a bool", other.kind()),
                    ))
                }
            }
        }
        let set = VerificationSet { source: path, images, issame };
        set.check()?;
        Ok(set)
    }

    /// Serialises the set as a protocol-4 pickle of `(bins, issame_list)`.
    pub fn to_pickle(&self) -> Vec<u8> {
        write_pickle(&self.images, &self.issame)
    }

    /// Writes the set to `path` as a protocol-4 pickle.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.check()?;
        crate::util::fs::write_atomic(path, &self.to_pickle()).map_err(DataError::from)
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.issame.len()
    }

    /// Whether there is no pair.
    pub fn is_empty(&self) -> bool {
        self.issame.is_empty()
    }

    /// Encoded images and label of pair `i`.
    pub fn pair(&self, i: usize) -> Option<(&[u8], &[u8], bool)> {
        let a = self.images.get(2 * i)?;
        let b = self.images.get(2 * i + 1)?;
        let same = *self.issame.get(i)?;
        Some((a, b, same))
    }

    /// Decodes image `index` (not pair index) to RGB, resized to `side` when given.
    pub fn decode(&self, index: usize, side: Option<u32>) -> Result<RgbImage> {
        let bytes = self.images.get(index).ok_or_else(|| DataError::IndexOutOfRange {
            path: self.source.clone(),
            index,
            len: self.images.len(),
        })?;
        decode_image(bytes, &self.source, Some(index), side)
    }
}

/// How many times its own size a pickle may expand to. Python stores each bytes object once and
/// refers to it again through the memo, so an honest `.bin` decodes to about its own size (more
/// only where one image object is listed several times); unbounded, a few-MB file listing one
/// image a million times would demand terabytes.
const EXPANSION_FACTOR: u64 = 4;

/// Added to the bound so that small files listing an image a few times still load.
const EXPANSION_SLACK: u64 = 1 << 20;

/// Most bytes a pickle of `len` bytes may expand to (its images together, and separately what
/// its `REDUCE` and `STACK_GLOBAL` calls build).
fn expansion_limit(len: usize) -> u64 {
    (len as u64).saturating_mul(EXPANSION_FACTOR).saturating_add(EXPANSION_SLACK)
}

/// Copies the images out of the shared pickle values, refusing before the copy passes the
/// expansion limit of a `file_len`-byte file.
fn copy_images(bins: &[Value], file_len: usize, path: &Path) -> Result<Vec<Vec<u8>>> {
    let limit = expansion_limit(file_len);
    let mut total = 0u64;
    let mut images = Vec::with_capacity(bins.len());
    for (i, v) in bins.iter().enumerate() {
        let Value::Bytes(b) = v else {
            return Err(DataError::corrupt(
                path,
                Some(i),
                format!("image {i} is {}, expected bytes", v.kind()),
            ));
        };
        total += b.len() as u64;
        if total > limit {
            return Err(DataError::corrupt(
                path,
                Some(i),
                format!(
                    "images 0..={i} add up to {total} bytes, more than the {limit} allowed for a \
                     {file_len}-byte file ({EXPANSION_FACTOR} x its size + 1 MiB): the pickle \
                     lists the same image object over and over"
                ),
            ));
        }
        images.push(b.as_ref().clone());
    }
    Ok(images)
}

/// Bytes that `REDUCE` and `STACK_GLOBAL` may still build. Both copy strings that a 2-byte memo
/// reference can repeat, so without a budget a small file could demand unbounded memory.
struct Budget {
    left: u64,
    limit: u64,
}

impl Budget {
    fn new(file_len: usize) -> Self {
        let limit = expansion_limit(file_len);
        Budget { left: limit, limit }
    }

    fn spend(&mut self, n: usize) -> std::result::Result<(), String> {
        let n = n as u64;
        if n > self.left {
            return Err(format!(
                "building {n} more bytes would pass the {} bytes allowed ({EXPANSION_FACTOR} x \
                 the file size + 1 MiB): the pickle repeats memoised strings",
                self.limit
            ));
        }
        self.left -= n;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Pickle reading.

/// A pickled value, restricted to what verification files need. Containers cannot nest more
/// than a tuple of lists of scalars, which keeps the reader free of deep recursion.
#[derive(Debug, Clone)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// A small integer.
    Int(i64),
    /// `bytes` (or a Python 2 `str`).
    Bytes(Rc<Vec<u8>>),
    /// A Python 3 `str` (Python 2 `unicode`).
    Str(Rc<String>),
    /// A list (shared, like Python's, so memoised references see later appends).
    List(Rc<RefCell<Vec<Value>>>),
    /// A tuple.
    Tuple(Rc<Vec<Value>>),
    /// A global `module.name` reference (only used as a `REDUCE` callable).
    Global(Rc<(String, String)>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "a bool",
            Value::Int(_) => "an int",
            Value::Bytes(_) => "bytes",
            Value::Str(_) => "a str",
            Value::List(_) => "a list",
            Value::Tuple(_) => "a tuple",
            Value::Global(_) => "a global",
        }
    }

    fn is_container(&self) -> bool {
        matches!(self, Value::List(_) | Value::Tuple(_))
    }
}

/// Most values the stack may hold (a real file keeps at most ~1000 between APPENDS).
const MAX_STACK: usize = 1 << 22;

/// Cursor over pickle bytes with error helpers.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let start = self.pos;
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| start.checked_add(n))
            .filter(|e| *e <= self.data.len());
        let Some(end) = end else {
            return Err(DataError::Truncated {
                path: self.path.to_path_buf(),
                offset: start as u64,
                record: None,
                what: format!("{what} needs {n} bytes, {} left", self.data.len() - start),
            });
        };
        self.pos = end;
        Ok(&self.data[start..end])
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn line(&mut self, what: &str) -> Result<String> {
        let rest = &self.data[self.pos..];
        let Some(n) = rest.iter().position(|b| *b == b'\n') else {
            return Err(DataError::Truncated {
                path: self.path.to_path_buf(),
                offset: self.pos as u64,
                record: None,
                what: format!("{what}: no newline before the end"),
            });
        };
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }

    /// `n` raw bytes as bytes; shared by the opcodes that differ only in how they give `n`.
    fn bytes(&mut self, n: u64) -> Result<Value> {
        Ok(Value::Bytes(Rc::new(self.take(n, "bytes")?.to_vec())))
    }

    fn utf8(&mut self, n: u64, at: usize) -> Result<Value> {
        let b = self.take(n, "unicode string")?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(Value::Str(Rc::new(s.to_string()))),
            Err(_) => Err(self.err(at, "string is not valid UTF-8")),
        }
    }

    fn err(&self, at: usize, what: impl std::fmt::Display) -> DataError {
        DataError::corrupt(self.path, None, format!("pickle byte offset {at}: {what}"))
    }
}

/// Parses a pickle made of the opcodes used by verification `.bin` files:
/// `PROTO FRAME STOP MARK EMPTY_LIST EMPTY_TUPLE APPEND APPENDS TUPLE TUPLE1 TUPLE2 TUPLE3
/// BINBYTES SHORT_BINBYTES BINBYTES8 BINSTRING SHORT_BINSTRING BINUNICODE SHORT_BINUNICODE
/// BINUNICODE8 NEWTRUE NEWFALSE NONE BININT BININT1 BININT2 BINPUT LONG_BINPUT MEMOIZE BINGET
/// LONG_BINGET`, plus `GLOBAL` / `STACK_GLOBAL` and `REDUCE` for `_codecs.encode(text,
/// 'latin1')` and `bytes()` (how Python 3 pickles bytes at protocol 2). Any other opcode is a
/// [`DataError::UnknownOpcode`].
///
/// Memoised values are shared, not copied, as in Python; what `REDUCE` and `STACK_GLOBAL`
/// build is bounded by a multiple of the file size (an error names the opcode's offset).
pub fn read_pickle(data: &[u8], path: &Path) -> Result<Value> {
    parse_pickle(data, path).map(|(value, _)| value)
}

/// [`read_pickle`], also giving the byte offset of the `STOP` opcode.
fn parse_pickle(data: &[u8], path: &Path) -> Result<(Value, usize)> {
    let mut m = Unpickler::new(data, path);
    loop {
        m.at = m.cur.pos;
        let at = m.at;
        if at >= data.len() {
            return Err(DataError::Truncated {
                path: path.to_path_buf(),
                offset: at as u64,
                record: None,
                what: "pickle ended without a STOP opcode".into(),
            });
        }
        let op = m.cur.u8("opcode")?;
        let pushed = match op {
            0x80 => m.proto()?,
            0x95 => m.frame()?,
            b'.' => return m.pop("STOP").map(|value| (value, at)),
            b'(' => m.mark(),
            b']' => Some(Value::List(Rc::new(RefCell::new(Vec::new())))),
            b')' => Some(Value::Tuple(Rc::new(Vec::new()))),
            b'N' => Some(Value::None),
            0x88 => Some(Value::Bool(true)),
            0x89 => Some(Value::Bool(false)),
            b'K' => Some(Value::Int(i64::from(m.cur.u8("BININT1")?))),
            b'M' => Some(Value::Int(i64::from(m.cur.u16("BININT2")?))),
            b'J' => Some(Value::Int(i64::from(m.cur.u32("BININT")? as i32))),
            b'C' | b'U' => Some(m.short_binbytes()?),
            b'B' => Some(m.binbytes()?),
            b'T' => Some(m.binstring()?),
            0x8e => Some(m.binbytes8()?),
            0x8c => Some(m.short_binunicode()?),
            b'X' => Some(m.binunicode()?),
            0x8d => Some(m.binunicode8()?),
            b'a' | b'e' => m.append(op)?,
            b't' | 0x85 | 0x86 | 0x87 => Some(m.tuple(op)?),
            b'q' | b'r' | 0x94 => m.memo_put(op)?,
            b'h' | b'j' => Some(m.memo_get(op)?),
            b'c' => Some(m.global()?),
            0x93 => Some(m.stack_global()?),
            b'R' => Some(m.reduce()?),
            _ => return Err(m.unknown(op)),
        };
        if let Some(v) = pushed {
            m.push(v)?;
        }
    }
}

/// The unpickler's state, shared by one method per opcode so that [`parse_pickle`] stays a flat
/// table. A method returns what its opcode pushes (`None`: nothing); `parse_pickle` pushes it.
struct Unpickler<'a> {
    cur: Cursor<'a>,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    budget: Budget,
    /// Offset of the opcode being run, which every error names.
    at: usize,
}

impl<'a> Unpickler<'a> {
    /// An unpickler at the start of `data`, with the expansion budget of its size.
    fn new(data: &'a [u8], path: &'a Path) -> Self {
        Unpickler {
            cur: Cursor { data, pos: 0, path },
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            budget: Budget::new(data.len()),
            at: 0,
        }
    }

    /// An error at the current opcode's offset, so that a report points into the file.
    fn err(&self, what: impl std::fmt::Display) -> DataError {
        self.cur.err(self.at, what)
    }

    /// The opcode byte is only known to be unsupported here, at the end of the table.
    fn unknown(&self, op: u8) -> DataError {
        DataError::UnknownOpcode {
            path: self.cur.path.to_path_buf(),
            opcode: op,
            offset: self.at as u64,
        }
    }

    /// Pushes `v`, bounded so that a file of tiny opcodes cannot fill memory.
    fn push(&mut self, v: Value) -> Result<()> {
        if self.stack.len() >= MAX_STACK {
            return Err(self.err("pickle stack grew past 4M items"));
        }
        self.stack.push(v);
        Ok(())
    }

    /// Pops for opcode `what`, which the error names, as a damaged file empties the stack early.
    fn pop(&mut self, what: &str) -> Result<Value> {
        let Some(v) = self.stack.pop() else {
            return Err(self.err(format!("{what} on an empty stack")));
        };
        Ok(v)
    }

    /// Pops everything above the last `MARK` for opcode `what`.
    fn pop_mark(&mut self, what: &str) -> Result<Vec<Value>> {
        let Some(m) = self.marks.pop() else {
            return Err(self.err(format!("{what} without MARK")));
        };
        if m > self.stack.len() {
            return Err(self.err("MARK above stack"));
        }
        Ok(self.stack.split_off(m))
    }

    /// PROTO: a version past 5 is refused up front, not left to fail on some later opcode.
    fn proto(&mut self) -> Result<Option<Value>> {
        let v = self.cur.u8("protocol version")?;
        if v > 5 {
            return Err(self.err(format!("unsupported pickle protocol {v}")));
        }
        Ok(None)
    }

    /// FRAME: only a hint for buffering, so its length is skipped.
    fn frame(&mut self) -> Result<Option<Value>> {
        self.cur.u64("frame length")?;
        Ok(None)
    }

    /// MARK: remembers the stack height that a later `APPENDS` or `TUPLE` pops down to.
    fn mark(&mut self) -> Option<Value> {
        self.marks.push(self.stack.len());
        None
    }

    /// SHORT_BINBYTES, SHORT_BINSTRING: a Python 2 `str` holds bytes, so both are bytes.
    fn short_binbytes(&mut self) -> Result<Value> {
        let n = self.cur.u8("string length")?;
        self.cur.bytes(u64::from(n))
    }

    /// BINBYTES: bytes with a 4-byte length.
    fn binbytes(&mut self) -> Result<Value> {
        let n = self.cur.u32("BINBYTES length")?;
        self.cur.bytes(u64::from(n))
    }

    /// BINSTRING: Python 2 writes the length signed, so a negative one is damage.
    fn binstring(&mut self) -> Result<Value> {
        let n = self.cur.u32("BINSTRING length")? as i32;
        if n < 0 {
            return Err(self.err("BINSTRING with a negative length"));
        }
        self.cur.bytes(n as u64)
    }

    /// BINBYTES8: bytes with an 8-byte length (objects of 4 GiB or more).
    fn binbytes8(&mut self) -> Result<Value> {
        let n = self.cur.u64("BINBYTES8 length")?;
        self.cur.bytes(n)
    }

    /// SHORT_BINUNICODE: a str with a 1-byte length.
    fn short_binunicode(&mut self) -> Result<Value> {
        let n = self.cur.u8("SHORT_BINUNICODE length")?;
        self.cur.utf8(u64::from(n), self.at)
    }

    /// BINUNICODE: a str with a 4-byte length (the latin1 text of protocol-2 bytes).
    fn binunicode(&mut self) -> Result<Value> {
        let n = self.cur.u32("BINUNICODE length")?;
        self.cur.utf8(u64::from(n), self.at)
    }

    /// BINUNICODE8: a str with an 8-byte length.
    fn binunicode8(&mut self) -> Result<Value> {
        let n = self.cur.u64("BINUNICODE8 length")?;
        self.cur.utf8(n, self.at)
    }

    /// APPEND, APPENDS: lists hold only scalars, which keeps the reader free of recursion.
    fn append(&mut self, op: u8) -> Result<Option<Value>> {
        let items = if op == b'a' { vec![self.pop("APPEND")?] } else { self.pop_mark("APPENDS")? };
        let Some(Value::List(list)) = self.stack.last() else {
            return Err(self.err("APPEND(S) target is not a list"));
        };
        if items.iter().any(Value::is_container) {
            return Err(self.err("nested containers inside a list are not supported"));
        }
        list.borrow_mut().extend(items);
        Ok(None)
    }

    /// TUPLE, TUPLE1, TUPLE2, TUPLE3: tuples hold no tuples, which bounds the nesting depth.
    fn tuple(&mut self, op: u8) -> Result<Value> {
        let items = match op {
            b't' => self.pop_mark("TUPLE")?,
            _ => {
                let n = usize::from(op - 0x84);
                if self.stack.len() < n {
                    return Err(self.err(format!("TUPLE{n} needs {n} stack items")));
                }
                self.stack.split_off(self.stack.len() - n)
            }
        };
        if items.iter().any(|v| matches!(v, Value::Tuple(_))) {
            return Err(self.err("tuples inside tuples are not supported"));
        }
        Ok(Value::Tuple(Rc::new(items)))
    }

    /// BINPUT, LONG_BINPUT, MEMOIZE: the memo shares the value, as Python's does.
    fn memo_put(&mut self, op: u8) -> Result<Option<Value>> {
        let key = match op {
            b'q' => u32::from(self.cur.u8("BINPUT index")?),
            b'r' => self.cur.u32("LONG_BINPUT index")?,
            _ => self.memo.len() as u32,
        };
        let Some(top) = self.stack.last() else {
            return Err(self.err("memo put on an empty stack"));
        };
        self.memo.insert(key, top.clone());
        Ok(None)
    }

    /// BINGET, LONG_BINGET: a shared reference, not a copy, so a repeated image is not copied here.
    fn memo_get(&mut self, op: u8) -> Result<Value> {
        let key = if op == b'h' {
            u32::from(self.cur.u8("BINGET index")?)
        } else {
            self.cur.u32("LONG_BINGET index")?
        };
        let Some(v) = self.memo.get(&key) else {
            return Err(self.err(format!("memo key {key} was never stored")));
        };
        Ok(v.clone())
    }

    /// GLOBAL: protocol 2 names the `REDUCE` callable in two text lines.
    fn global(&mut self) -> Result<Value> {
        let module = self.cur.line("GLOBAL module")?;
        let name = self.cur.line("GLOBAL name")?;
        Ok(Value::Global(Rc::new((module, name))))
    }

    /// STACK_GLOBAL: copies memoised strings, so it spends from the expansion budget.
    fn stack_global(&mut self) -> Result<Value> {
        let name = self.pop("STACK_GLOBAL")?;
        let module = self.pop("STACK_GLOBAL")?;
        let (Value::Str(m), Value::Str(n)) = (module, name) else {
            return Err(self.err("STACK_GLOBAL expects two strings"));
        };
        self.budget.spend(m.len() + n.len()).map_err(|what| self.err(what))?;
        Ok(Value::Global(Rc::new((m.to_string(), n.to_string()))))
    }

    /// REDUCE: only the calls that protocol-2 bytes need, see [`reduce`].
    fn reduce(&mut self) -> Result<Value> {
        let args = self.pop("REDUCE")?;
        let func = self.pop("REDUCE")?;
        reduce(&func, &args, &mut self.budget).map_err(|what| self.err(what))
    }
}

/// The few `REDUCE` calls found in protocol-2 pickles of bytes.
fn reduce(func: &Value, args: &Value, budget: &mut Budget) -> std::result::Result<Value, String> {
    let Value::Global(g) = func else {
        return Err(format!("REDUCE callable is {}, expected a global", func.kind()));
    };
    let Value::Tuple(args) = args else {
        return Err(format!("REDUCE arguments are {}, expected a tuple", args.kind()));
    };
    match (g.0.as_str(), g.1.as_str(), args.as_slice()) {
        ("_codecs", "encode", [Value::Str(text), Value::Str(enc)])
            if enc.as_str() == "latin1" || enc.as_str() == "latin-1" =>
        {
            budget.spend(text.len())?;
            let mut out = Vec::with_capacity(text.len());
            for ch in text.chars() {
                let c = u32::from(ch);
                if c > 0xFF {
                    return Err(format!("character U+{c:04X} cannot be encoded as latin1"));
                }
                out.push(c as u8);
            }
            Ok(Value::Bytes(Rc::new(out)))
        }
        ("__builtin__" | "builtins", "bytes", []) => Ok(Value::Bytes(Rc::new(Vec::new()))),
        (m, n, _) => Err(format!("unsupported REDUCE of {m}.{n}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Pickle writing.

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    if b.len() < 256 {
        out.push(b'C');
        out.push(b.len() as u8);
    } else if let Ok(n) = u32::try_from(b.len()) {
        out.push(b'B');
        out.extend_from_slice(&n.to_le_bytes());
    } else {
        out.push(0x8e);
        out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    }
    out.extend_from_slice(b);
}

/// Serialises `(images, issame)` as a protocol-4 pickle (lists appended in batches of 1000,
/// like Python's pickler).
pub fn write_pickle(images: &[Vec<u8>], issame: &[bool]) -> Vec<u8> {
    let total: usize = images.iter().map(|b| b.len() + 9).sum();
    let mut out = Vec::with_capacity(total + issame.len() + 64);
    out.extend_from_slice(&[0x80, 4]);
    out.push(b']');
    for chunk in images.chunks(1000) {
        out.push(b'(');
        for b in chunk {
            put_bytes(&mut out, b);
        }
        out.push(b'e');
    }
    out.push(b']');
    for chunk in issame.chunks(1000) {
        out.push(b'(');
        out.extend(chunk.iter().map(|s| if *s { 0x88 } else { 0x89 }));
        out.push(b'e');
    }
    out.push(0x86);
    out.push(b'.');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::rng::SplitMix64;

    /// Produced by scripts/make_bin_fixture.py with Python 3 `pickle.HIGHEST_PROTOCOL`.
    const FIXTURE_P_HIGHEST: &[u8] =
        include_bytes!("../../tests/fixtures/verification_highest.bin");
    /// Python 3, protocol 2: bytes pickled through `_codecs.encode`.
    const FIXTURE_P2: &[u8] = include_bytes!("../../tests/fixtures/verification_p2.bin");
    /// Python 2 style protocol 2: images as `str` (SHORT_BINSTRING / BINSTRING), LONG_BINPUT.
    const FIXTURE_PY2: &[u8] = include_bytes!("../../tests/fixtures/verification_py2.bin");

    fn sample_images(n: usize, seed: u64) -> Vec<Vec<u8>> {
        let mut r = SplitMix64::new(seed);
        (0..n)
            .map(|i| {
                // mix short (< 256) and long payloads, including magic-like and '.' bytes
                let len = if i % 3 == 0 { 300 + r.below(500) } else { r.below(200) };
                (0..len).map(|_| r.below(256) as u8).collect()
            })
            .collect()
    }

    fn check_fixture(bytes: &[u8], name: &str) {
        let set = VerificationSet::from_pickle(bytes, name).unwrap();
        assert_eq!(set.len(), 3, "{name}");
        assert_eq!(set.issame, [true, false, true], "{name}");
        assert_eq!(set.images.len(), 6);
        // image 0 is a 16x16 PNG (> 255 bytes), image 1 an 8x8 PNG (< 256 bytes)
        let a = set.decode(0, None).unwrap();
        let b = set.decode(1, None).unwrap();
        assert_eq!(a.dimensions(), (16, 16), "{name}");
        assert_eq!(b.dimensions(), (8, 8), "{name}");
        assert!(set.images[0].len() > 255 && set.images[1].len() < 256, "{name}");
        // pixel (x, y) of image k is (k*40, x*16, y*16) as drawn by the script
        assert_eq!(a.get_pixel(3, 5).0, [0, 48, 80], "{name}");
        assert_eq!(set.decode(5, None).unwrap().get_pixel(1, 2).0, [200, 16, 32], "{name}");
        assert_eq!(set.decode(1, Some(4)).unwrap().dimensions(), (4, 4));
        // image 4 is image 2 again, written once and referred to through the memo
        assert_eq!(set.images[4], set.images[2], "{name}");
        assert_ne!(set.images[4], set.images[0], "{name}");
    }

    #[test]
    fn reads_python_fixtures() {
        check_fixture(FIXTURE_P_HIGHEST, "highest");
        check_fixture(FIXTURE_P2, "p2");
        check_fixture(FIXTURE_PY2, "py2");
        let hi = VerificationSet::from_pickle(FIXTURE_P_HIGHEST, "a").unwrap();
        let p2 = VerificationSet::from_pickle(FIXTURE_P2, "a").unwrap();
        let py2 = VerificationSet::from_pickle(FIXTURE_PY2, "a").unwrap();
        assert_eq!(hi.images, p2.images);
        assert_eq!(hi.images, py2.images);
    }

    #[test]
    fn round_trip_including_batches_and_empty_images() {
        let mut images = sample_images(2 * 1203, 3);
        images[4] = Vec::new();
        let issame: Vec<bool> = (0..1203).map(|i| i % 3 != 0).collect();
        let set = VerificationSet::new(images.clone(), issame.clone()).unwrap();
        let bytes = set.to_pickle();
        assert_eq!(&bytes[..2], &[0x80, 4]);
        let back = VerificationSet::from_pickle(&bytes, "mem.bin").unwrap();
        assert_eq!(back.images, images);
        assert_eq!(back.issame, issame);
        assert_eq!(back.pair(1), Some((&images[2][..], &images[3][..], true)));
        assert_eq!(back.pair(1203), None);

        let path = std::env::temp_dir().join(format!("groupface-bin-{}.bin", std::process::id()));
        set.write(&path).unwrap();
        assert_eq!(VerificationSet::read(&path).unwrap().issame, issame);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn python_loads_writer_output() {
        // Cross-check with the real pickle module when python3 is installed.
        let Ok(v) = std::process::Command::new("python3").arg("--version").output() else {
            println!("python3 not found: skipping the cross-check");
            return;
        };
        if !v.status.success() {
            println!("python3 not usable: skipping the cross-check");
            return;
        }
        let images = sample_images(2 * 1005, 9);
        let issame: Vec<bool> = (0..1005).map(|i| i % 2 == 0).collect();
        let set = VerificationSet::new(images.clone(), issame).unwrap();
        let path =
            std::env::temp_dir().join(format!("groupface-bin-py-{}.bin", std::process::id()));
        set.write(&path).unwrap();
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make_bin_fixture.py");
        let out = if script.exists() {
            std::process::Command::new("python3").arg(&script).arg("--check").arg(&path).output()
        } else {
            // the same checks inline (the scratch crate has no scripts/ folder)
            let check = "import pickle,sys\n\
                b,s=pickle.load(open(sys.argv[1],'rb'))\n\
                assert isinstance(b,list) and isinstance(s,list)\n\
                assert all(isinstance(x,bytes) for x in b) and all(isinstance(x,bool) for x in s)\n\
                print(f'{len(b)} images, {len(s)} pairs, {sum(s)} same, '\n\
                f'{sum(len(x) for x in b)} image bytes, byte sum {sum(sum(x) for x in b)}')";
            std::process::Command::new("python3").arg("-c").arg(check).arg(&path).output()
        }
        .unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let total: usize = images.iter().map(Vec::len).sum();
        let byte_sum: u64 = images.iter().flatten().map(|b| u64::from(*b)).sum();
        let expected =
            format!("2010 images, 1005 pairs, 503 same, {total} image bytes, byte sum {byte_sum}");
        assert!(
            text.trim_end().ends_with(&expected),
            "python said {text:?}, expected {expected:?}"
        );
    }

    #[test]
    fn bad_inputs_give_the_right_errors() {
        let images = sample_images(4, 1);
        // odd image count
        let bytes = write_pickle(&images[..3], &[true]);
        assert!(matches!(
            VerificationSet::from_pickle(&bytes, "odd.bin"),
            Err(DataError::OddImageCount { count: 3, .. })
        ));
        // label count mismatch
        let bytes = write_pickle(&images, &[true]);
        match VerificationSet::from_pickle(&bytes, "mismatch.bin") {
            Err(DataError::LabelCountMismatch { images: 4, labels: 1, path }) => {
                assert_eq!(path, PathBuf::from("mismatch.bin"))
            }
            other => panic!("expected LabelCountMismatch, got {other:?}"),
        }
        assert!(matches!(
            VerificationSet::new(images.clone(), vec![true; 3]),
            Err(DataError::LabelCountMismatch { .. })
        ));
        // truncated file
        let good = write_pickle(&images, &[true, false]);
        for cut in [0, 1, 5, good.len() / 2, good.len() - 1] {
            assert!(
                matches!(
                    VerificationSet::from_pickle(&good[..cut], "cut.bin"),
                    Err(DataError::Truncated { .. })
                ),
                "cut at {cut}"
            );
        }
        // unknown opcode (a protocol-0 PUT 'p') at a known offset
        let mut bad = good.clone();
        bad.insert(3, b'p');
        match VerificationSet::from_pickle(&bad, "op.bin") {
            Err(DataError::UnknownOpcode { opcode: b'p', offset: 3, .. }) => {}
            other => panic!("expected UnknownOpcode, got {other:?}"),
        }
        // wrong structure
        let mut list_only = vec![0x80, 4, b']', b'.'];
        assert!(matches!(
            VerificationSet::from_pickle(&list_only, "s.bin"),
            Err(DataError::Corrupt { .. })
        ));
        list_only.truncate(0);
        assert!(matches!(
            read_pickle(&list_only, Path::new("e.bin")),
            Err(DataError::Truncated { .. })
        ));
        // unreadable path
        assert!(matches!(
            VerificationSet::read("/nonexistent/groupface/lfw.bin"),
            Err(DataError::Io { .. })
        ));
    }

    /// `(bins, issame)` where `bins` is one `len`-byte image stored once (BINPUT 0) followed by
    /// `refs` references to it (BINGET 0), and `issame` holds one `True` per pair.
    fn repeated_image_pickle(len: usize, refs: usize) -> Vec<u8> {
        let mut out = vec![0x80, 4, b']', b'('];
        put_bytes(&mut out, &vec![7u8; len]);
        out.extend_from_slice(&[b'q', 0]);
        for _ in 0..refs {
            out.extend_from_slice(&[b'h', 0]);
        }
        out.extend_from_slice(b"e](");
        out.extend(std::iter::repeat_n(0x88, refs.div_ceil(2)));
        out.extend_from_slice(&[b'e', 0x86, b'.']);
        out
    }

    #[test]
    fn memo_references_are_shared_and_their_expansion_is_bounded() {
        // an honest file: one 1000-byte image listed 4 times decodes to 4 equal images
        let honest = repeated_image_pickle(1000, 3);
        let set = VerificationSet::from_pickle(&honest, "memo.bin").unwrap();
        assert_eq!(set.images, vec![vec![7u8; 1000]; 4]);
        assert_eq!(set.issame, [true, true]);
        // the parsed list holds 4 handles to one buffer, not 4 copies
        let Value::Tuple(top) = read_pickle(&honest, Path::new("memo.bin")).unwrap() else {
            panic!("expected a tuple")
        };
        let Value::List(bins) = &top[0] else { panic!("expected a list") };
        let bins = bins.borrow();
        let Value::Bytes(first) = &bins[0] else { panic!("expected bytes") };
        assert_eq!(bins.len(), 4);
        assert!(bins.iter().all(|v| matches!(v, Value::Bytes(b) if Rc::ptr_eq(b, first))));

        // 199,999 references to a 1000-byte image: 200 MB of images from a 501,015-byte file
        // (4 + 1005 + 2 + 2 * 199,999 + 3 + 100,000 + 3 bytes). The limit is
        // 4 * 501,015 + 2^20 = 3,052,636 bytes, first passed by image 3052 (3,053,000 bytes).
        let attack = repeated_image_pickle(1000, 199_999);
        assert_eq!(attack.len(), 501_015);
        match VerificationSet::from_pickle(&attack, "attack.bin") {
            Err(DataError::Corrupt { record: Some(3052), what, path }) => {
                assert_eq!(path, PathBuf::from("attack.bin"));
                assert!(what.contains("3053000 bytes") && what.contains("3052636"), "{what}");
            }
            other => panic!("expected the expansion limit at image 3052, got {other:?}"),
        }
    }

    #[test]
    fn repeated_reduce_and_stack_global_are_bounded() {
        let text = "a".repeat(100_000);
        // _codecs.encode(text, 'latin1') 40 times on one memoised 100,000-character text:
        // 20 + 100,007 + 10 + 2 bytes before the calls, 8 bytes per call, 4 after: 100,363
        // bytes. The limit 4 * 100,363 + 2^20 = 1,450,028 allows 14 calls; the 15th REDUCE, at
        // offset 100,039 + 14 * 8 + 7 = 100,158, is refused.
        let mut p = vec![0x80, 2];
        p.extend_from_slice(b"c_codecs\nencode\nq\x00X");
        p.extend_from_slice(&100_000u32.to_le_bytes());
        p.extend_from_slice(text.as_bytes());
        p.extend_from_slice(&[b'q', 1, 0x8c, 6]);
        p.extend_from_slice(b"latin1q\x02](");
        assert_eq!(p.len(), 100_039);
        for _ in 0..40 {
            p.extend_from_slice(&[b'h', 0, b'h', 1, b'h', 2, 0x86, b'R']);
        }
        p.extend_from_slice(&[b'e', b']', 0x86, b'.']);
        assert_eq!(p.len(), 100_363);
        let err = VerificationSet::from_pickle(&p, "reduce.bin").unwrap_err().to_string();
        assert!(err.contains("pickle byte offset 100158:") && err.contains("1450028"), "{err}");

        // STACK_GLOBAL copies module and name: 20 times the memoised text twice. 100,009 bytes
        // before, 5 per call, 1 after: 100,110 bytes; the limit 4 * 100,110 + 2^20 = 1,449,016
        // allows 7 calls of 200,000 bytes; the 8th, at 100,009 + 7 * 5 + 4 = 100,048, is refused.
        let mut g = vec![0x80, 4, b'X'];
        g.extend_from_slice(&100_000u32.to_le_bytes());
        g.extend_from_slice(text.as_bytes());
        g.extend_from_slice(&[b'q', 0]);
        assert_eq!(g.len(), 100_009);
        for _ in 0..20 {
            g.extend_from_slice(&[b'h', 0, b'h', 0, 0x93]);
        }
        g.push(b'.');
        let err = VerificationSet::from_pickle(&g, "global.bin").unwrap_err().to_string();
        assert!(err.contains("pickle byte offset 100048:") && err.contains("1449016"), "{err}");
    }

    /// One random mutation of `seed`: byte overwrites, a truncation (whose cut is returned), an
    /// inserted opcode or a 4-byte length overwrite.
    fn mutate_pickle(seed: &[u8], rng: &mut SplitMix64) -> (Vec<u8>, Option<usize>) {
        let mut b = seed.to_vec();
        match rng.below(4) {
            0 => {
                for _ in 0..1 + rng.below(6) {
                    let i = rng.below(b.len());
                    b[i] = rng.below(256) as u8;
                }
            }
            1 => {
                let cut = rng.below(b.len());
                b.truncate(cut);
                return (b, Some(cut));
            }
            2 => {
                let i = rng.below(b.len());
                let op = [b'(', b'e', b'a', b'.', 0x86, b't', b'h', b'q', b'R', b'c', 0x93, 0x94]
                    [rng.below(12)];
                b.insert(i, op);
            }
            _ => {
                let i = rng.below(b.len().saturating_sub(4).max(1));
                let v = (rng.next_u64() as u32).to_le_bytes();
                for (k, x) in v.iter().enumerate() {
                    if let Some(slot) = b.get_mut(i + k) {
                        *slot = *x;
                    }
                }
            }
        }
        (b, None)
    }

    /// What an accepted input must satisfy: the unchanged seed decodes to the seed's set, the
    /// images stay within the expansion limit, and the set survives a write / read round trip.
    fn check_accepted(set: &VerificationSet, input: &[u8], seed: (&[u8], &VerificationSet)) {
        if input == seed.0 {
            assert_eq!((&set.images, &set.issame), (&seed.1.images, &seed.1.issame));
        }
        let total: u64 = set.images.iter().map(|b| b.len() as u64).sum();
        assert!(total <= expansion_limit(input.len()), "{total} image bytes accepted");
        let again = VerificationSet::from_pickle(&set.to_pickle(), "again.bin").unwrap();
        assert_eq!((&again.images, &again.issame), (&set.images, &set.issame));
        for i in 0..set.images.len().min(4) {
            if let Err(e) = set.decode(i, None) {
                let msg = e.to_string();
                assert!(msg.contains(&format!("(record {i})")), "{msg}");
            }
        }
    }

    /// What a rejected input must satisfy: a prefix parses like the whole file up to the cut, so
    /// it can only run out of bytes there; any other error names a byte offset or an item,
    /// except the image / label counts, which are about the whole file.
    fn check_rejected(e: &DataError, cut: Option<usize>) {
        if let Some(cut) = cut {
            match e {
                DataError::Truncated { offset, .. } => assert!(*offset <= cut as u64, "{e}"),
                other => panic!("prefix of {cut} bytes: expected Truncated, got {other:?}"),
            }
        }
        let msg = e.to_string();
        let counts =
            matches!(e, DataError::OddImageCount { .. } | DataError::LabelCountMismatch { .. });
        assert!(counts || msg.contains("offset") || msg.contains("(record "), "{msg}");
    }

    /// Decodes `runs` mutations of four seed pickles, checking every outcome; returns the
    /// numbers accepted and rejected.
    fn fuzz_bin(runs: usize, rng_seed: u64) -> (usize, usize) {
        let images = sample_images(8, 4);
        let seeds: Vec<Vec<u8>> = vec![
            write_pickle(&images, &[true, false, true, false]),
            FIXTURE_P2.to_vec(),
            FIXTURE_PY2.to_vec(),
            FIXTURE_P_HIGHEST.to_vec(),
        ];
        let sets: Vec<VerificationSet> =
            seeds.iter().map(|s| VerificationSet::from_pickle(s, "seed.bin").unwrap()).collect();
        let mut rng = SplitMix64::new(rng_seed);
        let (mut ok, mut rejected) = (0, 0);
        for run in 0..runs {
            let k = run % seeds.len();
            let (b, cut) = mutate_pickle(&seeds[k], &mut rng);
            match VerificationSet::from_pickle(&b, "fuzz.bin") {
                Ok(set) => {
                    assert!(cut.is_none(), "run {run}: a {}-byte prefix was accepted", b.len());
                    check_accepted(&set, &b, (seeds[k].as_slice(), &sets[k]));
                    ok += 1;
                }
                Err(e) => {
                    check_rejected(&e, cut);
                    rejected += 1;
                }
            }
        }
        (ok, rejected)
    }

    #[test]
    fn fuzz_mutations_decode_or_name_the_offset() {
        let runs = 4000;
        let (ok, rejected) = fuzz_bin(runs, 0xB1B1);
        println!("verification .bin fuzz: {runs} inputs, {ok} accepted, {rejected} rejected");
        assert_eq!(ok + rejected, runs);
        // both outcomes occur, so both sets of checks ran
        assert!(ok > 0 && rejected > 0, "{ok} accepted, {rejected} rejected");
    }

    #[test]
    #[ignore = "1,000,000 inputs, minutes: cargo test --release fuzz_long -- --ignored --nocapture"]
    fn fuzz_long_bin() {
        let runs = 1_000_000;
        let (ok, rejected) = fuzz_bin(runs, 0xB1B1_0001);
        println!("verification .bin long fuzz: {runs} inputs, {ok} accepted, {rejected} rejected");
        assert_eq!(ok + rejected, runs);
    }
}
