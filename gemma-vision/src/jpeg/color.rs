//! From full-resolution component planes to RGB8 as Pillow gets it: libjpeg's
//! fixed-point YCbCr -> RGB (jdcolor.c, 16 fraction bits, tables rounded with
//! `ONE_HALF`), gray replicated, RGB copied, and for 4-component files libjpeg's
//! YCCK -> CMYK followed by Pillow's `CMYK;I` unpacking (inverted, the Adobe
//! convention) and its `cmyk2rgb` conversion.

/// The color space of the coded components, chosen by libjpeg's rules
/// (`default_decompress_parms` in jdapimin.c).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ColorSpace {
    /// One component.
    Gray,
    /// Three components, YCbCr (JFIF, Adobe transform 1, or the default guess).
    YCbCr,
    /// Three components stored as RGB (Adobe transform 0, or ids 'R', 'G', 'B').
    Rgb,
    /// Four components stored as CMYK (Adobe transform 0, or no Adobe marker).
    Cmyk,
    /// Four components, YCbCr + K (Adobe transform 2 or other).
    Ycck,
}

impl ColorSpace {
    /// libjpeg's choice from the component count and ids, whether a JFIF marker
    /// was seen, and the Adobe transform flag if an Adobe marker was seen.
    pub(super) fn detect(ids: &[u8], jfif: bool, adobe: Option<u8>) -> ColorSpace {
        match ids.len() {
            1 => ColorSpace::Gray,
            3 if jfif => ColorSpace::YCbCr,
            3 => match adobe {
                Some(0) => ColorSpace::Rgb,
                Some(_) => ColorSpace::YCbCr,
                None if ids == b"RGB" => ColorSpace::Rgb,
                None => ColorSpace::YCbCr,
            },
            _ => match adobe {
                Some(0) | None => ColorSpace::Cmyk,
                Some(_) => ColorSpace::Ycck,
            },
        }
    }
}

const SCALEBITS: u32 = 16;
const ONE_HALF: i32 = 1 << (SCALEBITS - 1);

/// `FIX(x)`: `x` in 16.16 fixed point, rounded.
const fn fix(x: f64) -> i32 {
    (x * (1u32 << SCALEBITS) as f64 + 0.5) as i32
}

/// jdcolor.c's `build_ycc_rgb_table`.
struct YccTables {
    cr_r: [i32; 256],
    cb_b: [i32; 256],
    cr_g: [i32; 256],
    cb_g: [i32; 256],
}

impl YccTables {
    fn new() -> YccTables {
        let mut t = YccTables {
            cr_r: [0; 256],
            cb_b: [0; 256],
            cr_g: [0; 256],
            cb_g: [0; 256],
        };
        for i in 0..256 {
            let x = i as i32 - 128;
            t.cr_r[i] = (fix(1.40200) * x + ONE_HALF) >> SCALEBITS;
            t.cb_b[i] = (fix(1.77200) * x + ONE_HALF) >> SCALEBITS;
            t.cr_g[i] = -fix(0.71414) * x;
            t.cb_g[i] = -fix(0.34414) * x + ONE_HALF;
        }
        t
    }

    /// `(R, G, B)` before clamping.
    #[inline]
    fn convert(&self, y: u8, cb: u8, cr: u8) -> [i32; 3] {
        let (y, cb, cr) = (i32::from(y), usize::from(cb), usize::from(cr));
        [
            y + self.cr_r[cr],
            y + ((self.cb_g[cb] + self.cr_g[cr]) >> SCALEBITS),
            y + self.cb_b[cb],
        ]
    }
}

fn clamp(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// Pillow's `MULDIV255`: `a * b / 255` rounded.
fn muldiv255(a: i32, b: i32) -> i32 {
    let t = a * b + 128;
    ((t >> 8) + t) >> 8
}

/// Interleaves full-resolution planes (one per component, equal lengths) into RGB8.
pub(super) fn to_rgb(space: ColorSpace, planes: &[Vec<u8>]) -> Vec<u8> {
    let n = planes.first().map_or(0, Vec::len);
    let mut out = vec![0u8; n * 3];
    let pixels = out.chunks_exact_mut(3).enumerate();
    match space {
        ColorSpace::Gray => {
            for (i, px) in pixels {
                px.fill(planes[0][i]);
            }
        }
        ColorSpace::Rgb => {
            for (i, px) in pixels {
                for (c, dst) in px.iter_mut().enumerate() {
                    *dst = planes[c][i];
                }
            }
        }
        ColorSpace::YCbCr => {
            let t = YccTables::new();
            for (i, px) in pixels {
                let rgb = t.convert(planes[0][i], planes[1][i], planes[2][i]);
                for (dst, v) in px.iter_mut().zip(rgb) {
                    *dst = clamp(v);
                }
            }
        }
        ColorSpace::Cmyk | ColorSpace::Ycck => {
            let t = YccTables::new();
            for (i, px) in pixels {
                let cmy = if space == ColorSpace::Ycck {
                    // ycck_cmyk_convert: C, M, Y = 255 - R, G, B of the YCbCr triple.
                    let rgb = t.convert(planes[0][i], planes[1][i], planes[2][i]);
                    rgb.map(|v| clamp(255 - v))
                } else {
                    [planes[0][i], planes[1][i], planes[2][i]]
                };
                // Pillow unpacks CMYK;I (inverted), then cmyk2rgb.
                let nk = i32::from(planes[3][i]);
                for (dst, c) in px.iter_mut().zip(cmy) {
                    let c = 255 - i32::from(c);
                    *dst = clamp(nk - muldiv255(c, nk));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ycc_tables_match_libjpeg_constants() {
        assert_eq!(fix(1.40200), 91881);
        assert_eq!(fix(0.34414), 22554);
        let t = YccTables::new();
        // Neutral chroma leaves gray unchanged.
        assert_eq!(t.convert(77, 128, 128), [77, 77, 77]);
        assert_eq!(t.cr_r[255], 178);
        assert_eq!(t.cb_b[0], -227);
    }
}
