//! libjpeg's accurate integer inverse DCT (`jpeg_idct_islow`, jidctint.c, the
//! `JDCT_ISLOW` default that Pillow uses), reproduced operation for operation:
//! 13-bit constants, 2 extra bits between the passes, the all-zero column and row
//! shortcuts, and the range-limit table lookup (`x & 1023`) at the end.

const CONST_BITS: u32 = 13;
const PASS1_BITS: u32 = 2;

const FIX_0_298631336: i64 = 2446;
const FIX_0_390180644: i64 = 3196;
const FIX_0_541196100: i64 = 4433;
const FIX_0_765366865: i64 = 6270;
const FIX_0_899976223: i64 = 7373;
const FIX_1_175875602: i64 = 9633;
const FIX_1_501321110: i64 = 12299;
const FIX_1_847759065: i64 = 15137;
const FIX_1_961570560: i64 = 16069;
const FIX_2_053119869: i64 = 16819;
const FIX_2_562915447: i64 = 20995;
const FIX_3_072711026: i64 = 25172;

/// `DESCALE(x, n)`: divide by 2^n rounding half up (arithmetic shift).
#[inline]
fn descale(x: i64, n: u32) -> i64 {
    (x + (1 << (n - 1))) >> n
}

/// libjpeg's IDCT range limit (`sample_range_limit + CENTERJSAMPLE`, indexed with
/// `x & RANGE_MASK`): `x + 128` clamped to 0..=255 for |x| < 512, wrapping beyond.
#[inline]
fn range_limit(x: i64) -> u8 {
    let i = (x & 1023) as u32;
    match i {
        0..=127 => (i + 128) as u8,
        128..=511 => 255,
        512..=895 => 0,
        _ => (i - 896) as u8,
    }
}

/// The even and odd halves of the 8-point IDCT butterfly, shared by both passes:
/// returns the eight outputs before descaling, in natural order.
#[inline]
fn butterfly(v: [i64; 8]) -> [i64; 8] {
    // Even part.
    let z1 = (v[2] + v[6]) * FIX_0_541196100;
    let tmp2 = z1 + v[6] * -FIX_1_847759065;
    let tmp3 = z1 + v[2] * FIX_0_765366865;
    let tmp0 = (v[0] + v[4]) << CONST_BITS;
    let tmp1 = (v[0] - v[4]) << CONST_BITS;
    let tmp10 = tmp0 + tmp3;
    let tmp13 = tmp0 - tmp3;
    let tmp11 = tmp1 + tmp2;
    let tmp12 = tmp1 - tmp2;
    // Odd part.
    let (t0, t1, t2, t3) = (v[7], v[5], v[3], v[1]);
    let z1 = t0 + t3;
    let z2 = t1 + t2;
    let z3 = t0 + t2;
    let z4 = t1 + t3;
    let z5 = (z3 + z4) * FIX_1_175875602;
    let t0 = t0 * FIX_0_298631336;
    let t1 = t1 * FIX_2_053119869;
    let t2 = t2 * FIX_3_072711026;
    let t3 = t3 * FIX_1_501321110;
    let z1 = z1 * -FIX_0_899976223;
    let z2 = z2 * -FIX_2_562915447;
    let z3 = z3 * -FIX_1_961570560 + z5;
    let z4 = z4 * -FIX_0_390180644 + z5;
    let t0 = t0 + z1 + z3;
    let t1 = t1 + z2 + z4;
    let t2 = t2 + z2 + z3;
    let t3 = t3 + z1 + z4;
    [
        tmp10 + t3,
        tmp11 + t2,
        tmp12 + t1,
        tmp13 + t0,
        tmp13 - t0,
        tmp12 - t1,
        tmp11 - t2,
        tmp10 - t3,
    ]
}

/// Dequantizes `coefs` (natural order) with `quant` (natural order) and writes the
/// 8x8 block of samples to `out` at rows of `stride` bytes.
pub(super) fn idct_islow(coefs: &[i16; 64], quant: &[u16; 64], out: &mut [u8], stride: usize) {
    let mut workspace = [0i32; 64];
    // Pass 1: columns from the input, results scaled up by 2^PASS1_BITS.
    for col in 0..8 {
        let dq = |row: usize| i64::from(coefs[row * 8 + col]) * i64::from(quant[row * 8 + col]);
        if (1..8).all(|row| coefs[row * 8 + col] == 0) {
            let dc = (dq(0) << PASS1_BITS) as i32;
            for row in 0..8 {
                workspace[row * 8 + col] = dc;
            }
            continue;
        }
        let out = butterfly(std::array::from_fn(dq));
        for (row, v) in out.into_iter().enumerate() {
            workspace[row * 8 + col] = descale(v, CONST_BITS - PASS1_BITS) as i32;
        }
    }
    // Pass 2: rows from the workspace, descaled by 2^(PASS1_BITS + 3) more.
    for row in 0..8 {
        let ws = &workspace[row * 8..row * 8 + 8];
        let line = &mut out[row * stride..row * stride + 8];
        if ws[1..].iter().all(|&v| v == 0) {
            line.fill(range_limit(descale(i64::from(ws[0]), PASS1_BITS + 3)));
            continue;
        }
        let values = butterfly(std::array::from_fn(|i| i64::from(ws[i])));
        for (dst, v) in line.iter_mut().zip(values) {
            *dst = range_limit(descale(v, CONST_BITS + PASS1_BITS + 3));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_limit_clamps_and_wraps_like_libjpeg() {
        assert_eq!(range_limit(-128), 0);
        assert_eq!(range_limit(-1), 127);
        assert_eq!(range_limit(0), 128);
        assert_eq!(range_limit(127), 255);
        assert_eq!(range_limit(400), 255);
        assert_eq!(range_limit(-400), 0);
        // Beyond +-512 the table wraps (x & 1023).
        assert_eq!(range_limit(1024), 128);
    }

    #[test]
    fn dc_only_block_is_flat() {
        let mut coefs = [0i16; 64];
        coefs[0] = 10; // 10 * 8 / 8 = +10 over mid-gray
        let quant = [8u16; 64];
        let mut out = [0u8; 64];
        idct_islow(&coefs, &quant, &mut out, 8);
        assert!(out.iter().all(|&v| v == 138), "{out:?}");
    }
}
