//! libjpeg-turbo's inter-block smoothing of progressive images (jdcoefct.c,
//! `smoothing_ok` and `decompress_smooth_data`): when the scans of a progressive file
//! leave some of the first nine AC coefficients imprecise (a file that ends early,
//! with EOI), each block's missing low-frequency coefficients are estimated from the
//! DC values of its 5x5 neighborhood, and with no AC data at all the DC itself is
//! smoothed. Complete files (every coefficient refined to bit 0) need none of it.

use super::idct::idct_islow;
use super::scan::ComponentBuffer;

/// How precisely the first ten zigzag coefficients of a component are known
/// (libjpeg's `coef_bits`): -1 never coded, otherwise the `Al` of the last scan
/// that coded them (0 = exact).
pub(super) type CoefBits = [i32; 10];

/// Natural-order positions of zigzag coefficients 0..=9.
const POS: [usize; 10] = [0, 1, 8, 16, 9, 2, 3, 10, 17, 24];

/// libjpeg's `smoothing_ok`: every component has its quantization table (with the ten
/// values nonzero) and some DC data, and some low AC coefficient is imprecise.
pub(super) fn smoothing_applies(bits: &[CoefBits], buffers: &[ComponentBuffer]) -> bool {
    let mut useful = false;
    for (b, buffer) in bits.iter().zip(buffers) {
        let Some(quant) = &buffer.quant else {
            return false;
        };
        if POS.iter().any(|&p| quant[p] == 0) || b[0] < 0 {
            return false;
        }
        useful |= b[1..].iter().any(|&v| v != 0);
    }
    useful
}

/// Where a component's blocks lie.
pub(super) struct BlockGrid {
    /// Blocks per row that hold image samples (`width_in_blocks`).
    pub width: usize,
    /// Block rows that hold image samples (`height_in_blocks`).
    pub height: usize,
    /// The component's vertical sampling factor (block rows per iMCU row).
    pub v: usize,
    /// iMCU rows in the image (`total_iMCU_rows`).
    pub imcu_rows: usize,
}

impl BlockGrid {
    /// The rows libjpeg takes as two above, one above, one below and two below block
    /// row `y`, replicating at the edges. It counts positions in the last iMCU row
    /// as if every iMCU row had that row's (possibly smaller) number of block rows,
    /// which this reproduces.
    fn neighbor_rows(&self, y: usize) -> [usize; 4] {
        let (m, b) = (y / self.v, y % self.v);
        let rows = if m + 1 == self.imcu_rows {
            match self.height % self.v {
                0 => self.v,
                r => r,
            }
        } else {
            self.v
        };
        let (index, count) = (m * rows + b, rows * self.imcu_rows);
        let above = if index > 0 { y - 1 } else { y };
        let above2 = if index > 1 { y - 2 } else { above };
        let below = if index + 1 < count { y + 1 } else { y };
        let below2 = if index + 2 < count { y + 2 } else { below };
        [above2, above, below, below2]
    }
}

/// A 5x5 weighting of the DC values around a block (row by row, the block in the
/// middle): libjpeg's formulas over `DC01..DC25`.
type Weights = [[i64; 5]; 5];

const ZERO: [i64; 5] = [0; 5];

/// Estimates of zigzag coefficients 1..=5 when some AC data is known (T.81 K.8
/// extended to 5x5).
const AC_WEIGHTS: [Weights; 5] = [
    // AC01
    [ZERO, ZERO, [-7, 50, 0, -50, 7], ZERO, ZERO],
    // AC10
    [
        [0, 0, -7, 0, 0],
        [0, 0, 50, 0, 0],
        ZERO,
        [0, 0, -50, 0, 0],
        [0, 0, 7, 0, 0],
    ],
    // AC20
    [
        [0, 0, -1, 0, 0],
        [0, 0, 13, 0, 0],
        [0, 0, -24, 0, 0],
        [0, 0, 13, 0, 0],
        [0, 0, -1, 0, 0],
    ],
    // AC11
    [
        [0, -1, 0, 1, 0],
        [-1, 10, 0, -10, 1],
        ZERO,
        [1, -10, 0, 10, -1],
        [0, 1, 0, -1, 0],
    ],
    // AC02
    [ZERO, ZERO, [-1, 13, -24, 13, -1], ZERO, ZERO],
];

