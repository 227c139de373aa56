//! The VCDIFF encoder: runs the matcher over 8 MiB target windows and writes each
//! window's instructions with the default code table, combining an ADD with the COPY
//! after it (or a COPY with the ADD after it) into one code where the table allows.

use super::code_table::{
    add_code, add_copy_code, copy_add_code, copy_code, copy_code_sized, AddressCache, Encoded,
};
use super::matcher::{Matcher, Op, Params};
use super::wire::{adler32, put_varint, varint_len, MAGIC, VCD_ADLER32, VCD_SOURCE};

/// Target bytes per window (the C library's default window size).
pub(super) const WINDOW: usize = 8 << 20;

/// Encodes `target` against `source` at `level` (0-9, checked by the caller). Returns
/// `None` as soon as the output would exceed `max_len` bytes.
pub(super) fn encode(source: &[u8], target: &[u8], level: u32, max_len: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.push(0); // Hdr_Indicator: no secondary compression, code table or app header.
    let mut matcher = Matcher::new(source, target, Params::for_level(level));
    let mut writer = WindowWriter::new(source.len());
    let mut ops = Vec::new();
    let mut start = 0;
    // Even an empty target gets one (empty) window.
    loop {
        let end = (start + WINDOW).min(target.len());
        ops.clear();
        matcher.window(start, end, &mut ops);
        writer.write(&target[start..end], &ops, &mut out);
        if out.len() > max_len {
            return None;
        }
        start = end;
        if start == target.len() {
            return Some(out);
        }
    }
}

/// Writes windows: the three sections, then the window header and the sections.
struct WindowWriter {
    source_len: usize,
    cache: AddressCache,
    data: Vec<u8>,
    inst: Vec<u8>,
    addr: Vec<u8>,
}

impl WindowWriter {
    fn new(source_len: usize) -> WindowWriter {
        WindowWriter {
            source_len,
            cache: AddressCache::new(),
            data: Vec::new(),
            inst: Vec::new(),
            addr: Vec::new(),
        }
    }

    /// Appends the window whose target is `window` and instructions `ops` to `out`.
    fn write(&mut self, window: &[u8], ops: &[Op], out: &mut Vec<u8>) {
        self.sections(window, ops);
        let mut indicator = VCD_ADLER32;
        if self.source_len > 0 {
            // The segment is always the whole source.
            indicator |= VCD_SOURCE;
        }
        out.push(indicator);
        if self.source_len > 0 {
            put_varint(out, self.source_len as u64);
            put_varint(out, 0);
        }
        let (data, inst, addr) = (self.data.len(), self.inst.len(), self.addr.len());
        let sizes = [window.len(), data, inst, addr].map(|n| n as u64);
        // From the target window length to the end of the addresses: the lengths, the
        // Delta_Indicator, the checksum and the sections.
        let encoding_len: usize =
            sizes.iter().map(|&n| varint_len(n)).sum::<usize>() + 1 + 4 + data + inst + addr;
        put_varint(out, encoding_len as u64);
        put_varint(out, sizes[0]);
        out.push(0); // Delta_Indicator: no section is compressed.
        for n in &sizes[1..] {
            put_varint(out, *n);
        }
        out.extend_from_slice(&adler32(window).to_be_bytes());
        out.extend_from_slice(&self.data);
        out.extend_from_slice(&self.inst);
        out.extend_from_slice(&self.addr);
    }

    /// Fills the data, instructions and addresses sections for one window.
    fn sections(&mut self, window: &[u8], ops: &[Op]) {
        self.cache.reset();
        self.data.clear();
        self.inst.clear();
        self.addr.clear();
        let mut pos = 0;
        let mut i = 0;
        while i < ops.len() {
            let next = ops.get(i + 1).copied();
            match ops[i] {
                Op::Add(len) => {
                    self.data.extend_from_slice(&window[pos..pos + len]);
                    pos += len;
                    if let Some(Op::Copy(copy_len, addr)) = next.filter(|_| len <= 4) {
                        let e = self.encode_addr(addr, pos);
                        match add_copy_code(len, copy_len, e.mode()) {
                            Some(code) => {
                                self.inst.push(code);
                                self.put_addr(e);
                            }
                            None => {
                                self.add(len);
                                self.copy(copy_len, e);
                            }
                        }
                        pos += copy_len;
                        i += 2;
                        continue;
                    }
                    self.add(len);
                }
                Op::Copy(len, addr) => {
                    let e = self.encode_addr(addr, pos);
                    pos += len;
                    if let Some(code) = next
                        .filter(|&n| n == Op::Add(1))
                        .and_then(|_| copy_add_code(len, 1, e.mode()))
                    {
                        self.inst.push(code);
                        self.put_addr(e);
                        self.data.push(window[pos]);
                        pos += 1;
                        i += 2;
                        continue;
                    }
                    self.copy(len, e);
                }
                Op::Run(len, byte) => {
                    self.inst.push(0);
                    put_varint(&mut self.inst, len as u64);
                    self.data.push(byte);
                    pos += len;
                }
            }
            i += 1;
        }
        debug_assert_eq!(pos, window.len());
    }

    fn encode_addr(&mut self, addr: u64, pos: usize) -> Encoded {
        self.cache.encode(addr, (self.source_len + pos) as u64)
    }

    fn put_addr(&mut self, e: Encoded) {
        match e {
            Encoded::Varint(_, v) => put_varint(&mut self.addr, v),
            Encoded::Byte(_, b) => self.addr.push(b),
        }
    }

    fn add(&mut self, len: usize) {
        match add_code(len) {
            Some(code) => self.inst.push(code),
            None => {
                self.inst.push(1);
                put_varint(&mut self.inst, len as u64);
            }
        }
    }

    fn copy(&mut self, len: usize, e: Encoded) {
        match copy_code(len, e.mode()) {
            Some(code) => self.inst.push(code),
            None => {
                self.inst.push(copy_code_sized(e.mode()));
                put_varint(&mut self.inst, len as u64);
            }
        }
        self.put_addr(e);
    }
}
