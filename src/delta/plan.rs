//! Deciding how each layer of the new image will be rebuilt.
//!
//! A new layer whose diff_id is anywhere in the old image is referenced. A changed layer is
//! encoded against the old layer that shares the most content with it: layers are compared
//! by the paths and sizes of their tar entries (with version numbers in names folded, so that
//! `libssl.so.3.0.11` and `libssl.so.3.0.13` or `pkg-2.1.dist-info` and `pkg-2.2.dist-info`
//! pair up), which is cheap to compute from the tar headers alone.

use std::collections::HashMap;
use std::io::Read;

use crate::digest::Digest;
use crate::image::Image;
use crate::tar_headers::{TarError, TarHeaders};

/// How `create` encodes changed layers (`--method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The file-aware codec for layers that are tars, else the smallest whole-layer delta.
    Auto,
    /// File-aware: each file of a changed layer is copied or patched from the best file of
    /// any old layer (like `auto`, but named explicitly).
    Files,
    /// VCDIFF (xdelta3) against the best old layer.
    Xdelta3,
    /// zstd with the best old layer as prefix.
    Zstd,
    /// Ship changed layers whole (compressed with the package), no delta.
    Layer,
}

/// What to do with one new layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The old image has it: index in the old image.
    Reference(usize),
    /// Encode against an old layer (index in the old image).
    Delta(usize),
    /// Ship it whole.
    Full,
}

/// The plan for one new layer.
#[derive(Debug, Clone)]
pub struct LayerPlan {
    /// Index in the new image.
    pub index: usize,
    /// The layer's diff_id.
    pub diff_id: Digest,
    /// What to do.
    pub action: Action,
}

/// Most bytes of names (plus [`SUMMARY_ENTRY_OVERHEAD`] each) a [`TarSummary`] keeps: a
/// tiny compressed layer can claim millions of members, and the overlap score does not
/// need them all (16 MiB is some 200 000 typical paths).
const MAX_SUMMARY_NAME_BYTES: usize = 16 << 20;
/// What one kept name costs besides its bytes (the map slot, the string's header).
const SUMMARY_ENTRY_OVERHEAD: usize = 64;

/// A summary of a layer tar: entry paths (versions folded) and sizes.
#[derive(Debug, Default, Clone)]
pub struct TarSummary {
    entries: HashMap<String, u64>,
    /// Total bytes in regular files.
    pub file_bytes: u64,
    /// Whether the stream parsed as a tar.
    pub is_tar: bool,
}

impl TarSummary {
    /// Reads tar headers from `r` (file contents are skipped). A stream that is not a
    /// valid tar gives an empty summary with `is_tar == false`.
    pub fn read(r: impl Read) -> std::io::Result<TarSummary> {
        let mut s = TarSummary::default();
        let mut key_bytes = 0usize;
        for member in TarHeaders::new(r) {
            let member = match member {
                Ok(m) => m,
                // A verification failure of the underlying layer stream must surface.
                Err(TarError::Io(e)) if e.get_ref().is_some_and(|i| i.is::<crate::Error>()) => {
                    return Err(e)
                }
                Err(_) => return Ok(TarSummary::default()),
            };
            let size = member.size;
            s.file_bytes = s.file_bytes.saturating_add(size);
            // A heuristic: past the budget, names are no longer collected (the layer is
            // still read to its end, so that a damaged stream is noticed).
            if key_bytes > MAX_SUMMARY_NAME_BYTES {
                continue;
            }
            let name = fold_versions(&String::from_utf8_lossy(&member.path));
            let slot = s.entries.entry(name).or_insert_with_key(|k| {
                key_bytes += k.len() + SUMMARY_ENTRY_OVERHEAD;
                0
            });
            *slot = slot.saturating_add(size.max(1));
        }
        s.is_tar = true;
        Ok(s)
    }

    /// How many bytes of `self` have a same-named counterpart in `other`.
    pub fn overlap(&self, other: &TarSummary) -> u64 {
        self.entries
            .iter()
            .filter_map(|(k, v)| other.entries.get(k).map(|o| (*v).min(*o)))
            .sum()
    }
}

/// Replaces runs of digits with `#`, so that versioned names compare equal.
pub fn fold_versions(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_digits = false;
    for c in name.trim_start_matches("./").chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
                in_digits = true;
            }
        } else {
            in_digits = false;
            out.push(c);
        }
    }
    out
}

/// Plans every layer of `new` against `old`. `scores[n][o]` (optional) is the content
/// overlap of new layer `n` with old layer `o`; without scores, a changed layer is encoded
/// against the old layer at the same position, or else the largest old layer.
pub fn plan(
    old: Option<&Image>,
    new: &Image,
    method: Method,
    scores: Option<&[Vec<u64>]>,
) -> Vec<LayerPlan> {
    new.layers
        .iter()
        .map(|layer| {
            let action = match old {
                None => Action::Full,
                Some(old) => {
                    if let Some(o) = old.layers.iter().position(|l| l.diff_id == layer.diff_id) {
                        Action::Reference(o)
                    } else if method == Method::Layer || old.layers.is_empty() {
                        Action::Full
                    } else {
                        Action::Delta(best_source(
                            old,
                            layer.index,
                            scores.and_then(|s| s.get(layer.index)),
                        ))
                    }
                }
            };
            LayerPlan {
                index: layer.index,
                diff_id: layer.diff_id.clone(),
                action,
            }
        })
        .collect()
}

