// Building blocks of the CPU kernels: lane loads/stores in any dtype, the
// deterministic chunked reduction, and the label and score checks.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstring>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "../focal_loss_inputs.h"

namespace focal_plugin {
namespace cpu {

using at::vec::Vectorized;

// Rows are grouped into chunks of about this many elements: the unit of
// parallel work and of the deterministic reduction.
constexpr int64_t kChunkElements = 16384;

inline int64_t rows_per_chunk(int64_t num_classes) {
  return std::max<int64_t>(1, kChunkElements / num_classes);
}

// Loads / stores n <= Vectorized<acc_t>::size() values of scalar_t as acc_t
// lanes; half and bfloat16 are widened to float. Missing lanes read as zero.
template <typename scalar_t, typename acc_t>
struct Lanes {
  using Vec = Vectorized<acc_t>;
  // Whole vectors of half/bfloat16 convert in registers: at::vec::convert
  // would take its scalar tail loop for fewer than 2 * Vec::size() values,
  // which made the reduced-precision kernels 2.5x slower than float32.
  static Vec load(const scalar_t* p, int64_t n) {
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      return Vec::loadu(p, n);
    } else {
      if (n == Vec::size()) {
        Vec v;
        at::vec::load_to_float<scalar_t>(p, v);
        return v;
      }
      acc_t buf[Vec::size()];
      at::vec::convert(p, buf, n);
      return Vec::loadu(buf, n);
    }
  }
  static void store(const Vec& v, scalar_t* p, int64_t n) {
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      v.store(p, n);
    } else {
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
      // A whole vector of floats rounds to as many half/bfloat16 in one
      // store of half the width. (Vectorized<BFloat16>::store of half of its
      // values goes through a stack buffer and memcpy.)
      if (n == Vec::size()) {
#if defined(CPU_CAPABILITY_AVX512)
        using Packed = __m256i;
#else
        using Packed = __m128i;
#endif
        Packed packed;
        if constexpr (std::is_same_v<scalar_t, at::BFloat16>) {
          packed = at::vec::cvtfp32_bf16(v);
        } else {
          packed = at::vec::cvtfp32_fp16(v);
        }
        std::memcpy(p, &packed, sizeof(packed));
        return;
      }
#endif
      // One reduced vector holds two float vectors; the second half is unused.
      at::vec::convert_from_float<scalar_t>(v, v).store(p, n);
    }
  }
  // Sum of the lanes in double, as a fixed pairwise tree: lane k is added to
  // lane k + width for width = lanes/2, lanes/4, ..., 1, so a row costs
  // log2(lanes) dependent additions instead of one per lane. With AVX2 and
  // AVX-512 the tree runs on registers (a scalar copy of it, through a
  // stack buffer, took a quarter of a cheap row's time); every path adds
  // the same pairs in the same order, so the bits are the same.
  static double sum(const Vec& v) {
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
    return pairwise_sum(in_double(v));
#else
    acc_t lanes[Vec::size()];
    v.store(lanes);
    double buf[Vec::size()];
    for (int64_t k = 0; k < Vec::size(); ++k) buf[k] = lanes[k];
    for (int64_t width = Vec::size() / 2; width > 0; width /= 2) {
      for (int64_t k = 0; k < width; ++k) buf[k] += buf[k + width];
    }
    return buf[0];
#endif
  }

 private:
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
  // The tree's last levels: the lower half plus the upper half, down to one.
  static double pairwise_sum(__m128d v) {
    return _mm_cvtsd_f64(_mm_add_sd(v, _mm_unpackhi_pd(v, v)));
  }
  static double pairwise_sum(__m256d v) {
    return pairwise_sum(_mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1)));
  }
#endif
#if defined(CPU_CAPABILITY_AVX512)
  static double pairwise_sum(__m512d v) {
    return pairwise_sum(_mm256_add_pd(_mm512_castpd512_pd256(v), _mm512_extractf64x4_pd(v, 1)));
  }
#endif
  // The lanes in double; float lanes, twice as many, take the tree's first
  // level on the way (lane k plus lane k + lanes/2).
#if defined(CPU_CAPABILITY_AVX512)
  static __m512d in_double(const Vectorized<double>& v) { return v; }
  static __m512d in_double(const Vectorized<float>& v) {
    const __m512 f = v;
    return _mm512_add_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(f)),
                         _mm512_cvtps_pd(_mm512_extractf32x8_ps(f, 1)));
  }
#elif defined(CPU_CAPABILITY_AVX2)
  static __m256d in_double(const Vectorized<double>& v) { return v; }
  static __m256d in_double(const Vectorized<float>& v) {
    const __m256 f = v;
    return _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(f)),
                         _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1)));
  }
