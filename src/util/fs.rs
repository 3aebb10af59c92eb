//! Files and folders written whole or not at all.
//!
//! A file is written under a temporary name in its own folder, synced, renamed over the target,
//! and the folder is synced, so a crash, a full disk or a second writer never leaves a truncated
//! or interleaved file where a complete one is expected ([`write_atomic`],
//! [`write_atomic_with`]). A data set (a folder, or a `.rec` with its `.idx`) is written into
//! hidden siblings and moved in place once complete ([`Staged`]). An output that already holds
//! something is refused unless the caller asks to replace it, and then the old one is removed
//! only after the new one is in place, so nothing is lost and nothing is mixed.
//!
//! Temporary names start with a dot (folder readers skip hidden entries) and carry the process
//! id and a process-wide counter, so two writers, in threads or processes, never share one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// An I/O failure on a named file or folder.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct PathError {
    /// The file or folder the operation was about (the target, not a temporary name).
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

impl PathError {
    fn new(path: impl Into<PathBuf>, source: io::Error) -> Self {
        PathError { path: path.into(), source }
    }
}

/// Why an output could not be prepared or moved in place.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// An I/O failure.
    #[error(transparent)]
    Io(#[from] PathError),
    /// The output already holds something and replacing it was not asked for.
    #[error(
        "{} {found}: give overwrite=true to replace it (the old one is removed only once the new \
         one is complete), or choose another out=",
        path.display()
    )]
    Occupied {
        /// The output.
        path: PathBuf,
        /// What is there (`already holds a, b and 3 more`, `already exists`).
        found: String,
    },
    /// A folder where a file is to be written, or the other way round.
    #[error("{} is {found}; choose another out=", path.display())]
    WrongKind {
        /// The output.
        path: PathBuf,
        /// What is there instead.
        found: &'static str,
    },
}

impl OutputError {
    /// The output (or file) the error is about.
    pub fn path(&self) -> &Path {
        match self {
            OutputError::Io(e) => &e.path,
            OutputError::Occupied { path, .. } | OutputError::WrongKind { path, .. } => path,
        }
    }
}

impl From<PathError> for crate::data::DataError {
    fn from(e: PathError) -> Self {
        crate::data::DataError::io(e.path, e.source)
    }
}

impl From<OutputError> for crate::data::DataError {
    /// A refusal is a bad value of the `out` key; an I/O failure stays one.
    fn from(e: OutputError) -> Self {
        match e {
            OutputError::Io(e) => e.into(),
            refused => {
                crate::data::DataError::InvalidConfig { field: "out", what: refused.to_string() }
            }
        }
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn no_name() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "expected a path that ends in a name")
}

/// `.NAME.TAG-PID-N` beside `path`, unique to this process and call.
fn sibling(path: &Path, tag: &str) -> io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(no_name)?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut hidden = std::ffi::OsString::from(".");
    hidden.push(name);
    hidden.push(format!(".{tag}-{}-{n}", std::process::id()));
    Ok(path.with_file_name(hidden))
}

/// The temporary name of [`write_atomic_with`]: `.STEM.tmp-PID-N.EXT`, ending in the target's
/// extension because Burn's file recorders set the extension of the path they are given.
fn temp_file(path: &Path) -> io::Result<PathBuf> {
    let stem = path.file_stem().ok_or_else(no_name)?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut hidden = std::ffi::OsString::from(".");
    hidden.push(stem);
    hidden.push(format!(".tmp-{}-{n}", std::process::id()));
    if let Some(ext) = path.extension() {
        hidden.push(".");
        hidden.push(ext);
    }
    Ok(path.with_file_name(hidden))
}

/// The folder holding `path` (`.` for a bare name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes the creations and renames in `dir` durable. Some file systems answer `EINVAL` or "not
/// supported" to a folder's fsync: they cannot sync one, so there is nothing more to do.
#[cfg(unix)]
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    match File::open(dir)?.sync_all() {
        Err(e) if matches!(e.kind(), io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported) => {
            Ok(())
        }
        other => other,
    }
}

