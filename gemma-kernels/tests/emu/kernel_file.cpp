// One kernel file of gemma-kernels (KERNEL_FILE, e.g. "../../kernels/mmvq.cu") compiled as host
// C++ for the emulated CUDA driver (driver.cpp), each file in its own translation unit as NVRTC
// compiles each in its own module. KERNEL_TABLE names a file of EMU_KERNEL(name) lines, the
// file's entry points, which scripts/emu-cuda.sh finds in the preprocessed source.
#include "emu.h"

#include "../../kernels/common.cuh"
#include KERNEL_FILE
#undef asm

#ifdef KERNEL_TABLE
#include "registry.h"

static const emu_driver::Registrar registrar({
#define EMU_KERNEL(name) emu_driver::KernelEntry{#name, &emu_driver::bind<name>},
#include KERNEL_TABLE
#undef EMU_KERNEL
});
#endif
