//! Q4_K: 4-bit weights in 256-element super-blocks of eight 32-element sub-blocks, each
//! with a 6-bit scale and a 6-bit minimum. Also home of the helpers the K-quants share:
//! ggml's `nearest_int`, `make_qkx2_quants` and the 12-byte scale/min packing.

use super::common::{f16_from, simd_kernel};
use super::{BlockQ8_K, QuantBlock, VecDot};
use crate::cpu::isa::Isa;
use bytemuck::{Pod, Zeroable};
use gemma_gguf::GgmlType;
use half::f16;

/// Q4_K super-block: 4.5 bits per weight, 256 weights in 8 sub-blocks of 32.
/// Layout: `d`, `dmin` (f16), 12 bytes of packed 6-bit scales/mins, 128 bytes of nibbles
/// (byte `32*c + l` holds weight `64*c + l` in its low and `64*c + 32 + l` in its high nibble).
/// Weight = `d * scale[s] * q - dmin * min[s]`, `q` in 0..=15, `s` the sub-block.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_K {
    /// Super-block scale of the sub-block scales.
    pub d: f16,
    /// Super-block scale of the sub-block minimums.
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit minimums (see `get_scale_min_k4`).
    pub scales: [u8; 12],
    /// 4-bit quants.
    pub qs: [u8; 128],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_K>() == 144);

/// ggml's `nearest_int`, bit for bit: adds 1.5 * 2^23 and reads the low mantissa bits.
/// Round-half-even for `|x| <= 2^22`; for values outside that range (never produced by
/// sane inputs) it returns the same wrapped value ggml does, which keeps the quantizers
/// byte-exact even on pathological rows.
#[inline]
pub(crate) fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and minimum of sub-block `j` (0..8).
#[inline]
fn get_scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Unpacks the 12 scale bytes into eight scales and eight minimums (ggml's `utmp`
/// shuffle of the dot products, equal to [`get_scale_min_k4`] for every `j`).
#[inline]
pub(crate) fn unpack_scales_mins_k4(q: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    let u0 = u32::from_le_bytes([q[0], q[1], q[2], q[3]]);
    let u1 = u32::from_le_bytes([q[4], q[5], q[6], q[7]]);
    let u2 = u32::from_le_bytes([q[8], q[9], q[10], q[11]]);
    let sc_lo = u0 & KMASK1;
    let sc_hi = (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4);
    let mn_lo = u1 & KMASK1;
    let mn_hi = ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4);
    let join = |lo: u32, hi: u32| {
        let (l, h) = (lo.to_le_bytes(), hi.to_le_bytes());
        [l[0], l[1], l[2], l[3], h[0], h[1], h[2], h[3]]
    };
    (join(sc_lo, sc_hi), join(mn_lo, mn_hi))
}

/// Packs eight 6-bit scales and minimums into 12 bytes, as `quantize_row_q4_K_ref` does.
fn pack_scales_mins_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
    s
}

/// Settings of one `make_qkx2_quants` search (ggml's trailing arguments).
pub(crate) struct Qkx2Search {
    /// Largest quant level.
    pub nmax: i32,
    /// First inverse-scale offset tried.
    pub rmin: f32,
    /// Step of the inverse-scale offset.
    pub rdelta: f32,
    /// Number of steps after the first.
    pub nstep: i32,
    /// Minimise absolute instead of squared error.
    pub use_mad: bool,
}