/// Makes the creations and renames in `dir` durable: Windows cannot open a folder to sync it,
/// and NTFS journals renames itself.
#[cfg(not(unix))]
pub fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Syncs a file's data (through a handle that may write, which Windows needs to flush).
fn sync_file(path: &Path) -> io::Result<()> {
    OpenOptions::new().write(true).open(path)?.sync_all()
}

/// Syncs a file, or a folder with everything in it.
fn sync_tree(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            sync_tree(&entry?.path())?;
        }
        sync_dir(path)
    } else if meta.is_file() {
        sync_file(path)
    } else {
        Ok(())
    }
}

/// Removes a file, a link or a whole folder.
pub fn remove_all(path: &Path) -> io::Result<()> {
    if fs::symlink_metadata(path)?.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

/// Writes `bytes` to `path` whole: a temporary file in the same folder, fsync, rename over
/// `path`, fsync of the folder. On failure `path` is as it was and no temporary is left.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PathError> {
    write_atomic_with(path, |tmp| {
        OpenOptions::new().write(true).create_new(true).open(tmp)?.write_all(bytes)
    })
}

/// [`write_atomic`] for writers that create the file themselves: `write` is given the
/// temporary path (in the same folder, ending in `path`'s extension) and must write the whole
/// file there; this then syncs it, renames it over `path` and syncs the folder. When `write`
/// fails, `path` is as it was and the temporary is removed.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&Path) -> io::Result<()>,
) -> Result<(), PathError> {
    let tmp = temp_file(path).map_err(|e| PathError::new(path, e))?;
    let written = write(&tmp).and_then(|()| sync_file(&tmp)).and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(PathError::new(path, e));
    }
    let dir = parent_dir(path);
    sync_dir(dir).map_err(|e| PathError::new(dir, e))
}

/// What a folder holds, for messages: `None` when it is empty or absent, else its first three
/// names (sorted) and how many more there are.
pub fn contents_summary(dir: &Path) -> io::Result<Option<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut names = entries
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<Vec<_>>>()?;
    if names.is_empty() {
        return Ok(None);
    }
    names.sort();
    let shown = names[..names.len().min(3)].join(", ");
    Ok(Some(match names.len() {
        n if n > 3 => format!("{shown} and {} more", n - 3),
        _ => shown,
    }))
}

/// Renames `path` (a file or a folder) to the hidden sibling `.NAME.old-PID-N` and returns
/// that sibling, or `None` when nothing is at `path`. The caller removes it with [`remove_all`]
/// once what replaces it is complete, or renames it back.
pub fn move_aside(path: &Path) -> Result<Option<PathBuf>, PathError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(PathError::new(path, e)),
        Ok(_) => {}
    }
    let aside = sibling(path, "old").map_err(|e| PathError::new(path, e))?;
    fs::rename(path, &aside).map_err(|e| PathError::new(path, e))?;
    Ok(Some(aside))
}

/// Refuses `target` unless it is absent, an empty folder (for a folder output), or
/// `overwrite` is given; never replaces a folder by a file or a file by a folder.
fn check_free(target: &Path, folder: bool, overwrite: bool) -> Result<(), OutputError> {
    let meta = match fs::metadata(target) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(PathError::new(target, e).into()),
    };
    let path = target.to_path_buf();
    match (meta.is_dir(), folder) {
        (true, false) => {
            return Err(OutputError::WrongKind { path, found: "a folder, not a file" })
        }
        (false, true) => {
            return Err(OutputError::WrongKind { path, found: "a file, not a folder" })
        }
        _ if overwrite => return Ok(()),
        _ => {}
    }
    let found = if folder {
        match contents_summary(target).map_err(|e| PathError::new(target, e))? {
            None => return Ok(()),
            Some(names) => format!("already holds {names}"),
        }
    } else {
        "already exists".to_string()
    };
    Err(OutputError::Occupied { path, found })
}

