//! Which old file a changed file resembles most, by content: the source of a file whose
//! path says nothing (code moved to another package, a bundle renamed) or says the wrong
//! thing (a package's new version installed where another package's old one was).
//!
//! Every old file is sampled at content-defined anchors (positions where a gear hash of
//! the 13 bytes before them has its top bits clear, so the same bytes give the same anchors
//! wherever they sit), and the sample kept as a sorted table of (key, file). A new file is
//! sampled the same way, and each of its keys votes for the old files that have it; a key
//! that many old files share (a license line, a common prologue) says nothing and does
//! not vote. The old file with the most votes is the new file's likeliest source.
//!
//! On the bench's node pair (a `node_modules` tree, 60 000 files) about 200 of the 2 438
//! changed files have a better source by content than by path: `@mui/material` took
//! `useAutocomplete.js` from `@mui/base`, `@emotion/react` renamed its bundles. Its
//! package went from 2.41 to 2.37 MB (most of what those files share with their true
//! sources, the package compressor had found in their copies elsewhere in the layer);
//! kernel 18.87 -> 18.85 MB, arm64 13.51 -> 13.50 MB, the others the same.
//!
//! Memory: at most [`MAX_ENTRIES`] entries of 8 bytes (32 MiB; the spacing of the anchors
//! grows with the old layers' size), held only while the layer is planned. Time: the old
//! layers' files are read once, on every core.

use std::collections::HashMap;

use super::bsdiff::GEAR;
use super::schedule::on_every_core;
use super::{LayerData, OldLayer};
use crate::error::Result;

/// Most entries the table holds.
const MAX_ENTRIES: u64 = 1 << 22;
/// log2 of the closest spacing of anchors (one position in 64 of varied bytes).
const MIN_BITS: u32 = 6;
/// A key found in more old files than this does not vote.
const MAX_SHARED: usize = 8;
/// Keys a new file must have for [`Verdict::shares_little`] to say anything of it.
const MIN_TOLD: u32 = 64;
/// Bytes read at a time.
const READ: u64 = 1 << 20;

/// The old files' content samples.
pub(super) struct Likeness {
    /// (key, file), sorted; a file is an index into `files`.
    entries: Vec<(u32, u32)>,
    /// (layer, index in the layer's files) of each file sampled.
    files: Vec<(usize, usize)>,
    /// log2 of the anchor spacing.
    bits: u32,
}

/// What the votes of a new file's keys say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Verdict {
    /// The new file's distinct keys.
    pub keys: u32,
    /// The old file with the most votes (the first sampled, of equals) and its votes.
    pub best: Option<((usize, usize), u32)>,
    /// The votes of the file asked about.
    pub asked: u32,
}

impl Likeness {
    /// Samples the regular files of `old`.
    pub(super) fn new(old: &[OldLayer]) -> Result<Likeness> {
        let files: Vec<(usize, usize)> = old
            .iter()
            .enumerate()
            .flat_map(|(l, layer)| (0..layer.index.files.len()).map(move |i| (l, i)))
            .filter(|&(l, i)| old[l].index.files[i].size > 0)
            .collect();
        let total: u64 = files.iter().map(|&(l, i)| old[l].index.files[i].size).sum();
        let mut bits = MIN_BITS;
        while total >> bits > MAX_ENTRIES {
            bits += 1;
        }
        let workers = crate::threads::threads();
        let parts = on_every_core(workers, |k| {
            let mut out = Vec::new();
            let mut buf = Vec::new();
            for (n, &(l, i)) in files.iter().enumerate().skip(k).step_by(workers) {
                let f = &old[l].index.files[i];
                let mut keys = Vec::new();
                sample(
                    &old[l].data,
                    f.data_offset,
                    f.size,
                    bits,
                    &mut buf,
                    &mut keys,
                )?;
                out.extend(keys.into_iter().map(|key| (key, n as u32)));
            }
            Ok(out)
        })?;
        let mut entries: Vec<(u32, u32)> = parts.into_iter().flatten().collect();
        entries.sort_unstable();
        entries.shrink_to_fit();
        Ok(Likeness {
            entries,
            files,
            bits,
        })
    }

    /// Samples the new file of `size` bytes at `off` of `data` and counts, for every old
    /// file, the keys it shares with it; `asked` is the old file whose votes to report too.
    pub(super) fn judge(
        &self,
        data: &LayerData,
        off: u64,
        size: u64,
        asked: Option<(usize, usize)>,
    ) -> Result<Verdict> {
        let mut keys = Vec::new();
        sample(data, off, size, self.bits, &mut Vec::new(), &mut keys)?;
        let mut votes: HashMap<u32, u32> = HashMap::new();
        for &key in &keys {
            let from = self.entries.partition_point(|&(k, _)| k < key);
            let to = from + self.entries[from..].partition_point(|&(k, _)| k == key);
            if to - from <= MAX_SHARED {
                for &(_, file) in &self.entries[from..to] {
                    *votes.entry(file).or_default() += 1;
                }
            }
        }
        let best = votes
            .iter()
            .max_by_key(|&(&file, &n)| (n, std::cmp::Reverse(file)))
            .map(|(&file, &n)| (self.files[file as usize], n));
        let asked = asked
            .and_then(|a| self.files.binary_search(&a).ok())
            .and_then(|file| votes.get(&(file as u32)).copied())
            .unwrap_or(0);
        Ok(Verdict {
            keys: keys.len() as u32,
            best,
            asked,
        })
    }
}

