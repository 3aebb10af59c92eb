//! numpy `.npy` files: the interchange format with Python tools.
//!
//! Embeddings, scores and labels cross between this library and insightface-style scripts as
//! `.npy` arrays (`np.save` / `np.load`), so both directions are supported without a numpy
//! install. Reading accepts format versions 1.0, 2.0 and 3.0, little-endian `float32`,
//! `float64`, `int32`, `int64`, `uint8` and `bool`, 1-D or 2-D, C or Fortran order; anything
//! else is refused with a message that says what was found. Writing produces version 1.0 (2.0
//! when the header needs it), C order, with numpy's 64-byte header alignment, through a
//! temporary file and a rename.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{write_atomic, EvalError, Matrix, Result};

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// The values of an `.npy` array, in C (row-major) order whatever the file's order.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    /// `<f4`.
    F32(Vec<f32>),
    /// `<f8`.
    F64(Vec<f64>),
    /// `<i4`.
    I32(Vec<i32>),
    /// `<i8`.
    I64(Vec<i64>),
    /// `|u1`.
    U8(Vec<u8>),
    /// `|b1`.
    Bool(Vec<bool>),
}

impl NpyData {
    /// numpy's name of the element type (`"<f4"`, `"|b1"`, ...).
    pub fn descr(&self) -> &'static str {
        match self {
            NpyData::F32(_) => "<f4",
            NpyData::F64(_) => "<f8",
            NpyData::I32(_) => "<i4",
            NpyData::I64(_) => "<i8",
            NpyData::U8(_) => "|u1",
            NpyData::Bool(_) => "|b1",
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            NpyData::F32(v) => v.len(),
            NpyData::F64(v) => v.len(),
            NpyData::I32(v) => v.len(),
            NpyData::I64(v) => v.len(),
            NpyData::U8(v) => v.len(),
            NpyData::Bool(v) => v.len(),
        }
    }

    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An array read from an `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// The shape, as in the header (`()` for a scalar).
    pub shape: Vec<usize>,
    /// The values, in C order.
    pub data: NpyData,
    /// The file it was read from, for later error messages.
    pub path: PathBuf,
}

/// Element types the reader knows, with their size in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Dtype {
    F32,
    F64,
    I32,
    I64,
    U8,
    Bool,
}

impl Dtype {
    fn parse(descr: &str) -> std::result::Result<Self, String> {
        let supported = "one of '<f4', '<f8', '<i4', '<i8', '|u1', '|b1' (little-endian)";
        Ok(match descr {
            "<f4" => Dtype::F32,
            "<f8" => Dtype::F64,
            "<i4" => Dtype::I32,
            "<i8" => Dtype::I64,
            "|u1" | "<u1" => Dtype::U8,
            "|b1" | "<b1" => Dtype::Bool,
            d if d.starts_with('>') => {
                return Err(format!(
                    "dtype '{d}' is big-endian; expected {supported}: convert with \
                     arr.astype(arr.dtype.newbyteorder('<'))"
                ))
            }
            d => return Err(format!("unsupported dtype '{d}'; expected {supported}")),
        })
    }

    fn size(self) -> usize {
        match self {
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::U8 | Dtype::Bool => 1,
        }
    }

    /// numpy's name of the type, matching [`NpyData::descr`] so that messages read alike.
    fn descr(self) -> &'static str {
        match self {
            Dtype::F32 => "<f4",
            Dtype::F64 => "<f8",
            Dtype::I32 => "<i4",
            Dtype::I64 => "<i8",
            Dtype::U8 => "|u1",
            Dtype::Bool => "|b1",
        }
    }
}

/// The parsed header dictionary.
#[derive(Debug)]
struct Header {
    dtype: Dtype,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// A value of the header dictionary.
#[derive(Debug)]
enum HeaderValue {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

/// A tiny parser for the Python dict literal of an `.npy` header, e.g.
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`.
struct DictParser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl DictParser<'_> {
    fn skip_ws(&mut self) {
        while self.pos < self.s.len() && (self.s[self.pos] as char).is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.pos).copied()
    }

    fn expect(&mut self, c: u8) -> std::result::Result<(), String> {
        match self.peek() {
            Some(x) if x == c => {
                self.pos += 1;
                Ok(())
            }
            Some(x) => Err(format!(
                "header: expected '{}' at character {}, found '{}'",
                c as char, self.pos, x as char
            )),
            None => Err(format!("header: expected '{}', found the end", c as char)),
        }
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(format!("header: expected a quoted string at character {}", self.pos)),
        };
        self.pos += 1;
        let start = self.pos;
        while self.pos < self.s.len() && self.s[self.pos] != quote {
            self.pos += 1;
        }
        if self.pos >= self.s.len() {
            return Err("header: unterminated string".into());
        }
        let text = String::from_utf8_lossy(&self.s[start..self.pos]).into_owned();
        self.pos += 1;
        Ok(text)
    }

    fn value(&mut self) -> std::result::Result<HeaderValue, String> {
        match self.peek() {
            Some(b'\'' | b'"') => Ok(HeaderValue::Str(self.string()?)),
            Some(b'(') => {
                self.pos += 1;
                let mut dims = Vec::new();
                loop {
                    match self.peek() {
                        Some(b')') => {
                            self.pos += 1;
                            return Ok(HeaderValue::Tuple(dims));
                        }
                        Some(c) if c.is_ascii_digit() => {
                            let start = self.pos;
                            while self.pos < self.s.len() && self.s[self.pos].is_ascii_digit() {
                                self.pos += 1;
                            }
                            let text = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("");
                            // numpy 1.x wrote `3L` for Python 2 longs.
                            if self.s.get(self.pos) == Some(&b'L') {
                                self.pos += 1;
                            }
                            dims.push(text.parse::<usize>().map_err(|_| {
                                format!("header: shape dimension {text} does not fit in usize")
                            })?);
                            match self.peek() {
                                Some(b',') => self.pos += 1,
                                Some(b')') => {}
                                _ => return Err("header: malformed shape tuple".into()),
                            }
                        }
                        _ => {
                            return Err(format!(
                                "header: expected a non-negative integer in the shape at \
                                 character {}",
                                self.pos
                            ))
                        }
                    }
                }
            }
            _ => {
                let rest = &self.s[self.pos..];
                if rest.starts_with(b"True") {
                    self.pos += 4;
                    Ok(HeaderValue::Bool(true))
                } else if rest.starts_with(b"False") {
                    self.pos += 5;
                    Ok(HeaderValue::Bool(false))
                } else {
                    Err(format!("header: unexpected value at character {}", self.pos))
                }
            }
        }
    }

    fn header(&mut self) -> std::result::Result<Header, String> {
        self.expect(b'{')?;
        let (mut descr, mut fortran, mut shape) = (None, None, None);
        loop {
            if self.peek() == Some(b'}') {
                self.pos += 1;
                break;
            }
            let key = self.string()?;
            self.expect(b':')?;
            let value = self.value()?;
            match (key.as_str(), value) {
                ("descr", HeaderValue::Str(s)) => descr = Some(s),
                ("fortran_order", HeaderValue::Bool(b)) => fortran = Some(b),
                ("shape", HeaderValue::Tuple(t)) => shape = Some(t),
                (k @ ("descr" | "fortran_order" | "shape"), v) => {
                    return Err(format!("header: key '{k}' has the wrong kind of value {v:?}"))
                }
                (k, _) => return Err(format!("header: unexpected key '{k}'")),
            }
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => return Err(format!("header: expected ',' or '}}' at character {}", self.pos)),
            }
        }
        let descr = descr.ok_or("header: missing key 'descr'")?;
        let dtype = Dtype::parse(&descr)?;
        Ok(Header {
            dtype,
            fortran_order: fortran.ok_or("header: missing key 'fortran_order'")?,
            shape: shape.ok_or("header: missing key 'shape'")?,
        })
    }
}

