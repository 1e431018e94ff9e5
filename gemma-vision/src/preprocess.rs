//! From an image to the encoder's input: RGB8, resized to the model's square with
//! Pillow's bilinear filter, scaled to [0, 1] and normalized per channel, laid out CHW.

use crate::config::VisionConfig;
use crate::decode::{decode_rgb8, to_rgb8};
use crate::error::VisionError;
use crate::resample::{resize_bilinear, PassOrder};
use image::{DynamicImage, Rgb, RgbImage};

/// How a non-square image is brought to the model's square input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Fit {
    /// Stretch the whole image to the square, ignoring its aspect ratio: what the
    /// model's own processor does (transformers `Gemma3ImageProcessor` with Pillow,
    /// Google's reference).
    #[default]
    Squash,
    /// Keep the aspect ratio and pad with black, as llama.cpp's mtmd does
    /// (`mtmd_image_preprocessor_fixed_size`, `PAD_CEIL`).
    Letterbox,
}

/// An image to preprocess: encoded file bytes (PNG, JPEG) or an already decoded image.
#[derive(Clone, Copy, Debug)]
pub enum ImageInput<'a> {
    /// The bytes of a PNG or JPEG file.
    Bytes(&'a [u8]),
    /// A decoded image of any color type.
    Image(&'a DynamicImage),
}

impl<'a> From<&'a [u8]> for ImageInput<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        ImageInput::Bytes(bytes)
    }
}

impl<'a> From<&'a Vec<u8>> for ImageInput<'a> {
    fn from(bytes: &'a Vec<u8>) -> Self {
        ImageInput::Bytes(bytes)
    }
}

impl<'a> From<&'a DynamicImage> for ImageInput<'a> {
    fn from(image: &'a DynamicImage) -> Self {
        ImageInput::Image(image)
    }
}

/// The encoder's input for one image.
#[derive(Clone, Debug, PartialEq)]
pub struct Pixels {
    size: usize,
    rgb: RgbImage,
    chw: Vec<f32>,
}

impl Pixels {
    /// Side of the square image in pixels.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Normalized values `(u8 / 255 - mean) / std`, float32, `[3, size, size]` (CHW).
    pub fn data(&self) -> &[f32] {
        &self.chw
    }

    /// The resized (and for [`Fit::Letterbox`] padded) 8-bit image, `[size, size, 3]` (HWC).
    pub fn rgb8(&self) -> &[u8] {
        self.rgb.as_raw()
    }
}

/// Decodes (if needed), resizes and normalizes an image for the encoder described by
/// `config`. Images beyond [`crate::MAX_IMAGE_SIDE`] / [`crate::MAX_IMAGE_PIXELS`] are
/// rejected from their header, before decoding.
pub fn preprocess<'a>(
    image: impl Into<ImageInput<'a>>,
    config: &VisionConfig,
    fit: Fit,
) -> Result<Pixels, VisionError> {
    let rgb = match image.into() {
        ImageInput::Bytes(bytes) => decode_rgb8(bytes)?,
        ImageInput::Image(image) => to_rgb8(image)?,
    };
    let size = u32::try_from(config.image_size).map_err(|_| VisionError::BadConfig {
        key: "clip.vision.image_size",
        value: config.image_size as f64,
        reason: "does not fit 32 bits",
    })?;
    let square = match fit {
        Fit::Squash => resize_bilinear(rgb, size, size, PassOrder::Pillow),
        Fit::Letterbox => letterbox(rgb, size),
    };
    let chw = normalize(&square, config.image_mean, config.image_std);
    Ok(Pixels {
        size: config.image_size,
        rgb: square,
        chw,
    })
}

/// llama.cpp's pad-to-square: scale to fit (float32 arithmetic, sides rounded up and
/// capped at `size`), resize with its Pillow port (horizontal pass first), then paste
/// centered (integer division) on a black canvas.
fn letterbox(rgb: RgbImage, size: u32) -> RgbImage {
    let (w, h) = (rgb.width(), rgb.height());
    let scale = (size as f32 / w as f32).min(size as f32 / h as f32);
    let new_w = ((w as f32 * scale).ceil() as u32).clamp(1, size);
    let new_h = ((h as f32 * scale).ceil() as u32).clamp(1, size);
    let resized = resize_bilinear(rgb, new_w, new_h, PassOrder::HorizontalFirst);
    let mut canvas = RgbImage::from_pixel(size, size, Rgb([0, 0, 0]));
    image::imageops::replace(
        &mut canvas,
        &resized,
        i64::from((size - new_w) / 2),
        i64::from((size - new_h) / 2),
    );
    canvas
}

/// `(u8 / 255 - mean) / std` in float32 (llama.cpp's formula; bit-identical to
/// transformers' for the Gemma 3 mean and std), HWC bytes to CHW floats.
fn normalize(rgb: &RgbImage, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let plane = rgb.width() as usize * rgb.height() as usize;
    let mut chw = vec![0f32; 3 * plane];
    for (i, px) in rgb.as_raw().chunks_exact(3).enumerate() {
        for ch in 0..3 {
            chw[ch * plane + i] = (f32::from(px[ch]) / 255.0 - mean[ch]) / std[ch];
        }
    }
    chw
}
