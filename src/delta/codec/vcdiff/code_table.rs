//! The RFC 3284 default instruction code table (section 5.6) and address cache
//! (section 5.3), shared by the encoder and the decoder.

use super::wire::{ReadError, Reader};

/// An instruction type, as the code table names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// No instruction (the unused half of a single-instruction code).
    Noop,
    /// Literal bytes from the data section.
    Add,
    /// One byte from the data section, repeated.
    Run,
    /// Bytes copied from the source segment or the target window decoded so far.
    Copy,
}

/// One half of a code: its type, its size (0: the size follows in the instructions
/// section) and, for copies, its address mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Half {
    pub kind: Kind,
    pub size: u8,
    pub mode: u8,
}

/// The near cache's size in the default code table.
pub(super) const NEAR: usize = 4;
/// The same cache's size, in 256-entry rows.
pub(super) const SAME: usize = 3;
/// Address modes: self, here, the near slots and the same rows.
pub(super) const MODES: u8 = (2 + NEAR + SAME) as u8;

const NOOP: Half = Half {
    kind: Kind::Noop,
    size: 0,
    mode: 0,
};

/// The 256 codes of the default table, built as the RFC lays them out.
pub(super) fn default_table() -> [(Half, Half); 256] {
    let mut t = [(NOOP, NOOP); 256];
    let mut i = 0;
    let mut put = |first: Half, second: Half| {
        t[i] = (first, second);
        i += 1;
    };
    let add = |size| Half {
        kind: Kind::Add,
        size,
        mode: 0,
    };
    let copy = |size, mode| Half {
        kind: Kind::Copy,
        size,
        mode,
    };
    put(
        Half {
            kind: Kind::Run,
            size: 0,
            mode: 0,
        },
        NOOP,
    );
    for size in 0..=17 {
        put(add(size), NOOP);
    }
    for mode in 0..MODES {
        put(copy(0, mode), NOOP);
        for size in 4..=18 {
            put(copy(size, mode), NOOP);
        }
    }
    for mode in 0..MODES {
        // The near modes (and self/here) pair with copies of 4-6 bytes, the same modes
        // with copies of exactly 4.
        let copy_max = if usize::from(mode) < 2 + NEAR { 6 } else { 4 };
        for add_size in 1..=4 {
            for copy_size in 4..=copy_max {
                put(add(add_size), copy(copy_size, mode));
            }
        }
    }
    for mode in 0..MODES {
        put(copy(4, mode), add(1));
    }
    debug_assert_eq!(i, 256);
    t
}

/// The code for a lone ADD of `size` bytes (`None`: code 1, size in the instructions).
pub(super) fn add_code(size: usize) -> Option<u8> {
    (1..=17).contains(&size).then(|| size as u8 + 1)
}

/// The code for a lone COPY of `size` bytes in `mode` (`None` when the size must be
/// written separately, with [`copy_code_sized`]).
pub(super) fn copy_code(size: usize, mode: u8) -> Option<u8> {
    (4..=18)
        .contains(&size)
        .then(|| 19 + mode * 16 + (size as u8 - 3))
}

/// The COPY code whose size follows in the instructions section.
pub(super) fn copy_code_sized(mode: u8) -> u8 {
    19 + mode * 16
}

/// The code for an ADD of `add` bytes followed by a COPY of `copy` bytes in `mode`.
pub(super) fn add_copy_code(add: usize, copy: usize, mode: u8) -> Option<u8> {
    if !(1..=4).contains(&add) {
        return None;
    }
    let a = add as u8 - 1;
    if usize::from(mode) < 2 + NEAR {
        (4..=6)
            .contains(&copy)
            .then(|| 163 + mode * 12 + a * 3 + (copy as u8 - 4))
    } else {
        (copy == 4).then(|| 235 + (mode - 2 - NEAR as u8) * 4 + a)
    }
}

/// The code for a COPY of 4 bytes in `mode` followed by an ADD of one byte.
pub(super) fn copy_add_code(copy: usize, add: usize, mode: u8) -> Option<u8> {
    (copy == 4 && add == 1).then(|| 247 + mode)
}

/// An encoded address: its mode and the bytes for the addresses section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoded {
    /// A varint (modes self, here and near).
    Varint(u8, u64),
    /// One byte (the same modes).
    Byte(u8, u8),
}

impl Encoded {
    /// The address mode.
    pub fn mode(self) -> u8 {
        match self {
            Encoded::Varint(m, _) | Encoded::Byte(m, _) => m,
        }
    }

    /// Bytes it takes in the addresses section.
    pub fn cost(self) -> usize {
        match self {
            Encoded::Varint(_, v) => super::wire::varint_len(v),
            Encoded::Byte(..) => 1,
        }
    }
}

/// The near and same caches of RFC 3284 section 5.3, reset at every window.
pub(super) struct AddressCache {
    near: [u64; NEAR],
    next: usize,
    same: Vec<u64>,
}

impl AddressCache {
    /// An empty cache (every slot 0), as at the start of a window.
    pub fn new() -> AddressCache {
        AddressCache {
            near: [0; NEAR],
            next: 0,
            same: vec![0; SAME * 256],
        }
    }

    /// Empties the cache for a new window.
    pub fn reset(&mut self) {
        self.near = [0; NEAR];
        self.next = 0;
        self.same.fill(0);
    }

    fn update(&mut self, addr: u64) {
        self.near[self.next] = addr;
        self.next = (self.next + 1) % NEAR;
        let n = self.same.len() as u64;
        self.same[(addr % n) as usize] = addr;
    }

