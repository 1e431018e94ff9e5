//! Fuzz target: any bytes given as an image file must decode to RGB8 pixels of the size
//! they declare or give a typed error, never a panic, a hang or an allocation beyond
//! what the decoder's limits allow. Decoded images also go through the preprocessing of
//! the vision encoder (both fits) at a small size.

#![no_main]

use gemma_vision::{decode_rgb8, preprocess, Fit, VisionConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(rgb) = decode_rgb8(data) else {
        return;
    };
    assert_eq!(
        rgb.as_raw().len() as u64,
        u64::from(rgb.width()) * u64::from(rgb.height()) * 3
    );
    let config = VisionConfig {
        image_size: 14,
        patch_size: 14,
        hidden: 8,
        ffn_hidden: 8,
        n_layers: 1,
        n_heads: 1,
        head_dim: 8,
        norm_eps: 1e-6,
        image_mean: [0.5; 3],
        image_std: [0.5; 3],
        pool_kernel: 1,
        text_hidden: 8,
    };
    for fit in [Fit::Squash, Fit::Letterbox] {
        let pixels = preprocess(data, &config, fit).expect("decoded once, decodes again");
        assert_eq!(pixels.data().len(), 3 * 14 * 14);
    }
});
