//! Decoding against Pillow 13 with libjpeg-turbo, the reference preprocessing's
//! decoder: every file in `tests/data/decode` (made by `scripts/make_decode_refs.py`:
//! baseline, progressive, restart-marker, optimized-Huffman JPEGs in 4:4:4, 4:2:2,
//! 4:2:0, 4:4:0, 4:1:1, gray, RGB, CMYK and YCCK, progressive files that end early
//! (libjpeg's inter-block smoothing); PNGs of every color type and bit depth, palette
//! with transparency, Adam7 interlaced) must decode through
//! [`decode_rgb8`] (what `preprocess` runs on file bytes) to exactly the bytes of
//! Pillow's `Image.open(f).convert("RGB")`. Damaged and hostile JPEG files must give
//! typed errors, never a panic.

use gemma_vision::image::ImageError;
use gemma_vision::{decode_rgb8, JpegError, VisionError};
use std::error::Error;

fn data_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/decode"))
}

fn read(name: &str) -> Vec<u8> {
    let path = data_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fnv1a64(bytes: &[u8]) -> String {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    format!("{h:016x}")
}

/// `(file, width, height, fnv1a64 of Pillow's RGB8)` for every case.
fn manifest() -> Vec<(String, u32, u32, String)> {
    let text = String::from_utf8(read("manifest.txt")).expect("utf-8 manifest");
    let cases: Vec<_> = text
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            assert_eq!(f.len(), 4, "manifest line `{line}`");
            let num = |s: &str| s.parse::<u32>().expect("manifest number");
            (f[0].to_string(), num(f[1]), num(f[2]), f[3].to_string())
        })
        .collect();
    assert!(
        cases.len() >= 40,
        "manifest lists only {} cases",
        cases.len()
    );
    cases
}

#[test]
fn every_image_decodes_to_pillows_bytes() {
    let mut failures = Vec::new();
    for (name, width, height, digest) in manifest() {
        let image = match decode_rgb8(&read(&name)) {
            Ok(image) => image,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        assert_eq!((image.width(), image.height()), (width, height), "{name}");
        let got = image.as_raw();
        if fnv1a64(got) == digest {
            continue;
        }
        let detail = match std::fs::read(data_dir().join(&name).with_extension("rgb")) {
            Ok(want) => {
                let pixels = got
                    .chunks_exact(3)
                    .zip(want.chunks_exact(3))
                    .filter(|(a, b)| a != b)
                    .count();
                let worst = got.iter().zip(&want).map(|(a, b)| a.abs_diff(*b)).max();
                format!(
                    "{pixels} of {} pixels differ, by up to {worst:?}",
                    want.len() / 3
                )
            }
            Err(_) => "hash differs".to_string(),
        };
        failures.push(format!("{name}: {detail}"));
    }
    assert!(
        failures.is_empty(),
        "differences from Pillow:\n{}",
        failures.join("\n")
    );
}

/// The [`JpegError`] inside a decoding error.
fn jpeg_error(result: Result<impl Sized, VisionError>, what: &str) -> JpegError {
    match result {
        Ok(_) => panic!("{what}: decoded"),
        Err(VisionError::ImageDecode(ImageError::Decoding(e))) => e
            .source()
            .and_then(|s| s.downcast_ref::<JpegError>())
            .unwrap_or_else(|| panic!("{what}: not a JpegError: {e:?}"))
            .clone(),
        Err(other) => panic!("{what}: expected a JPEG decoding error, got {other:?}"),
    }
}

/// The marker segments of a JPEG header up to the first SOS: `(marker, offset, total length)`.
fn segments(jpeg: &[u8]) -> Vec<(u8, usize, usize)> {
    let mut out = Vec::new();
    let mut i = 2;
    loop {
        assert_eq!(jpeg[i], 0xFF, "segment at {i}");
        let marker = jpeg[i + 1];
        let len = 2 + usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        out.push((marker, i, len));
        if marker == 0xDA {
            return out;
        }
        i += len;
    }
}

/// Offset of the first segment with `marker`.
fn segment(jpeg: &[u8], marker: u8) -> usize {
    segments(jpeg)
        .into_iter()
        .find(|s| s.0 == marker)
        .unwrap_or_else(|| panic!("no marker {marker:02x}"))
        .1
}

/// `jpeg` without its segments of kind `marker`.
fn without(jpeg: &[u8], marker: u8) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    let segs = segments(jpeg);
    for &(m, at, len) in &segs {
        if m != marker {
            out.extend_from_slice(&jpeg[at..at + len]);
        }
    }
    let (_, sos, len) = segs[segs.len() - 1];
    out.extend_from_slice(&jpeg[sos + len..]);
    out
}

