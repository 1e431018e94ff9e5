// An emulated CUDA driver: a libcuda.so with the part of the driver API that gemma-kernels uses
// (through cudarc), whose kernels are gemma-kernels' own .cu files compiled as host C++ and run
// under the SIMT emulation of emu.h. With it first on LD_LIBRARY_PATH (scripts/emu-cuda.sh
// builds it), the real CUDA backend — its buffers, launches, fusions, graphs and the tests that
// need a GPU — runs unchanged on a machine without one, slowly.
//
// What it is:
// - One device: "gemma-rs CUDA emulator", compute capability 9.0 and 132 SMs as an H100/H200
//   (GEMMA_EMU_SMS overrides the count; launch shapes depend on it), 16 GiB (GEMMA_EMU_MEM_MIB
//   overrides it: allocations past it fail with CUDA_ERROR_OUT_OF_MEMORY).
// - Device memory is host memory. An allocation starts filled with 0xFF bytes (NaN floats), as
//   device memory starts with whatever it held; an __ldg outside every live allocation stops the
//   program with a message (emu.h), and so does a launch that wrote into the guard bytes around
//   an allocation (checked after every launch); a copy or memset outside one allocation fails
//   with CUDA_ERROR_INVALID_VALUE. Streams are synchronous: a launch or copy is done when its
//   call returns, and events time host work.
// - cuModuleLoadData ignores the PTX NVRTC made; cuModuleGetFunction finds the kernel by name
//   among the entry points of every kernel file (registry.h). Launches run one at a time (a
//   process-wide lock), blocks one after the other, under the schedule GEMMA_EMU_SCHEDULE
//   (warp-greedy, the default, or random) seeded by GEMMA_EMU_SEED. GEMMA_EMU_LOG_LAUNCHES=1
//   prints a line per kernel run to stderr (name, grid, block): a decode step's launches.
// - Stream capture records launches, copies and memsets; a graph replays them in order.
//
// What it is not: any notion of time, concurrency between blocks or kernels (programmatic
// dependent launch is accepted and serialises), 2-D or 3-D thread blocks, blocks of a size that
// is not a multiple of 32 (both refused with an error), dynamic shared memory,
// memory pools, unified or pinned memory, more than one device or context.

#include "emu.h"
#include "registry.h"

#include <chrono>
#include <map>
#include <mutex>
#include <string>

