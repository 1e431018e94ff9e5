//! Helpers shared by the block formats: ggml's rounding rules, the IQ4 value table and
//! the nearest-value search of the non-linear quantizers.

/// Weight blocks whose largest magnitude is below this are stored as all-zero
/// (ggml's `GROUP_MAX_EPS`).
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// The 16 signed levels of IQ4_NL / IQ4_XS (ggml's `kvalues_iq4nl`), sorted.
pub(crate) const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// [`KVALUES_IQ4NL`] plus 128, as unsigned bytes: the byte-shuffle table of the SIMD
/// kernels that take IQ4_NL / IQ4_XS weights unsigned (with an offset of 128). A constant,
/// so that no kernel call builds it (built per row, it took 4.7% of a 1B IQ4_NL decode).
#[cfg(target_arch = "x86_64")]
pub(crate) const KVALUES_IQ4NL_PLUS_128: [u8; 16] = {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = (KVALUES_IQ4NL[i] as i16 + 128) as u8;
        i += 1;
    }
    out
};

/// ggml's `nearest_int`, bit for bit: adds `12582912.0` (1.5 * 2^23) and reads the
/// mantissa bits. For `|x| <= 2^22` that is round half to even; for larger values,
/// infinities and NaN it gives ggml's (meaningless but deterministic) result too.
#[inline]
pub(crate) fn nearest_int(x: f32) -> i32 {
    let bits = (x + 12_582_912.0).to_bits();
    (bits & 0x007f_ffff) as i32 - 0x0040_0000
}

/// What x86 `cvtps2dq` makes of `x`: round half to even, and `i32::MIN` (the "integer
/// indefinite") for NaN or values outside the `i32` range. ggml's x86 activation
/// quantizers (Q8_0, Q8_1) round this way.
#[inline]
pub(crate) fn cvt_round_i32(x: f32) -> i32 {
    let r = x.round_ties_even();
    if (-2_147_483_648.0..2_147_483_648.0).contains(&r) {
        r as i32
    } else {
        i32::MIN
    }
}

/// [`cvt_round_i32`] then the signed saturation of `packssdw` / `packsswb`.
#[inline]
pub(crate) fn cvt_round_i8(x: f32) -> i8 {
    cvt_round_i32(x).clamp(-128, 127) as i8
}

/// ggml's `best_index_int8`: the index of the level of `values` (sorted ascending,
/// length a power of two) nearest to `x`; a value exactly halfway between two levels
/// picks the upper one. The comparison `2x >= a + b` is exact in `f32`.
#[inline]
pub(crate) fn best_index_int8(values: &[i8; 16], x: f32) -> usize {
    let x2 = x + x;
    let mut idx = 0;
    let mut step = values.len() >> 1;
    while step > 0 {
        let j = idx + step;
        if x2 >= (values[j - 1] as i32 + values[j] as i32) as f32 {
            idx = j;
        }
        step >>= 1;
    }
    idx
}

/// Converts `x` to `f16` the way ggml's `GGML_FP32_TO_FP16` does (round to nearest even).
#[inline]
pub(crate) fn f16_from(x: f32) -> half::f16 {
    half::f16::from_f32(x)
}

/// Converts `x` to `bf16` exactly like ggml's `GGML_FP32_TO_BF16`: round to nearest
/// even on the bit pattern, NaNs made quiet.
#[inline]
pub(crate) fn bf16_from(x: f32) -> half::bf16 {
    let bits = x.to_bits();
    if bits & 0x7fff_ffff > 0x7f80_0000 {
        return half::bf16::from_bits(((bits >> 16) | 64) as u16);
    }
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16;
    half::bf16::from_bits(rounded as u16)
}

