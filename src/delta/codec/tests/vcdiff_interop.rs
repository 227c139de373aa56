//! The VCDIFF codec against the outside world: patches the xdelta3 C library wrote
//! (kept in tests/fixtures/vcdiff/), the xdelta3 command-line tool in both directions,
//! hostile patches, and random round trips.

use std::path::PathBuf;
use std::process::Command;

use proptest::prelude::*;

use super::{edited, layer_like, noise, tool_available, write};
use crate::delta::codec::vcdiff;
use crate::digest::Digest;
use crate::error::Error;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vcdiff")
}

/// Runs the xdelta3 tool with `args`, asserting success.
fn xdelta3(args: &[&std::ffi::OsStr]) {
    let out = Command::new("xdelta3").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "xdelta3 {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Patches made by the xdelta3 C library (through the `xdelta3` crate, `XD3_ADLER32`, level
/// 9) that earlier versions of docker-delta shipped: they must keep decoding. The pairs
/// cover copies from the source, an empty source, runs and copies within the target, and
/// a target of two windows (its digest is kept instead of its 9 MiB).
#[test]
fn c_library_patches_decode() {
    for name in ["edits", "nosource", "selfcopy", "windows"] {
        let dir = fixtures();
        let source = std::fs::read(dir.join(format!("{name}.source"))).unwrap_or_default();
        let patch = std::fs::read(dir.join(format!("{name}.c.vcdiff"))).unwrap();
        let (len, digest) = match std::fs::read(dir.join(format!("{name}.target"))) {
            Ok(t) => (t.len() as u64, Digest::of(&t)),
            Err(_) => {
                let line =
                    std::fs::read_to_string(dir.join(format!("{name}.target.sha256"))).unwrap();
                let (d, n) = line.trim().split_once(' ').unwrap();
                (n.parse().unwrap(), d.parse().unwrap())
            }
        };
        let out = vcdiff::decode_verified(&source, &patch, len, &digest, name).unwrap();
        assert_eq!(out.len() as u64, len, "{name}");
        // The same pairs through our encoder: never much bigger than the C library's.
        let target = out;
        let ours = vcdiff::encode_within(&source, &target, 9, usize::MAX)
            .unwrap()
            .unwrap();
        std::fs::write(format!("/tmp/vcd-ours-{name}.vcdiff"), &ours).unwrap();
        assert!(
            ours.len() <= patch.len() + patch.len() / 10 + 16,
            "{name}: ours {} bytes, the C library's {}",
            ours.len(),
            patch.len()
        );
        assert!(
            vcdiff::decode(&source, &ours, len).unwrap() == target,
            "{name}"
        );
    }
}

/// Our patches decode with `xdelta3 -d`, including an empty source and target.
#[test]
fn our_patches_decode_with_the_xdelta3_cli() {
    if !tool_available("xdelta3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let big = layer_like(20, 3 << 20);
    let cases = [
        ("layer", layer_like(5, 400_000), None),
        ("multi-window", big.clone(), Some(big.len())),
        ("no-source", Vec::new(), None),
        ("empty-target", b"some source".to_vec(), None),
    ];
    for (name, source, _) in &cases {
        let target = match *name {
            "no-source" => noise(21, 5000).repeat(3),
            "empty-target" => Vec::new(),
            // 9 MiB: two windows, copies from the whole source in each.
            "multi-window" => [
                &source[1 << 20..],
                &noise(22, 10_000),
                &source[..],
                &source[..],
            ]
            .concat(),
            _ => edited(source, 6),
        };
        let patch = vcdiff::encode_within(source, &target, 9, usize::MAX)
            .unwrap()
            .unwrap();
        let s = write(dir.path(), "source", source);
        let p = write(dir.path(), "patch", &patch);
        let o = dir.path().join("out");
        let _ = std::fs::remove_file(&o);
        if source.is_empty() {
            xdelta3(&["-d".as_ref(), p.as_os_str(), o.as_os_str()]);
        } else {
            xdelta3(&[
                "-d".as_ref(),
                "-s".as_ref(),
                s.as_os_str(),
                p.as_os_str(),
                o.as_os_str(),
            ]);
        }
        assert!(
            std::fs::read(&o).unwrap() == target,
            "{name}: xdelta3 decoded something else"
        );
    }
}

/// `xdelta3 -e -9 -S none` patches (with the default application header, with and without
/// the checksum) decode; secondary compression is refused by name.
#[test]
fn xdelta3_cli_patches_decode_or_are_refused_by_name() {
    if !tool_available("xdelta3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let source = layer_like(7, 200_000);
    let target = edited(&source, 8);
    let s = write(dir.path(), "source", &source);
    let t = write(dir.path(), "target", &target);
    let n = target.len() as u64;
    let encode = |extra: &[&str]| {
        let p = dir.path().join(format!("patch{}", extra.join("")));
        let mut args: Vec<&std::ffi::OsStr> = vec!["-e".as_ref(), "-9".as_ref(), "-f".as_ref()];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        args.extend(["-s".as_ref(), s.as_os_str(), t.as_os_str(), p.as_os_str()]);
        xdelta3(&args);
        std::fs::read(&p).unwrap()
    };
    for extra in [
        &["-S", "none"][..],
        &["-S", "none", "-n"],
        &["-S", "none", "-A"],
    ] {
        let back = vcdiff::decode(&source, &encode(extra), n).unwrap();
        assert!(back == target, "{extra:?}");
    }
    for (secondary, name) in [("djw", "DJW"), ("fgk", "FGK"), ("lzma", "LZMA")] {
        let e = vcdiff::decode(&source, &encode(&["-S", secondary]), n).unwrap_err();
        let want = format!("{name} secondary compression");
        assert!(e.to_string().contains(&want), "-S {secondary}: {e}");
    }
}

/// A valid patch, for the hostile-input tests to break: source, target, patch.
fn sample() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let source = layer_like(30, 30_000);
    let mut target = edited(&source, 31);
    target.extend_from_slice(&[0u8; 500]);
    let mut tail = target[1000..3000].to_vec();
    tail.extend_from_slice(&noise(32, 100));
    target.extend_from_slice(&tail);
    let patch = vcdiff::encode(&source, &target, 9).unwrap().unwrap();
    (source, target, patch)
}

/// Builds a one-window patch by hand from its parts, with a correct encoding length.
fn handmade(
    source_segment: Option<(u64, u64)>,
    target_len: u64,
    data: &[u8],
    inst: &[u8],
    addr: &[u8],
) -> Vec<u8> {
    let varint = |out: &mut Vec<u8>, v: u64| {
        let mut digits = vec![(v & 0x7f) as u8];
        let mut v = v >> 7;
        while v > 0 {
            digits.push((v & 0x7f) as u8 | 0x80);
            v >>= 7;
        }
        digits.reverse();
        out.extend_from_slice(&digits);
    };
    let mut p = vec![0xD6, 0xC3, 0xC4, 0, 0];
    p.push(u8::from(source_segment.is_some()));
    if let Some((len, pos)) = source_segment {
        varint(&mut p, len);
        varint(&mut p, pos);
    }
    let mut body = Vec::new();
    varint(&mut body, target_len);
    body.push(0);
    for n in [data.len(), inst.len(), addr.len()] {
        varint(&mut body, n as u64);
    }
    body.extend_from_slice(data);
    body.extend_from_slice(inst);
    body.extend_from_slice(addr);
    varint(&mut p, body.len() as u64);
    p.extend_from_slice(&body);
    p
}

fn decode_error(source: &[u8], patch: &[u8], len: u64) -> String {
    match vcdiff::decode(source, patch, len) {
        Ok(_) => panic!("decoded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn handmade_patches_decode_and_bad_ones_are_refused() {
    let src = b"0123456789abcdef";
    // ADD 3 "xyz", COPY 4 from source address 2 (mode self), RUN 5 of 'r'.
    let good = handmade(Some((16, 0)), 12, b"xyzr", &[4, 19 + 1, 0, 5], &[2]);
    assert_eq!(vcdiff::decode(src, &good, 12).unwrap(), b"xyz2345rrrrr");
    // A copy within the target overlapping itself: ADD 2 "ab", COPY 8 from address 16
    // (the window's first byte).
    let overlap = handmade(Some((16, 0)), 10, b"ab", &[3, 19 + 5], &[16]);
    assert_eq!(vcdiff::decode(src, &overlap, 10).unwrap(), b"ababababab");
    // A copy straddling the end of the source segment into the window.
    let straddle = handmade(Some((4, 12)), 7, b"", &[19 + 4], &[1]);
    assert_eq!(vcdiff::decode(src, &straddle, 7).unwrap(), b"defdefd");

    let cases: Vec<(Vec<u8>, u64, &str)> = vec![
        // The instructions produce fewer bytes than the window declares.
        (
            handmade(Some((16, 0)), 13, b"xyzr", &[4, 20, 0, 5], &[2]),
            13,
            "the window declares 13",
        ),
        // An instruction runs past the window.
        (
            handmade(Some((16, 0)), 11, b"xyzr", &[4, 20, 0, 5], &[2]),
            11,
            "runs past the window",
        ),
        // A copy address at or past `here`.
        (
            handmade(Some((16, 0)), 4, b"", &[20], &[16]),
            4,
            "copy address",
        ),
        (handmade(None, 4, b"", &[20], &[0]), 4, "copy address"),
        // A "here" address before 0.
        (
            handmade(Some((16, 0)), 4, b"", &[19 + 16 + 1], &[17]),
            4,
            "copy address",
        ),
        // The source segment beyond the source.
        (
            handmade(Some((10, 10)), 4, b"", &[20], &[0]),
            4,
            "beyond the 16-byte source",
        ),
        (
            handmade(Some((u64::MAX, 1)), 4, b"", &[20], &[0]),
            4,
            "beyond the 16-byte source",
        ),
        // Data or addresses left over.
        (
            handmade(Some((16, 0)), 4, b"x", &[20], &[0]),
            4,
            "left over",
        ),
        // Missing data, missing address.
        (handmade(Some((16, 0)), 4, b"xy", &[5], &[]), 4, "truncated"),
        (handmade(Some((16, 0)), 4, b"", &[20], &[]), 4, "truncated"),
        // An explicit size that does not fit 64 bits.
        (
            handmade(
                Some((16, 0)),
                4,
                b"",
                &[
                    1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
                ],
                &[],
            ),
            4,
            "overflows",
        ),
        // A window longer than the caller's target: refused before decoding it.
        (
            handmade(Some((16, 0)), 1 << 40, b"", &[], &[]),
            100,
            "more than the recorded target size of 100",
        ),
    ];
    for (patch, len, want) in cases {
        let e = decode_error(src, &patch, len);
        assert!(e.contains(want), "want {want:?}: {e}");
    }

    // Header features we do not read.
    let mut table = good.clone();
    table[4] = 0x02;
    assert!(decode_error(src, &table, 12).contains("code table"));
    let mut target_window = good.clone();
    target_window[5] = 0x02;
    assert!(decode_error(src, &target_window, 12).contains("VCD_TARGET"));
    let mut version = good.clone();
    version[3] = b'S';
    assert!(decode_error(src, &version, 12).contains("version"));
    // The encoding length must match the sections.
    let mut enc_len = good;
    enc_len[8] += 1;
    assert!(decode_error(src, &enc_len, 12).contains("encoding length"));
}

#[test]
fn checksum_mismatch_is_reported() {
    let (source, target, patch) = sample();
    let mut wrong = source.clone();
    for i in (0..source.len()).step_by(1000) {
        wrong[i] ^= 0xff;
    }
    let e = decode_error(&wrong, &patch, target.len() as u64);
    assert!(e.contains("Adler-32 mismatch"), "{e}");
    assert!(e.contains("xdelta3: decoding failed"), "{e}");
}

#[test]
fn truncated_and_corrupted_patches_fail_cleanly() {
    let (source, target, patch) = sample();
    let n = target.len() as u64;
    for cut in 0..patch.len() {
        let e = vcdiff::decode(&source, &patch[..cut], n).unwrap_err();
        assert!(
            matches!(e, Error::Codec { .. } | Error::SizeMismatch { .. }),
            "cut at {cut}: {e:?}"
        );
    }
    // Every single-byte corruption: an error or (rarely) some other target, never a
    // panic; never more than the recorded size.
    for i in 0..patch.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = patch.clone();
            bad[i] ^= flip;
            if let Ok(out) = vcdiff::decode(&source, &bad, n) {
                assert_eq!(out.len() as u64, n);
            }
        }
    }
}

fn pair() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    // A source, and a target assembled from pieces of it, fresh bytes and runs.
    (
        proptest::collection::vec(any::<u8>(), 0..3000),
        proptest::collection::vec((0u8..4, any::<u16>(), 0usize..600, any::<u8>()), 0..20),
    )
        .prop_map(|(source, pieces)| {
            let mut target = Vec::new();
            for (kind, at, len, byte) in pieces {
                match kind {
                    0 | 1 if !source.is_empty() => {
                        let s = usize::from(at) % source.len();
                        let e = (s + len).min(source.len());
                        target.extend_from_slice(&source[s..e]);
                    }
                    2 if !target.is_empty() => {
                        let s = usize::from(at) % target.len();
                        let e = (s + len).min(target.len());
                        let piece = target[s..e].to_vec();
                        target.extend_from_slice(&piece);
                    }
                    3 => target.resize(target.len() + len, byte),
                    _ => target.extend_from_slice(&noise(u64::from(at), len % 50)),
                }
            }
            (source, target)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_pairs_round_trip((source, target) in pair(), level in 0u32..=9) {
        let patch = vcdiff::encode_within(&source, &target, level, usize::MAX).unwrap().unwrap();
        let back = vcdiff::decode(&source, &patch, target.len() as u64).unwrap();
        prop_assert!(back == target);
    }

    #[test]
    fn random_bytes_never_panic(
        source in proptest::collection::vec(any::<u8>(), 0..64),
        tail in proptest::collection::vec(any::<u8>(), 0..200),
        len in 0u64..1000,
    ) {
        // After a valid header, so the window parser sees the bytes.
        let mut patch = vec![0xD6, 0xC3, 0xC4, 0, 0];
        patch.extend_from_slice(&tail);
        if let Ok(out) = vcdiff::decode(&source, &patch, len) {
            prop_assert_eq!(out.len() as u64, len);
        }
    }
}
