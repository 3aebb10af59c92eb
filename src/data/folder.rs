//! Image folders with one subfolder per identity.
//!
//! ```text
//! root/
//!   alice/   001.jpg 002.png ...
//!   bob/     a.bmp b.pgm ...
//! ```
//!
//! Subfolders are sorted by name and the label of an image is the index of its subfolder in
//! that order. Inside a subfolder, files whose extension is one of [`IMAGE_EXTENSIONS`]
//! (case-insensitive) are used, sorted by name; other files are ignored, hidden entries (names
//! starting with `.`) too. A subfolder without any image is an error naming it.

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use image::imageops::FilterType;
use image::RgbImage;

use super::error::{DataError, Result};

/// File extensions (lower case) accepted as images.
pub const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "bmp", "pgm", "ppm"];

/// Whether `path` has one of the [`IMAGE_EXTENSIONS`] (case-insensitive).
pub fn is_image_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
        .unwrap_or(false)
}

/// Largest image file read (a face crop takes kilobytes): a bigger file is refused before it is
/// read, so a stray video or disk image in a folder cannot exhaust memory.
pub const MAX_IMAGE_FILE_BYTES: u64 = 64 << 20;

/// Largest decoded width or height, in pixels.
pub const MAX_IMAGE_SIDE: u32 = 16_384;

/// Most bytes the decoder may allocate for one image's pixels: a few-KB file can announce
/// gigapixels, so the size is checked against this before the pixels are allocated.
pub const MAX_DECODED_BYTES: u64 = 512 << 20;

/// Decodes encoded image bytes (format guessed from the content) to RGB; greyscale and alpha
/// images are converted. When `side` is given and the image is not `side x side`, it is resized
/// with a bilinear (triangle) filter; the returned flag tells whether that happened.
///
/// Images wider or taller than [`MAX_IMAGE_SIDE`] or whose pixels take more than
/// [`MAX_DECODED_BYTES`] give an [`image::ImageError::Limits`] (see [`image_error`]).
pub fn decode_rgb(bytes: &[u8], side: Option<u32>) -> image::ImageResult<(RgbImage, bool)> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format()?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    reader.limits(limits);
    let rgb = reader.decode()?.to_rgb8();
    Ok(resize_to(rgb, side))
}

/// The error for an image that did not decode, naming `path` (and `record` inside a container
/// file); an image past the decoding caps gives [`DataError::TooLarge`] naming them.
pub fn image_error(path: &Path, record: Option<usize>, source: image::ImageError) -> DataError {
    match source {
        image::ImageError::Limits(e) => DataError::TooLarge {
            path: path.to_path_buf(),
            record,
            what: format!(
                "{e}: decoded images may be at most {MAX_IMAGE_SIDE} pixels wide and high and \
                 take at most {MAX_DECODED_BYTES} bytes"
            ),
        },
        source => DataError::Image { path: path.to_path_buf(), record, source },
    }
}

/// Reads the image file at `path` whole, refusing one larger than [`MAX_IMAGE_FILE_BYTES`].
pub fn read_image_file(path: &Path) -> Result<Vec<u8>> {
    read_capped(path, MAX_IMAGE_FILE_BYTES)
}

