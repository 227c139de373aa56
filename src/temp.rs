//! The temporary files and directories the library is writing, known process-wide.
//!
//! Large inputs and payload lanes are spooled to unnamed temporary files (`spool_in`):
//! they have no name from the start, so nothing of them outlives the process, whatever
//! ends it. Outputs, and the archive a load sends to a daemon, need a name: they are written
//! to locked temporary files or directories (see `fs_safe`) and renamed once
//! verified, or removed when their owner is dropped. A signal that ends the process runs
//! no destructors, so a program interrupted while writing would leave those behind; a
//! program that handles its signals calls [`remove_all`] before it exits (the
//! `docker-delta` command does so on SIGINT, SIGTERM and SIGHUP), and what a `SIGKILL`
//! leaves is removed by the next run writing to the same directory (its lock is free).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

static LIVE: Mutex<BTreeMap<u64, PathBuf>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(0);
/// Held while a temporary path is made and added to [`LIVE`], and while [`remove_all`]
/// removes them (by [`remove_all_before_exit`] for good): a signal arriving between a
/// file's creation and its tracking would otherwise leave it behind.
static MAKING: Mutex<()> = Mutex::new(());

/// Runs `make` (which creates a temporary path) and tracks what it made, with no
/// [`remove_all`] in between.
pub(crate) fn make_tracked<T>(
    make: impl FnOnce() -> crate::Result<(T, PathBuf)>,
) -> crate::Result<(T, Tracked)> {
    let _making = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    let (made, path) = make()?;
    Ok((made, track(&path)))
}

/// A new temporary file in `dir` that has no name (`O_TMPFILE`, or created and unlinked at
/// once where the file system lacks it): its space is freed when the last handle to it is
/// closed, so no run, however it ends, leaves it behind.
pub(crate) fn spool_in(dir: &Path) -> crate::Result<File> {
    tempfile::tempfile_in(dir).map_err(|e| crate::Error::io(dir, e))
}

/// Keeps a temporary path in the process-wide list until dropped.
#[derive(Debug)]
pub(crate) struct Tracked(u64);

/// Adds `path` (a temporary file or directory) to the list until the returned guard is
/// dropped; a path that has been renamed to its final name by then is simply not found by
/// [`remove_all`].
pub(crate) fn track(path: &Path) -> Tracked {
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    live.insert(id, path.to_path_buf());
    Tracked(id)
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        live.remove(&self.0);
    }
}

/// Removes every temporary file and directory the library is writing (directories with
/// their contents), and returns how many it removed. Meant for a program about to exit on
/// a signal: the writes in progress on other threads then fail or write to unlinked files.
/// The library stays usable afterwards (the C ABI's `dd_remove_temporary_files` is this);
/// a program that exits right after should call [`remove_all_before_exit`], which also
/// stops new temporary paths being made in between.
pub fn remove_all() -> usize {
    remove_now(|_| true)
}

/// Removes the tracked paths `pick` chooses, with nothing made meanwhile.
fn remove_now(pick: impl Fn(&Path) -> bool) -> usize {
    let _making = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    remove_where(pick)
}

/// [`remove_all`], keeping every later attempt to make a temporary path in this process
/// waiting for good, so that nothing is left behind between the cleanup and the exit. Only
/// for a process about to exit (the `docker-delta` command's signal handling).
pub fn remove_all_before_exit() -> usize {
    std::mem::forget(MAKING.lock().unwrap_or_else(|e| e.into_inner()));
    remove_where(|_| true)
}

/// Removes the tracked paths `pick` chooses (and forgets them).
fn remove_where(pick: impl Fn(&Path) -> bool) -> usize {
    let paths: Vec<PathBuf> = {
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        let ids: Vec<u64> = live
            .iter()
            .filter(|(_, p)| pick(p))
            .map(|(&id, _)| id)
            .collect();
        ids.iter().filter_map(|id| live.remove(id)).collect()
    };
    paths
        .iter()
        .filter(|p| match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).is_ok(),
            Ok(_) => std::fs::remove_file(p).is_ok(),
            Err(_) => false,
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracked_paths_are_removed_until_their_guard_drops() {
        let dir = tempfile::tempdir().unwrap();
        let (file, sub, kept) = (
            dir.path().join(".f"),
            dir.path().join(".d"),
            dir.path().join(".kept"),
        );
        std::fs::write(&file, b"x").unwrap();
        std::fs::create_dir_all(sub.join("blobs")).unwrap();
        std::fs::write(sub.join("blobs/b"), b"y").unwrap();
        std::fs::write(&kept, b"z").unwrap();
        let _f = track(&file);
        let _d = track(&sub);
        drop(track(&kept));
        // Other tests' paths may be in the list too: leave them alone.
        assert_eq!(remove_where(|p| p.starts_with(dir.path())), 2);
        assert!(!file.exists() && !sub.exists());
        assert!(kept.exists(), "a path whose guard was dropped is kept");
    }

    #[test]
    fn temporary_paths_are_still_made_after_remove_all() {
        // The C ABI's cleanup is callable in a process that goes on (the Python binding's
        // tests do): it once kept the lock for good and every later create hung. (Not
        // remove_all itself: other tests' temporary files are in the list.)
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join(".gone");
        std::fs::write(&gone, b"x").unwrap();
        let _g = track(&gone);
        assert_eq!(remove_now(|p| p.starts_with(dir.path())), 1);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let path = dir.path().join(".t");
            let made = make_tracked(|| {
                std::fs::write(&path, b"x").map_err(|e| crate::Error::io(&path, e))?;
                Ok(((), path.clone()))
            });
            let _ = tx.send(made.is_ok());
        });
        let made = rx.recv_timeout(std::time::Duration::from_secs(30));
        assert_eq!(made, Ok(true), "a temporary file is made after remove_all");
    }
}