/// Reads an `.npy` file.
pub fn read(path: impl AsRef<Path>) -> Result<NpyArray> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| EvalError::io(path, e))?;
    let file_len = file.metadata().map_err(|e| EvalError::io(path, e))?.len();
    read_from(std::io::BufReader::new(file), Some(file_len), path)
}

/// Parses the bytes of an `.npy` file; `path` is only used in error messages.
pub fn parse(bytes: &[u8], path: impl AsRef<Path>) -> Result<NpyArray> {
    read_from(bytes, Some(bytes.len() as u64), path.as_ref())
}

fn read_from<R: Read>(mut r: R, total_len: Option<u64>, path: &Path) -> Result<NpyArray> {
    let (prefix, header_len) = read_preamble(&mut r, path)?;
    if let Some(total) = total_len {
        if prefix + header_len as u64 > total {
            return Err(npy_error(
                path,
                format!("header length {header_len} runs past the end of the file ({total} bytes)"),
            ));
        }
    }
    let header = read_header(&mut r, header_len, path)?;
    let count = element_count(&header, path)?;
    let payload = (count * header.dtype.size()) as u64;
    if let Some(total) = total_len {
        let available = total - prefix - header_len as u64;
        if available != payload {
            return Err(npy_error(
                path,
                format!(
                    "shape {:?} of '{}' needs {payload} data bytes, the file holds {available}",
                    header.shape,
                    header.dtype.descr()
                ),
            ));
        }
    }
    let mut data = read_data(&mut r, &header, count, payload, path)?;
    if header.fortran_order && header.shape.len() == 2 {
        data = to_c_order(data, header.shape[0], header.shape[1]);
    }
    Ok(NpyArray { shape: header.shape, data, path: path.to_path_buf() })
}