/// An output written under hidden temporary names beside its targets and moved in place by
/// [`Staged::commit`] once complete. Dropped without a commit (an error part-way), it removes
/// what it wrote; a killed process leaves only a hidden `.NAME.partial-PID-N` sibling, and the
/// targets as they were.
#[derive(Debug)]
pub struct Staged {
    /// `(target, partial)`, the main output first (moved in place last).
    parts: Vec<(PathBuf, PathBuf)>,
    committed: bool,
}

impl Staged {
    /// A folder output: [`path`](Self::path)`(0)` is an empty folder to write into, which
    /// [`commit`](Self::commit) moves to `target`. A `target` that holds anything is refused,
    /// naming it, unless `overwrite`.
    pub fn folder(target: &Path, overwrite: bool) -> Result<Self, OutputError> {
        check_free(target, true, overwrite)?;
        let partial = sibling(target, "partial").map_err(|e| PathError::new(target, e))?;
        let parent = parent_dir(target);
        fs::create_dir_all(parent).map_err(|e| PathError::new(parent, e))?;
        fs::create_dir(&partial).map_err(|e| PathError::new(&partial, e))?;
        Ok(Staged { parts: vec![(target.to_path_buf(), partial)], committed: false })
    }

    /// File outputs: the writer creates [`path`](Self::path)`(i)` for `targets[i]`. Any
    /// existing target is refused, naming it, unless `overwrite`. `targets[0]` is the main
    /// output (a `.rec`, whose `.idx` follows): it is checked first, and [`commit`](Self::commit)
    /// moves it in last, so a reader that finds it finds the others complete.
    pub fn files(targets: &[PathBuf], overwrite: bool) -> Result<Self, OutputError> {
        let mut parts = Vec::with_capacity(targets.len());
        for target in targets {
            check_free(target, false, overwrite)?;
            let parent = parent_dir(target);
            fs::create_dir_all(parent).map_err(|e| PathError::new(parent, e))?;
            let partial = sibling(target, "partial").map_err(|e| PathError::new(target, e))?;
            parts.push((target.clone(), partial));
        }
        Ok(Staged { parts, committed: false })
    }

    /// Where to write the `i`-th output.
    pub fn path(&self, i: usize) -> &Path {
        &self.parts[i].1
    }

    /// Syncs what was written, moves any old outputs aside, moves the new ones in, syncs their
    /// folders and only then removes the old ones. On failure the old outputs are put back.
    pub fn commit(mut self) -> Result<(), PathError> {
        for (_, partial) in &self.parts {
            sync_tree(partial).map_err(|e| PathError::new(partial, e))?;
        }
        let mut asides = Vec::new();
        if let Err(e) = self.move_in(&mut asides) {
            self.roll_back(&asides);
            return Err(e);
        }
        self.committed = true;
        for (target, _) in &self.parts {
            let dir = parent_dir(target);
            sync_dir(dir).map_err(|e| PathError::new(dir, e))?;
        }
        for (_, aside) in &asides {
            // The new output is complete and in place; an old one that cannot be removed is
            // left hidden beside it rather than failing a finished write.
            let _ = remove_all(aside);
        }
        Ok(())
    }

    fn move_in(&self, asides: &mut Vec<(PathBuf, PathBuf)>) -> Result<(), PathError> {
        for (target, _) in &self.parts {
            if let Some(aside) = move_aside(target)? {
                asides.push((target.clone(), aside));
            }
        }
        for (target, partial) in self.parts.iter().rev() {
            fs::rename(partial, target).map_err(|e| PathError::new(target, e))?;
        }
        Ok(())
    }

