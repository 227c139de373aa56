//! Finding copies: a hash index of the source, hash chains over the target window, the
//! diagonal of the last source copy, and runs. Produces the instructions of one window
//! at a time; [`super::encode()`] turns them into bytes.

use super::code_table::AddressCache;
use super::wire::varint_len;

/// The shortest copy worth an instruction (the default code table's smallest COPY size).
const MIN_COPY: usize = 4;
/// The shortest run emitted as a RUN instruction.
const MIN_RUN: usize = 8;
/// An empty slot in the hash tables.
const EMPTY: u32 = u32::MAX;

/// One instruction, before encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    /// The next `len` target bytes, as literals.
    Add(usize),
    /// `len` copies of a byte.
    Run(usize, u8),
    /// `len` bytes from superstring address `addr` (source segment, then the window).
    Copy(usize, u64),
}

/// How hard the matcher looks, from the level.
#[derive(Debug, Clone, Copy)]
pub(super) struct Params {
    /// One source position in `step` is indexed: copies from the source of at least
    /// `7 + step` bytes are always found (unless their slot was taken).
    step: usize,
    /// How many earlier positions of the target window are tried per position (0: no
    /// copies within the target).
    chain: usize,
    /// Whether a match is deferred when the next position has a better one.
    lazy: bool,
    /// A match this long is taken without looking further.
    long_enough: usize,
}

impl Params {
    /// The parameters of `level` (0-9; callers check the range). Level 0 only copies
    /// from the source.
    pub fn for_level(level: u32) -> Params {
        let (step, chain, lazy) = match level {
            0 => (8, 0, false),
            1 => (32, 1, false),
            2 => (24, 2, false),
            3 => (16, 4, false),
            4 => (12, 8, true),
            5 => (8, 8, true),
            6 => (8, 16, true),
            7 => (6, 24, true),
            8 => (5, 32, true),
            _ => (4, 48, true),
        };
        Params {
            step,
            chain,
            lazy,
            long_enough: if lazy { 96 } else { 32 },
        }
    }
}

fn load8(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(a)
}

fn load4(b: &[u8], i: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[i..i + 4]);
    u32::from_le_bytes(a)
}

fn hash(v: u64, bits: u32) -> usize {
    (v.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
}

/// How many leading bytes `a` and `b` share.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        let x = load8(a, i) ^ load8(b, i);
        if x != 0 {
            return i + (x.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// The source index: the position of an 8-byte block every `step` bytes, one slot per
/// hash (the first position wins). At most one slot per 4 source bytes, 4 bytes each:
/// no more memory than the source itself, plus a 4 KiB minimum.
pub(super) struct SourceIndex {
    table: Vec<u32>,
    bits: u32,
}

impl SourceIndex {
    /// Indexes `source` (at most 4 GiB, callers check) one position in `step`.
    pub fn build(source: &[u8], step: usize) -> SourceIndex {
        if source.len() < 8 {
            return SourceIndex {
                table: Vec::new(),
                bits: 0,
            };
        }
        let wanted = (source.len() / step).max(1).next_power_of_two();
        let cap = prev_power_of_two(source.len() / 4);
        let slots = wanted.min(cap).max(1 << 10);
        let bits = slots.trailing_zeros();
        let mut table = vec![EMPTY; slots];
        for i in (0..=source.len() - 8).step_by(step) {
            let slot = &mut table[hash(load8(source, i), bits)];
            if *slot == EMPTY {
                *slot = i as u32;
            }
        }
        SourceIndex { table, bits }
    }

    fn get(&self, block: u64) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        match self.table[hash(block, self.bits)] {
            EMPTY => None,
            p => Some(p as usize),
        }
    }
}

fn prev_power_of_two(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        1 << (usize::BITS - 1 - n.leading_zeros())
    }
}

/// Hash chains of 4-byte prefixes over the current target window: 4 bytes per window
/// byte plus a fixed head table.
struct Chains {
    head: Vec<u32>,
    prev: Vec<u32>,
    bits: u32,
    /// The window's first position; chain entries are relative to it.
    base: usize,
    /// Every position before this one is in the chains.
    filled: usize,
}

/// A candidate copy.
#[derive(Debug, Clone, Copy)]
struct Match {
    start: usize,
    len: usize,
    addr: u64,
    /// Bytes saved over adding the same bytes as literals (roughly).
    score: isize,
}

/// Finds the instructions of a target, window by window.
pub(super) struct Matcher<'a> {
    source: &'a [u8],
    target: &'a [u8],
    index: SourceIndex,
    params: Params,
    chains: Option<Chains>,
    /// A copy of the encoder's address cache, to price addresses as they will be written.
    cache: AddressCache,
    /// Source position minus target position of the last copy from the source: after a
    /// small edit the copy usually continues on the same diagonal.
    diagonal: Option<isize>,
}

