//! SigLIP image encoder and Gemma 3 multimodal projector.
