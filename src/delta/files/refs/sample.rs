// Synthetic x86-64 and AArch64 shared libraries, for tests and fuzz seeds: functions
// calling one another (and, on x86-64, taking the addresses of data), laid out in an ELF file whose one executable
// section is the code, so that a next build that inserts, removes or grows functions moves
// most calls' and references' targets by other amounts than the references themselves.
//
// Only std is used: the fuzz crate includes this file (`include!`) to put such libraries
// in the `files` target's old layers and seeds. Hence plain comments at the top, not `//!`.

/// A byte no reference search stops at (`nop`, `push`, `pop`, `ret`).
pub fn filler(x: u64) -> u8 {
    const FILL: [u8; 8] = [0x90, 0x50, 0x53, 0x55, 0x5B, 0x5D, 0x41, 0xC3];
    FILL[(x % 8) as usize]
}

pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// A function: the seed of its filler bytes, their count, the functions it calls and
/// the data items it takes the address of (by index).
pub type Function = (u64, usize, Vec<usize>, Vec<usize>);

/// ELF machine numbers [`program`] makes code for.
pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;

/// An AArch64 instruction that is not a branch (`nop`, `mov`, `add`, `ldr`, `ret`).
pub fn filler_word(x: u64) -> u32 {
    const FILL: [u32; 5] = [
        0xD503_201F,
        0xAA01_03E0,
        0x9100_0400,
        0xF940_0000,
        0xD65F_03C0,
    ];
    FILL[(x % 5) as usize]
}

/// A shared library for `machine` ([`EM_X86_64`] or [`EM_AARCH64`]): `functions` laid out
/// in order from offset 64, each its filler bytes with its calls (`call rel32`, `bl`) and,
/// on x86-64, data references (`lea rax, [rip + d]`) spread through them, then `items`
/// data items of 64 bytes (from `data_seed`), then section headers whose one executable
/// section is the code.
pub fn program(machine: u16, functions: &[Function], items: usize, data_seed: u64) -> Vec<u8> {
    const HEADER: usize = 64;
    let arm = machine == EM_AARCH64;
    // Bytes of a function's body, of a call and of a data reference.
    let body_len = |len: usize| if arm { len / 4 * 4 } else { len };
    let (call_len, data_len) = if arm { (4, 0) } else { (5, 7) };
    let mut starts = Vec::with_capacity(functions.len());
    let mut at = HEADER;
    for (_, len, calls, data) in functions {
        starts.push(at);
        at += body_len(*len) + call_len * calls.len() + data_len * data.len();
    }
    let code_end = at;
    let mut out = vec![0u8; HEADER];
    for (seed, len, calls, data) in functions {
        let mut next = xorshift(*seed);
        let body: Vec<u8> = if arm {
            (0..len / 4)
                .flat_map(|_| filler_word(next()).to_le_bytes())
                .collect()
        } else {
            (0..*len).map(|_| filler(next())).collect()
        };
        let data = if arm { &[][..] } else { &data[..] };
        let n = calls.len() + data.len();
        let refs = calls
            .iter()
            .map(|&c| (true, c))
            .chain(data.iter().map(|&d| (false, d)));
        let mut done = 0;
        for (k, (call, target)) in refs.enumerate() {
            let cut = body_len(k * body.len() / n);
            out.extend_from_slice(&body[done..cut]);
            done = cut;
            if arm {
                let to = starts[target % starts.len()] as i64;
                let imm = ((to - out.len() as i64) / 4) as u32 & 0x03FF_FFFF;
                out.extend_from_slice(&(0x9400_0000 | imm).to_le_bytes());
                continue;
            }
            let (opcode, to): (&[u8], usize) = if call {
                (&[0xE8], starts[target % starts.len()])
            } else {
                (&[0x48, 0x8D, 0x05], code_end + 64 * (target % items.max(1)))
            };
            let end = out.len() + opcode.len() + 4;
            out.extend_from_slice(opcode);
            out.extend_from_slice(&((to as i64 - end as i64) as i32).to_le_bytes());
        }
        out.extend_from_slice(&body[done..]);
    }
    let mut next = xorshift(data_seed);
    out.extend((0..64 * items).map(|_| next() as u8));
    // One section: the code (PROGBITS, ALLOC | EXECINSTR).
    let code = (HEADER as u64, (code_end - HEADER) as u64);
    finish_elf(&mut out, 3, machine, &[(0, 1, 6, code, 0)], &[]);
    out
}

/// A section header: its name's offset among the names, type, flags, (file offset,
/// size), entry size.
pub type Section = (u32, u32, u64, (u64, u64), u64);