const BASELINE: &str = "j420_q75_64x48.jpg";

#[test]
fn truncated_jpeg_files_are_errors() {
    let jpeg = read(BASELINE);
    let sos = segment(&jpeg, 0xDA);
    let data_start = sos + 14; // SOS of 3 components: 2 + 12 bytes
    let cuts = [
        3,
        20,
        sos - 40,
        sos + 5,
        data_start,
        data_start + 1,
        (data_start + jpeg.len()) / 2,
        jpeg.len() - 3,
        jpeg.len() - 2, // everything but the EOI marker (Pillow refuses this too)
    ];
    for cut in cuts {
        let err = jpeg_error(decode_rgb8(&jpeg[..cut]), &format!("cut at {cut}"));
        assert!(
            matches!(err, JpegError::Truncated { .. }),
            "cut at {cut}: {err:?}"
        );
    }
    for name in ["j420_prog_q85_41x35.jpg", "j420_rst3_q85_47x33.jpg"] {
        let jpeg = read(name);
        for cut in [jpeg.len() / 3, jpeg.len() / 2, jpeg.len() - 2] {
            let err = jpeg_error(decode_rgb8(&jpeg[..cut]), &format!("{name} cut at {cut}"));
            assert!(
                matches!(err, JpegError::Truncated { .. }),
                "{name} at {cut}: {err:?}"
            );
        }
    }
}

#[test]
fn corrupt_huffman_data_is_an_error() {
    let jpeg = read(BASELINE);
    let data_start = segment(&jpeg, 0xDA) + 14;
    // Stuffed FF bytes read as 16 one-bits: never a valid Huffman code.
    let mut bad = jpeg[..data_start].to_vec();
    bad.extend_from_slice(&[0xFF, 0x00, 0xFF, 0x00, 0xFF, 0x00]);
    bad.extend_from_slice(&jpeg[data_start + 6..]);
    let err = jpeg_error(decode_rgb8(&bad), "all-ones code");
    assert!(matches!(err, JpegError::CorruptData { .. }), "{err:?}");
    // A marker in the middle of the data.
    let mut bad = jpeg.clone();
    let mid = (data_start + jpeg.len()) / 2;
    bad[mid..mid + 2].copy_from_slice(&[0xFF, 0xC4]);
    let err = jpeg_error(decode_rgb8(&bad), "marker inside the data");
    assert!(matches!(err, JpegError::CorruptData { .. }), "{err:?}");
}

/// `jpeg` with its SOF0 segment body changed by `edit` (the length is rewritten).
fn edit_sof(jpeg: &[u8], edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let (_, at, len) = segments(jpeg)
        .into_iter()
        .find(|s| s.0 == 0xC0)
        .expect("SOF0");
    let mut body = jpeg[at + 4..at + len].to_vec();
    edit(&mut body);
    let mut out = jpeg[..at + 2].to_vec();
    out.extend_from_slice(&(body.len() as u16 + 2).to_be_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&jpeg[at + len..]);
    out
}