#endif
};

// The sum of the rows [begin, end) of one chunk. Never inlined, on purpose:
// at::parallel_for calls its body from two places (inline when serial,
// inside the OpenMP region otherwise), and GCC fuses a*b+c into FMAs
// differently in each inlined copy. One out-of-line copy of the chunk's loop
// computes the same bits whatever the thread count, and keeps the FMAs.
template <typename ChunkSum>
[[gnu::noinline]] double sum_chunk(int64_t begin, int64_t end, const ChunkSum& chunk_sum) {
  return chunk_sum(begin, end);
}

// Deterministic parallel sum over rows: rows are cut into fixed chunks,
// chunk_sum(begin, end) sums one chunk in an order that depends on its rows
// alone, and the chunk totals are added in chunk order, so the result does
// not depend on the thread count.
template <typename ChunkSum>
double chunked_sum_by_chunk(int64_t rows, int64_t chunk_rows, const ChunkSum& chunk_sum) {
  const int64_t num_chunks = (rows + chunk_rows - 1) / chunk_rows;
  std::vector<double> partial(num_chunks, 0.0);
  at::parallel_for(0, num_chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      partial[chunk] =
          sum_chunk(chunk * chunk_rows, std::min(rows, (chunk + 1) * chunk_rows), chunk_sum);
    }
  });
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

// chunked_sum_by_chunk with row_sum(i) added in row order within a chunk.
// Kernels without a reduction use it too (returning 0 per row), for the same
// single copy of their row loop.
template <typename RowSum>
double chunked_sum(int64_t rows, int64_t chunk_rows, const RowSum& row_sum) {
  return chunked_sum_by_chunk(rows, chunk_rows, [&](int64_t begin, int64_t end) {
    double total = 0;
    for (int64_t i = begin; i < end; ++i) total += row_sum(i);
    return total;
  });
}

// CPU labels and scores are validated before any arithmetic, so a bad one is
// a clear ValueError naming it, never a silent wrong loss. Labels 0..C are
// valid for the elementwise members (C: background), 0..C-1 for the row-wise.
template <typename Loss>
void check_label_targets(const Inputs& in) {
  if (!in.has_labels()) return;
  const int64_t max_label = Loss::kElementwise ? in.classes() : in.classes() - 1;
  const char* expected =
      Loss::kElementwise ? "a class index or the background label" : "a class index";
  // Each check is one branch-free pass, which the compiler vectorises; the
  // row of the first bad value is looked for only when there is one. (A
  // loop that stops at it runs element by element: a tenth of a training
  // step's kernel time for a detector's labels.)
  const int64_t* labels = in.target.data_ptr<int64_t>();
  const int64_t rows = in.rows(), ignore_index = in.ignore_index;
  const auto bad_label = [&](int64_t l) {
    return (l != ignore_index) & ((l < 0) | (l > max_label));
  };
  int any_bad = 0;
  for (int64_t i = 0; i < rows; ++i) any_bad |= bad_label(labels[i]);
  for (int64_t i = 0; any_bad && i < rows; ++i) {
    const int64_t l = labels[i];
    if (!bad_label(l)) continue;
    if (ignore_index == std::numeric_limits<int64_t>::min()) {
      TORCH_CHECK_VALUE(false, "focal_plugin.", Loss::kName, ": target holds label ", l,
                        " at row ", i, "; expected ", expected, " 0..", max_label);
    }
    TORCH_CHECK_VALUE(false, "focal_plugin.", Loss::kName, ": target holds label ", l,
                      " at row ", i, "; expected ", expected, " 0..", max_label,
                      " or ignore_index=", ignore_index);
  }
  if (!in.score) return;
  AT_DISPATCH_FLOATING_TYPES(in.score->scalar_type(), "check_scores", [&] {
    const scalar_t* score = in.score->data_ptr<scalar_t>();
    const auto bad_score = [](scalar_t s) { return !(s >= 0) | !(s <= 1); };  // NaN too
    int any_bad_score = 0;
    for (int64_t i = 0; i < rows; ++i) any_bad_score |= bad_score(score[i]);
    for (int64_t i = 0; any_bad_score && i < rows; ++i) {
      TORCH_CHECK_VALUE(!bad_score(score[i]), "focal_plugin.", Loss::kName,
                        ": score holds ", score[i], " at row ", i,
                        "; expected a value in [0, 1]");
    }
  });
}

}  // namespace cpu
}  // namespace focal_plugin