namespace {

using CUresult = int;
constexpr CUresult SUCCESS = 0, INVALID_VALUE = 1, OUT_OF_MEMORY = 2, NOT_INITIALIZED = 3,
                   INVALID_DEVICE = 101, INVALID_HANDLE = 400, NOT_FOUND = 500,
                   NOT_SUPPORTED = 801;

using Op = std::function<void()>;

std::recursive_mutex &lock() {
    static std::recursive_mutex m;
    return m;
}

std::map<std::string, emu_driver::Binder> &kernel_table() {
    static std::map<std::string, emu_driver::Binder> table;
    return table;
}

// A live allocation: [start, end) between GUARD bytes of GUARD_BYTE on each side.
struct Allocation {
    uintptr_t end;
    uint8_t *base;  // what aligned_alloc returned: the leading guard
};
constexpr size_t GUARD = 256;
constexpr uint8_t GUARD_BYTE = 0xA5;
std::map<uintptr_t, Allocation> allocations;  // by start
size_t allocated_bytes = 0;

int env_int(const char *name, int fallback) {
    const char *v = std::getenv(name);
    return v && *v ? std::atoi(v) : fallback;
}

// The device's memory: 16 GiB, or GEMMA_EMU_MEM_MIB.
size_t total_bytes() {
    static const size_t total = size_t(env_int("GEMMA_EMU_MEM_MIB", 16 << 10)) << 20;
    return total;
}

bool is_readable(uintptr_t start, size_t n) {
    auto it = allocations.upper_bound(start);
    if (it == allocations.begin()) return false;
    --it;
    return start + n <= it->second.end;
}

// Whether a copy or memset of n bytes at p stays in one allocation.
bool in_allocation(uint64_t p, size_t n) { return n == 0 || is_readable((uintptr_t) p, n); }

// Stops the program when `kernel` wrote into the guard bytes of an allocation.
void check_guards(const std::string &kernel) {
    static const std::vector<uint8_t> clean(GUARD, GUARD_BYTE);
    for (const auto &[start, a] : allocations) {
        const bool before = std::memcmp(a.base, clean.data(), GUARD) != 0;
        const bool after = std::memcmp((const void *) a.end, clean.data(), GUARD) != 0;
        if (!before && !after) continue;
        std::fprintf(stderr, "EMU ERROR: %s wrote %s the %zu-byte allocation at %#lx\n", kernel.c_str(),
                     before ? "before" : "past the end of", (size_t) (a.end - start), (unsigned long) start);
        std::exit(3);
    }
}

struct Stream {
    bool capturing = false;
    std::vector<Op> captured;
};

struct Graph {
    std::vector<Op> ops;
};

struct Function {
    std::string name;
    emu_driver::Binder bind;
};

Stream default_stream;
bool initialized = false;
int context_token = 0, module_token = 0;

Stream *stream_of(void *s) { return s ? static_cast<Stream *>(s) : &default_stream; }

// Runs `op` now, or records it when `stream` is being captured.
CUresult enqueue(void *stream, Op op) {
    Stream *st = stream_of(stream);
    if (st->capturing) st->captured.push_back(std::move(op));
    else op();
    return SUCCESS;
}

CUresult launch(Function *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                unsigned shared, void *stream, void **params, void **extra) {
    if (!f || !params || extra) return INVALID_VALUE;
    if (gz != 1 || by != 1 || bz != 1 || shared != 0) {
        std::fprintf(stderr, "emulated CUDA: %s launched with a 3-D grid, a 2-D block or dynamic shared memory "
                             "(not emulated)\n", f->name.c_str());
        return NOT_SUPPORTED;
    }
    if (bx == 0 || bx % 32 != 0 || bx > (unsigned) emu::MAX_THREADS || gx == 0 || gy == 0) return INVALID_VALUE;
    emu_driver::BoundKernel body = f->bind(params);
    return enqueue(stream, [body = std::move(body), name = f->name, gx, gy, bx] {
        static const bool random = [] {
            const char *s = std::getenv("GEMMA_EMU_SCHEDULE");
            return s && std::string(s) == "random";
        }();
        static bool seeded = false;
        if (!seeded) {
            emu::B.rng.seed((uint64_t) env_int("GEMMA_EMU_SEED", 1));
            seeded = true;
        }
        emu::B.schedule = random ? emu::Schedule::Random : emu::Schedule::WarpGreedy;
        static const bool log = env_int("GEMMA_EMU_LOG_LAUNCHES", 0) == 1;
        if (log) std::fprintf(stderr, "emu launch %s grid %u x %u block %u\n", name.c_str(), gx, gy, bx);
        emu::launch(gx, gy, bx, body, emu::BlockOrder::BySchedule);
        check_guards(name);
    });
}

}  // namespace

void emu_driver::register_kernels(std::initializer_list<KernelEntry> entries) {
    for (const KernelEntry &e : entries) kernel_table()[e.name] = e.bind;
}

#define API extern "C" __attribute__((visibility("default")))
#define LOCKED std::lock_guard<std::recursive_mutex> guard(lock())

struct CUlaunchConfig {
    unsigned gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes;
    void *hStream;
    void *attrs;
    unsigned numAttrs;
};

// ---- initialisation, device, context

API CUresult cuInit(unsigned) {
    LOCKED;
    initialized = true;
    emu::is_readable = is_readable;
    return SUCCESS;
}

API CUresult cuDriverGetVersion(int *v) {
    if (!v) return INVALID_VALUE;
    *v = 12080;
    return SUCCESS;
}

API CUresult cuDeviceGetCount(int *n) {
    if (!n) return INVALID_VALUE;
    *n = 1;
    return initialized ? SUCCESS : NOT_INITIALIZED;
}