/// Every format problem is an [`EvalError::Npy`] naming the file, whichever step finds it.
fn npy_error(path: &Path, what: String) -> EvalError {
    EvalError::Npy { path: path.to_path_buf(), what }
}

/// A read error before the payload: an early end means a truncated header, not an I/O fault.
fn header_read_error(path: &Path, e: std::io::Error) -> EvalError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        npy_error(path, "file ends inside the header".into())
    } else {
        EvalError::io(path, e)
    }
}

/// Checks the magic string and reads the version's header length field, whose width differs
/// between version 1 and versions 2 and 3; returns the prefix size and the header length.
fn read_preamble<R: Read>(r: &mut R, path: &Path) -> Result<(u64, usize)> {
    let io = |e| header_read_error(path, e);
    let mut pre = [0u8; 8];
    r.read_exact(&mut pre).map_err(io)?;
    if &pre[..6] != MAGIC {
        return Err(npy_error(
            path,
            format!(
                "expected the magic string \\x93NUMPY at the start, found {:?}",
                String::from_utf8_lossy(&pre[..6])
            ),
        ));
    }
    let (major, minor) = (pre[6], pre[7]);
    let header_len = match major {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).map_err(io)?;
            u16::from_le_bytes(b) as usize
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).map_err(io)?;
            u32::from_le_bytes(b) as usize
        }
        _ => {
            return Err(npy_error(
                path,
                format!("format version {major}.{minor}; expected 1.0, 2.0 or 3.0"),
            ))
        }
    };
    let prefix = if major == 1 { 10u64 } else { 12 };
    Ok((prefix, header_len))
}

/// Reads and parses the header dictionary, refusing more than two dimensions up front since
/// every consumer wants a vector or a matrix.
fn read_header<R: Read>(r: &mut R, header_len: usize, path: &Path) -> Result<Header> {
    let mut header = vec![0u8; header_len];
    r.read_exact(&mut header).map_err(|e| header_read_error(path, e))?;
    let header =
        DictParser { s: &header, pos: 0 }.header().map_err(|what| npy_error(path, what))?;
    if header.shape.len() > 2 {
        return Err(npy_error(
            path,
            format!(
                "shape {:?} has {} dimensions; expected 1 (vector) or 2 (matrix)",
                header.shape,
                header.shape.len()
            ),
        ));
    }
    Ok(header)
}

