//! Choosing each new file's source: where the old files are, by content, path, folded path
//! and file name ([`Catalog`]), and which old file a new file is copied or patched from
//! ([`Pick`]; the order of preference is in the module doc of [`super`]).

use std::collections::HashMap;

use super::likeness::Likeness;
use super::tarscan;
use super::{LayerData, OldLayer};
use crate::error::Result;

/// How a new file is sourced.
#[derive(Debug, Clone, Copy)]
pub(super) enum Pick {
    Same(usize, usize),
    Similar(usize, usize),
    None,
}

/// Where old files are, by content, path, folded path and file name.
pub(super) struct Catalog<'a> {
    pub(super) old: &'a [OldLayer],
    by_hash: HashMap<[u8; 32], (usize, usize)>,
    by_path: HashMap<&'a [u8], (usize, usize)>,
    by_folded: HashMap<Vec<u8>, Vec<(usize, usize)>>,
    by_name: HashMap<&'a [u8], Vec<(usize, usize)>>,
    by_kind: HashMap<Kind<'a>, Vec<(usize, usize)>>,
    likeness: Likeness,
}

/// A file's directory and extension (see [`kind`]).
type Kind<'a> = (&'a [u8], &'a [u8]);

/// Files at least this large may take as source an old file of another name in the same
/// directory with the same extension (see [`Catalog::pick`]).
const KIND_MIN: u64 = 1 << 20;

impl<'a> Catalog<'a> {
    pub(super) fn new(old: &'a [OldLayer]) -> Result<Catalog<'a>> {
        let mut c = Catalog {
            old,
            by_hash: HashMap::new(),
            by_path: HashMap::new(),
            by_folded: HashMap::new(),
            by_name: HashMap::new(),
            by_kind: HashMap::new(),
            likeness: Likeness::new(old)?,
        };
        for (l, layer) in old.iter().enumerate() {
            for (i, f) in layer.index.files.iter().enumerate() {
                c.by_hash.entry(f.hash).or_insert((l, i));
                // Upper layers hide lower ones.
                c.by_path.insert(&f.path, (l, i));
                c.by_folded.entry(fold(&f.path)).or_default().push((l, i));
                c.by_name
                    .entry(file_name(&f.path))
                    .or_default()
                    .push((l, i));
                if f.size >= KIND_MIN {
                    c.by_kind.entry(kind(&f.path)).or_default().push((l, i));
                }
            }
        }
        Ok(c)
    }

    pub(super) fn file(&self, (l, i): (usize, usize)) -> &tarscan::FileEntry {
        &self.old[l].index.files[i]
    }

    pub(super) fn pick(&self, f: &tarscan::FileEntry) -> Pick {
        // The same content at the same path first: of identical files (licenses, shared
        // modules) the one at this path has this file's header and neighbours too, so the
        // copy joins theirs (see `plan::coalesce`).
        let at_path = self.by_path.get(&f.path[..]).copied();
        if let Some(s) = at_path {
            let old = self.file(s);
            if old.hash == f.hash && old.size == f.size {
                return Pick::Same(s.0, s.1);
            }
        }
        if let Some(&(l, i)) = self.by_hash.get(&f.hash) {
            if self.file((l, i)).size == f.size {
                return Pick::Same(l, i);
            }
        }
        if let Some(s) = at_path {
            return Pick::Similar(s.0, s.1);
        }
        let closest = |cands: Option<&Vec<(usize, usize)>>| {
            cands.and_then(|v| {
                v.iter()
                    .copied()
                    .min_by_key(|&s| self.file(s).size.abs_diff(f.size))
            })
        };
        if let Some(s) = closest(self.by_folded.get(&fold(&f.path))) {
            return Pick::Similar(s.0, s.1);
        }
        if let Some(s) = closest(self.by_name.get(file_name(&f.path))) {
            // A moved file must look like the same file: similar size.
            let size = self.file(s).size;
            if size.min(f.size) * 2 >= size.max(f.size) {
                return Pick::Similar(s.0, s.1);
            }
        }
        // A large file renamed beyond folding in its directory: Python wheels name their
        // bundled libraries by a hash (`numpy.libs/libopenblas64_p-r0-0cf96a72.3.23.dev.so`
        // became `numpy.libs/libscipy_openblas64_-ff651d7f.so`). Only large files, whose
        // patches are judged before they are shipped (see `encode::patch_pays`).
        if f.size >= KIND_MIN {
            if let Some(s) = closest(self.by_kind.get(&kind(&f.path))) {
                let size = self.file(s).size;
                if size.min(f.size) * 2 >= size.max(f.size) {
                    return Pick::Similar(s.0, s.1);
                }
            }
        }
        Pick::None
    }

    /// `pick` ([`Catalog::pick`] of `f`, whose bytes are in `new`) or, if it is not the same
    /// content, the old file the new one's content resembles clearly more (see
    /// [`Likeness`]). Not for compressed files or archives, whose bytes say little of their
    /// content: the caller leaves those to their names. Also whether the source taken
    /// shares next to nothing with the new file (see
    /// [`Verdict::shares_little`](super::likeness::Verdict::shares_little)).
    pub(super) fn by_content(
        &self,
        pick: Pick,
        f: &tarscan::FileEntry,
        new: &LayerData,
    ) -> Result<(Pick, bool)> {
        let asked = match pick {
            Pick::Same(..) => return Ok((pick, false)),
            Pick::Similar(l, i) => Some((l, i)),
            Pick::None => None,
        };
        if f.size < MIN_JUDGED {
            return Ok((pick, false));
        }
        let verdict = self.likeness.judge(new, f.data_offset, f.size, asked)?;
        Ok(match verdict.better() {
            Some((l, i)) => {
                tracing::trace!(
                    path = %String::from_utf8_lossy(&f.path),
                    by_name = ?asked.map(|s| String::from_utf8_lossy(&self.file(s).path).into_owned()),
                    by_content = %String::from_utf8_lossy(&self.file((l, i)).path),
                    ?verdict,
                    "a source by content"
                );
                (Pick::Similar(l, i), false)
            }
            None => (
                pick,
                asked.is_some() && verdict.shares_little(verdict.asked),
            ),
        })
    }
}

/// Files smaller than this keep the source their names give them (too few anchors to
/// judge by).
const MIN_JUDGED: u64 = 256;

fn file_name(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(p) => &path[p + 1..],
        None => path,
    }
}

/// A path's directory and the last extension of its file name (`so`, `jar`; empty if none).
fn kind(path: &[u8]) -> Kind<'_> {
    let name = file_name(path);
    let dir = &path[..path.len() - name.len()];
    let ext = match name.iter().rposition(|&b| b == b'.') {
        Some(p) if p > 0 => &name[p + 1..],
        _ => &[][..],
    };
    (dir, ext)
}

/// A path with every run of digits replaced by `#`.
fn fold(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    let mut digits = false;
    for &b in path {
        if b.is_ascii_digit() {
            if !digits {
                out.push(b'#');
            }
            digits = true;
        } else {
            digits = false;
            out.push(b);
        }
    }
    out
}