API CUresult cuDeviceGet(int *dev, int ordinal) {
    if (!dev) return INVALID_VALUE;
    if (ordinal != 0) return INVALID_DEVICE;
    *dev = 0;
    return SUCCESS;
}

API CUresult cuDeviceGetName(char *name, int len, int dev) {
    if (!name || len <= 0 || dev != 0) return INVALID_VALUE;
    std::snprintf(name, (size_t) len, "gemma-rs CUDA emulator (CPU)");
    return SUCCESS;
}

API CUresult cuDeviceTotalMem_v2(size_t *bytes, int dev) {
    if (!bytes || dev != 0) return INVALID_VALUE;
    *bytes = total_bytes();
    return SUCCESS;
}

API CUresult cuDeviceGetAttribute(int *v, int attr, int dev) {
    if (!v || dev != 0) return INVALID_VALUE;
    switch (attr) {
        case 1: *v = 1024; break;                            // max threads per block
        case 10: *v = 32; break;                             // warp size
        case 16: *v = env_int("GEMMA_EMU_SMS", 132); break;  // multiprocessors
        case 8: case 81: *v = 48 * 1024; break;              // shared memory per block / per SM
        case 97: *v = 227 * 1024; break;                     // opt-in shared memory per block
        case 75: *v = 9; break;                              // compute capability
        case 76: *v = 0; break;
        default: *v = 0;  // memory pools, managed memory, ...: not supported
    }
    return SUCCESS;
}

API CUresult cuDevicePrimaryCtxRetain(void **ctx, int dev) {
    if (!ctx || dev != 0) return INVALID_VALUE;
    *ctx = &context_token;
    return SUCCESS;
}

API CUresult cuDevicePrimaryCtxRelease_v2(int) { return SUCCESS; }
API CUresult cuCtxSetCurrent(void *) { return SUCCESS; }

API CUresult cuCtxGetCurrent(void **ctx) {
    if (!ctx) return INVALID_VALUE;
    *ctx = &context_token;
    return SUCCESS;
}

API CUresult cuCtxSynchronize() { return SUCCESS; }

API CUresult cuGetErrorName(CUresult e, const char **s) {
    if (!s) return INVALID_VALUE;
    switch (e) {
        case SUCCESS: *s = "CUDA_SUCCESS"; break;
        case INVALID_VALUE: *s = "CUDA_ERROR_INVALID_VALUE"; break;
        case OUT_OF_MEMORY: *s = "CUDA_ERROR_OUT_OF_MEMORY"; break;
        case NOT_INITIALIZED: *s = "CUDA_ERROR_NOT_INITIALIZED"; break;
        case INVALID_DEVICE: *s = "CUDA_ERROR_INVALID_DEVICE"; break;
        case INVALID_HANDLE: *s = "CUDA_ERROR_INVALID_HANDLE"; break;
        case NOT_FOUND: *s = "CUDA_ERROR_NOT_FOUND"; break;
        case NOT_SUPPORTED: *s = "CUDA_ERROR_NOT_SUPPORTED"; break;
        default: *s = "CUDA_ERROR_UNKNOWN";
    }
    return SUCCESS;
}

API CUresult cuGetErrorString(CUresult e, const char **s) { return cuGetErrorName(e, s); }

// ---- memory

API CUresult cuMemAlloc_v2(uint64_t *ptr, size_t bytes) {
    LOCKED;
    if (!ptr) return INVALID_VALUE;
    if (bytes == 0 || allocated_bytes + bytes > total_bytes()) return OUT_OF_MEMORY;
    auto *base = static_cast<uint8_t *>(std::aligned_alloc(256, GUARD + (bytes + GUARD + 255) / 256 * 256));
    if (!base) return OUT_OF_MEMORY;
    uint8_t *p = base + GUARD;
    std::memset(base, GUARD_BYTE, GUARD);
    std::memset(p, 0xFF, bytes);
    std::memset(p + bytes, GUARD_BYTE, GUARD);
    allocations[(uintptr_t) p] = Allocation{(uintptr_t) p + bytes, base};
    allocated_bytes += bytes;
    *ptr = (uint64_t) (uintptr_t) p;
    return SUCCESS;
}

