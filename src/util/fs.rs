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
    /// Another live process is writing the same output now.
    #[error(
        "{} is being written by {holder} now (lock file {}); wait for it to finish, or \
         choose another out=",
        path.display(),
        lock.display()
    )]
    Busy {
        /// The output.
        path: PathBuf,
        /// The lock file that says so.
        lock: PathBuf,
        /// Who holds it (`process 1234`).
        holder: String,
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
            OutputError::Occupied { path, .. }
            | OutputError::Busy { path, .. }
            | OutputError::WrongKind { path, .. } => path,
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

/// Whether process `pid` is running. Only Linux can tell cheaply (`/proc/PID`); elsewhere
/// every process counts as running, so what a killed writer left is kept, never removed
/// while its writer might still be at work.
fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

/// What a temporary name beside an output is, and the process that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Leftover {
    /// `.NAME.partial-PID-N`: a [`Staged`] output being written.
    Partial,
    /// `.NAME.old-PID-N`: an earlier output moved aside by [`move_aside`].
    Old,
    /// `.STEM.tmp-PID-N[.EXT]`: a file of [`write_atomic_with`].
    Tmp,
}

/// Reads a hidden name `.BASE.TAG-PID-N[.EXT]` as `(BASE, tag, PID)`; `None` for any other
/// name.
fn parse_leftover(name: &str) -> Option<(&str, Leftover, u32)> {
    let rest = name.strip_prefix('.')?;
    for (tag, kind) in
        [(".partial-", Leftover::Partial), (".old-", Leftover::Old), (".tmp-", Leftover::Tmp)]
    {
        let Some(at) = rest.rfind(tag) else { continue };
        let (base, numbers) = (&rest[..at], &rest[at + tag.len()..]);
        let mut parts = numbers.splitn(2, '-');
        let pid = parts.next()?.parse().ok()?;
        // `N`, then the extension of a `.tmp` file.
        let counter = parts.next()?;
        let digits = counter.split('.').next()?;
        if base.is_empty() || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if kind != Leftover::Tmp && digits.len() != counter.len() {
            return None;
        }
        return Some((base, kind, pid));
    }
    None
}

/// What writers that are no longer running left in `dir`: `(BASE, kind, path)` of every
/// `.BASE.TAG-PID-N[.EXT]` whose process is gone. A missing `dir` holds nothing.
fn dead_leftovers(dir: &Path) -> Result<Vec<(String, Leftover, PathBuf)>, PathError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(PathError::new(dir, e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| PathError::new(dir, e))?;
        let name = entry.file_name();
        let Some((base, kind, pid)) = name.to_str().and_then(parse_leftover) else {
            continue;
        };
        if !process_alive(pid) {
            found.push((base.to_string(), kind, entry.path()));
        }
    }
    Ok(found)
}

/// Removes the temporary files (`.STEM.tmp-PID-N[.EXT]`) that killed writers left in `dir`,
/// those of running processes excepted, and returns what it removed. A run resumed after a
/// kill calls it on its folders, so no half-written checkpoint lingers beside the whole ones.
pub fn sweep_temporaries(dir: &Path) -> Result<Vec<PathBuf>, PathError> {
    let mut removed = Vec::new();
    for (_, kind, path) in dead_leftovers(dir)? {
        if kind == Leftover::Tmp {
            remove_all(&path).map_err(|e| PathError::new(&path, e))?;
            removed.push(path);
        }
    }
    Ok(removed)
}

/// The leftovers of killed writers of `target` (`.NAME.partial-…`, `.NAME.old-…`) beside it,
/// the partial ones first.
fn stale_siblings(target: &Path) -> Result<Vec<(Leftover, PathBuf)>, PathError> {
    let name = target.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let mut found: Vec<(Leftover, PathBuf)> = dead_leftovers(parent_dir(target))?
        .into_iter()
        .filter(|(base, kind, _)| base == name && *kind != Leftover::Tmp)
        .map(|(_, kind, path)| (kind, path))
        .collect();
    found.sort();
    Ok(found)
}

/// `.NAME.lock` beside `target`.
fn lock_path(target: &Path) -> Result<PathBuf, PathError> {
    let name = target.file_name().ok_or_else(|| PathError::new(target, no_name()))?;
    let mut hidden = std::ffi::OsString::from(".");
    hidden.push(name);
    hidden.push(".lock");
    Ok(target.with_file_name(hidden))
}

