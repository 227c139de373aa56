// Synthetic kernel modules with split BTF, for tests and fuzz seeds: an old and a new
// kernel build whose type ids and string offsets move unevenly, a generator of modules'
// `.BTF` sections for either, and an ELF64 relocatable object around one.
//
// Only std is used: the fuzz crate includes this file (`include!`) to put such modules in
// the `files` target's old layers and seeds. Hence plain comments at the top, not `//!`.

/// The magic number a BTF section starts with.
const SAMPLE_BTF_MAGIC: u16 = 0xeb9f;

/// A kernel build as its modules see it: where its types and strings end, and how its
/// ids and offsets relate to a reference build's (`types`, `names`).
#[derive(Clone, Copy)]
pub struct Build {
    pub type_base: u32,
    pub name_base: u32,
    pub types: fn(u32) -> u32,
    pub names: fn(u32) -> u32,
}

/// The reference build: 1000 kernel types, 50 000 bytes of kernel strings.
pub const OLD: Build = Build {
    type_base: 1000,
    name_base: 50_000,
    types: |v| v,
    names: |v| v,
};

/// The next build: kernel types and strings added in places, one removed, so ids and
/// offsets move by different amounts in different ranges.
pub const NEW: Build = Build {
    type_base: 1012,
    name_base: 50_377,
    types: |v| match v {
        0..=99 => v,
        100..=499 => v + 3,
        500..=700 => v + 11,
        _ => v + 12,
    },
    names: |v| match v {
        0..=4_999 => v,
        5_000..=30_000 => v + 120,
        _ => v + 377,
    },
};

/// A split BTF section under construction for `build`, the fields that refer to types or
/// names given by reference-build values (kernel) or own numbers.
pub struct Section {
    build: Build,
    types: Vec<u8>,
    strings: Vec<u8>,
    count: u32,
}

/// A type or name reference: to the kernel (a reference-build value) or the module's own
/// (its own type number from 1, or its own string).
#[derive(Clone, Copy)]
pub enum Ref<'a> {
    Kernel(u32),
    Own(u32),
    Name(&'a str),
    Zero,
}

impl Section {
    pub fn new(build: Build) -> Section {
        Section {
            build,
            types: Vec::new(),
            strings: vec![0],
            count: 0,
        }
    }

    pub fn ty(&self, r: Ref) -> u32 {
        match r {
            Ref::Kernel(v) => (self.build.types)(v),
            Ref::Own(n) => self.build.type_base + n,
            Ref::Zero => 0,
            Ref::Name(_) => panic!("a name where a type belongs"),
        }
    }

    pub fn name(&mut self, r: Ref) -> u32 {
        match r {
            Ref::Kernel(v) => (self.build.names)(v),
            Ref::Name(s) => {
                let at = self.strings.len() as u32;
                self.strings.extend_from_slice(s.as_bytes());
                self.strings.push(0);
                self.build.name_base + at
            }
            Ref::Zero => 0,
            Ref::Own(_) => panic!("a type where a name belongs"),
        }
    }

    /// Appends a record: name, kind, vlen, third word (a type when `third` is one), then
    /// the words after.
    pub fn record(&mut self, name: Ref, kind: u32, vlen: u32, third: u32, after: &[u32]) -> u32 {
        let name = self.name(name);
        for w in [name, kind << 24 | vlen, third].iter().chain(after) {
            self.types.extend_from_slice(&w.to_le_bytes());
        }
        self.count += 1;
        self.count
    }

    pub fn finish(&self) -> Vec<u8> {
        let mut s = Vec::new();
        let (tl, sl) = (self.types.len() as u32, self.strings.len() as u32);
        s.extend_from_slice(&SAMPLE_BTF_MAGIC.to_le_bytes());
        s.extend_from_slice(&[1, 0]);
        for w in [24, 0, tl, tl, sl] {
            s.extend_from_slice(&w.to_le_bytes());
        }
        s.extend_from_slice(&self.types);
        s.extend_from_slice(&self.strings);
        s
    }
}

/// A little-endian ELF64 relocatable object with `.text` and, unless `section` names
/// another, a `.BTF` section.
pub fn module_with(btf: &[u8], text: &[u8], section: &str) -> Vec<u8> {
    let names = format!("\0.text\0{section}\0.shstrtab\0");
    let mut f = b"\x7fELF\x02\x01\x01".to_vec();
    f.resize(16, 0);
    f.extend_from_slice(&[1, 0, 62, 0]);
    f.resize(64, 0);
    let at = |f: &mut Vec<u8>, bytes: &[u8]| {
        let off = f.len() as u64;
        f.extend_from_slice(bytes);
        f.resize(f.len().next_multiple_of(8), 0);
        (off, bytes.len() as u64)
    };
    let sections = [
        (0, (0, 0)),
        (1, at(&mut f, text)),
        (7, at(&mut f, btf)),
        (8 + section.len() as u32, at(&mut f, names.as_bytes())),
    ];
    let shoff = f.len() as u64;
    for (name, (off, len)) in sections {
        let mut h = [0u8; 64];
        h[0..4].copy_from_slice(&name.to_le_bytes());
        h[4..8].copy_from_slice(&(u32::from(name != 0)).to_le_bytes());
        h[0x18..0x20].copy_from_slice(&off.to_le_bytes());
        h[0x20..0x28].copy_from_slice(&len.to_le_bytes());
        f.extend_from_slice(&h);
    }
    f[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
    f[0x3a..0x40].copy_from_slice(&[64, 0, 4, 0, 3, 0]);
    f
}

pub fn module(btf: &[u8], text: &[u8]) -> Vec<u8> {
    module_with(btf, text, ".BTF")
}

/// Module `seed`'s `.BTF` section for `build`: a few hundred records of its own that refer
/// to kernel types and strings drawn from the whole range, and to its own types.
pub fn generated(seed: u64, build: Build) -> Vec<u8> {
    use Ref::*;
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n) as u32
    };
    let mut s = Section::new(build);
    let own_names = [
        "dev", "priv", "ops", "lock", "list", "state", "flags", "buf",
    ];
    for i in 0..200 + next(200) {
        let kernel_type = |next: &mut dyn FnMut(u64) -> u32| Kernel(1 + next(1000));
        match next(4) {
            0 => {
                let n = 1 + next(6);
                let mut words = Vec::new();
                for m in 0..n {
                    let name = if next(2) == 0 {
                        s.name(Kernel(1 + next(49_999)))
                    } else {
                        s.name(Name(own_names[next(8) as usize]))
                    };
                    let ty = if i > 0 && next(3) == 0 {
                        s.ty(Own(1 + next(i as u64)))
                    } else {
                        s.ty(kernel_type(&mut next))
                    };
                    words.extend([name, ty, m * 64]);
                }
                let name = format!("mod_struct_{i}");
                s.record(Name(&name), 4, n, 8 * n, &words);
            }
            1 => {
                let to = s.ty(kernel_type(&mut next));
                s.record(Zero, 2, 0, to, &[]);
            }
            2 => {
                let (ret, p) = (s.ty(kernel_type(&mut next)), s.ty(kernel_type(&mut next)));
                let pn = s.name(Name("arg"));
                s.record(Zero, 13, 1, ret, &[pn, p]);
            }
            _ => {
                let to = s.ty(kernel_type(&mut next));
                s.record(Kernel(1 + next(49_999)), 8, 0, to, &[]);
            }
        }
    }
    s.finish()
}
