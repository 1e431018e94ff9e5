//! What the `chat`, `generate` and `bench` examples share for images: loading an
//! mmproj file for a language model and encoding image files to soft tokens.

use gemma_vision::{Fit, VisionModel};
use std::path::Path;
use std::time::{Duration, Instant};

/// `--image-fit`: how a non-square image becomes the encoder's square.
#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub enum FitArg {
    /// Stretch to the square (the model's own processor).
    #[default]
    Squash,
    /// Keep the aspect ratio and pad with black (llama.cpp).
    Letterbox,
}

impl From<FitArg> for Fit {
    fn from(fit: FitArg) -> Fit {
        match fit {
            FitArg::Squash => Fit::Squash,
            FitArg::Letterbox => Fit::Letterbox,
        }
    }
}

/// Loads the mmproj file at `path`.
pub fn load_vision(path: &Path) -> Result<VisionModel, String> {
    VisionModel::load(path).map_err(|e| format!("cannot load {}: {e}", path.display()))
}

/// Checks that the projection of `vision` (loaded from `path`) matches the text model's
/// hidden size `hidden`.
pub fn check_hidden(vision: &VisionModel, path: &Path, hidden: usize) -> Result<(), String> {
    if vision.text_hidden() != hidden {
        return Err(format!(
            "{} projects to hidden size {}, the model's is {hidden}",
            path.display(),
            vision.text_hidden()
        ));
    }
    Ok(())
}

/// Reads, preprocesses and encodes the image file at `path`: the soft tokens
/// (`n_image_tokens × text_hidden` values) and the time preprocessing and encoding took.
pub fn encode_image(
    vision: &VisionModel,
    path: &Path,
    fit: Fit,
) -> Result<(Vec<f32>, Duration), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let start = Instant::now();
    let pixels = vision
        .preprocess(&bytes, fit)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let tokens = vision
        .encode(&pixels)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((tokens, start.elapsed()))
}
