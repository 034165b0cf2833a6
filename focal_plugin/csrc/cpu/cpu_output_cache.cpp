// See cpu_output_cache.h.
#include "cpu_output_cache.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>
#include <c10/util/accumulate.h>
#include <torch/library.h>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

#include <cstdint>
#include <deque>
#include <mutex>

namespace focal_plugin {
namespace {

// Smaller outputs are left to the system allocator: their page faults cost
// little (about 0.1 ms per MiB), and caching them would pin memory.
constexpr size_t kMinCachedBytes = size_t(1) << 20;
// Blocks start on a transparent huge page and are whole 4 KiB pages long.
constexpr size_t kHugePage = size_t(2) << 20;
constexpr size_t kPage = size_t(4) << 10;
// Freed blocks kept for reuse: a training step holds one gradient per loss
// call until backward; a few losses per step is the common case.
constexpr size_t kMaxCachedBlocks = 4;

struct Block {
  void* data;
  size_t capacity;
};

void* allocate_block(size_t capacity) {
#if defined(__linux__)
  // A mapping of its own, starting on a huge-page boundary: the block's
  // resident memory is then its own pages, whatever state the heap is in
  // (from glibc's heap, a block shares partly used transparent huge pages
  // with its neighbours: up to 4 MiB more, depending on earlier allocations).
  const size_t span = capacity + kHugePage;
  void* mapped = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  TORCH_CHECK(mapped != MAP_FAILED, "focal_plugin: out of memory allocating ", capacity,
              " bytes for an output");
  static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto round_up = [](uintptr_t x, uintptr_t unit) { return (x + unit - 1) / unit * unit; };
  const uintptr_t start = reinterpret_cast<uintptr_t>(mapped);
  const uintptr_t aligned = round_up(start, kHugePage);
  const uintptr_t end = round_up(aligned + capacity, page);
  if (aligned > start) munmap(mapped, aligned - start);
  if (start + span > end) munmap(reinterpret_cast<void*>(end), start + span - end);
  void* data = reinterpret_cast<void*>(aligned);
#if defined(MADV_HUGEPAGE)
  // A hint only: 512x fewer page faults on the first write; errors are ignored.
  // The tail short of a whole huge page stays in small pages: a huge page
  // there would add up to 2 MiB of resident memory nobody writes.
  const size_t huge_bytes = capacity / kHugePage * kHugePage;
  if (huge_bytes > 0) madvise(data, huge_bytes, MADV_HUGEPAGE);
#endif
  return data;
#else
  return c10::alloc_cpu(capacity);
#endif
}

void free_block(const Block& block) {
#if defined(__linux__)
  munmap(block.data, block.capacity);
#else
  c10::free_cpu(block.data);
#endif
}

class OutputBufferCache {
 public:
  // A block of at least `nbytes`: the smallest cached one no more than twice
  // that size (a small output must not pin a large block), else a new one.
  Block acquire(size_t nbytes) {
    const size_t capacity = (nbytes + kPage - 1) / kPage * kPage;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto best = free_.end();
      for (auto it = free_.begin(); it != free_.end(); ++it) {
        if (it->capacity >= capacity && it->capacity <= 2 * capacity &&
            (best == free_.end() || it->capacity < best->capacity)) {
          best = it;
        }
      }
      if (best != free_.end()) {
        const Block block = *best;
        free_.erase(best);
        return block;
      }
    }
    return Block{allocate_block(capacity), capacity};
  }

  // Called when the last tensor using the block is destroyed, from any thread.
  void release(Block block) {
    Block evicted{nullptr, 0};
    {
      std::lock_guard<std::mutex> lock(mutex_);
      free_.push_back(block);
      if (free_.size() > kMaxCachedBlocks) {  // the least recently freed goes
        evicted = free_.front();
        free_.pop_front();
      }
    }
    if (evicted.data != nullptr) free_block(evicted);
  }

  int64_t clear() {
    std::deque<Block> blocks;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      blocks.swap(free_);
    }
    int64_t released = 0;
    for (const Block& block : blocks) {
      released += static_cast<int64_t>(block.capacity);
      free_block(block);
    }
    return released;
  }

  int64_t cached_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    int64_t total = 0;
    for (const Block& block : free_) total += static_cast<int64_t>(block.capacity);
    return total;
  }

 private:
  std::mutex mutex_;
  std::deque<Block> free_;
};

// Never destroyed: tensors freed during interpreter shutdown still return
// their blocks to it after static destructors would have run.
OutputBufferCache& cache() {
  static auto* instance = new OutputBufferCache();
  return *instance;
}

void release_block(void* context) {
  auto* block = static_cast<Block*>(context);
  cache().release(*block);
  delete block;
}

}  // namespace

at::Tensor cpu_cache_tensor(at::IntArrayRef sizes, const at::TensorOptions& options) {
  TORCH_INTERNAL_ASSERT(options.device().is_cpu());
  const size_t nbytes = static_cast<size_t>(c10::multiply_integers(sizes)) *
                        c10::elementSize(options.dtype().toScalarType());
  if (nbytes < kMinCachedBytes) return at::empty(sizes, options);
  auto* block = new Block(cache().acquire(nbytes));
  // Resizable like at::empty's storage: growing it moves the data to memory
  // from the CPU allocator and gives the block back to the cache.
  return at::for_blob(block->data, sizes)
      .context(block, release_block)
      .options(options)
      .resizeable_storage()
      .allocator(c10::GetCPUAllocator())
      .make_tensor();
}

int64_t empty_cpu_cache() { return cache().clear(); }

int64_t cpu_cache_bytes() { return cache().cached_bytes(); }

TORCH_LIBRARY_FRAGMENT(focal_plugin, m) {
  // Frees the CPU output blocks kept for reuse (see cpu_output_cache.h);
  // returns the bytes released. The CPU counterpart of torch.cuda.empty_cache.
  m.def("empty_cpu_cache() -> int", &empty_cpu_cache);
  m.def("cpu_cache_bytes() -> int", &cpu_cache_bytes);
}

}  // namespace focal_plugin
