//! Image files to 8-bit RGB, with the size checked before any pixel is decoded.

use crate::error::VisionError;
use image::{DynamicImage, ImageReader, Limits, RgbImage};
use std::io::Cursor;

/// Largest accepted image side. JPEG allows 65535; 32768 covers every camera.
pub const MAX_IMAGE_SIDE: u32 = 32_768;

/// Largest accepted pixel count: Pillow's `MAX_IMAGE_PIXELS` (its decompression-bomb
/// threshold), about 89.5 megapixels, i.e. at most ~360 MB of decoded RGBA.
pub const MAX_IMAGE_PIXELS: u64 = 89_478_485;

/// Memory the decoder may allocate: the largest accepted image at 8 bytes per pixel
/// (16-bit RGBA) plus slack.
const MAX_DECODE_ALLOC: u64 = MAX_IMAGE_PIXELS * 8 + (64 << 20);

/// Decodes a PNG or JPEG file held in memory to RGB8, rejecting oversized images
/// from their header, before decoding.
pub(crate) fn decode_rgb8(bytes: &[u8]) -> Result<RgbImage, VisionError> {
    let reader = || -> Result<ImageReader<Cursor<&[u8]>>, VisionError> {
        let reader = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| VisionError::ImageDecode(e.into()))?;
        if reader.format().is_none() {
            return Err(VisionError::UnknownImageFormat);
        }
        Ok(reader)
    };
    let (width, height) = reader()?.into_dimensions()?;
    check_dimensions(width, height)?;
    let mut reader = reader()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    to_rgb8(&reader.decode()?)
}

/// Rejects empty images and images beyond [`MAX_IMAGE_SIDE`] / [`MAX_IMAGE_PIXELS`].
pub(crate) fn check_dimensions(width: u32, height: u32) -> Result<(), VisionError> {
    if width == 0 || height == 0 {
        return Err(VisionError::EmptyImage { width, height });
    }
    if width > MAX_IMAGE_SIDE
        || height > MAX_IMAGE_SIDE
        || u64::from(width) * u64::from(height) > MAX_IMAGE_PIXELS
    {
        return Err(VisionError::ImageTooLarge {
            width,
            height,
            max_side: MAX_IMAGE_SIDE,
            max_pixels: MAX_IMAGE_PIXELS,
        });
    }
    Ok(())
}

/// Converts any decoded image to RGB8 the way Pillow's `convert("RGB")` and stb_image
/// (llama.cpp) do: gray is replicated, alpha is dropped (not composited), 16-bit
/// samples keep their high byte.
pub(crate) fn to_rgb8(image: &DynamicImage) -> Result<RgbImage, VisionError> {
    check_dimensions(image.width(), image.height())?;
    let (w, h) = (image.width(), image.height());
    let rgb = match image {
        DynamicImage::ImageRgb8(img) => Some(img.clone()),
        DynamicImage::ImageRgba8(img) => {
            from_samples(w, h, img.as_raw(), 4, |s| [s[0], s[1], s[2]])
        }
        DynamicImage::ImageLuma8(img) => from_samples(w, h, img.as_raw(), 1, |s| [s[0]; 3]),
        DynamicImage::ImageLumaA8(img) => from_samples(w, h, img.as_raw(), 2, |s| [s[0]; 3]),
        DynamicImage::ImageRgb16(img) => {
            from_samples(w, h, img.as_raw(), 3, |s| [s[0], s[1], s[2]].map(high_byte))
        }
        DynamicImage::ImageRgba16(img) => {
            from_samples(w, h, img.as_raw(), 4, |s| [s[0], s[1], s[2]].map(high_byte))
        }
        DynamicImage::ImageLuma16(img) => {
            from_samples(w, h, img.as_raw(), 1, |s| [high_byte(s[0]); 3])
        }
        DynamicImage::ImageLumaA16(img) => {
            from_samples(w, h, img.as_raw(), 2, |s| [high_byte(s[0]); 3])
        }
        // Float images (only from callers, never from PNG/JPEG): the crate's own rounding.
        other => Some(other.to_rgb8()),
    };
    rgb.ok_or(VisionError::EmptyImage {
        width: w,
        height: h,
    })
}

fn high_byte(v: u16) -> u8 {
    (v >> 8) as u8
}

/// Builds an RGB8 image from interleaved samples, `channels` per pixel, mapping each
/// pixel's samples to its three bytes (`None` if `raw` is too short).
fn from_samples<T>(
    width: u32,
    height: u32,
    raw: &[T],
    channels: usize,
    pixel: impl Fn(&[T]) -> [u8; 3],
) -> Option<RgbImage> {
    let data: Vec<u8> = raw.chunks_exact(channels).flat_map(pixel).collect();
    RgbImage::from_raw(width, height, data)
}