    /// Undoes a [`Self::move_in`] that failed part-way: new outputs back to their temporary
    /// names (which `Drop` removes), old ones back in place.
    fn roll_back(&self, asides: &[(PathBuf, PathBuf)]) {
        for (target, partial) in &self.parts {
            if fs::symlink_metadata(partial).is_err() && fs::symlink_metadata(target).is_ok() {
                let _ = fs::rename(target, partial);
            }
        }
        for (target, aside) in asides.iter().rev() {
            let _ = fs::rename(aside, target);
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            for (_, partial) in &self.parts {
                let _ = remove_all(partial);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("groupface-util-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_write_replaces_the_file_whole_and_leaves_no_temporary() {
        let dir = temp_dir("replace");
        let path = dir.join("report.json");
        write_atomic(&path, b"a longer first version").unwrap();
        write_atomic(&path, b"short").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"short");
        assert_eq!(names(&dir), ["report.json"]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn concurrent_writers_leave_one_complete_content() {
        // Two writers replace one file 20 times each with 256 KiB of one letter while a reader
        // checks every version it sees: a shared temporary name or an in-place write would
        // show a file of both letters, or a short one.
        let dir = temp_dir("concurrent");
        let path = dir.join("shared.bin");
        const SIZE: usize = 256 * 1024;
        write_atomic(&path, &[b'a'; SIZE]).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (path, done) = (path.clone(), done.clone());
            std::thread::spawn(move || loop {
                let bytes = fs::read(&path).unwrap();
                assert_eq!(bytes.len(), SIZE);
                assert!(bytes.iter().all(|b| *b == bytes[0]), "a mixed version");
                if done.load(Ordering::Relaxed) {
                    break;
                }
            })
        };
        let writers: Vec<_> = [b'a', b'b']
            .into_iter()
            .map(|letter| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        write_atomic(&path, &[letter; SIZE]).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        reader.join().unwrap();
        let bytes = fs::read(&path).unwrap();
        assert_eq!(bytes.len(), SIZE);
        assert!(bytes[0] == b'a' || bytes[0] == b'b');
        assert!(bytes.iter().all(|b| *b == bytes[0]));
        assert_eq!(names(&dir), ["shared.bin"]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failing_write_leaves_the_old_file_and_no_temporary() {
        let dir = temp_dir("failing");
        let path = dir.join("model.mpk");
        write_atomic(&path, b"old").unwrap();
        let err = write_atomic_with(&path, |tmp| {
            fs::write(tmp, b"half of the ne")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(err.path, path);
        assert!(err.to_string().contains("model.mpk") && err.to_string().contains("disk full"));
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(names(&dir), ["model.mpk"]);
        // A missing folder is an error naming the file, not a panic.
        let missing = dir.join("missing").join("x.json");
        assert_eq!(write_atomic(&missing, b"").unwrap_err().path, missing);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_writer_that_sets_the_extension_writes_the_temporary() {
        // Burn's recorders write `path.with_extension("mpk")`: the temporary keeps `.mpk`, or
        // the record would land beside it and the rename would find nothing.
        let dir = temp_dir("extension");
        let path = dir.join("model.mpk");
        write_atomic_with(&path, |tmp| fs::write(tmp.with_extension("mpk"), b"weights")).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"weights");
        assert_eq!(names(&dir), ["model.mpk"]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_used_folder_is_refused_and_replaced_only_when_asked() {
        let dir = temp_dir("folder");
        let out = dir.join("faces");
        fs::create_dir_all(out.join("00000")).unwrap();
        fs::write(out.join("attributes.csv"), "old").unwrap();
        let err = Staged::folder(&out, false).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, OutputError::Occupied { .. }), "{message}");
        assert!(message.contains(&out.display().to_string()), "{message}");
        assert!(message.contains("00000, attributes.csv") && message.contains("overwrite=true"));
        assert_eq!(names(&dir), ["faces"], "a refusal writes nothing");

        let staged = Staged::folder(&out, true).unwrap();
        fs::write(staged.path(0).join("new.txt"), "new").unwrap();
        assert_eq!(names(&out), ["00000", "attributes.csv"], "the old output stays until commit");
        staged.commit().unwrap();
        assert_eq!(names(&out), ["new.txt"]);
        assert_eq!(names(&dir), ["faces"], "neither the old output nor a temporary is left");

        // An empty folder holds nothing to lose.
        let empty = dir.join("empty");
        fs::create_dir(&empty).unwrap();
        Staged::folder(&empty, false).unwrap().commit().unwrap();
        assert!(empty.is_dir());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_interrupted_output_leaves_the_old_one_as_it_was() {
        let dir = temp_dir("interrupted");
        let out = dir.join("faces");
        fs::create_dir_all(&out).unwrap();
        fs::write(out.join("old.txt"), "old").unwrap();
        // Killed part-way: no drop, no commit.
        let killed = Staged::folder(&out, true).unwrap();
        fs::write(killed.path(0).join("half.txt"), "new").unwrap();
        let partial = killed.path(0).to_path_buf();
        std::mem::forget(killed);
        assert_eq!(names(&out), ["old.txt"]);
        let hidden = partial.file_name().unwrap().to_string_lossy().into_owned();
        assert!(hidden.starts_with(".faces.partial-"), "{hidden}");
        // Stopped by an error: the partial folder is removed.
        let failed = Staged::folder(&out, true).unwrap();
        fs::write(failed.path(0).join("half.txt"), "new").unwrap();
        drop(failed);
        assert_eq!(names(&out), ["old.txt"]);
        assert_eq!(names(&dir), [hidden.as_str(), "faces"]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn staged_files_are_refused_named_and_replaced_together() {
        let dir = temp_dir("files");
        let (rec, idx) = (dir.join("train.rec"), dir.join("train.idx"));
        fs::write(&rec, "old rec").unwrap();
        fs::write(&idx, "old idx").unwrap();
        let targets = [rec.clone(), idx.clone()];
        let err = Staged::files(&targets, false).unwrap_err();
        assert_eq!(err.path(), rec);
        let message = err.to_string();
        assert!(message.contains("already exists") && message.contains("overwrite=true"));
        let staged = Staged::files(&targets, true).unwrap();
        fs::write(staged.path(0), "new rec").unwrap();
        fs::write(staged.path(1), "new idx").unwrap();
        staged.commit().unwrap();
        assert_eq!(fs::read_to_string(&idx).unwrap(), "new idx");
        assert_eq!(fs::read_to_string(&rec).unwrap(), "new rec");
        assert_eq!(names(&dir), ["train.idx", "train.rec"]);
        // A commit that fails (the `.rec` was never written) leaves the old pair and no
        // temporary.
        let staged = Staged::files(&targets, true).unwrap();
        fs::write(staged.path(1), "newer idx").unwrap();
        assert!(staged.commit().is_err());
        assert_eq!(fs::read_to_string(&idx).unwrap(), "new idx");
        assert_eq!(fs::read_to_string(&rec).unwrap(), "new rec");
        assert_eq!(names(&dir), ["train.idx", "train.rec"]);
        // A folder is never replaced by a file, even when asked.
        let folder = dir.join("faces.rec");
        fs::create_dir(&folder).unwrap();
        let err = Staged::files(&[folder], true).unwrap_err();
        assert!(matches!(err, OutputError::WrongKind { .. }), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn move_aside_keeps_the_old_output_until_it_is_removed() {
        let dir = temp_dir("aside");
        let out = dir.join("run");
        assert!(move_aside(&out).unwrap().is_none());
        fs::create_dir_all(&out).unwrap();
        fs::write(out.join("config.json"), "{}").unwrap();
        let aside = move_aside(&out).unwrap().unwrap();
        assert!(!out.exists());
        assert_eq!(fs::read_to_string(aside.join("config.json")).unwrap(), "{}");
        remove_all(&aside).unwrap();
        assert!(names(&dir).is_empty());
        assert_eq!(contents_summary(&out).unwrap(), None);
        let _ = fs::remove_dir_all(&dir);
    }
}