/// Reads `path` whole when it holds at most `cap` bytes. The size is checked before reading,
/// and the read stops past `cap`, for files that grow or report no size (pipes, devices).
fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>> {
    let too_large = |size: String| DataError::TooLarge {
        path: path.to_path_buf(),
        record: None,
        what: format!("{size} bytes, more than the {cap}-byte cap on an image file"),
    };
    let file = fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
    if len > cap {
        return Err(too_large(len.to_string()));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(cap + 1).read_to_end(&mut bytes).map_err(|e| DataError::io(path, e))?;
    if bytes.len() as u64 > cap {
        return Err(too_large(format!("over {cap}")));
    }
    Ok(bytes)
}

fn resize_to(rgb: RgbImage, side: Option<u32>) -> (RgbImage, bool) {
    match side {
        Some(s) if rgb.dimensions() != (s, s) => {
            (image::imageops::resize(&rgb, s, s, FilterType::Triangle), true)
        }
        _ => (rgb, false),
    }
}

fn check_side(side: u32) -> Result<()> {
    if side == 0 {
        return Err(DataError::InvalidConfig {
            field: "side",
            what: "image side must be at least 1 pixel".into(),
        });
    }
    Ok(())
}

/// Loads the image at `path` as RGB, resized to `side x side` (bilinear) when needed.
pub fn load_rgb(path: &Path, side: u32) -> Result<RgbImage> {
    load_rgb_report(path, side).map(|(img, _)| img)
}

/// Like [`load_rgb`], also telling whether the image had to be resized.
pub fn load_rgb_report(path: &Path, side: u32) -> Result<(RgbImage, bool)> {
    check_side(side)?;
    let bytes = read_image_file(path)?;
    decode_rgb(&bytes, Some(side)).map_err(|source| image_error(path, None, source))
}

/// Lists the entries of `dir`, skipping hidden names, sorted by file name.
fn sorted_entries(dir: &Path) -> Result<Vec<(OsString, PathBuf, bool)>> {
    let rd = fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        // follow symlinks: a linked folder or file counts as what it points to
        let is_dir = fs::metadata(&path).map_err(|e| DataError::io(&path, e))?.is_dir();
        out.push((name, path, is_dir));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// An identity-per-subfolder image dataset.
#[derive(Debug)]
pub struct ImageFolder {
    root: PathBuf,
    class_names: Vec<String>,
    class_dirs: Vec<PathBuf>,
    items: Vec<(PathBuf, usize)>,
    resized: AtomicUsize,
    reported: AtomicBool,
}

impl ImageFolder {
    /// Scans `root`: one class per (non-hidden) subfolder, sorted by name.
    ///
    /// Errors: `root` unreadable ([`DataError::Io`]), no subfolder or a subfolder without
    /// any image ([`DataError::Empty`] naming it).
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let mut class_names = Vec::new();
        let mut class_dirs = Vec::new();
        let mut items = Vec::new();
        for (name, path, is_dir) in sorted_entries(&root)? {
            if !is_dir {
                continue;
            }
            let label = class_dirs.len();
            let mut n = 0;
            for (_, file, file_is_dir) in sorted_entries(&path)? {
                if !file_is_dir && is_image_path(&file) {
                    items.push((file, label));
                    n += 1;
                }
            }
            if n == 0 {
                return Err(DataError::Empty {
                    path,
                    what: format!(
                        "identity folder holds no image (expected files ending in {})",
                        IMAGE_EXTENSIONS.join("/")
                    ),
                });
            }
            class_names.push(name.to_string_lossy().into_owned());
            class_dirs.push(path);
        }
        if class_dirs.is_empty() {
            return Err(DataError::Empty { path: root, what: "no identity subfolder".into() });
        }
        Ok(ImageFolder {
            root,
            class_names,
            class_dirs,
            items,
            resized: AtomicUsize::new(0),
            reported: AtomicBool::new(false),
        })
    }

    /// The folder this dataset was opened from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there is no image (never true after a successful [`ImageFolder::open`]).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Number of identities (subfolders).
    pub fn num_classes(&self) -> usize {
        self.class_dirs.len()
    }

    /// Subfolder names, in label order.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// Subfolder paths, in label order.
    pub fn class_dirs(&self) -> &[PathBuf] {
        &self.class_dirs
    }

    /// All `(path, label)` pairs, identity-major and sorted.
    pub fn items(&self) -> &[(PathBuf, usize)] {
        &self.items
    }

    /// Number of images of each identity, in label order.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.class_dirs.len()];
        for (_, label) in &self.items {
            if let Some(c) = counts.get_mut(*label) {
                *c += 1;
            }
        }
        counts
    }

    /// Path of image `index`.
    pub fn path(&self, index: usize) -> Option<&Path> {
        self.items.get(index).map(|(p, _)| p.as_path())
    }

    /// Label of image `index`.
    pub fn label(&self, index: usize) -> Option<usize> {
        self.items.get(index).map(|(_, l)| *l)
    }

    /// Loads image `index` as RGB `side x side` (resized when needed) with its label.
    pub fn load(&self, index: usize, side: u32) -> Result<(RgbImage, usize)> {
        let (path, label) = self.items.get(index).ok_or_else(|| DataError::IndexOutOfRange {
            path: self.root.clone(),
            index,
            len: self.items.len(),
        })?;
        let (img, resized) = load_rgb_report(path, side)?;
        if resized {
            self.resized.fetch_add(1, Ordering::Relaxed);
        }
        Ok((img, *label))
    }

    /// How many images loaded so far had to be resized.
    pub fn resized_count(&self) -> usize {
        self.resized.load(Ordering::Relaxed)
    }

    /// A one-time notice about resizing: `Some(message)` the first time it is called after
    /// at least one image was resized, `None` otherwise (so the caller prints it once).
    pub fn take_resize_notice(&self) -> Option<String> {
        let n = self.resized_count();
        if n == 0 || self.reported.swap(true, Ordering::Relaxed) {
            return None;
        }
        Some(format!(
            "{}: {n} image(s) were not at the requested size and were resized (bilinear)",
            self.root.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::test_util::temp_dir;
    use image::{GrayImage, Luma, Rgb};

    fn rgb(w: u32, h: u32, v: u8) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([v, (x * 7) as u8, (y * 5) as u8]))
    }

    #[test]
    fn scans_sorted_classes_and_files() {
        let root = temp_dir("scan");
        for c in ["bob", "alice", "carol"] {
            fs::create_dir_all(root.join(c)).unwrap();
        }
        rgb(8, 8, 1).save(root.join("bob/b.PNG")).unwrap();
        rgb(8, 8, 2).save(root.join("bob/a.png")).unwrap();
        fs::write(root.join("bob/notes.txt"), "ignored").unwrap();
        rgb(8, 8, 3).save(root.join("alice/x.jpg")).unwrap();
        GrayImage::from_pixel(8, 8, Luma([77])).save(root.join("carol/g.pgm")).unwrap();
        rgb(8, 8, 4).save(root.join("carol/h.bmp")).unwrap();
        fs::write(root.join("readme.md"), "top-level files are ignored").unwrap();
        fs::create_dir_all(root.join(".hidden")).unwrap();

        let f = ImageFolder::open(&root).unwrap();
        assert_eq!(f.class_names(), ["alice", "bob", "carol"]);
        assert_eq!(f.len(), 5);
        assert_eq!(f.class_counts(), vec![1, 2, 2]);
        let names: Vec<String> = f
            .items()
            .iter()
            .map(|(p, l)| format!("{l}:{}", p.file_name().unwrap().to_string_lossy()))
            .collect();
        assert_eq!(names, ["0:x.jpg", "1:a.png", "1:b.PNG", "2:g.pgm", "2:h.bmp"]);

        // greyscale PGM becomes RGB with equal channels
        let (g, label) = f.load(3, 8).unwrap();
        assert_eq!(label, 2);
        assert_eq!(g.get_pixel(2, 2), &Rgb([77, 77, 77]));
        // lossless PNG round trip at the native size
        let (a, _) = f.load(1, 8).unwrap();
        assert_eq!(a.as_raw(), rgb(8, 8, 2).as_raw());
        assert_eq!(f.resized_count(), 0);
        assert_eq!(f.take_resize_notice(), None);
        assert!(matches!(f.load(5, 8), Err(DataError::IndexOutOfRange { index: 5, len: 5, .. })));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn resizes_and_reports_once() {
        let root = temp_dir("resize");
        fs::create_dir_all(root.join("a")).unwrap();
        rgb(20, 10, 9).save(root.join("a/1.png")).unwrap();
        rgb(16, 16, 9).save(root.join("a/2.png")).unwrap();
        let f = ImageFolder::open(&root).unwrap();
        let (img, _) = f.load(0, 16).unwrap();
        assert_eq!(img.dimensions(), (16, 16));
        f.load(1, 16).unwrap();
        f.load(0, 16).unwrap();
        assert_eq!(f.resized_count(), 2);
        let notice = f.take_resize_notice().unwrap();
        assert!(notice.contains("2 image(s)"), "{notice}");
        assert_eq!(f.take_resize_notice(), None);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn empty_identity_folder_is_named() {
        let root = temp_dir("empty");
        fs::create_dir_all(root.join("a")).unwrap();
        fs::create_dir_all(root.join("b")).unwrap();
        rgb(4, 4, 0).save(root.join("a/1.png")).unwrap();
        fs::write(root.join("b/only.txt"), "x").unwrap();
        match ImageFolder::open(&root) {
            Err(DataError::Empty { path, .. }) => assert_eq!(path, root.join("b")),
            other => panic!("expected Empty, got {other:?}"),
        }
        let bare = temp_dir("bare");
        assert!(matches!(ImageFolder::open(&bare), Err(DataError::Empty { .. })));
        fs::remove_dir_all(&root).unwrap();
        fs::remove_dir_all(&bare).unwrap();
    }

    #[test]
    fn unreadable_path_is_io_error() {
        let missing = std::env::temp_dir().join("groupface-definitely-missing-folder-xyz");
        match ImageFolder::open(&missing) {
            Err(DataError::Io { path, .. }) => assert_eq!(path, missing),
            other => panic!("expected Io, got {other:?}"),
        }
        assert!(matches!(load_rgb(&missing.join("a.png"), 8), Err(DataError::Io { .. })));
    }

    #[test]
    fn oversized_files_and_images_are_refused_naming_the_cap() {
        let root = temp_dir("large");
        // 100 bytes pass a 100-byte cap, 101 do not
        let small = root.join("small.png");
        fs::write(&small, [7u8; 100]).unwrap();
        assert_eq!(read_capped(&small, 100).unwrap(), vec![7u8; 100]);
        fs::write(&small, [7u8; 101]).unwrap();
        match read_capped(&small, 100) {
            Err(DataError::TooLarge { path, what, .. }) => {
                assert_eq!(path, small);
                assert!(what.starts_with("101 bytes, more than the 100-byte cap"), "{what}");
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // a sparse file one byte over 64 MiB is refused from its size, before it is read
        let big = root.join("big.jpg");
        fs::File::create(&big).unwrap().set_len(MAX_IMAGE_FILE_BYTES + 1).unwrap();
        let err = load_rgb(&big, 8).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::TooLarge { record: None, .. }), "{msg}");
        assert!(msg.contains(&big.display().to_string()), "{msg}");
        assert!(msg.contains("67108865 bytes, more than the 67108864-byte cap"), "{msg}");
        // decoded width: 16384 pixels decode, 16385 are refused (1 pixel high, ~50 KB each)
        let edge = root.join("edge.png");
        rgb(MAX_IMAGE_SIDE, 1, 3).save(&edge).unwrap();
        assert_eq!(load_rgb(&edge, 8).unwrap().dimensions(), (8, 8));
        let wide = root.join("wide.png");
        rgb(MAX_IMAGE_SIDE + 1, 1, 3).save(&wide).unwrap();
        match load_rgb(&wide, 8) {
            Err(e @ DataError::TooLarge { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(&wide.display().to_string()), "{msg}");
                assert!(msg.contains("at most 16384 pixels wide"), "{msg}");
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // the same cap inside a container file names the record
        let bytes = fs::read(&wide).unwrap();
        assert!(matches!(
            crate::data::recordio::decode_image(&bytes, Path::new("x.rec"), Some(3), None),
            Err(DataError::TooLarge { record: Some(3), .. })
        ));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn corrupt_and_truncated_images_name_the_file() {
        let root = temp_dir("corrupt");
        fs::create_dir_all(root.join("a")).unwrap();
        let good = root.join("a/good.png");
        rgb(16, 16, 5).save(&good).unwrap();
        let bytes = fs::read(&good).unwrap();
        let truncated = root.join("a/truncated.png");
        fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        let garbage = root.join("a/garbage.jpg");
        fs::write(&garbage, b"this is not an image at all").unwrap();
        let f = ImageFolder::open(&root).unwrap();
        for (i, expected) in [(0, &garbage), (2, &truncated)] {
            match f.load(i, 16) {
                Err(e @ DataError::Image { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains(&expected.display().to_string()), "{msg}");
                }
                other => panic!("expected Image error, got {other:?}"),
            }
        }
        assert!(f.load(1, 16).is_ok());
        assert!(matches!(f.load(1, 0), Err(DataError::InvalidConfig { field: "side", .. })));
        fs::remove_dir_all(&root).unwrap();
    }
}