fn best_source(old: &Image, new_index: usize, scores: Option<&Vec<u64>>) -> usize {
    if let Some(scores) = scores {
        let best = scores
            .iter()
            .enumerate()
            .max_by_key(|(o, s)| (**s, usize::from(*o == new_index)));
        if let Some((o, s)) = best {
            if *s > 0 {
                return o;
            }
        }
    }
    if new_index < old.layers.len() {
        return new_index;
    }
    old.layers
        .iter()
        .max_by_key(|l| l.uncompressed_size.unwrap_or(l.size))
        .map_or(0, |l| l.index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_fold() {
        assert_eq!(
            fold_versions("./usr/lib/libssl.so.3.0.11"),
            "usr/lib/libssl.so.#.#.#"
        );
        assert_eq!(
            fold_versions("lib/python3.11/site-packages/requests-2.31.0.dist-info/METADATA"),
            fold_versions("lib/python3.11/site-packages/requests-2.32.3.dist-info/METADATA")
        );
        assert_ne!(fold_versions("lib/a1"), fold_versions("lib/b1"));
    }

    #[test]
    fn summary_overlap_counts_shared_paths() {
        let mut a = tar::Builder::new(Vec::new());
        let mut b = tar::Builder::new(Vec::new());
        for (builder, files) in [
            (
                &mut a,
                vec![("usr/lib/libx.so.1.2", 1000usize), ("etc/a", 10)],
            ),
            (&mut b, vec![("usr/lib/libx.so.1.3", 1200), ("etc/b", 10)]),
        ] {
            for (name, size) in files {
                let mut h = tar::Header::new_gnu();
                h.set_size(size as u64);
                h.set_cksum();
                builder
                    .append_data(&mut h, name, &vec![0u8; size][..])
                    .unwrap();
            }
        }
        let sa = TarSummary::read(&a.into_inner().unwrap()[..]).unwrap();
        let sb = TarSummary::read(&b.into_inner().unwrap()[..]).unwrap();
        assert!(sa.is_tar && sb.is_tar);
        assert_eq!(sa.overlap(&sb), 1000);
        let junk = TarSummary::read(&b"not a tar at all, just text"[..]).unwrap();
        assert!(!junk.is_tar);
    }

    /// Gives a header block, then `size` bytes of 'a' made on demand, counting what was
    /// read from it.
    struct Claim {
        head: Vec<u8>,
        left: u64,
        read: std::rc::Rc<std::cell::Cell<u64>>,
    }

    impl Read for Claim {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = if !self.head.is_empty() {
                let n = self.head.len().min(buf.len());
                buf[..n].copy_from_slice(&self.head[..n]);
                self.head.drain(..n);
                n
            } else {
                let n = (self.left.min(buf.len() as u64)) as usize;
                buf[..n].fill(b'a');
                self.left -= n as u64;
                n
            };
            self.read.set(self.read.get() + n as u64);
            Ok(n)
        }
    }

    #[test]
    fn summary_does_not_hold_a_long_record() {
        // A GNU long-name record claiming 300 MB: the summary gives up at its header
        // instead of reading it into memory.
        let mut h = tar::Header::new_gnu();
        h.set_path("././@LongLink").unwrap();
        h.set_size(300 << 20);
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_cksum();
        let read = std::rc::Rc::new(std::cell::Cell::new(0));
        let s = TarSummary::read(Claim {
            head: h.as_bytes().to_vec(),
            left: 300 << 20,
            read: read.clone(),
        })
        .unwrap();
        assert!(!s.is_tar);
        assert!(read.get() < 2 << 20, "read {} bytes", read.get());
    }

    #[test]
    fn summary_keeps_a_bounded_number_of_names() {
        // Members with distinct 1000-byte names, past the summary's name budget.
        let n = MAX_SUMMARY_NAME_BYTES / 1000 + 1000;
        let mut b = tar::Builder::new(Vec::new());
        for i in 0..n {
            let mut h = tar::Header::new_gnu();
            h.set_size(0);
            h.set_cksum();
            // Letters, not digits: digits fold to one name.
            let tag: String = (0..6)
                .map(|k| (b'a' + (i / 26usize.pow(k) % 26) as u8) as char)
                .collect();
            let name = format!("{}{tag}", "x".repeat(994));
            b.append_data(&mut h, name, &[][..]).unwrap();
        }
        let s = TarSummary::read(&b.into_inner().unwrap()[..]).unwrap();
        assert!(s.is_tar);
        let min = MAX_SUMMARY_NAME_BYTES / (1000 + SUMMARY_ENTRY_OVERHEAD);
        assert!(
            (min..n).contains(&s.entries.len()),
            "{} of {n} names kept",
            s.entries.len()
        );
        let kept: usize = s
            .entries
            .keys()
            .map(|k| k.len() + SUMMARY_ENTRY_OVERHEAD)
            .sum();
        assert!(kept <= MAX_SUMMARY_NAME_BYTES + 1100);
    }
}