/// The SIMD kernel `$name` for `isa`: from the x86 modules `$avx2` and `$avx512` of
/// `crate::cpu::x86_64`, or the AArch64 module `$neon` of `crate::cpu::aarch64` (each
/// module's function returns `None` when the CPU lacks its features); `None` for the
/// scalar level, for levels of another architecture and on other architectures.
macro_rules! simd_kernel {
    ($isa:expr, $avx2:ident, $avx512:ident, $neon:ident, $name:ident) => {{
        #[cfg(target_arch = "x86_64")]
        {
            match $isa {
                $crate::cpu::isa::Isa::Scalar | $crate::cpu::isa::Isa::Neon => None,
                $crate::cpu::isa::Isa::Avx2 => $crate::cpu::x86_64::$avx2::$name(),
                $crate::cpu::isa::Isa::Avx512 => $crate::cpu::x86_64::$avx512::$name(),
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            match $isa {
                $crate::cpu::isa::Isa::Neon => $crate::cpu::aarch64::$neon::$name(),
                _ => None,
            }
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            let _ = $isa;
            None
        }
    }};
}
pub(crate) use simd_kernel;

/// The AVX2 row quantizer `$name` of `crate::cpu::x86_64::avx2_legacy` (byte-identical
/// to the scalar one), unless the process runs the scalar reference (`GEMMA_ISA=scalar`),
/// the CPU lacks AVX2 or this is not x86-64.
macro_rules! x86_quantizer {
    ($name:ident) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if $crate::cpu::isa::current() == $crate::cpu::isa::Isa::Scalar {
                None
            } else {
                $crate::cpu::x86_64::avx2_legacy::$name()
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            None
        }
    }};
}
pub(crate) use x86_quantizer;

/// Rows that are hard on activation quantizers, for SIMD-vs-scalar tests: random
/// values of many scales, exact rounding ties, equal positive and negative extremes,
/// all-zero blocks, subnormals. (Only the x86 SIMD quantizers have such tests.)
#[cfg(all(test, target_arch = "x86_64"))]
pub(crate) fn adversarial_rows(n: usize) -> Vec<Vec<f32>> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let random: Vec<f32> = (0..n)
        .map(|i| next() * 10f32.powi((i / 64 % 7) as i32 - 3))
        .collect();
    // With amax = 127 the multiplier is exactly 1: every k + 0.5 is a tie.
    let ties: Vec<f32> = (0..n)
        .map(|i| match i % 32 {
            0 => 127.0,
            1 => -127.0,
            k => (k as f32 - 16.0) + 0.5,
        })
        .collect();
    let mirrored: Vec<f32> = (0..n)
        .map(|i| {
            if i % 7 == 0 {
                -3.0
            } else if i % 7 == 3 {
                3.0
            } else {
                1.0
            }
        })
        .collect();
    let mut zeros = random.clone();
    zeros[..n / 2].iter_mut().for_each(|v| *v = 0.0);
    let tiny: Vec<f32> = random.iter().map(|v| v * 1e-38).collect();
    vec![random, ties, mirrored, zeros, tiny, vec![0.0; n]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(-2.5), -2);
        assert_eq!(nearest_int(-2.6), -3);
        assert_eq!(nearest_int(4_194_303.0), 4_194_303);
        assert_eq!(nearest_int(f32::INFINITY), -4_194_304);
        assert_eq!(nearest_int(f32::NAN), 0);
    }

    #[test]
    fn cvt_round_i8_matches_cvtps2dq_and_packs() {
        assert_eq!(cvt_round_i8(2.5), 2);
        assert_eq!(cvt_round_i8(-3.5), -4);
        assert_eq!(cvt_round_i8(300.0), 127);
        assert_eq!(cvt_round_i8(-300.0), -128);
        assert_eq!(cvt_round_i8(f32::INFINITY), -128);
        assert_eq!(cvt_round_i8(f32::NAN), -128);
    }

    #[test]
    fn best_index_picks_nearest_level() {
        assert_eq!(best_index_int8(&KVALUES_IQ4NL, -1000.0), 0);
        assert_eq!(best_index_int8(&KVALUES_IQ4NL, 1000.0), 15);
        assert_eq!(best_index_int8(&KVALUES_IQ4NL, 0.0), 8);
        // Halfway between -10 and 1 goes up; just below goes down.
        assert_eq!(best_index_int8(&KVALUES_IQ4NL, -4.5), 8);
        assert_eq!(best_index_int8(&KVALUES_IQ4NL, -4.5001), 7);
        for (i, &v) in KVALUES_IQ4NL.iter().enumerate() {
            assert_eq!(best_index_int8(&KVALUES_IQ4NL, v as f32), i);
        }
    }

    #[test]
    fn bf16_rounding_matches_ggml() {
        assert_eq!(bf16_from(1.0).to_bits(), 0x3f80);
        // 1 + 2^-8 is a tie: stays on the even mantissa.
        assert_eq!(bf16_from(1.0 + 1.0 / 256.0).to_bits(), 0x3f80);
        assert_eq!(bf16_from(1.0 + 3.0 / 256.0).to_bits(), 0x3f82);
        assert_eq!(bf16_from(f32::from_bits(0x7f80_0001)).to_bits(), 0x7fc0);
    }
}
