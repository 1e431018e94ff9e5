//! Image files to 8-bit RGB, with the size checked before any pixel is decoded, and
//! with the pixels of the reference preprocessing: Pillow's `Image.open(f).convert("RGB")`
//! (transformers). JPEG files go through [`crate::jpeg`], which reproduces
//! libjpeg-turbo (Pillow's JPEG library) bit for bit; PNG files through the `image`
//! crate, whose samples equal Pillow's, with Pillow's conversions to RGB applied.
//!
//! llama.cpp (the reference of [`crate::Fit::Letterbox`]) decodes with stb_image,
//! whose JPEG decoder rounds differently from libjpeg-turbo (its chroma upsampling and
//! IDCT): both fits follow Pillow here.

use crate::error::VisionError;
use crate::jpeg::{self, JpegError};
use image::error::{DecodingError, ImageFormatHint};
use image::{DynamicImage, ImageError, ImageFormat, ImageReader, Limits, RgbImage};
use std::io::Cursor;

/// Largest accepted image side. JPEG allows 65535; 32768 covers every camera.
pub const MAX_IMAGE_SIDE: u32 = 32_768;

/// Largest accepted pixel count: Pillow's `MAX_IMAGE_PIXELS` (its decompression-bomb
/// threshold), about 89.5 megapixels, i.e. at most ~360 MB of decoded RGBA.
pub const MAX_IMAGE_PIXELS: u64 = 89_478_485;

/// Memory the decoder may allocate: the largest accepted image at 8 bytes per pixel
/// (16-bit RGBA) plus slack.
const MAX_DECODE_ALLOC: u64 = MAX_IMAGE_PIXELS * 8 + (64 << 20);

/// A JPEG error as the crate reports every decoding failure:
/// [`VisionError::ImageDecode`] holding an `image::ImageError::Decoding` whose source
/// is the [`JpegError`].
impl From<JpegError> for VisionError {
    fn from(err: JpegError) -> VisionError {
        let hint = ImageFormatHint::Exact(ImageFormat::Jpeg);
        VisionError::ImageDecode(ImageError::Decoding(DecodingError::new(hint, err)))
    }
}

/// Decodes a PNG or JPEG file held in memory to RGB8 exactly as Pillow's
/// `Image.open(f).convert("RGB")` does (EXIF orientation is not applied, as `open`
/// does not), rejecting oversized images from their header, before decoding.
pub fn decode_rgb8(bytes: &[u8]) -> Result<RgbImage, VisionError> {
    if jpeg::is_jpeg(bytes) {
        let decoded = jpeg::decode(bytes, check_dimensions)?;
        // The decoder returns width * height * 3 bytes for the size it checked.
        return RgbImage::from_raw(decoded.width as u32, decoded.height as u32, decoded.rgb).ok_or(
            VisionError::EmptyImage {
                width: decoded.width as u32,
                height: decoded.height as u32,
            },
        );
    }
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

/// Converts any decoded image to RGB8 the way Pillow's `convert("RGB")` does after
/// `Image.open` of a PNG: gray is replicated, alpha is dropped (not composited),
/// 16-bit color and gray+alpha samples keep their high byte (Pillow opens those as
/// 8-bit RGB(A)), but 16-bit gray without alpha, which Pillow opens as `I;16`, is
/// clipped to 255 (`I16_RGB`), not shifted.
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
            from_samples(w, h, img.as_raw(), 1, |s| [s[0].min(255) as u8; 3])
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