/// Number of elements, refusing shapes whose element or byte count overflows `usize` (a
/// corrupt header must not turn into a huge allocation or a wrapped size).
fn element_count(header: &Header, path: &Path) -> Result<usize> {
    header
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|c| c.checked_mul(header.dtype.size()).map(|_| c))
        .ok_or_else(|| npy_error(path, format!("shape {:?} is too large", header.shape)))
}

/// Reads the `count` values of the payload (`payload` bytes, for the message when the file is
/// short), checking that bools are 0 or 1 since numpy never writes anything else.
fn read_data<R: Read>(
    r: &mut R,
    header: &Header,
    count: usize,
    payload: u64,
    path: &Path,
) -> Result<NpyData> {
    let truncated = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            npy_error(
                path,
                format!("file ends before the {payload} data bytes of shape {:?}", header.shape),
            )
        } else {
            EvalError::io(path, e)
        }
    };
    Ok(match header.dtype {
        Dtype::F32 => NpyData::F32(read_values(r, count, f32::from_le_bytes).map_err(truncated)?),
        Dtype::F64 => NpyData::F64(read_values(r, count, f64::from_le_bytes).map_err(truncated)?),
        Dtype::I32 => NpyData::I32(read_values(r, count, i32::from_le_bytes).map_err(truncated)?),
        Dtype::I64 => NpyData::I64(read_values(r, count, i64::from_le_bytes).map_err(truncated)?),
        Dtype::U8 => NpyData::U8(read_values(r, count, u8::from_le_bytes).map_err(truncated)?),
        Dtype::Bool => {
            let raw = read_values(r, count, u8::from_le_bytes).map_err(truncated)?;
            if let Some(i) = raw.iter().position(|&b| b > 1) {
                return Err(npy_error(
                    path,
                    format!("bool element {i} holds byte {}, expected 0 or 1", raw[i]),
                ));
            }
            NpyData::Bool(raw.into_iter().map(|b| b == 1).collect())
        }
    })
}

/// Fortran-order `rows x cols` values in C order, which is what [`NpyArray::data`] promises.
fn to_c_order(data: NpyData, rows: usize, cols: usize) -> NpyData {
    match data {
        NpyData::F32(v) => NpyData::F32(transpose(&v, rows, cols)),
        NpyData::F64(v) => NpyData::F64(transpose(&v, rows, cols)),
        NpyData::I32(v) => NpyData::I32(transpose(&v, rows, cols)),
        NpyData::I64(v) => NpyData::I64(transpose(&v, rows, cols)),
        NpyData::U8(v) => NpyData::U8(transpose(&v, rows, cols)),
        NpyData::Bool(v) => NpyData::Bool(transpose(&v, rows, cols)),
    }
}

/// Reads `count` little-endian values of `N` bytes, 64 KiB at a time (no second copy of a
/// multi-gigabyte payload).
fn read_values<R: Read, T, const N: usize>(
    r: &mut R,
    count: usize,
    decode: fn([u8; N]) -> T,
) -> std::io::Result<Vec<T>> {
    let mut out = Vec::with_capacity(count);
    let mut buf = vec![0u8; (1 << 16) / N * N];
    let mut left = count;
    while left > 0 {
        let n = left.min(buf.len() / N);
        r.read_exact(&mut buf[..n * N])?;
        out.extend(buf[..n * N].chunks_exact(N).map(|c| decode(c.try_into().expect("N bytes"))));
        left -= n;
    }
    Ok(out)
}

/// Column-major `rows x cols` to row-major.
fn transpose<T: Copy>(v: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(v.len());
    for i in 0..rows {
        for j in 0..cols {
            out.push(v[j * rows + i]);
        }
    }
    out
}

