//! What the `chat`, `generate` and `bench` examples share for images: loading an
//! mmproj file for a language model and encoding image files to soft tokens, on the
//! device the example's `--device` names (the CUDA encoder for `cuda[:N]`).

use gemma_core::{CoreError, Device};
use gemma_kernels::cuda::CudaError;
use gemma_vision::{Fit, VisionError, VisionModel};
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

/// Loads the mmproj file at `path`, to encode images on `device` (the example's
/// `--device`): CUDA device N for `cuda[:N]`, whose weights are uploaded by the first
/// encode (a machine without CUDA fails at the language model's load first, with its
/// one-line error), the CPU otherwise.
pub fn load_vision(path: &Path, device: Device) -> Result<VisionModel, String> {
    let mut vision =
        VisionModel::load(path).map_err(|e| format!("cannot load {}: {e}", path.display()))?;
    if let Device::Cuda(ordinal) = device {
        vision.set_cuda_device(Some(ordinal));
    }
    Ok(vision)
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
        .map_err(|e| encode_error(vision, path, e))?;
    Ok((tokens, start.elapsed()))
}

/// An encode error as one line. A GPU that cannot be opened (no driver, device or NVRTC)
/// reads exactly as the language model's `--device cuda` error on that machine, whichever
/// of the two meets it first.
fn encode_error(vision: &VisionModel, path: &Path, e: VisionError) -> String {
    match (vision.cuda_device(), &e) {
        (
            Some(ordinal),
            VisionError::Cuda(
                cause @ (CudaError::Unavailable { .. }
                | CudaError::NvrtcMissing
                | CudaError::UnsupportedArch { .. }),
            ),
        ) => CoreError::DeviceUnavailable {
            device: format!("cuda:{ordinal} ({cause})"),
            reason: "see the message in parentheses",
        }
        .to_string(),
        _ => format!("{}: {e}", path.display()),
    }
}
