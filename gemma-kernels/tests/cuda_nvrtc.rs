//! Every CUDA kernel file compiles with NVRTC, for Ampere (compute_80) and Hopper
//! (compute_90), and defines exactly the entry points the launch layer calls; on Hopper,
//! every entry point of a file launched with programmatic dependent launch
//! (`Kernel::pdl_ready`) waits for its predecessor (`griddepcontrol.wait`) and lets its
//! successor start (`griddepcontrol.launch_dependents`). Needs only
//! libnvrtc (no GPU): `scripts/setup-nvrtc.sh` installs it and prints the folder to put on
//! LD_LIBRARY_PATH. Fails, with that advice, when NVRTC cannot be loaded.
//!
//! The tuning constants a GPU run may set through GEMMA_CUDA_DEFINES compile and change the
//! code; entries that are not tuning constants are refused.
//!
//! With GEMMA_PTX_DUMP=<dir> the PTX is also written there (`<module>.<arch>.ptx`), for
//! `scripts/ptxas-report.sh` (registers and spills per kernel).

use gemma_kernels::cuda::modules::{
    compile_ptx, compile_ptx_tuned, nvrtc_available, nvrtc_version, parse_tuning_defines,
};
use gemma_kernels::cuda::{ComputeArch, Kernel};
use std::collections::BTreeSet;

fn require_nvrtc() {
    assert!(
        nvrtc_available(),
        "libnvrtc could not be loaded: run `export LD_LIBRARY_PATH=\"$(scripts/setup-nvrtc.sh):$LD_LIBRARY_PATH\"` \
         (installs PyPI nvidia-cuda-nvrtc-cu12) and rerun"
    );
}

/// Names of the `.entry` functions of a PTX module.
fn entries(ptx: &str) -> BTreeSet<String> {
    ptx.lines()
        .filter_map(|l| l.trim_start().strip_prefix(".visible .entry "))
        .map(|rest| {
            rest.split(['(', ' '])
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// Each `.entry` function of a PTX module with its text (up to the next entry).
fn entry_bodies(ptx: &str) -> Vec<(String, &str)> {
    let mut starts: Vec<(usize, String)> = ptx
        .match_indices(".visible .entry ")
        .map(|(i, m)| {
            let name = ptx[i + m.len()..]
                .split(['(', ' '])
                .next()
                .unwrap_or_default();
            (i, name.to_string())
        })
        .collect();
    starts.push((ptx.len(), String::new()));
    starts
        .windows(2)
        .map(|w| (w[0].1.clone(), &ptx[w[0].0..w[1].0]))
        .collect()
}

fn compile_all(arch: ComputeArch) {
    require_nvrtc();
    let dump = std::env::var_os("GEMMA_PTX_DUMP").map(std::path::PathBuf::from);
    for kernel in Kernel::ALL {
        let ptx = compile_ptx(kernel, arch).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            ptx.contains(&format!(".target sm_{}{}", arch.major, arch.minor)),
            "{}: wrong target",
            kernel.name()
        );
        let found = entries(&ptx);
        let listed: BTreeSet<String> = kernel.functions().iter().map(|s| s.to_string()).collect();
        assert_eq!(
            found,
            listed,
            "{}.cu entry points differ from Kernel::functions()",
            kernel.name()
        );
        if arch.major >= 9 && kernel.pdl_ready() {
            for (name, body) in entry_bodies(&ptx) {
                for op in ["griddepcontrol.wait", "griddepcontrol.launch_dependents"] {
                    assert!(
                        body.contains(op),
                        "{name}: no {op} (programmatic dependent launch)"
                    );
                }
            }
        }
        if let Some(dir) = &dump {
            std::fs::create_dir_all(dir).expect("create GEMMA_PTX_DUMP folder");
            std::fs::write(
                dir.join(format!("{}.{}.ptx", kernel.name(), arch.name())),
                &ptx,
            )
            .expect("write PTX");
        }
    }
}

#[test]
fn every_kernel_compiles_for_hopper() {
    compile_all(ComputeArch { major: 9, minor: 0 });
}

#[test]
fn every_kernel_compiles_for_ampere() {
    compile_all(ComputeArch { major: 8, minor: 0 });
}

#[test]
fn tuning_constants_compile_and_change_the_code() {
    require_nvrtc();
    let arch = ComputeArch { major: 9, minor: 0 };
    let defines = parse_tuning_defines("ATT_KEYS_IN_FLIGHT=8 ATT_WALK_AHEAD=8 MMQ_MIN_BLOCKS=2")
        .expect("valid tuning constants");
    for kernel in [Kernel::Attention, Kernel::Mmq] {
        let tuned = compile_ptx_tuned(kernel, arch, &defines).unwrap_or_else(|e| panic!("{e}"));
        let plain = compile_ptx_tuned(kernel, arch, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(
            tuned,
            plain,
            "{}: the tuning constants changed nothing",
            kernel.name()
        );
        assert_eq!(entries(&tuned), entries(&plain), "{}", kernel.name());
    }
    for bad in [
        "MMVQ_ITEMS=2",
        "ATT_WALK_AHEAD",
        "ATT_WALK_AHEAD=x",
        "ATT_WALK_AHEAD=0",
        "-DATT_WALK_AHEAD=8",
    ] {
        assert!(parse_tuning_defines(bad).is_err(), "{bad} was taken");
    }
}

#[test]
fn nvrtc_reports_a_cuda_12_or_newer_version() {
    require_nvrtc();
    let (major, _) = nvrtc_version().expect("nvrtcVersion");
    assert!(
        major >= 12,
        "NVRTC {major}.x is older than the kernels need"
    );
}
