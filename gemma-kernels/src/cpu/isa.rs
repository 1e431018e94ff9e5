//! Instruction-set detection, once per process, with an override for tests.
//!
//! `GEMMA_ISA=scalar|neon|avx2|avx512` forces a path (falling back to the best one the
//! CPU really has when the forced one is unavailable).

use std::sync::OnceLock;

/// A CPU instruction-set level with its own kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust, the reference.
    Scalar,
    /// AArch64 Advanced SIMD (+ the `dotprod` extension when present). Ordered below the
    /// x86 levels so that `>= Avx2` tests stay false on AArch64.
    Neon,
    /// x86-64 AVX2 + FMA (+ F16C).
    Avx2,
    /// x86-64 AVX-512 F/BW/VL (+ VNNI when present).
    Avx512,
}

impl Isa {
    /// The name used by `GEMMA_ISA`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Neon => "neon",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Whether this CPU can run kernels of this level.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.is_supported()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(not(target_arch = "aarch64"))]
            Isa::Neon => false,
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512 => false,
        }
    }

    /// Every level this CPU supports, scalar first (for tests that compare each path).
    pub fn available() -> Vec<Isa> {
        [Isa::Scalar, Isa::Neon, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|isa| isa.is_supported())
            .collect()
    }

    /// The best supported level.
    pub fn best() -> Isa {
        Isa::available().into_iter().max().unwrap_or(Isa::Scalar)
    }
}

/// True when this CPU has AVX-512 VNNI (`vpdpbusd`).
pub fn has_avx512_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// True when this CPU has the AArch64 `dotprod` extension (`sdot`), which the NEON
/// kernels use when present.
pub fn has_neon_dotprod() -> bool {
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("dotprod")
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        false
    }
}

/// The level kernels use in this process: `GEMMA_ISA` if set and supported, else the best.
pub fn current() -> Isa {
    static CURRENT: OnceLock<Isa> = OnceLock::new();
    *CURRENT.get_or_init(|| {
        let forced = std::env::var("GEMMA_ISA").ok();
        let wanted = match forced.as_deref() {
            Some("scalar") => Some(Isa::Scalar),
            Some("neon") => Some(Isa::Neon),
            Some("avx2") => Some(Isa::Avx2),
            Some("avx512") => Some(Isa::Avx512),
            _ => None,
        };
        match wanted {
            Some(isa) if isa.is_supported() => isa,
            _ => Isa::best(),
        }
    })
}
