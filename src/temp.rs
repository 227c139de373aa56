//! The temporary files and directories the library is writing, known process-wide.
//!
//! Outputs are written to temporary files next to their destination and renamed once
//! verified, and large inputs are spooled to temporary files; each is removed when its
//! owner is dropped. A signal that ends the process runs no destructors, so a program
//! interrupted while writing would leave them behind (hidden files of up to an image's size
//! beside the output, or in the temporary directory). A program that handles its signals
//! calls [`remove_all`] before it exits; the `docker-delta` command does so on SIGINT,
//! SIGTERM and SIGHUP.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

static LIVE: Mutex<BTreeMap<u64, PathBuf>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(0);

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
pub fn remove_all() -> usize {
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
}
