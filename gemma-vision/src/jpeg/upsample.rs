//! Chroma upsampling as libjpeg-turbo's default "fancy" upsampling (jdsample.c):
//! triangle filters for 2x1, 1x2 and 2x2 ratios with their alternating rounding
//! biases, edges replicated (the row above the first and below the last component
//! row, libjpeg's context rows, are the edge rows themselves), and plain replication
//! for 2x1 / 2x2 components at most 2 samples wide and for every other integer ratio.

/// One decoded component: its samples and their layout.
pub(super) struct Samples<'a> {
    /// The plane, `stride` bytes per row.
    pub plane: &'a [u8],
    /// Bytes per row of `plane`.
    pub stride: usize,
    /// Samples per row that belong to the image (libjpeg's `downsampled_width`).
    pub width: usize,
    /// Rows that belong to the image (`downsampled_height`).
    pub height: usize,
}

impl Samples<'_> {
    fn row(&self, y: usize) -> &[u8] {
        &self.plane[y * self.stride..y * self.stride + self.width]
    }
}

/// Upsamples `src` by the integer factors `(h_ratio, v_ratio)` and crops the result to
/// `width x height` (row-major, `width` bytes per row).
pub(super) fn upsample(
    src: &Samples,
    h_ratio: usize,
    v_ratio: usize,
    width: usize,
    height: usize,
) -> Vec<u8> {
    let mut out = vec![0u8; width * height];
    let mut colsum = vec![0u16; src.width];
    let mut wide = vec![0u8; src.width * h_ratio];
    let fancy_h = src.width > 2;
    for (y, out_row) in out.chunks_exact_mut(width).enumerate() {
        let (r, phase) = (y / v_ratio, y % v_ratio);
        match (h_ratio, v_ratio) {
            (1, 1) => out_row.copy_from_slice(&src.row(y)[..width]),
            (2, 1) if fancy_h => {
                h2v1_fancy(src.row(r), &mut wide);
                out_row.copy_from_slice(&wide[..width]);
            }
            (1, 2) => {
                let (far, bias) = vertical_neighbor(src, r, phase);
                for ((dst, &near), &far) in out_row.iter_mut().zip(src.row(r)).zip(src.row(far)) {
                    *dst = ((u16::from(near) * 3 + u16::from(far) + bias) >> 2) as u8;
                }
            }
            (2, 2) if fancy_h => {
                let (far, _) = vertical_neighbor(src, r, phase);
                for ((sum, &near), &far) in colsum.iter_mut().zip(src.row(r)).zip(src.row(far)) {
                    *sum = u16::from(near) * 3 + u16::from(far);
                }
                h2v2_fancy(&colsum, &mut wide);
                out_row.copy_from_slice(&wide[..width]);
            }
            _ => {
                let row = src.row(r);
                for (x, dst) in out_row.iter_mut().enumerate() {
                    *dst = row[x / h_ratio];
                }
            }
        }
    }
    out
}

/// The row that is second-nearest to output phase `phase` of input row `r` (above for
/// the upper output row, below for the lower one, the edge row itself at the edges),
/// and the rounding bias of `h1v2_fancy_upsample` for that phase.
fn vertical_neighbor(src: &Samples, r: usize, phase: usize) -> (usize, u16) {
    if phase == 0 {
        (r.saturating_sub(1), 1)
    } else {
        ((r + 1).min(src.height - 1), 2)
    }
}

/// `h2v1_fancy_upsample`: `(3 * nearer + further + 1 or 2) >> 2`.
fn h2v1_fancy(row: &[u8], out: &mut [u8]) {
    let last = row.len() - 1;
    for (i, pair) in out.chunks_exact_mut(2).enumerate() {
        let v = u16::from(row[i]) * 3;
        let left = u16::from(row[i.saturating_sub(1)]);
        let right = u16::from(row[(i + 1).min(last)]);
        pair[0] = ((v + left + 1) >> 2) as u8;
        pair[1] = ((v + right + 2) >> 2) as u8;
    }
}

/// The horizontal half of `h2v2_fancy_upsample` on column sums `3 * near + far`:
/// `(3 * this + neighbor + 8 or 7) >> 4`.
fn h2v2_fancy(colsum: &[u16], out: &mut [u8]) {
    let last = colsum.len() - 1;
    for (i, pair) in out.chunks_exact_mut(2).enumerate() {
        let v = colsum[i] * 3;
        let left = colsum[i.saturating_sub(1)];
        let right = colsum[(i + 1).min(last)];
        pair[0] = ((v + left + 8) >> 4) as u8;
        pair[1] = ((v + right + 7) >> 4) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h2v1_matches_libjpeg_formulas() {
        let row = [10u8, 20, 40];
        let mut out = [0u8; 6];
        h2v1_fancy(&row, &mut out);
        // First column: the sample itself, then (3*10 + 20 + 2) >> 2.
        assert_eq!(out[0], 10);
        assert_eq!(out[1], 13);
        // Middle: (60 + 10 + 1) >> 2 and (60 + 40 + 2) >> 2.
        assert_eq!(out[2], 17);
        assert_eq!(out[3], 25);
        // Last column: (120 + 20 + 1) >> 2, then the sample itself.
        assert_eq!(out[4], 35);
        assert_eq!(out[5], 40);
    }
}