/// Estimates of zigzag coefficients 1..=9 when no AC data is known at all (a
/// Gaussian-like kernel).
const DC_ONLY_WEIGHTS: [Weights; 9] = [
    // AC01
    [
        [-1, -1, 0, 1, 1],
        [-3, 13, 0, -13, 3],
        [-3, 38, 0, -38, 3],
        [-3, 13, 0, -13, 3],
        [-1, -1, 0, 1, 1],
    ],
    // AC10
    [
        [-1, -3, -3, -3, -1],
        [-1, 13, 38, 13, -1],
        ZERO,
        [1, -13, -38, -13, 1],
        [1, 3, 3, 3, 1],
    ],
    // AC20
    [
        [0, 0, 1, 0, 0],
        [0, 2, 7, 2, 0],
        [0, -5, -14, -5, 0],
        [0, 2, 7, 2, 0],
        [0, 0, 1, 0, 0],
    ],
    // AC11
    [
        [-1, 0, 0, 0, 1],
        [0, 9, 0, -9, 0],
        ZERO,
        [0, -9, 0, 9, 0],
        [1, 0, 0, 0, -1],
    ],
    // AC02
    [
        ZERO,
        [0, 2, -5, 2, 0],
        [1, 7, -14, 7, 1],
        [0, 2, -5, 2, 0],
        ZERO,
    ],
    // AC03
    [
        ZERO,
        [0, 1, 0, -1, 0],
        [0, 2, 0, -2, 0],
        [0, 1, 0, -1, 0],
        ZERO,
    ],
    // AC12
    [ZERO, [0, 1, -3, 1, 0], ZERO, [0, -1, 3, -1, 0], ZERO],
    // AC21
    [
        ZERO,
        [0, 1, 0, -1, 0],
        [0, -3, 0, 3, 0],
        [0, 1, 0, -1, 0],
        ZERO,
    ],
    // AC30
    [ZERO, [0, 1, 2, 1, 0], ZERO, [0, -1, -2, -1, 0], ZERO],
];

/// The smoothed DC when no AC data is known (weights sum to 256).
const DC_WEIGHTS: Weights = [
    [-2, -6, -8, -6, -2],
    [-6, 6, 42, 6, -6],
    [-8, 42, 152, 42, -8],
    [-6, 6, 42, 6, -6],
    [-2, -6, -8, -6, -2],
];

fn weigh(weights: &Weights, dc: &Weights) -> i64 {
    let mut sum = 0;
    for (wr, dr) in weights.iter().zip(dc) {
        for (w, v) in wr.iter().zip(dr) {
            sum += w * v;
        }
    }
    sum
}

/// One coefficient estimate: `num / (256 * q)` rounded, capped below `2^al` when the
/// coefficient is known to `al` bits.
fn estimate(q00: i64, weighted: i64, q: i64, al: i32) -> i16 {
    let num = q00 * weighted;
    let cap = |p: i64| {
        if al > 0 && p >= 1 << al {
            (1 << al) - 1
        } else {
            p
        }
    };
    let pred = if num >= 0 {
        cap(((q << 7) + num) / (q << 8))
    } else {
        -cap(((q << 7) - num) / (q << 8))
    };
    pred as i16
}

/// Smooths and transforms every image block of a progressive component.
pub(super) fn smooth_and_transform(
    buffer: &mut ComponentBuffer,
    bits: &CoefBits,
    grid: &BlockGrid,
) {
    let Some(quant) = buffer.quant else {
        return;
    };
    let q = |k: usize| i64::from(quant[POS[k]]);
    let dc_only = bits[1..].iter().all(|&b| b == -1);
    let ac_weights: &[Weights] = if dc_only {
        &DC_ONLY_WEIGHTS
    } else {
        &AC_WEIGHTS
    };
    let coefs = std::mem::take(&mut buffer.coefs);
    let stride = buffer.blocks_w;
    let plane_stride = buffer.blocks_w * 8;
    for y in 0..grid.height {
        let [above2, above, below, below2] = grid.neighbor_rows(y);
        let rows = [above2, above, y, below, below2];
        for x in 0..grid.width {
            let cols = [-2isize, -1, 0, 1, 2]
                .map(|d| (x as isize + d).clamp(0, grid.width as isize - 1) as usize);
            let dc: Weights = rows.map(|r| cols.map(|c| i64::from(coefs[r * stride + c][0])));
            let mut block = coefs[y * stride + x];
            // A coefficient is estimated only if it is still zero and not exact.
            for (k, weights) in (1..).zip(ac_weights) {
                if bits[k] != 0 && block[POS[k]] == 0 {
                    block[POS[k]] = estimate(q(0), weigh(weights, &dc), q(k), bits[k]);
                }
            }
            if dc_only {
                block[0] = estimate(q(0), weigh(&DC_WEIGHTS, &dc), q(0), 0);
            }
            let out = &mut buffer.plane[y * 8 * plane_stride + x * 8..];
            idct_islow(&block, &quant, out, plane_stride);
        }
    }
}