/// Takes the lock of `target` (the file `.NAME.lock` holding this process id), so that two
/// writers of one output cannot interleave their commits (a `.rec` of one beside the `.idx`
/// of the other). A lock whose process is gone (killed) is taken over. Two processes taking
/// over the same dead lock at the same instant could both succeed; that needs a kill and two
/// new writers within microseconds, and is not guarded against.
fn take_lock(target: &Path) -> Result<PathBuf, OutputError> {
    let lock = lock_path(target)?;
    let busy = |holder: String| OutputError::Busy {
        path: target.to_path_buf(),
        lock: lock.clone(),
        holder,
    };
    for _ in 0..50 {
        match OpenOptions::new().write(true).create_new(true).open(&lock) {
            Ok(mut file) => {
                file.write_all(std::process::id().to_string().as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|e| PathError::new(&lock, e))?;
                return Ok(lock);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                match fs::read_to_string(&lock).ok().and_then(|s| s.trim().parse::<u32>().ok()) {
                    Some(pid) if !process_alive(pid) => {
                        let _ = fs::remove_file(&lock);
                    }
                    Some(pid) => return Err(busy(format!("process {pid}"))),
                    // Empty: its writer is between creating the file and writing its id.
                    None => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
            Err(e) => return Err(PathError::new(&lock, e).into()),
        }
    }
    Err(busy("another process".to_string()))
}

/// Clears what killed writers of `targets` (one output: a folder, or a `.rec` with its `.idx`,
/// the main one first) left beside them. Temporary outputs are removed. Earlier outputs moved
/// aside by an interrupted [`Staged::commit`] are put back when the main target is missing
/// (the commit stopped before the new output was whole in place; new parts already moved in
/// are removed), and removed when it is there (the commit had moved the new one in).
fn sweep_leftovers(targets: &[PathBuf]) -> Result<(), PathError> {
    let main_present = targets.first().is_some_and(|t| fs::symlink_metadata(t).is_ok());
    for target in targets {
        for (kind, path) in stale_siblings(target)? {
            match kind {
                Leftover::Old if !main_present => {
                    if fs::symlink_metadata(target).is_ok() {
                        remove_all(target).map_err(|e| PathError::new(target, e))?;
                    }
                    fs::rename(&path, target).map_err(|e| PathError::new(target, e))?;
                }
                _ => remove_all(&path).map_err(|e| PathError::new(&path, e))?,
            }
        }
    }
    Ok(())
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

/// [`write_atomic`] for callers whose errors are messages (`cannot write PATH: why`).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    write_atomic(path, bytes).map_err(|e| format!("cannot write {e}"))
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
    /// The lock of the main target ([`take_lock`]), released when the output is dropped
    /// (after its partial files are removed) or committed.
    _lock: Lock,
}

impl Staged {
    /// A folder output: [`path`](Self::path)`(0)` is an empty folder to write into, which
    /// [`commit`](Self::commit) moves to `target`. A `target` that holds anything is refused,
    /// naming it, unless `overwrite`.
    pub fn folder(target: &Path, overwrite: bool) -> Result<Self, OutputError> {
        let parent = parent_dir(target);
        fs::create_dir_all(parent).map_err(|e| PathError::new(parent, e))?;
        let _lock = Lock(take_lock(target)?);
        sweep_leftovers(&[target.to_path_buf()])?;
        check_free(target, true, overwrite)?;
        let partial = sibling(target, "partial").map_err(|e| PathError::new(target, e))?;
        fs::create_dir(&partial).map_err(|e| PathError::new(&partial, e))?;
        Ok(Staged { parts: vec![(target.to_path_buf(), partial)], committed: false, _lock })
    }

    /// File outputs: the writer creates [`path`](Self::path)`(i)` for `targets[i]`. Any
    /// existing target is refused, naming it, unless `overwrite`. `targets[0]` is the main
    /// output (a `.rec`, whose `.idx` follows): it is checked first, and [`commit`](Self::commit)
    /// moves it in last, so a reader that finds it finds the others complete.
    pub fn files(targets: &[PathBuf], overwrite: bool) -> Result<Self, OutputError> {
        let main = targets.first().ok_or_else(|| PathError::new(".", no_name()))?;
        let parent = parent_dir(main);
        fs::create_dir_all(parent).map_err(|e| PathError::new(parent, e))?;
        let _lock = Lock(take_lock(main)?);
        sweep_leftovers(targets)?;
        let mut parts = Vec::with_capacity(targets.len());
        for target in targets {
            check_free(target, false, overwrite)?;
            let parent = parent_dir(target);
            fs::create_dir_all(parent).map_err(|e| PathError::new(parent, e))?;
            let partial = sibling(target, "partial").map_err(|e| PathError::new(target, e))?;
            parts.push((target.clone(), partial));
        }
        Ok(Staged { parts, committed: false, _lock })
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

/// A taken lock file ([`take_lock`]), removed when dropped: by a [`Staged`] once its output is
/// committed or abandoned, or at once when setting the output up fails.
#[derive(Debug)]
struct Lock(PathBuf);

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::test_util::{names, temp_dir};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

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

    /// The id of a process that has ended (a child that ran `true` and was reaped).
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        child.id()
    }

    /// Renames what a writer of this process left to what a killed process `pid` would have
    /// left: `…-OURPID-N` becomes `…-PID-N`, and every lock file names `pid`.
    fn as_if_killed(dir: &Path, pid: u32) {
        let ours = format!("-{}-", std::process::id());
        for name in names(dir) {
            if name.ends_with(".lock") {
                fs::write(dir.join(&name), pid.to_string()).unwrap();
            } else if name.contains(&ours) {
                fs::rename(dir.join(&name), dir.join(name.replace(&ours, &format!("-{pid}-"))))
                    .unwrap();
            }
        }
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
        assert_eq!(names(&dir), [".faces.lock", hidden.as_str(), "faces"]);
        // While its writer runs, a second writer is refused, naming the lock.
        let err = Staged::folder(&out, true).unwrap_err();
        assert!(matches!(err, OutputError::Busy { .. }), "{err}");
        assert!(err.to_string().contains(".faces.lock"), "{err}");
        // Once that writer is dead, the next one clears what it left.
        as_if_killed(&dir, dead_pid());
        // Stopped by an error: the partial folder is removed, and the lock released.
        let failed = Staged::folder(&out, true).unwrap();
        fs::write(failed.path(0).join("half.txt"), "new").unwrap();
        drop(failed);
        assert_eq!(names(&out), ["old.txt"]);
        assert_eq!(names(&dir), ["faces"]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_commit_killed_part_way_is_finished_or_undone_by_the_next_writer() {
        let dir = temp_dir("killed-commit");
        let dead = dead_pid();
        // Killed after the old folder was moved aside and before the new one came in: the old
        // one is put back, so it is refused as before and nothing was lost.
        let out = dir.join("faces");
        let old = dir.join(format!(".faces.old-{dead}-0"));
        fs::create_dir_all(&old).unwrap();
        fs::write(old.join("kept.txt"), "old").unwrap();
        let err = Staged::folder(&out, false).unwrap_err();
        assert!(matches!(err, OutputError::Occupied { .. }), "{err}");
        assert_eq!(fs::read_to_string(out.join("kept.txt")).unwrap(), "old");
        assert_eq!(names(&dir), ["faces"]);
        // Killed after the new folder came in and before the old one was removed: the old one
        // goes.
        fs::create_dir_all(&old).unwrap();
        Staged::folder(&out, true).unwrap().commit().unwrap();
        assert_eq!(names(&dir), ["faces"]);
        assert!(names(&out).is_empty());

        // A `.rec` and its `.idx`: killed after the new `.idx` came in and before the new
        // `.rec` (moved in last) did. Both old files come back together.
        let (rec, idx) = (dir.join("train.rec"), dir.join("train.idx"));
        fs::write(dir.join(format!(".train.rec.old-{dead}-1")), "old rec").unwrap();
        fs::write(dir.join(format!(".train.idx.old-{dead}-2")), "old idx").unwrap();
        fs::write(dir.join(format!(".train.rec.partial-{dead}-3")), "new rec").unwrap();
        fs::write(&idx, "new idx").unwrap();
        let err = Staged::files(&[rec.clone(), idx.clone()], false).unwrap_err();
        assert_eq!(err.path(), rec);
        assert_eq!(fs::read_to_string(&rec).unwrap(), "old rec");
        assert_eq!(fs::read_to_string(&idx).unwrap(), "old idx");
        assert_eq!(names(&dir), ["faces", "train.idx", "train.rec"]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn temporaries_of_dead_writers_are_swept_and_live_ones_kept() {
        let dir = temp_dir("sweep");
        let dead = dead_pid();
        let ours = std::process::id();
        let names_in = [
            format!(".model-3.tmp-{dead}-7.mpk"),
            format!(".labels-3.tmp-{dead}-8.json"),
            format!(".model-4.tmp-{ours}-9.mpk"),
            // Not temporaries: kept whatever their look.
            ".model-5.tmp-x-1.mpk".to_string(),
            "model-3.mpk".to_string(),
        ];
        for name in &names_in {
            fs::write(dir.join(name), "x").unwrap();
        }
        let removed = sweep_temporaries(&dir).unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        let mut left = vec![
            format!(".model-4.tmp-{ours}-9.mpk"),
            ".model-5.tmp-x-1.mpk".to_string(),
            "model-3.mpk".to_string(),
        ];
        left.sort();
        assert_eq!(names(&dir), left);
        assert!(sweep_temporaries(&dir.join("absent")).unwrap().is_empty());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn leftover_names_are_read_exactly() {
        assert_eq!(parse_leftover(".faces.partial-12-3"), Some(("faces", Leftover::Partial, 12)));
        assert_eq!(parse_leftover(".a.b.rec.old-7-0"), Some(("a.b.rec", Leftover::Old, 7)));
        assert_eq!(parse_leftover(".model-3.tmp-5-9.mpk"), Some(("model-3", Leftover::Tmp, 5)));
        assert_eq!(parse_leftover(".report.tmp-5-9"), Some(("report", Leftover::Tmp, 5)));
        for other in [
            "faces.partial-12-3",
            ".faces.partial-12",
            ".faces.partial-12-3x",
            ".faces.old-x-1",
            "..old-1-2",
            ".faces.lock",
        ] {
            assert_eq!(parse_leftover(other), None, "{other}");
        }
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