impl Verdict {
    /// Whether the old file with `votes` shares next to nothing with the new file: under
    /// one key in a hundred of at least [`MIN_TOLD`]. Its patch then leaves nearly all of
    /// the new file unmatched: on the bench's tools and arm64 pairs (Debian 12 -> 13) such
    /// files are 27 MB, and the layers' new bytes 33 and 39 MB; on the kernel pair they are
    /// the compressed kernel image (8.5 MB, of which 8.2 MB is left unmatched).
    pub(super) fn shares_little(&self, votes: u32) -> bool {
        self.keys >= MIN_TOLD && u64::from(votes) * 100 < u64::from(self.keys)
    }

    /// The old file to take instead of `current` (None: no source by path or name), if the
    /// new file's content says another one is clearly likelier: it shares at least an
    /// eighth of the new file's keys, and a quarter more than `current` does, and two more.
    pub(super) fn better(&self) -> Option<(usize, usize)> {
        let (file, n) = self.best?;
        (n >= 2 && n * 8 >= self.keys && n >= self.asked + (self.asked / 4).max(2)).then_some(file)
    }
}

/// The distinct keys of the anchors of `len` bytes at `off` of `data`, sorted, into
/// `keys` (`buf` is a reusable read buffer).
fn sample(
    data: &LayerData,
    off: u64,
    len: u64,
    bits: u32,
    buf: &mut Vec<u8>,
    keys: &mut Vec<u32>,
) -> Result<()> {
    let shift = 64 - bits;
    let mut h = 0u64;
    let mut done = 0;
    keys.clear();
    while done < len {
        let n = (len - done).min(READ);
        data.read_to(off + done, n, buf)?;
        for &b in buf.iter() {
            h = (h << 5).wrapping_add(GEAR[b as usize]);
            if h >> shift == 0 {
                // The hash's low bits say only the last few bytes: mix before keeping 32.
                keys.push((h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32);
            }
        }
        done += n;
    }
    keys.sort_unstable();
    keys.dedup();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tarscan;
    use super::super::tests::noise;
    use super::*;

    fn layer(files: &[(&str, &[u8])]) -> (tempfile::NamedTempFile, OldLayer) {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, *data).unwrap();
        }
        let bytes = b.into_inner().unwrap();
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &bytes).unwrap();
        let data = LayerData::from_file(f.path()).unwrap();
        let index = tarscan::scan(&bytes[..], None).unwrap();
        (f, OldLayer { data, index })
    }

    #[test]
    fn a_moved_file_finds_its_content_and_boilerplate_does_not_vote() {
        let a = noise(1, 20_000);
        let b = noise(2, 20_000);
        let boiler = noise(3, 4_000);
        let mut old_files: Vec<(String, Vec<u8>)> = vec![
            ("base/auto.js".into(), a.clone()),
            ("material/auto.js".into(), b.clone()),
        ];
        // Twelve files that share a prologue.
        for k in 0..12 {
            old_files.push((
                format!("x/{k}.js"),
                [&boiler[..], &noise(10 + k, 500)].concat(),
            ));
        }
        let refs: Vec<(&str, &[u8])> = old_files
            .iter()
            .map(|(p, d)| (p.as_str(), d.as_slice()))
            .collect();
        let (_o, old) = layer(&refs);
        let lk = Likeness::new(std::slice::from_ref(&old)).unwrap();
        // `material/auto.js` now holds base's code, edited a little.
        let mut moved = a.clone();
        moved[5_000..5_100].copy_from_slice(&noise(4, 100));
        let new_files = [
            ("material/auto.js", &moved[..]),
            ("y/new.js", &[&boiler[..], &noise(30, 300)].concat()[..]),
        ];
        let (_n, new) = layer(&new_files);
        let f = &new.index.files[0];
        let v = lk
            .judge(&new.data, f.data_offset, f.size, Some((0, 1)))
            .unwrap();
        assert_eq!(v.best.map(|b| b.0), Some((0, 0)), "{v:?}");
        assert_eq!(v.asked, 0);
        assert_eq!(v.better(), Some((0, 0)));
        // Asked about the right file already: no change.
        let v = lk
            .judge(&new.data, f.data_offset, f.size, Some((0, 0)))
            .unwrap();
        assert_eq!(v.better(), None, "{v:?}");
        // Only the shared prologue: its keys are in twelve files and do not vote.
        let f = &new.index.files[1];
        let v = lk.judge(&new.data, f.data_offset, f.size, None).unwrap();
        assert!(v.keys > 10, "{v:?}");
        assert_eq!(v.better(), None, "{v:?}");
    }

    #[test]
    fn the_table_stays_bounded() {
        let big = noise(5, 3 << 20);
        let (_o, old) = layer(&[("big", &big[..])]);
        let lk = Likeness::new(std::slice::from_ref(&old)).unwrap();
        assert_eq!(lk.bits, MIN_BITS);
        // About one anchor in 64 bytes.
        let n = lk.entries.len() as u64;
        assert!(((3 << 20) / 100..(3 << 20) / 40).contains(&n), "{n}");
    }
}