/// ggml's `make_qkx2_quants`: fits `x ≈ scale * L - min` with `L` in `0..=nmax` by a
/// weighted least-squares search over candidate inverse scales. Writes `l` and returns
/// `(scale, min)` (the minimum as a non-negative offset, ggml's `the_min`). Every float
/// operation is evaluated in ggml's order so the result is bit-identical.
pub(crate) fn make_qkx2_quants(
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    p: &Qkx2Search,
) -> (f32, f32) {
    let n = x.len();
    let mut laux = [0u8; 32];
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l[..n].fill(0);
        return (0.0, -min);
    }
    let nmax = p.nmax as f32;
    let mut iscale = nmax / (max - min);
    let mut scale = 1.0 / iscale;
    let error_of = |diff: f32| if p.use_mad { diff.abs() } else { diff * diff };
    let mut best_error = 0.0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, p.nmax);
        l[i] = q as u8;
        let diff = scale * l[i] as f32 + min - x[i];
        best_error += weights[i] * error_of(diff);
    }
    for is in 0..=p.nstep {
        iscale = (p.rmin + p.rdelta * is as f32 + nmax) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, p.nmax);
            laux[i] = q as u8;
            let w = weights[i];
            let lf = q as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * error_of(diff);
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// The shared tail of `quantize_row_q4_K_ref` / `quantize_row_q5_K_ref`: given the
/// per-sub-block `(scale, min)` fits of one super-block, quantizes the scales to 6 bits
/// and requantizes `x` against the stored scales. Returns `(d, dmin, scales, l)`.
pub(crate) fn finish_k4_super_block(
    x: &[f32],
    fits: &[(f32, f32); 8],
    l: &mut [u8; 256],
    nmax: i32,
) -> (f16, f16, [u8; 12]) {
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for &(scale, min) in fits {
        if scale > max_scale {
            max_scale = scale;
        }
        if min > max_min {
            max_min = min;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for (j, &(scale, min)) in fits.iter().enumerate() {
        // ggml stores the int into a uint8_t first (wrapping), then clamps.
        ls[j] = (nearest_int(inv_scale * scale) as u8).min(63);
        lm[j] = (nearest_int(inv_min * min) as u8).min(63);
    }
    let scales = pack_scales_mins_k4(&ls, &lm);
    let d = f16_from(max_scale / 63.0);
    let dmin = f16_from(max_min / 63.0);
    for j in 0..8 {
        let (sc, m) = get_scale_min_k4(j, &scales);
        let dj = d.to_f32() * sc as f32;
        if dj == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * m as f32;
        for ii in 0..32 {
            let q = nearest_int((x[32 * j + ii] + dm) / dj);
            l[32 * j + ii] = q.clamp(0, nmax) as u8;
        }
    }
    (d, dmin, scales)
}

/// The sub-block fits of `quantize_row_q4_K_ref` / `_q5_K_ref` for one super-block:
/// weights `sqrt(mean(x²)) + |x|` per 32-element sub-block, then [`make_qkx2_quants`].
pub(crate) fn fit_k4_sub_blocks(
    x: &[f32],
    l: &mut [u8; 256],
    search: &Qkx2Search,
) -> [(f32, f32); 8] {
    let mut fits = [(0.0f32, 0.0f32); 8];
    let mut weights = [0.0f32; 32];
    for (j, fit) in fits.iter_mut().enumerate() {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        *fit = make_qkx2_quants(xs, &weights, &mut l[32 * j..32 * j + 32], search);
    }
    fits
}

impl BlockQ4_K {
    /// The eight sub-block scales and the eight sub-block minimums, unpacked.
    #[inline]
    pub(crate) fn scales_mins(&self) -> ([u8; 8], [u8; 8]) {
        unpack_scales_mins_k4(&self.scales)
    }

    fn dequantize_block(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        for c in 0..4 {
            let (sc1, m1) = get_scale_min_k4(2 * c, &self.scales);
            let (sc2, m2) = get_scale_min_k4(2 * c + 1, &self.scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let q = &self.qs[32 * c..32 * c + 32];
            let out = &mut y[64 * c..64 * c + 64];
            for l in 0..32 {
                out[l] = d1 * (q[l] & 0xF) as f32 - m1;
                out[32 + l] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }

    fn quantize_block(x: &[f32]) -> Self {
        let search = Qkx2Search {
            nmax: 15,
            rmin: -1.0,
            rdelta: 0.1,
            nstep: 20,
            use_mad: false,
        };
        let mut l = [0u8; 256];
        let fits = fit_k4_sub_blocks(x, &mut l, &search);
        let (d, dmin, scales) = finish_k4_super_block(x, &fits, &mut l, 15);
        let mut qs = [0u8; 128];
        for c in 0..4 {
            for i in 0..32 {
                qs[32 * c + i] = l[64 * c + i] | (l[64 * c + 32 + i] << 4);
            }
        }
        BlockQ4_K {
            d,
            dmin,
            scales,
            qs,
        }
    }
}

/// `ggml_vec_dot_q4_K_q8_K_generic`: integer products per sub-block, scaled per
/// super-block into eight float lanes, summed in ggml's order.
fn vec_dot_scalar(w: &[BlockQ4_K], x: &[BlockQ8_K]) -> f32 {
    let mut sums = [0.0f32; 8];
    let mut sumf = 0.0f32;
    for (b, y) in w.iter().zip(x) {
        let quant = |j: usize, k: usize| (b.qs[32 * (j / 2) + k] >> (4 * (j % 2))) & 0xF;
        sumf -= dot_k4_super_block(b.scales_mins(), quant, (b.d, b.dmin), y, &mut sums);
    }
    sums.iter().fold(sumf, |acc, s| acc + s)
}

/// One super-block of ggml's generic Q4_K/Q5_K · Q8_K dot product, shared by both formats:
/// `quant(j, k)` is the unsigned weight `k` of sub-block `j`. Adds the scaled integer sums
/// to the eight float lanes `sums` and returns the minimum term to subtract.
pub(crate) fn dot_k4_super_block(
    (scales, mins): ([u8; 8], [u8; 8]),
    quant: impl Fn(usize, usize) -> u8,
    (d, dmin): (f16, f16),
    y: &BlockQ8_K,
    sums: &mut [f32; 8],
) -> f32 {
    let mut aux32 = [0i32; 8];
    for (j, &scale) in scales.iter().enumerate() {
        for k in 0..32 {
            aux32[k % 8] += scale as i32 * (y.qs[32 * j + k] as i32 * quant(j, k) as i32);
        }
    }
    let mut sumi = 0i32;
    for (j, &bsum) in y.bsums.iter().enumerate() {
        sumi += bsum as i32 * mins[j / 2] as i32;
    }
    let d = d.to_f32() * y.d;
    for (sum, &aux) in sums.iter_mut().zip(&aux32) {
        *sum += d * aux as f32;
    }
    dmin.to_f32() * y.d * sumi as f32
}

impl QuantBlock for BlockQ4_K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const ELEMS: usize = 256;
    type Act = BlockQ8_K;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(256)) {
            b.dequantize_block(y);
        }
    }

    /// ggml's `quantize_row_q4_K_ref`.
    fn quantize(src: &[f32], out: &mut [Self]) {
        for (x, b) in src.chunks_exact(256).zip(out.iter_mut()) {
            *b = Self::quantize_block(x);
        }
    }

    fn vec_dot(w: &[Self], x: &[BlockQ8_K]) -> f32 {
        vec_dot_scalar(w, x)
    }

    fn vec_dot_for(isa: Isa) -> Option<VecDot<Self>> {
        simd_kernel!(isa, avx2_kquants, avx512_kquants, neon_kquants, q4_k)
    }
}