#[test]
fn hostile_frame_headers_give_typed_errors() {
    let jpeg = read(BASELINE);
    let sof = segment(&jpeg, 0xC0);
    // Absurd sizes are rejected from the header, before anything is allocated.
    for (w, h) in [(65_535u16, 65_535u16), (30_000, 30_000), (40_000, 8)] {
        let bad = edit_sof(&jpeg, |b| {
            b[1..5].copy_from_slice(&[h.to_be_bytes(), w.to_be_bytes()].concat())
        });
        match decode_rgb8(&bad) {
            Err(VisionError::ImageTooLarge { width, height, .. }) => {
                assert_eq!((width, height), (u32::from(w), u32::from(h)))
            }
            other => panic!("{w}x{h}: expected ImageTooLarge, got {other:?}"),
        }
    }
    // A size within the limits that the few bytes of scan data cannot hold (one bit per
    // block at least) is refused before the planes are allocated.
    let bad = edit_sof(&jpeg, |b| {
        b[1..5].copy_from_slice(&[6_000u16.to_be_bytes(), 9_000u16.to_be_bytes()].concat())
    });
    let err = jpeg_error(decode_rgb8(&bad), "9000x6000 claimed by a small file");
    assert!(matches!(err, JpegError::Truncated { .. }), "{err:?}");
    type Edit = fn(&mut Vec<u8>);
    let bad_segment: [(Edit, &str); 7] = [
        (|b| b[3..5].fill(0), "width 0"),
        (|b| b.truncate(6), "truncated component list"),
        (|b| b[5] = 0, "component count 0 with components listed"),
        (|b| b.truncate(5), "SOF body of 5 bytes"),
        (|b| b[7] = 0x20, "sampling factor 0"),
        (|b| b[7] = 0x52, "sampling factor 5"),
        (|b| b[8] = 7, "quantization slot 7"),
    ];
    for (edit, what) in bad_segment {
        let err = jpeg_error(decode_rgb8(&edit_sof(&jpeg, edit)), what);
        assert!(
            matches!(err, JpegError::BadSegment { segment: "SOF", .. }),
            "{what}: {err:?}"
        );
    }
    let zero = jpeg_error(
        decode_rgb8(&edit_sof(&jpeg, |b| {
            b[5] = 0;
            b.truncate(6)
        })),
        "zero components",
    );
    assert!(
        matches!(
            zero,
            JpegError::BadSegment {
                reason: "no components",
                ..
            }
        ),
        "{zero:?}"
    );
    let unsupported: [(Edit, &str); 4] = [
        (|b| b[1..3].fill(0), "height 0 (set by a DNL marker)"),
        (|b| b[0] = 12, "12-bit samples"),
        (
            |b| {
                b[5] = 2;
                b.truncate(12)
            },
            "two components",
        ),
        // Luma 3x1 with chroma 2x1: a 3:2 ratio.
        (
            |b| [b[7], b[10]] = [0x31, 0x21],
            "fractional sampling ratio",
        ),
    ];
    for (edit, what) in unsupported {
        let err = jpeg_error(decode_rgb8(&edit_sof(&jpeg, edit)), what);
        assert!(matches!(err, JpegError::Unsupported(_)), "{what}: {err:?}");
    }
    // Arithmetic coding, lossless: valid JPEG features this decoder lacks.
    for (marker, what) in [(0xC9, "arithmetic"), (0xC3, "lossless")] {
        let mut bad = jpeg.clone();
        bad[sof + 1] = marker;
        let err = jpeg_error(decode_rgb8(&bad), what);
        assert!(matches!(err, JpegError::Unsupported(_)), "{what}: {err:?}");
    }
}