impl NpyArray {
    fn bad(&self, what: String) -> EvalError {
        EvalError::Npy { path: self.path.clone(), what }
    }

    /// `(rows, cols)` of a 2-D array, or an error that names the shape found.
    fn matrix_shape(&self) -> Result<(usize, usize)> {
        match self.shape[..] {
            [r, c] => Ok((r, c)),
            _ => Err(self.bad(format!(
                "shape {:?}: expected a 2-D array (rows, columns) of embeddings",
                self.shape
            ))),
        }
    }

    /// Length of a 1-D array or of an `(n, 1)` column.
    fn vector_len(&self) -> Result<usize> {
        match self.shape[..] {
            [n] | [n, 1] => Ok(n),
            _ => Err(self
                .bad(format!("shape {:?}: expected a 1-D array or an (n, 1) column", self.shape))),
        }
    }

    /// The array as an `f32` matrix; `float64` values are rounded to the nearest `f32`.
    pub fn into_matrix_f32(self) -> Result<Matrix<f32>> {
        let (rows, cols) = self.matrix_shape()?;
        let origin = self.path.display().to_string();
        let data = match self.data {
            NpyData::F32(v) => v,
            NpyData::F64(v) => v.into_iter().map(|x| x as f32).collect(),
            ref d => return Err(self.bad_dtype(d.descr(), "'<f4' or '<f8' embeddings")),
        };
        Ok(Matrix { rows, cols, data, origin })
    }

    /// The array as an `f64` matrix (`float32` values widen exactly).
    pub fn into_matrix_f64(self) -> Result<Matrix<f64>> {
        let (rows, cols) = self.matrix_shape()?;
        let origin = self.path.display().to_string();
        let data = match self.data {
            NpyData::F32(v) => v.into_iter().map(f64::from).collect(),
            NpyData::F64(v) => v,
            ref d => return Err(self.bad_dtype(d.descr(), "'<f4' or '<f8' embeddings")),
        };
        Ok(Matrix { rows, cols, data, origin })
    }

    /// The array as a vector of `f64` (scores or distances).
    pub fn into_vec_f64(self) -> Result<Vec<f64>> {
        self.vector_len()?;
        match self.data {
            NpyData::F32(v) => Ok(v.into_iter().map(f64::from).collect()),
            NpyData::F64(v) => Ok(v),
            ref d => Err(self.bad_dtype(d.descr(), "'<f4' or '<f8' values")),
        }
    }

    /// The array as a vector of `f32` (scores); `float64` values are rounded.
    pub fn into_vec_f32(self) -> Result<Vec<f32>> {
        self.vector_len()?;
        match self.data {
            NpyData::F32(v) => Ok(v),
            NpyData::F64(v) => Ok(v.into_iter().map(|x| x as f32).collect()),
            ref d => Err(self.bad_dtype(d.descr(), "'<f4' or '<f8' values")),
        }
    }

    /// The array as booleans (issame / pair labels): `bool`, or integers that are all 0 or 1.
    pub fn into_bools(self) -> Result<Vec<bool>> {
        self.vector_len()?;
        let ints: Vec<i64> = match &self.data {
            NpyData::Bool(v) => return Ok(v.clone()),
            NpyData::U8(v) => v.iter().map(|&x| x as i64).collect(),
            NpyData::I32(v) => v.iter().map(|&x| x as i64).collect(),
            NpyData::I64(v) => v.clone(),
            d => return Err(self.bad_dtype(d.descr(), "'|b1' or 0/1 integers")),
        };
        ints.iter()
            .enumerate()
            .map(|(i, &x)| match x {
                0 => Ok(false),
                1 => Ok(true),
                _ => Err(self.bad(format!("element {i} is {x}; a label must be 0 or 1"))),
            })
            .collect()
    }

