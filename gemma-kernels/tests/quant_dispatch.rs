//! `quant::{dequantize, quantize, is_supported}`: typed errors for unsupported types and
//! wrong lengths, and identical results on misaligned byte slices (a GGUF tensor may
//! start at an odd offset).

mod quant_common;

use gemma_gguf::GgmlType;
use gemma_kernels::quant;
use gemma_kernels::KernelError;
use quant_common::{Rng, TYPES};

#[test]
fn supported_types_are_the_implemented_ones() {
    for ty in TYPES
        .into_iter()
        .chain([GgmlType::F32, GgmlType::Q8_1, GgmlType::Q8_K])
    {
        assert!(quant::is_supported(ty), "{ty}");
    }
    for ty in [GgmlType::IQ2_XXS, GgmlType::I32, GgmlType::MXFP4] {
        assert!(!quant::is_supported(ty), "{ty}");
        assert_eq!(
            quant::dequantize(ty, &[], &mut []),
            Err(KernelError::UnsupportedType(ty))
        );
        assert_eq!(
            quant::quantize(ty, &[], &mut []),
            Err(KernelError::UnsupportedType(ty))
        );
    }
}

#[test]
fn wrong_lengths_are_errors() {
    let ty = GgmlType::Q4_0;
    let bytes = vec![0u8; 18 * 2];
    let err = quant::dequantize(ty, &bytes[..35], &mut [0.0; 64]).unwrap_err();
    assert!(
        matches!(
            err,
            KernelError::PartialBlock {
                ty: GgmlType::Q4_0,
                len: 35,
                ..
            }
        ),
        "{err}"
    );
    let err = quant::dequantize(ty, &bytes, &mut [0.0; 63]).unwrap_err();
    assert_eq!(
        err,
        KernelError::Length {
            what: "dequantize output",
            expected: 64,
            found: 63
        }
    );
    let err = quant::quantize(ty, &[0.0; 33], &mut [0u8; 18]).unwrap_err();
    assert!(
        matches!(
            err,
            KernelError::PartialBlock {
                len: 33,
                block: 32,
                ..
            }
        ),
        "{err}"
    );
    let err = quant::quantize(ty, &[0.0; 64], &mut [0u8; 35]).unwrap_err();
    assert_eq!(
        err,
        KernelError::Length {
            what: "quantize output",
            expected: 36,
            found: 35
        }
    );
    let err = quant::quantize(GgmlType::Q8_K, &[0.0; 256], &mut [0u8; 291]).unwrap_err();
    assert_eq!(
        err,
        KernelError::Length {
            what: "quantize output",
            expected: 292,
            found: 291
        }
    );
}

#[test]
fn misaligned_slices_give_the_same_results() {
    let mut rng = Rng::new(3);
    let x = rng.hard_row(4 * 256, 32);
    for ty in TYPES
        .into_iter()
        .chain([GgmlType::F32, GgmlType::Q8_1, GgmlType::Q8_K])
    {
        let n_bytes = ty.row_bytes(x.len() as u64).expect("whole blocks") as usize;
        let mut aligned = vec![0u8; n_bytes];
        quant::quantize(ty, &x, &mut aligned).expect("quantize");
        let mut shifted = vec![0u8; n_bytes + 1];
        quant::quantize(ty, &x, &mut shifted[1..]).expect("quantize misaligned");
        assert_eq!(&shifted[1..], &aligned[..], "{ty}");

        let mut want = vec![0.0f32; x.len()];
        quant::dequantize(ty, &aligned, &mut want).expect("dequantize");
        let mut got = vec![0.0f32; x.len()];
        quant::dequantize(ty, &shifted[1..], &mut got).expect("dequantize misaligned");
        assert_eq!(
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{ty}"
        );
    }
}