    /// The cheapest encoding of `addr` (`addr < here`) without changing the cache.
    pub fn peek(&self, addr: u64, here: u64) -> Encoded {
        let n = self.same.len() as u64;
        let slot = (addr % n) as usize;
        if self.same[slot] == addr {
            return Encoded::Byte((2 + NEAR + slot / 256) as u8, (addr % 256) as u8);
        }
        let mut best = Encoded::Varint(0, addr);
        let mut consider = |e: Encoded| {
            if e.cost() < best.cost() {
                best = e;
            }
        };
        consider(Encoded::Varint(1, here - addr));
        for (i, &near) in self.near.iter().enumerate() {
            if let Some(d) = addr.checked_sub(near) {
                consider(Encoded::Varint(2 + i as u8, d));
            }
        }
        best
    }

    /// Encodes `addr` at position `here` and records it.
    pub fn encode(&mut self, addr: u64, here: u64) -> Encoded {
        let e = self.peek(addr, here);
        self.update(addr);
        e
    }

    /// Decodes an address in `mode`, reading it from the addresses section `r`. `None`
    /// for an impossible address (before 0 or past 2^64).
    pub fn decode(
        &mut self,
        mode: u8,
        here: u64,
        r: &mut Reader<'_>,
    ) -> Result<Option<u64>, ReadError> {
        let m = usize::from(mode);
        let addr = if m == 0 {
            Some(r.varint()?)
        } else if m == 1 {
            here.checked_sub(r.varint()?)
        } else if m < 2 + NEAR {
            self.near[m - 2].checked_add(r.varint()?)
        } else {
            let row = m - 2 - NEAR;
            Some(self.same[row * 256 + usize::from(r.byte()?)])
        };
        if let Some(a) = addr {
            self.update(a);
        }
        Ok(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_table_has_the_rfc_layout() {
        let t = default_table();
        let copy = |size, mode| Half {
            kind: Kind::Copy,
            size,
            mode,
        };
        let add = |size| Half {
            kind: Kind::Add,
            size,
            mode: 0,
        };
        assert_eq!(t[0].0.kind, Kind::Run);
        assert_eq!(t[1], (add(0), NOOP));
        assert_eq!(t[18], (add(17), NOOP));
        assert_eq!(t[19], (copy(0, 0), NOOP));
        assert_eq!(t[34], (copy(18, 0), NOOP));
        assert_eq!(t[162], (copy(18, 8), NOOP));
        assert_eq!(t[163], (add(1), copy(4, 0)));
        assert_eq!(t[174], (add(4), copy(6, 0)));
        assert_eq!(t[234], (add(4), copy(6, 5)));
        assert_eq!(t[235], (add(1), copy(4, 6)));
        assert_eq!(t[246], (add(4), copy(4, 8)));
        assert_eq!(t[247], (copy(4, 0), add(1)));
        assert_eq!(t[255], (copy(4, 8), add(1)));
    }

    #[test]
    fn encoder_codes_agree_with_the_table() {
        let t = default_table();
        for size in 0..40 {
            if let Some(c) = add_code(size) {
                assert_eq!(t[usize::from(c)].0.size as usize, size);
            }
            for mode in 0..MODES {
                if let Some(c) = copy_code(size, mode) {
                    assert_eq!(
                        t[usize::from(c)].0,
                        Half {
                            kind: Kind::Copy,
                            size: size as u8,
                            mode
                        }
                    );
                }
                for add in 0..6 {
                    if let Some(c) = add_copy_code(add, size, mode) {
                        let (a, b) = t[usize::from(c)];
                        assert_eq!((a.kind, a.size as usize), (Kind::Add, add));
                        assert_eq!(
                            b,
                            Half {
                                kind: Kind::Copy,
                                size: size as u8,
                                mode
                            }
                        );
                    }
                    if let Some(c) = copy_add_code(size, add, mode) {
                        let (a, b) = t[usize::from(c)];
                        assert_eq!(
                            a,
                            Half {
                                kind: Kind::Copy,
                                size: size as u8,
                                mode
                            }
                        );
                        assert_eq!((b.kind, b.size as usize), (Kind::Add, add));
                    }
                }
            }
        }
        for mode in 0..MODES {
            assert_eq!(
                t[usize::from(copy_code_sized(mode))].0,
                Half {
                    kind: Kind::Copy,
                    size: 0,
                    mode
                }
            );
        }
    }

    #[test]
    fn addresses_round_trip_through_the_caches() {
        let mut enc = AddressCache::new();
        let mut dec = AddressCache::new();
        let addrs = [
            5u64, 1000, 1004, 5, 70_000, 70_100, 1004, 3, 999_999, 70_000,
        ];
        let mut here = 1_000_000;
        for a in addrs {
            let e = enc.encode(a, here);
            let mut bytes = Vec::new();
            match e {
                Encoded::Varint(_, v) => super::super::wire::put_varint(&mut bytes, v),
                Encoded::Byte(_, b) => bytes.push(b),
            }
            assert_eq!(bytes.len(), e.cost());
            let got = dec
                .decode(e.mode(), here, &mut Reader::new(&bytes))
                .unwrap();
            assert_eq!(got, Some(a));
            here += 10;
        }
        // A repeated address costs one byte (the same cache).
        assert_eq!(enc.peek(70_000, here).cost(), 1);
    }
}