    /// The array as `i64` (identity labels): any integer type.
    pub fn into_vec_i64(self) -> Result<Vec<i64>> {
        self.vector_len()?;
        match self.data {
            NpyData::I64(v) => Ok(v),
            NpyData::I32(v) => Ok(v.into_iter().map(i64::from).collect()),
            NpyData::U8(v) => Ok(v.into_iter().map(i64::from).collect()),
            ref d => Err(self.bad_dtype(d.descr(), "an integer type ('<i8', '<i4', '|u1')")),
        }
    }

    fn bad_dtype(&self, found: &str, expected: &str) -> EvalError {
        self.bad(format!("dtype '{found}': expected {expected}"))
    }
}

/// Reads a 2-D `float32` / `float64` file as an `f32` matrix (`float64` values rounded).
pub fn read_matrix(path: impl AsRef<Path>) -> Result<Matrix<f32>> {
    read(path)?.into_matrix_f32()
}

/// Reads a 2-D `float32` / `float64` file as an `f64` matrix.
pub fn read_matrix_f64(path: impl AsRef<Path>) -> Result<Matrix<f64>> {
    read(path)?.into_matrix_f64()
}

/// Builds the bytes of an `.npy` file: magic, version, header padded with spaces to a multiple
/// of 64 bytes (numpy's alignment) ending in a newline, payload.
fn encode(descr: &str, shape: &[usize], payload: &[u8]) -> Vec<u8> {
    let dims = match shape {
        [n] => format!("({n},)"),
        s => format!("({})", s.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")),
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    let (version, prefix) = if dict.len() + 11 < 65536 { (1u8, 10) } else { (2u8, 12) };
    let padded = (prefix + dict.len() + 1).div_ceil(64) * 64;
    dict.extend(std::iter::repeat_n(' ', padded - prefix - dict.len() - 1));
    dict.push('\n');
    let mut out = Vec::with_capacity(padded + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(dict.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.extend_from_slice(payload);
    out
}

/// The bytes of a 2-D `float32` `.npy` file holding `m`.
pub fn encode_matrix_f32(m: &Matrix<f32>) -> Vec<u8> {
    let payload: Vec<u8> = m.data.iter().flat_map(|v| v.to_le_bytes()).collect();
    encode("<f4", &[m.rows, m.cols], &payload)
}

/// Writes `m` as a 2-D `float32` `.npy` file (atomically).
pub fn write_matrix_f32(path: impl AsRef<Path>, m: &Matrix<f32>) -> Result<()> {
    write_atomic(path.as_ref(), &encode_matrix_f32(m))
}

/// Writes a 1-D `float32` `.npy` file (scores), atomically.
pub fn write_f32(path: impl AsRef<Path>, values: &[f32]) -> Result<()> {
    let payload: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_atomic(path.as_ref(), &encode("<f4", &[values.len()], &payload))
}

/// Writes a 1-D `int64` `.npy` file (labels, indices), atomically.
pub fn write_i64(path: impl AsRef<Path>, values: &[i64]) -> Result<()> {
    let payload: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_atomic(path.as_ref(), &encode("<i8", &[values.len()], &payload))
}

/// Writes a 1-D `int32` `.npy` file, atomically.
pub fn write_i32(path: impl AsRef<Path>, values: &[i32]) -> Result<()> {
    let payload: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_atomic(path.as_ref(), &encode("<i4", &[values.len()], &payload))
}

/// Writes a 1-D `bool` `.npy` file (issame), atomically.
pub fn write_bools(path: impl AsRef<Path>, values: &[bool]) -> Result<()> {
    let payload: Vec<u8> = values.iter().map(|&b| b as u8).collect();
    write_atomic(path.as_ref(), &encode("|b1", &[values.len()], &payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::test_util::temp_dir;

    /// What `np.save` writes for `np.arange(6, dtype=np.float32).reshape(2, 3)` (numpy 2.4):
    /// version 1.0, header length 118, 64-byte aligned.
    fn numpy_2x3() -> Vec<u8> {
        let mut b = b"\x93NUMPY\x01\x00\x76\x00".to_vec();
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        b.extend_from_slice(dict.as_bytes());
        b.extend(std::iter::repeat_n(b' ', 118 - dict.len() - 1));
        b.push(b'\n');
        for v in 0..6 {
            b.extend_from_slice(&(v as f32).to_le_bytes());
        }
        b
    }

    #[test]
    fn reads_what_numpy_writes_and_writes_the_same_bytes() {
        let bytes = numpy_2x3();
        let a = parse(&bytes, "a.npy").unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        let m = a.into_matrix_f32().unwrap();
        assert_eq!((m.rows, m.cols, m.origin.as_str()), (2, 3, "a.npy"));
        assert_eq!(m.data, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(encode_matrix_f32(&m), bytes);
    }

    #[test]
    fn round_trips_every_written_type_through_files() {
        let dir = temp_dir("npy");
        let m = Matrix::new(3, 2, vec![1.5f32, -2.0, 0.0, f32::MIN_POSITIVE, 7.0, 1e30]).unwrap();
        write_matrix_f32(dir.join("m.npy"), &m).unwrap();
        let back = read_matrix(dir.join("m.npy")).unwrap();
        assert_eq!(back.data, m.data);
        let wide = read_matrix_f64(dir.join("m.npy")).unwrap();
        assert_eq!(wide.data[5], 1e30f32 as f64);
        write_i64(dir.join("i64.npy"), &[-1, 5, i64::MAX]).unwrap();
        assert_eq!(
            read(dir.join("i64.npy")).unwrap().into_vec_i64().unwrap(),
            vec![-1, 5, i64::MAX]
        );
        write_i32(dir.join("i32.npy"), &[3, -4]).unwrap();
        assert_eq!(read(dir.join("i32.npy")).unwrap().into_vec_i64().unwrap(), vec![3, -4]);
        write_f32(dir.join("s.npy"), &[0.25, -0.5]).unwrap();
        assert_eq!(read(dir.join("s.npy")).unwrap().into_vec_f64().unwrap(), vec![0.25, -0.5]);
        assert_eq!(read(dir.join("s.npy")).unwrap().into_vec_f32().unwrap(), vec![0.25, -0.5]);
        write_bools(dir.join("b.npy"), &[true, false, true]).unwrap();
        assert_eq!(read(dir.join("b.npy")).unwrap().into_bools().unwrap(), vec![true, false, true]);
        let e = read(dir.join("i32.npy")).unwrap().into_bools().unwrap_err().to_string();
        assert!(e.contains("element 0 is 3"), "{e}");
        // Every written file is 64-byte aligned before the payload.
        let bytes = std::fs::read(dir.join("b.npy")).unwrap();
        assert_eq!((bytes.len() - 3) % 64, 0);
    }

    #[test]
    fn reads_version_2_and_3_float64_fortran_order() {
        // [[1, 2, 3], [4, 5, 6]] stored column by column.
        let dict = b"{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }\n";
        for major in [2u8, 3] {
            let mut b = b"\x93NUMPY".to_vec();
            b.extend_from_slice(&[major, 0]);
            b.extend_from_slice(&(dict.len() as u32).to_le_bytes());
            b.extend_from_slice(dict);
            for v in [1.0f64, 4.0, 2.0, 5.0, 3.0, 6.0] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            let m = parse(&b, "f.npy").unwrap().into_matrix_f64().unwrap();
            assert_eq!(m.data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        }
    }

    #[test]
    fn parses_header_variants() {
        // Double quotes, no trailing comma, a 1-D shape, and Python 2's `L` suffix.
        let dict = "{\"descr\": \"|u1\", \"shape\": (3L,), \"fortran_order\": False}";
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        b.extend_from_slice(dict.as_bytes());
        b.extend_from_slice(&[0, 1, 1]);
        assert_eq!(parse(&b, "u.npy").unwrap().into_bools().unwrap(), vec![false, true, true]);
    }

    /// An `.npy` file with `dict` as its header and `payload` after it.
    fn with_header(dict: &str, payload: &[u8]) -> Vec<u8> {
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        b.extend_from_slice(dict.as_bytes());
        b.extend_from_slice(payload);
        b
    }

    fn err(bytes: &[u8]) -> String {
        let e = parse(bytes, "bad.npy").unwrap_err();
        assert!(matches!(e, EvalError::Npy { .. }), "{e:?}");
        let s = e.to_string();
        assert!(s.contains("bad.npy"), "{s}");
        s
    }

    #[test]
    fn refuses_bad_files_with_a_reason() {
        assert!(err(b"PK\x03\x04 not numpy").contains("magic"));
        assert!(err(b"\x93NUMPY\x09\x00\x10\x00").contains("version 9.0"));
        assert!(err(b"\x93NUMPY\x01\x00\xff\x00{}").contains("runs past the end"));
        assert!(err(b"\x93NU").contains("ends inside the header"));
        let f4 =
            |shape: &str| format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
        assert!(err(&with_header(&f4("(2, 2)"), &[0; 12]))
            .contains("needs 16 data bytes, the file holds 12"));
        assert!(err(&with_header(&f4("(1,)"), &[0; 8]))
            .contains("needs 4 data bytes, the file holds 8"));
        assert!(err(&with_header(&f4("(1, 1, 1)"), &[0; 4])).contains("3 dimensions"));
        assert!(err(&with_header(&f4("(-1,)"), &[])).contains("non-negative integer"));
        assert!(err(&with_header(&f4("(99999999999999999999,)"), &[])).contains("does not fit"));
        assert!(err(&with_header(&f4("(4611686018427387904, 4)"), &[])).contains("too large"));
        let big = "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }";
        assert!(err(&with_header(big, &[0; 4])).contains("big-endian"));
        let c8 = "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }";
        assert!(err(&with_header(c8, &[0; 8])).contains("unsupported dtype '<c8'"));
        let missing = "{'descr': '<f4', 'shape': (1,), }";
        assert!(err(&with_header(missing, &[0; 4])).contains("missing key 'fortran_order'"));
        let extra = "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': True}";
        assert!(err(&with_header(extra, &[0; 4])).contains("unexpected key 'x'"));
        let wrong = "{'descr': '<f4', 'fortran_order': 'no', 'shape': (1,), }";
        assert!(err(&with_header(wrong, &[0; 4])).contains("wrong kind of value"));
        let unterminated = "{'descr': '<f4";
        assert!(err(&with_header(unterminated, &[])).contains("unterminated"));
        let b1 = "{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }";
        assert!(err(&with_header(b1, &[1, 7])).contains("bool element 1 holds byte 7"));
    }

    #[test]
    fn conversions_check_shape_and_dtype() {
        let v = parse(
            &with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", &[0; 8]),
            "v.npy",
        )
        .unwrap();
        let e = v.clone().into_matrix_f32().unwrap_err().to_string();
        assert!(e.contains("v.npy") && e.contains("expected a 2-D array"), "{e}");
        assert!(v.clone().into_bools().unwrap_err().to_string().contains("dtype '<f4'"));
        assert!(v.into_vec_i64().is_err());
        let m = parse(&numpy_2x3(), "m.npy").unwrap();
        assert!(m.into_vec_f64().unwrap_err().to_string().contains("(n, 1) column"));
        let i = parse(
            &with_header("{'descr': '<i4', 'fortran_order': False, 'shape': (1, 1), }", &[0; 4]),
            "i.npy",
        )
        .unwrap();
        assert!(i.clone().into_matrix_f64().unwrap_err().to_string().contains("dtype '<i4'"));
        assert_eq!(i.into_vec_i64().unwrap(), vec![0]);
        let e = read("/nonexistent/dir/x.npy").unwrap_err();
        assert!(matches!(e, EvalError::Io { .. }));
    }
}
