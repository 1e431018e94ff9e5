//! Pillow's bilinear resize (`ImagingResample` with `BILINEAR`), bit for bit.
//!
//! Two separable passes on 8-bit RGB, each only when its dimension changes, with an
//! 8-bit intermediate. Pillow (since 10.x; 13.0 made the references) runs the vertical
//! pass first when the height shrinks by more than twice as many pixels as the width
//! ([`PassOrder::Pillow`]); llama.cpp's port always starts with the horizontal pass
//! ([`PassOrder::HorizontalFirst`]). The order changes the rounding of the 8-bit
//! intermediate, so each caller picks the one of the reference it reproduces. Weights
//! are computed in double precision exactly as Pillow's `precompute_coeffs`, then
//! turned into 22-bit fixed point (`normalize_coeffs_8bpc`); every output is
//! `clip8(2^21 + sum(u8 * w))`. A float filter without the 8-bit intermediate differs
//! in the last bit for a large share of pixels, so this file follows Pillow literally.

use image::RgbImage;

/// Fixed-point fraction bits of Pillow's 8-bit resampler (`PRECISION_BITS` = 32 - 8 - 2).
const PRECISION_BITS: u32 = 22;

/// Fixed-point filter taps for one axis: output `i` reads `len[i]` inputs from `start[i]`.
struct AxisCoeffs {
    start: Vec<usize>,
    len: Vec<usize>,
    /// `taps_per_output` weights per output, the first `len[i]` of them used.
    weights: Vec<i32>,
    taps_per_output: usize,
}

/// Pillow's triangle filter (`bilinear_filter`, support 1).
fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` (bilinear, no box) followed by `normalize_coeffs_8bpc`.
fn axis_coeffs(in_size: usize, out_size: usize) -> AxisCoeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // bilinear support (1.0) times filterscale
    let taps_per_output = support.ceil() as usize * 2 + 1;
    // Pillow multiplies by the reciprocal; dividing can differ in the last bit.
    let ss = 1.0 / filterscale;
    let mut start = Vec::with_capacity(out_size);
    let mut len = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * taps_per_output];
    let mut taps = vec![0f64; taps_per_output];
    for (xx, out) in weights.chunks_exact_mut(taps_per_output).enumerate() {
        let center = (xx as f64 + 0.5) * scale;
        // `(int)` casts in C truncate toward zero, as `as i64` does.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64)
            .min(in_size as i64)
            .max(xmin as i64) as usize;
        let n = (xmax - xmin).min(taps_per_output);
        let mut sum = 0.0;
        for (x, tap) in taps[..n].iter_mut().enumerate() {
            let w = triangle(((x + xmin) as f64 - center + 0.5) * ss);
            *tap = w;
            sum += w;
        }
        for (tap, fixed) in taps[..n].iter().zip(out.iter_mut()) {
            let w = if sum != 0.0 { tap / sum } else { *tap };
            let scaled = w * f64::from(1u32 << PRECISION_BITS);
            *fixed = if w < 0.0 {
                (scaled - 0.5) as i32
            } else {
                (scaled + 0.5) as i32
            };
        }
        start.push(xmin);
        len.push(n);
    }
    AxisCoeffs {
        start,
        len,
        weights,
        taps_per_output,
    }
}

/// Pillow's `clip8`: the fixed-point accumulator back to a byte.
fn clip8(acc: i32) -> u8 {
    if acc >= (1 << PRECISION_BITS << 8) {
        255
    } else if acc <= 0 {
        0
    } else {
        (acc >> PRECISION_BITS) as u8
    }
}

/// Pillow `ImagingResampleHorizontal_8bpc` on RGB rows.
fn resample_horizontal(src: &RgbImage, out_width: u32) -> RgbImage {
    let c = axis_coeffs(src.width() as usize, out_width as usize);
    let in_row = src.width() as usize * 3;
    let mut dst = RgbImage::new(out_width, src.height());
    let out_row = out_width as usize * 3;
    for (src_row, dst_row) in src
        .as_raw()
        .chunks_exact(in_row)
        .zip(dst.chunks_exact_mut(out_row))
    {
        for (xx, px) in dst_row.chunks_exact_mut(3).enumerate() {
            let k = &c.weights[xx * c.taps_per_output..][..c.len[xx]];
            let inputs = &src_row[c.start[xx] * 3..];
            let mut acc = [1i32 << (PRECISION_BITS - 1); 3];
            for (w, input) in k.iter().zip(inputs.chunks_exact(3)) {
                for ch in 0..3 {
                    acc[ch] += i32::from(input[ch]) * w;
                }
            }
            for ch in 0..3 {
                px[ch] = clip8(acc[ch]);
            }
        }
    }
    dst
}

/// Pillow `ImagingResampleVertical_8bpc` on RGB rows.
fn resample_vertical(src: &RgbImage, out_height: u32) -> RgbImage {
    let c = axis_coeffs(src.height() as usize, out_height as usize);
    let row = src.width() as usize * 3;
    let raw = src.as_raw();
    let mut dst = RgbImage::new(src.width(), out_height);
    for (yy, dst_row) in dst.chunks_exact_mut(row).enumerate() {
        let k = &c.weights[yy * c.taps_per_output..][..c.len[yy]];
        for (i, out) in dst_row.iter_mut().enumerate() {
            let mut acc = 1i32 << (PRECISION_BITS - 1);
            for (y, w) in k.iter().enumerate() {
                acc += i32::from(raw[(c.start[yy] + y) * row + i]) * w;
            }
            *out = clip8(acc);
        }
    }
    dst
}

/// Which of the two separable passes runs first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PassOrder {
    /// Pillow's `ImagingResampleInner`: vertical first iff the height shrinks by more
    /// than twice as many pixels as the width does.
    Pillow,
    /// llama.cpp's `resize_pillow` port: always horizontal, then vertical.
    HorizontalFirst,
}

/// Resizes `src` to `width` x `height` with Pillow's fixed-point bilinear filter, the
/// passes in `order` (both dimensions must be non-zero; same size = copy).
pub(crate) fn resize_bilinear(
    src: RgbImage,
    width: u32,
    height: u32,
    order: PassOrder,
) -> RgbImage {
    let shrink_y = i64::from(src.height()) - i64::from(height);
    let shrink_x = i64::from(src.width()) - i64::from(width);
    let vertical_first = order == PassOrder::Pillow && shrink_y > 0 && shrink_y > 2 * shrink_x;
    let horizontal = |img: RgbImage| {
        if img.width() != width {
            resample_horizontal(&img, width)
        } else {
            img
        }
    };
    let vertical = |img: RgbImage| {
        if img.height() != height {
            resample_vertical(&img, height)
        } else {
            img
        }
    };
    if vertical_first {
        horizontal(vertical(src))
    } else {
        vertical(horizontal(src))
    }
}