API CUresult cuMemFree_v2(uint64_t ptr) {
    LOCKED;
    auto it = allocations.find((uintptr_t) ptr);
    if (it == allocations.end()) return INVALID_VALUE;
    allocated_bytes -= it->second.end - it->first;
    std::free(it->second.base);
    allocations.erase(it);
    return SUCCESS;
}

API CUresult cuMemFreeAsync(uint64_t ptr, void *) { return cuMemFree_v2(ptr); }

API CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total) {
    LOCKED;
    if (!free_bytes || !total) return INVALID_VALUE;
    *total = total_bytes();
    *free_bytes = total_bytes() - allocated_bytes;
    return SUCCESS;
}

API CUresult cuMemcpyHtoDAsync_v2(uint64_t dst, const void *src, size_t n, void *stream) {
    LOCKED;
    if (!in_allocation(dst, n)) return INVALID_VALUE;
    return enqueue(stream, [=] { std::memcpy((void *) (uintptr_t) dst, src, n); });
}

API CUresult cuMemcpyDtoHAsync_v2(void *dst, uint64_t src, size_t n, void *stream) {
    LOCKED;
    if (!in_allocation(src, n)) return INVALID_VALUE;
    return enqueue(stream, [=] { std::memcpy(dst, (const void *) (uintptr_t) src, n); });
}

API CUresult cuMemcpyDtoDAsync_v2(uint64_t dst, uint64_t src, size_t n, void *stream) {
    LOCKED;
    if (!in_allocation(dst, n) || !in_allocation(src, n)) return INVALID_VALUE;
    return enqueue(stream, [=] { std::memmove((void *) (uintptr_t) dst, (const void *) (uintptr_t) src, n); });
}

API CUresult cuMemcpyHtoD_v2(uint64_t dst, const void *src, size_t n) { return cuMemcpyHtoDAsync_v2(dst, src, n, nullptr); }
API CUresult cuMemcpyDtoH_v2(void *dst, uint64_t src, size_t n) { return cuMemcpyDtoHAsync_v2(dst, src, n, nullptr); }
API CUresult cuMemcpyDtoD_v2(uint64_t dst, uint64_t src, size_t n) { return cuMemcpyDtoDAsync_v2(dst, src, n, nullptr); }

API CUresult cuMemsetD8Async(uint64_t dst, unsigned char v, size_t n, void *stream) {
    LOCKED;
    if (!in_allocation(dst, n)) return INVALID_VALUE;
    return enqueue(stream, [=] { std::memset((void *) (uintptr_t) dst, v, n); });
}

API CUresult cuMemsetD8_v2(uint64_t dst, unsigned char v, size_t n) { return cuMemsetD8Async(dst, v, n, nullptr); }

// ---- streams and events

API CUresult cuStreamCreate(void **stream, unsigned) {
    if (!stream) return INVALID_VALUE;
    *stream = new Stream;
    return SUCCESS;
}

API CUresult cuStreamCreateWithPriority(void **stream, unsigned flags, int) { return cuStreamCreate(stream, flags); }

API CUresult cuStreamDestroy_v2(void *stream) {
    LOCKED;
    if (stream) delete static_cast<Stream *>(stream);
    return SUCCESS;
}

API CUresult cuStreamSynchronize(void *) { return SUCCESS; }
API CUresult cuStreamWaitEvent(void *, void *, unsigned) { return SUCCESS; }

API CUresult cuEventCreate(void **event, unsigned) {
    if (!event) return INVALID_VALUE;
    *event = new std::chrono::steady_clock::time_point(std::chrono::steady_clock::now());
    return SUCCESS;
}

API CUresult cuEventRecord(void *event, void *stream) {
    LOCKED;
    if (!event) return INVALID_HANDLE;
    auto *t = static_cast<std::chrono::steady_clock::time_point *>(event);
    return enqueue(stream, [t] { *t = std::chrono::steady_clock::now(); });
}

API CUresult cuEventSynchronize(void *) { return SUCCESS; }
API CUresult cuEventQuery(void *) { return SUCCESS; }