impl<'a> Matcher<'a> {
    /// A matcher of `target` against `source` (the source is indexed now).
    pub fn new(source: &'a [u8], target: &'a [u8], params: Params) -> Matcher<'a> {
        let chains = (params.chain > 0).then(|| Chains {
            head: vec![EMPTY; 1 << 18],
            prev: Vec::new(),
            bits: 18,
            base: 0,
            filled: 0,
        });
        Matcher {
            source,
            target,
            index: SourceIndex::build(source, params.step),
            params,
            chains,
            cache: AddressCache::new(),
            diagonal: None,
        }
    }

    /// Appends to `ops` the instructions for target window `ws..we`.
    pub fn window(&mut self, ws: usize, we: usize, ops: &mut Vec<Op>) {
        self.cache.reset();
        if let Some(c) = &mut self.chains {
            c.head.fill(EMPTY);
            c.prev.clear();
            c.prev.resize(we - ws, EMPTY);
            c.base = ws;
            c.filled = ws;
        }
        let mut p = ws;
        let mut literal = ws;
        while p + MIN_COPY <= we {
            let Some(mut m) = self.find(p, literal, ws, we) else {
                let run = self.run_at(p, we);
                if run >= MIN_RUN {
                    push_add(ops, literal, p);
                    ops.push(Op::Run(run, self.target[p]));
                    p += run;
                    literal = p;
                } else {
                    p += 1;
                }
                continue;
            };
            if self.params.lazy {
                let mut tries = 0;
                while m.len < self.params.long_enough && tries < 8 && p + 1 + MIN_COPY <= we {
                    match self.find(p + 1, literal, ws, we) {
                        Some(next) if next.score > m.score + 1 => {
                            m = next;
                            p += 1;
                            tries += 1;
                        }
                        _ => break,
                    }
                }
            }
            let run = self.run_at(p, we);
            if run >= MIN_RUN && p + run >= m.start + m.len {
                push_add(ops, literal, p);
                ops.push(Op::Run(run, self.target[p]));
                p += run;
                literal = p;
                continue;
            }
            push_add(ops, literal, m.start);
            ops.push(Op::Copy(m.len, m.addr));
            let here = (self.source.len() + m.start - ws) as u64;
            self.cache.encode(m.addr, here);
            if m.addr < self.source.len() as u64 {
                self.diagonal = Some(m.addr as isize - m.start as isize);
            }
            p = m.start + m.len;
            literal = p;
        }
        push_add(ops, literal, we);
    }

    /// The length of the run of equal bytes at `p`, when at least [`MIN_RUN`] bytes remain
    /// and the first 4 are equal (else 0).
    fn run_at(&self, p: usize, we: usize) -> usize {
        let t = &self.target[p..we];
        if t.len() < MIN_RUN || load4(t, 0) != u32::from(t[0]) * 0x0101_0101 {
            return 0;
        }
        t.iter().take_while(|&&b| b == t[0]).count()
    }

    /// The best copy covering `p`, extended backwards as far as `literal`.
    fn find(&mut self, p: usize, literal: usize, ws: usize, we: usize) -> Option<Match> {
        let mut best: Option<Match> = None;
        let src_len = self.source.len();
        let t = self.target;
        // The source: the last copy's diagonal, then the index.
        // Target position `q` against source position `sp`, extended both ways.
        let from_source = |q: usize, sp: usize| {
            let len = common_prefix(&self.source[sp..], &t[q..we]);
            let mut back = 0;
            while q - back > literal && back < sp && self.source[sp - back - 1] == t[q - back - 1] {
                back += 1;
            }
            (q - back, len + back, (sp - back) as u64)
        };
        let diagonal = self
            .diagonal
            .and_then(|d| usize::try_from(p as isize + d).ok())
            .filter(|&sp| sp < src_len);
        if let Some(sp) = diagonal {
            let (start, len, addr) = from_source(p, sp);
            consider(&mut best, &self.cache, src_len, ws, start, len, addr);
            if len >= self.params.long_enough {
                return best;
            }
        }
        if p + 8 <= we {
            if let Some(sp) = self
                .index
                .get(load8(t, p))
                .filter(|&sp| Some(sp) != diagonal)
            {
                let (start, len, addr) = from_source(p, sp);
                consider(&mut best, &self.cache, src_len, ws, start, len, addr);
            }
        }
        // Earlier in the target window.
        if let Some(c) = &mut self.chains {
            while c.filled < p {
                if c.filled + 4 <= we {
                    let h = hash(u64::from(load4(t, c.filled)), c.bits);
                    c.prev[c.filled - c.base] = c.head[h];
                    c.head[h] = (c.filled - c.base) as u32;
                }
                c.filled += 1;
            }
            let good = best.map_or(0, |b| b.len);
            let mut q = c.head[hash(u64::from(load4(t, p)), c.bits)];
            let mut depth = self.params.chain;
            while q != EMPTY && depth > 0 && good < self.params.long_enough {
                let qa = c.base + q as usize;
                let len = common_prefix(&t[qa..we], &t[p..we]);
                if len >= MIN_COPY {
                    let mut back = 0;
                    while p - back > literal
                        && qa - back > ws
                        && t[qa - back - 1] == t[p - back - 1]
                    {
                        back += 1;
                    }
                    let addr = (src_len + qa - back - ws) as u64;
                    consider(
                        &mut best,
                        &self.cache,
                        src_len,
                        ws,
                        p - back,
                        len + back,
                        addr,
                    );
                    if len >= self.params.long_enough {
                        break;
                    }
                }
                q = c.prev[q as usize];
                depth -= 1;
            }
        }
        // A source copy starting at `p` is indexed at one of the next `step` positions
        // unless it is shorter than the block: when something matches here, look there
        // too (per match found, not per position).
        if best.is_some() {
            for q in p + 1..(p + self.params.step).min(we.saturating_sub(7)) {
                if let Some(sp) = self.index.get(load8(t, q)) {
                    let (start, len, addr) = from_source(q, sp);
                    if start <= p {
                        consider(&mut best, &self.cache, src_len, ws, start, len, addr);
                    }
                }
            }
        }
        best
    }
}

/// Keeps the copy of `len` bytes at `start` from `addr` in `best` when it saves more than
/// `best` does (and at least 2 bytes over literals).
fn consider(
    best: &mut Option<Match>,
    cache: &AddressCache,
    src_len: usize,
    ws: usize,
    start: usize,
    len: usize,
    addr: u64,
) {
    if len < MIN_COPY {
        return;
    }
    let here = (src_len + start - ws) as u64;
    let mut cost = cache.peek(addr, here).cost() as isize;
    if len > 18 {
        cost += varint_len(len as u64) as isize;
    }
    let score = len as isize - cost;
    if score >= 2 && best.is_none_or(|b| score > b.score) {
        *best = Some(Match {
            start,
            len,
            addr,
            score,
        });
    }
}

fn push_add(ops: &mut Vec<Op>, from: usize, to: usize) {
    if to > from {
        ops.push(Op::Add(to - from));
    }
}
