// The kernels of the emulated CUDA driver (driver.cpp): each kernel file's translation unit
// (kernel_file.cpp) registers its entry points by name, with a binder that copies a launch's
// parameters (cuLaunchKernel's void **, one pointer per parameter) into typed values.
#pragma once

#include <functional>
#include <initializer_list>
#include <tuple>
#include <type_traits>
#include <utility>

namespace emu_driver {

// One launch's kernel call with its arguments bound: run by every thread of every block.
using BoundKernel = std::function<void()>;
// Makes the BoundKernel of one kernel from a launch's parameter pointers.
using Binder = BoundKernel (*)(void **params);

struct KernelEntry {
    const char *name;
    Binder bind;
};

// Adds kernels to the table cuModuleGetFunction looks names up in.
void register_kernels(std::initializer_list<KernelEntry> entries);

template <class... A> BoundKernel bind_args(void (*f)(A...), void **params) {
    return [&]<size_t... I>(std::index_sequence<I...>) {
        std::tuple<std::decay_t<A>...> args{*static_cast<std::decay_t<A> *>(params[I])...};
        return BoundKernel([f, args] { std::apply(f, args); });
    }(std::index_sequence_for<A...>{});
}

template <auto F> BoundKernel bind(void **params) { return bind_args(F, params); }

// Registers a translation unit's kernels when the library is loaded.
struct Registrar {
    Registrar(std::initializer_list<KernelEntry> entries) { register_kernels(entries); }
};

}  // namespace emu_driver