/// Ends `out`, whose first 64 bytes are room for the ELF header, with `names` (the
/// sections' names, each section naming its own by offset) as a last section if there are
/// any, the null section header and the sections' headers, and writes the ELF header:
/// 64-bit, little-endian, of `kind` (2 a program, 3 a shared library) for `machine`.
pub fn finish_elf(out: &mut Vec<u8>, kind: u16, machine: u16, sections: &[Section], names: &[u8]) {
    let mut sections = sections.to_vec();
    let mut names_index = 0;
    if !names.is_empty() {
        let at = out.len() as u64;
        out.extend_from_slice(names);
        while out.len() % 8 != 0 {
            out.push(0);
        }
        sections.push((0, 3, 0, (at, names.len() as u64), 0));
        names_index = sections.len() as u16;
    }
    let shoff = out.len() as u64;
    out.extend_from_slice(&[0u8; 64]);
    for &(name, kind, flags, (off, size), entsize) in &sections {
        let mut sh = [0u8; 64];
        sh[0..4].copy_from_slice(&name.to_le_bytes());
        sh[4..8].copy_from_slice(&kind.to_le_bytes());
        sh[8..16].copy_from_slice(&flags.to_le_bytes());
        sh[0x18..0x20].copy_from_slice(&off.to_le_bytes());
        sh[0x20..0x28].copy_from_slice(&size.to_le_bytes());
        sh[0x38..0x40].copy_from_slice(&entsize.to_le_bytes());
        out.extend_from_slice(&sh);
    }
    out[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    out[16..18].copy_from_slice(&kind.to_le_bytes());
    out[18..20].copy_from_slice(&machine.to_le_bytes());
    out[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
    out[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
    out[0x3C..0x3E].copy_from_slice(&(sections.len() as u16 + 1).to_le_bytes());
    out[0x3E..0x40].copy_from_slice(&names_index.to_le_bytes());
}

/// `n` functions calling one another and using `items` data items.
pub fn functions(seed: u64, n: usize, items: usize) -> Vec<Function> {
    let mut next = xorshift(seed);
    (0..n)
        .map(|_| {
            let calls = (0..next() % 6).map(|_| next() as usize % n).collect();
            let data = (0..next() % 4).map(|_| next() as usize % items).collect();
            (next(), 40 + next() as usize % 400, calls, data)
        })
        .collect()
}

/// A program for `machine` of functions calling one another (see [`program`]) and its
/// next build: functions inserted, removed and grown, so that most calls and data
/// references change their distances.
pub fn program_pair(
    machine: u16,
    seed: u64,
    n: usize,
    edits: &[(u8, usize)],
) -> (Vec<u8>, Vec<u8>) {
    let old_fs = functions(seed, n, 40);
    let mut new_fs = old_fs.clone();
    for &(kind, at) in edits {
        if new_fs.is_empty() {
            break;
        }
        let at = at % new_fs.len();
        match kind % 3 {
            0 => new_fs.insert(at, (seed ^ at as u64, 50 + at % 200, vec![at], vec![at])),
            1 => {
                new_fs.remove(at);
            }
            _ => new_fs[at].1 += 1 + at % 64,
        }
    }
    (
        program(machine, &old_fs, 40, seed),
        program(machine, &new_fs, 40, seed),
    )
}

/// A linked program as a linker lays one out: a header, `functions` functions of code, a
/// `.rela.dyn` of relative relocations (two per function, each pointing at a function), an
/// `.eh_frame_hdr` indexing the functions, their `.eh_frame`, a `.shstrtab`, and section
/// headers for the five. `seed` picks the function sizes and contents.
pub fn linked(functions: usize, seed: u64) -> Vec<u8> {
    linked_build(functions, seed, false)
}

/// The next build of [`linked`]`(functions, seed)`: one function more, a third of the way
/// in, so that everything after it moves (code, the relocations' addends, the unwind
/// index and records), as a rebuild with a changed function does.
pub fn linked_next(functions: usize, seed: u64) -> Vec<u8> {
    linked_build(functions, seed, true)
}

fn linked_build(functions: usize, seed: u64, next_build: bool) -> Vec<u8> {
    let mut next = xorshift(seed);
    let mut out = vec![0u8; 64];
    let mut starts = Vec::new();
    for k in 0..functions {
        if next_build && k == functions / 3 {
            out.extend((0..100u64).map(|i| filler(i * 7)));
        }
        starts.push(out.len() as u64);
        let len = 16 + next() % 300;
        out.extend((0..len).map(|_| next() as u8));
    }
    let text = (64u64, out.len() as u64 - 64);
    // Relocations: r_offset, r_info (R_X86_64_RELATIVE), r_addend.
    let rela_at = out.len() as u64;
    let data_area = 0x20_0000u64;
    for i in 0..functions as u64 * 2 {
        out.extend_from_slice(&(data_area + 8 * i).to_le_bytes());
        out.extend_from_slice(&8u64.to_le_bytes());
        out.extend_from_slice(&starts[(next() % functions as u64) as usize].to_le_bytes());
    }
    let rela = (rela_at, out.len() as u64 - rela_at);
    while out.len() % 4 != 0 {
        out.push(0);
    }
    // .eh_frame_hdr: version, eh_frame_ptr pcrel|sdata4, fde_count udata4, table
    // datarel|sdata4; FDE offsets as a linker writes them (sizes of a few kinds).
    let hdr_at = out.len() as u64;
    out.extend_from_slice(&[1, 0x1B, 0x03, 0x3B]);
    out.extend_from_slice(&0x1000i32.to_le_bytes());
    out.extend_from_slice(&(functions as u32).to_le_bytes());
    let mut fde = 0x1100i64;
    for &s in &starts {
        out.extend_from_slice(&((s as i64 - hdr_at as i64) as i32).to_le_bytes());
        out.extend_from_slice(&(fde as i32).to_le_bytes());
        fde += [0x18, 0x20, 0x28, 0x30][(next() % 4) as usize];
    }
    let hdr = (hdr_at, out.len() as u64 - hdr_at);
    // .eh_frame: a CIE ("zR", FDE pointers PC-relative and 4 bytes), then an FDE per
    // function (its CIE pointer, pc_begin, pc_range, no augmentation data, a few call frame
    // instructions), padded to 4 bytes.
    let frame_at = out.len() as u64;
    let cie = [
        0u8, 0, 0, 0, 1, b'z', b'R', 0, 1, 0x78, 16, 1, 0x1B, 0x0C, 7, 8, 0x90, 1, 0, 0,
    ];
    out.extend_from_slice(&(cie.len() as u32).to_le_bytes());
    out.extend_from_slice(&cie);
    for (k, &s) in starts.iter().enumerate() {
        let at = out.len() as u64;
        let steps = 1 + next() as usize % 3;
        let len = 13 + 2 * steps;
        let padded = len.next_multiple_of(4);
        out.extend_from_slice(&(padded as u32).to_le_bytes());
        out.extend_from_slice(&((at + 4 - frame_at) as u32).to_le_bytes());
        out.extend_from_slice(&((s as i64 - (at + 8) as i64) as i32).to_le_bytes());
        let end = starts.get(k + 1).copied().unwrap_or(text.0 + text.1);
        out.extend_from_slice(&((end - s) as u32).to_le_bytes());
        out.push(0);
        for _ in 0..steps {
            out.extend_from_slice(&[0x41 + (next() % 8) as u8, 0x0E]);
        }
        out.resize((at + 4) as usize + padded, 0);
    }
    out.extend_from_slice(&[0; 4]); // the terminator
    let frame = (frame_at, out.len() as u64 - frame_at);
    let names = b"\0.text\0.rela.dyn\0.eh_frame_hdr\0.eh_frame\0";
    let sections = [
        (1, 1, 6, text, 0),
        (7, 4, 2, rela, 24),
        (17, 1, 2, hdr, 0),
        (31, 1, 2, frame, 0),
    ];
    finish_elf(&mut out, 3, 62, &sections, names);
    out
}

/// A Go program's bones: a `.note.go.buildid` (unless `marked` is false), code, and
/// `runtime.pclntab` with pc-value tables and a function table of `nfunc` functions, as its
/// own `.gopclntab` or (`pie`) inside `.data.rel.ro` after other data, with a decoy magic
/// before it. Returns the file and where the function table is.
pub fn go_like(pie: bool, marked: bool, nfunc: u64) -> (Vec<u8>, u64) {
    let mut next = xorshift(nfunc);
    let mut out = vec![0u8; 64];
    let note = (out.len() as u64, 16u64);
    out.extend_from_slice(&[4, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, b'G', b'o', 0, 0]);
    let text = (out.len() as u64, 4096u64);
    out.extend((0..4096).map(|_| next() as u8));
    let data_at = out.len() as u64;
    if pie {
        out.extend((0..3000).map(|_| next() as u8));
        // A decoy: the magic, but a header whose table says nothing of _funcs.
        out.extend_from_slice(&[0xF1, 0xFF, 0xFF, 0xFF, 0, 0, 1, 8]);
        out.extend_from_slice(&nfunc.to_le_bytes());
        out.extend_from_slice(&[0; 48]);
        out.extend_from_slice(&72u64.to_le_bytes());
        out.extend_from_slice(&[0; 64]);
    }
    let header = out.len() as u64;
    // The pc-value tables right after the header, then padding, then the function table.
    let pctab = pc_tables(3 * nfunc as usize, nfunc);
    let pcln = (72 + pctab.len() as u64).next_multiple_of(8) + 8;
    out.extend_from_slice(&[0xF1, 0xFF, 0xFF, 0xFF, 0, 0, 1, 8]);
    out.extend_from_slice(&nfunc.to_le_bytes());
    out.extend_from_slice(&[0; 40]);
    out.extend_from_slice(&72u64.to_le_bytes()); // pctabOffset
    out.extend_from_slice(&pcln.to_le_bytes()); // pclnOffset
    out.extend_from_slice(&pctab);
    out.resize((header + pcln) as usize, 0);
    // The `_func` records after the table (Go 1.20 on), each at a multiple of 8.
    let ftab = out.len();
    let mut records = Vec::new();
    let (mut entry, mut name, mut pcsp) = (0u32, 0u32, 4096u32);
    for k in 0..nfunc as u32 {
        let (pcdata, funcdata) = (next() as u32 % 4, next() as u8 % 5);
        let mut r = Vec::new();
        let args = next() as u32 % 64;
        let cu = k / 50;
        let line = 10 + k * 7 % 900;
        for v in [
            entry,
            name,
            args,
            0,
            pcsp,
            pcsp + 40,
            pcsp + 90,
            pcdata,
            cu,
            line,
        ] {
            r.extend_from_slice(&v.to_le_bytes());
        }
        r.extend_from_slice(&[0, 0, 0, funcdata]);
        for i in 0..pcdata {
            // None, or after the function's other tables (one of them right at pcsp).
            let v = [0, pcsp, pcsp + 120 + 30 * i][(next() % 3) as usize];
            r.extend_from_slice(&v.to_le_bytes());
        }
        for _ in 0..funcdata {
            r.extend_from_slice(&(next() as u32).to_le_bytes());
        }
        records.push(r);
        entry += 16 + next() as u32 % 500;
        name += 8 + next() as u32 % 40;
        pcsp += 150 + next() as u32 % 300;
    }
    let mut func = (nfunc as usize + 1) * 8;
    let mut placed = Vec::new();
    let mut entry = 0u32;
    for r in &records {
        out.extend_from_slice(&u32::from_le_bytes(r[..4].try_into().unwrap()).to_le_bytes());
        out.extend_from_slice(&(func as u32).to_le_bytes());
        entry = u32::from_le_bytes(r[..4].try_into().unwrap()) + 1;
        placed.push(func);
        func = (func + r.len()).next_multiple_of(8);
    }
    out.extend_from_slice(&entry.to_le_bytes());
    out.extend_from_slice(&(func as u32).to_le_bytes());
    for (r, at) in records.iter().zip(placed) {
        out.resize(ftab + at, 0);
        out.extend_from_slice(r);
    }
    out.extend((0..500).map(|_| next() as u8));
    let data = (data_at, out.len() as u64 - data_at);
    let names = b"\0.note.go.buildid\0.text\0.gopclntab\0.data.rel.ro\0.other\0";
    let note_name = if marked { 1 } else { 48 };
    let data_name = if pie { 35 } else { 24 };
    let sections = [
        (note_name, 7, 2, note, 0),
        (18, 1, 6, text, 0),
        (data_name, 1, 2, data, 0),
    ];
    finish_elf(&mut out, if pie { 3 } else { 2 }, 62, &sections, names);
    (out, header + pcln)
}

/// Pc-value tables as a Go linker writes them: a zero byte, then `n` tables of one to
/// twelve pairs (a zigzag change of value, 0 only as a table's first; a step of pc) and a
/// 0, one table in five the same as one before it.
pub fn pc_tables(n: usize, seed: u64) -> Vec<u8> {
    let mut next = xorshift(seed);
    let mut tables: Vec<Vec<u8>> = Vec::new();
    for _ in 0..n {
        if !tables.is_empty() && next() % 5 == 0 {
            let again = tables[(next() % tables.len() as u64) as usize].clone();
            tables.push(again);
            continue;
        }
        let mut t = Vec::new();
        for k in 0..1 + next() % 12 {
            let change = if k == 0 {
                next() % 40
            } else {
                1 + next() % 300
            };
            leb128(&mut t, change);
            leb128(&mut t, 1 + next() % 400);
        }
        t.push(0);
        tables.push(t);
    }
    std::iter::once(vec![0]).chain(tables).flatten().collect()
}

/// Appends `v` as an unsigned LEB128 varint.
fn leb128(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}