API CUresult cuEventElapsedTime(float *ms, void *start, void *end) {
    if (!ms || !start || !end) return INVALID_VALUE;
    const auto d = *static_cast<std::chrono::steady_clock::time_point *>(end) -
                   *static_cast<std::chrono::steady_clock::time_point *>(start);
    *ms = std::chrono::duration<float, std::milli>(d).count();
    return SUCCESS;
}

API CUresult cuEventElapsedTime_v2(float *ms, void *start, void *end) { return cuEventElapsedTime(ms, start, end); }

API CUresult cuEventDestroy_v2(void *event) {
    delete static_cast<std::chrono::steady_clock::time_point *>(event);
    return SUCCESS;
}

// ---- modules and launches

API CUresult cuModuleLoadData(void **module, const void *) {
    if (!module) return INVALID_VALUE;
    *module = &module_token;
    return SUCCESS;
}

API CUresult cuModuleUnload(void *) { return SUCCESS; }

API CUresult cuModuleGetFunction(void **f, void *, const char *name) {
    LOCKED;
    if (!f || !name) return INVALID_VALUE;
    auto it = kernel_table().find(name);
    if (it == kernel_table().end()) return NOT_FOUND;
    static std::map<std::string, Function> functions;
    Function &fn = functions[name];
    fn = Function{name, it->second};
    *f = &fn;
    return SUCCESS;
}

API CUresult cuFuncGetAttribute(int *v, int, void *) {
    if (!v) return INVALID_VALUE;
    *v = 0;
    return SUCCESS;
}

API CUresult cuFuncSetAttribute(void *, int, int) { return SUCCESS; }
API CUresult cuFuncSetCacheConfig(void *, int) { return SUCCESS; }

API CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                            unsigned shared, void *stream, void **params, void **extra) {
    LOCKED;
    return launch(static_cast<Function *>(f), gx, gy, gz, bx, by, bz, shared, stream, params, extra);
}

API CUresult cuLaunchKernelEx(const CUlaunchConfig *c, void *f, void **params, void **extra) {
    LOCKED;
    if (!c) return INVALID_VALUE;
    return launch(static_cast<Function *>(f), c->gridDimX, c->gridDimY, c->gridDimZ, c->blockDimX, c->blockDimY,
                  c->blockDimZ, c->sharedMemBytes, c->hStream, params, extra);
}

// ---- stream capture and graphs

API CUresult cuStreamBeginCapture_v2(void *stream, int) {
    LOCKED;
    Stream *st = stream_of(stream);
    if (st->capturing) return INVALID_VALUE;
    st->capturing = true;
    st->captured.clear();
    return SUCCESS;
}

API CUresult cuStreamIsCapturing(void *stream, int *status) {
    LOCKED;
    if (!status) return INVALID_VALUE;
    *status = stream_of(stream)->capturing ? 1 : 0;
    return SUCCESS;
}

API CUresult cuStreamEndCapture(void *stream, void **graph) {
    LOCKED;
    Stream *st = stream_of(stream);
    if (!graph || !st->capturing) return INVALID_VALUE;
    st->capturing = false;
    *graph = st->captured.empty() ? nullptr : new Graph{std::move(st->captured)};
    st->captured.clear();
    return SUCCESS;
}

API CUresult cuGraphInstantiateWithFlags(void **exec, void *graph, unsigned long long) {
    if (!exec || !graph) return INVALID_VALUE;
    *exec = new Graph(*static_cast<Graph *>(graph));
    return SUCCESS;
}

API CUresult cuGraphLaunch(void *exec, void *stream) {
    LOCKED;
    if (!exec) return INVALID_HANDLE;
    for (const Op &op : static_cast<Graph *>(exec)->ops) enqueue(stream, op);
    return SUCCESS;
}

API CUresult cuGraphUpload(void *, void *) { return SUCCESS; }

API CUresult cuGraphExecDestroy(void *exec) {
    delete static_cast<Graph *>(exec);
    return SUCCESS;
}

API CUresult cuGraphDestroy(void *graph) {
    delete static_cast<Graph *>(graph);
    return SUCCESS;
}