#[test]
fn missing_tables_give_typed_errors() {
    let jpeg = read(BASELINE);
    let err = jpeg_error(decode_rgb8(&without(&jpeg, 0xC4)), "no DHT");
    assert!(
        matches!(
            err,
            JpegError::MissingTable {
                kind: "Huffman DC",
                index: 0
            }
        ),
        "{err:?}"
    );
    let err = jpeg_error(decode_rgb8(&without(&jpeg, 0xDB)), "no DQT");
    assert!(
        matches!(
            err,
            JpegError::MissingTable {
                kind: "quantization",
                ..
            }
        ),
        "{err:?}"
    );
    let err = jpeg_error(decode_rgb8(&without(&jpeg, 0xC0)), "no SOF");
    assert!(matches!(err, JpegError::NoImage(_)), "{err:?}");
    // A scan naming a component the frame does not have.
    let mut bad = jpeg.clone();
    bad[segment(&jpeg, 0xDA) + 5] = 9;
    let err = jpeg_error(decode_rgb8(&bad), "unknown scan component");
    assert!(
        matches!(err, JpegError::BadSegment { segment: "SOS", .. }),
        "{err:?}"
    );
}

#[test]
fn hostile_scans_give_typed_errors() {
    let jpeg = read("j420_prog_q85_41x35.jpg");
    let sos: Vec<usize> = (0..jpeg.len() - 1)
        .filter(|&i| jpeg[i] == 0xFF && jpeg[i + 1] == 0xDA)
        .collect();
    // Successive approximation must lower Al by one bit (Ah = Al + 1).
    let mut bad = jpeg.clone();
    let last = sos[sos.len() - 1];
    let ah_al = last + 4 + 2 * usize::from(jpeg[last + 4]) + 3;
    bad[ah_al] = 0x31;
    let err = jpeg_error(decode_rgb8(&bad), "Ah 3, Al 1");
    assert!(
        matches!(err, JpegError::BadSegment { segment: "SOS", .. }),
        "{err:?}"
    );
    // A spectral band past coefficient 63.
    let mut bad = jpeg.clone();
    bad[ah_al - 1] = 64;
    let err = jpeg_error(decode_rgb8(&bad), "Se 64");
    assert!(
        matches!(err, JpegError::BadSegment { segment: "SOS", .. }),
        "{err:?}"
    );
    // Thousands of scans (each could visit every block): refused past 1000. The first
    // scan (DC, with the Huffman table before it) repeated: valid, state-independent.
    let dht = |from: usize, to: usize| {
        (from..to)
            .rev()
            .find(|&i| jpeg[i] == 0xFF && jpeg[i + 1] == 0xC4)
    };
    let start = dht(0, sos[0]).expect("DHT before the first scan");
    let end = dht(sos[0], sos[1]).unwrap_or(sos[1]);
    let repeated = |times: usize| {
        let mut many = jpeg[..jpeg.len() - 2].to_vec();
        for _ in 0..times {
            many.extend_from_slice(&jpeg[start..end]);
        }
        many.extend_from_slice(&[0xFF, 0xD9]);
        many
    };
    assert!(decode_rgb8(&repeated(900)).is_ok(), "900 extra scans");
    let err = jpeg_error(decode_rgb8(&repeated(1000)), "1000 extra scans");
    assert!(matches!(err, JpegError::Unsupported(_)), "{err:?}");
}

/// Deterministic byte corruption of every JPEG test file: each result must be an image
/// of the declared size or an error, never a panic or a hang.
#[test]
fn corrupted_files_never_panic() {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut decoded = 0;
    let mut failed = 0;
    for (name, ..) in manifest().iter().filter(|c| c.0.ends_with(".jpg")) {
        let jpeg = read(name);
        for _ in 0..40 {
            let mut bad = jpeg.clone();
            for _ in 0..1 + next() % 4 {
                let at = 2 + (next() as usize) % (bad.len() - 2);
                bad[at] = next() as u8;
            }
            match decode_rgb8(&bad) {
                Ok(_) => decoded += 1,
                Err(_) => failed += 1,
            }
        }
    }
    println!("corrupted files: {decoded} decoded, {failed} rejected");
    assert!(
        decoded > 0 && failed > 0,
        "{decoded} decoded, {failed} rejected"
    );
}
