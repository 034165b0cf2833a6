// The CPU output cache: a small cache of the large CPU outputs of the focal_plugin ops.
//
// A training step's N x C gradient (80 MB at RetinaNet shapes) is a fresh
// mmap from the system allocator on every call: the first write to each page
// faults, and with transparent huge pages the kernel may first compact memory
// to find 2 MiB pages. Both cost more than the focal-loss arithmetic itself
// (20-90 ms against 17 ms), and they grow as the machine's memory fragments.
// Reusing the memory of the previous step's gradient, once it is freed,
// removes them: the same idea as PyTorch's CUDA caching allocator, kept to
// the few buffers these ops return.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace focal_plugin {

// An uninitialised contiguous tensor, like at::empty. Outputs of at least
// kMinCachedBytes come from the cache: memory freed by an earlier output of
// these ops that no tensor uses any more, or a new 2 MiB-aligned block
// advised for transparent huge pages.
at::Tensor cpu_cache_tensor(at::IntArrayRef sizes, const at::TensorOptions& options);

// Frees every cached block. Returns the bytes released.
int64_t empty_cpu_cache();

// Bytes held by cached blocks that no tensor uses.
int64_t cpu_cache_bytes();

}  // namespace focal_plugin
