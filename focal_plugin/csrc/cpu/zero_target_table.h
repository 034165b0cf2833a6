// Lookup tables for half-precision inputs, where the target is 0.
//
// A float16 or bfloat16 logit is one of 65536 bit patterns. Where an
// element's target is 0 (every column but the label's with class labels, and
// most of a detector's soft targets) and no per-class alpha is given, the
// loss and gradient of every elementwise member depend on the logit alone,
// times the element's weight. The kernel then evaluates the member's functor
// once per bit pattern, with the same vector code and parameters as the
// elements themselves, and looks each element's values up: a load per element
// instead of an exp, a log1p and the divisions. Tabulating costs 65536
// evaluations, so only calls with at least kTableMinElements elements do it.
#pragma once

#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>
#if defined(__SSE__) || defined(_M_X64)
#include <xmmintrin.h>
#endif

#include "../focal_loss_args.h"
#include "cpu_kernel_utils.h"
#include "vectorized_ops.h"

namespace focal_plugin {
namespace cpu {

constexpr int64_t kTableEntries = int64_t(1) << 16;
constexpr int64_t kTableMinElements = 16 * kTableEntries;

template <typename scalar_t>
constexpr bool kTabulatedInput =
    std::is_same_v<scalar_t, at::Half> || std::is_same_v<scalar_t, at::BFloat16>;

// Table lookups. Each entry is read with a scalar load and the vector is
// assembled in registers: on an AMD Zen 5 core that is 1.5x (64-bit entries)
// to 1.7x (32-bit) faster than AVX-512's gather instructions, which cost
// about a cycle per element there (more on Intel cores with the Gather Data
// Sampling microcode mitigation). The index is the logit's 16-bit pattern.
template <typename scalar_t>
inline int64_t table_index(const scalar_t& value) {
  static_assert(sizeof(scalar_t) == 2, "16-bit inputs only");
  return value.x;
}

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
// The entries of the values at p that fill 128 bits: four 32-bit entries
// (one float each) or two 64-bit entries (two floats each).
template <typename Entry, typename scalar_t>
inline __m128i entries_128(const float* table, const scalar_t* p) {
  constexpr int64_t kFloats = sizeof(Entry) / sizeof(float);
  const auto entry = [&](int64_t k) {
    Entry e;
    std::memcpy(&e, table + kFloats * table_index(p[k]), sizeof(e));
    return e;
  };
  if constexpr (sizeof(Entry) == 8) {
    return _mm_insert_epi64(_mm_cvtsi64_si128(entry(0)), entry(1), 1);
  } else {
    static_assert(sizeof(Entry) == 4, "32- or 64-bit entries");
    __m128i v = _mm_cvtsi32_si128(entry(0));
    v = _mm_insert_epi32(v, entry(1), 1);
    v = _mm_insert_epi32(v, entry(2), 2);
    return _mm_insert_epi32(v, entry(3), 3);
  }
}

// Two registers side by side, the first in the low half.
inline __m256i concat(__m128i lo, __m128i hi) {
  return _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
}
#if defined(CPU_CAPABILITY_AVX512)
inline __m512i concat(__m256i lo, __m256i hi) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}
#endif

// The entries of the values at p that fill kBits (128, 256 or 512) bits.
template <int kBits, typename Entry, typename scalar_t>
inline auto entries(const float* table, const scalar_t* p) {
  if constexpr (kBits == 128) {
    return entries_128<Entry>(table, p);
  } else {
    constexpr int64_t kPerHalf = kBits / 16 / sizeof(Entry);
    return concat(entries<kBits / 2, Entry>(table, p),
                  entries<kBits / 2, Entry>(table, p + kPerHalf));
  }
}
#endif

// The loss and gradient, for weight 1, of every bit pattern of a
// half-precision logit with target 0.
template <typename acc_t>
class ZeroTargetTable {
 public:
  using Vec = Vectorized<acc_t>;
  static constexpr int64_t kLanes = Vec::size();

  // Evaluates Loss's functor (with kLoss, kGrad, kBinary as the kernel does)
  // for every bit pattern. Deterministic: chunked_sum's single out-of-line
  // loop fills every entry, whatever the thread count. The calling thread's
  // last table is used again when it was filled for the same member, dtype,
  // outputs, parameters and floating-point mode (a training run's every step).
  template <typename Loss, bool kLoss, bool kGrad, bool kBinary, typename scalar_t,
            typename Params>
  void fill(const LossArgs<scalar_t, acc_t, Params>& a) {
    static_assert(std::is_trivially_copyable_v<Params>, "parameters compared byte for byte");
    static const char kind = 0;  // its address: one per member, dtype and outputs
    ThreadTable& table = thread_table();
    table.values.resize((kLoss && kGrad ? 2 : 1) * kTableEntries);
    acc_t* data = table.values.data();
    data_ = data;
    std::vector<unsigned char> key(sizeof(Params) + sizeof(uint32_t));
    std::memcpy(key.data(), &a.params, sizeof(Params));
    const uint32_t fp_mode = floating_point_mode();
    std::memcpy(key.data() + sizeof(Params), &fp_mode, sizeof(fp_mode));
    if (table.kind == &kind && table.key == key) return;
    table.kind = nullptr;
    chunked_sum(kTableEntries / kLanes, 256, [&](int64_t v) {
      uint16_t bits[kLanes];
      for (int64_t k = 0; k < kLanes; ++k) bits[k] = static_cast<uint16_t>(v * kLanes + k);
      scalar_t values[kLanes];
      std::memcpy(values, bits, sizeof(bits));
      const Vec x = Lanes<scalar_t, acc_t>::load(values, kLanes);
      Vec loss, grad;
      Loss::Math::template eval<math::VectorizedOps<acc_t>, kLoss, kGrad, kBinary, true>(
          a.params, x, Vec(acc_t(0)), Vec(acc_t(1)), nullptr, &loss, &grad);
      if (kLoss && kGrad) {  // interleaved: one 64-bit entry per pattern
        acc_t l[kLanes], g[kLanes];
        loss.store(l);
        grad.store(g);
        for (int64_t k = 0; k < kLanes; ++k) {
          data[2 * (v * kLanes + k)] = l[k];
          data[2 * (v * kLanes + k) + 1] = g[k];
        }
      } else {
        (kLoss ? loss : grad).store(data + v * kLanes);
      }
      return 0.0;
    });
    table.kind = &kind;
    table.key = std::move(key);
  }

  // The tabulated values of a whole vector of logits at p, times w.
  template <bool kLoss, bool kGrad, typename scalar_t>
  void lookup(const scalar_t* p, const Vec& w, Vec* loss, Vec* grad) const {
    if constexpr (kLoss && kGrad) {
      load_pairs(p, loss, grad);
      *loss = w * *loss;
      *grad = w * *grad;
    } else {
      *(kLoss ? loss : grad) = w * load_values(p);
    }
  }

 private:
  // The one tabulated value of each logit.
  template <typename scalar_t>
  Vec load_values(const scalar_t* p) const {
    if constexpr (std::is_same_v<acc_t, float>) {
#if defined(CPU_CAPABILITY_AVX512)
      return _mm512_castsi512_ps(entries<512, uint32_t>(data_, p));
#elif defined(CPU_CAPABILITY_AVX2)
      return _mm256_castsi256_ps(entries<256, uint32_t>(data_, p));
#endif
    }
    acc_t values[kLanes];
    for (int64_t k = 0; k < kLanes; ++k) values[k] = data_[table_index(p[k])];
    return Vec::loadu(values);
  }

  // Loss and gradient of each logit, from the interleaved pairs: one 64-bit
  // load per logit.
  template <typename scalar_t>
  void load_pairs(const scalar_t* p, Vec* loss, Vec* grad) const {
    if constexpr (std::is_same_v<acc_t, float>) {
#if defined(CPU_CAPABILITY_AVX512)
      const __m512 lo = _mm512_castsi512_ps(entries<512, uint64_t>(data_, p));
      const __m512 hi = _mm512_castsi512_ps(entries<512, uint64_t>(data_, p + kLanes / 2));
      const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                             28, 30);
      *loss = _mm512_permutex2var_ps(lo, even, hi);
      *grad = _mm512_permutex2var_ps(lo, _mm512_add_epi32(even, _mm512_set1_epi32(1)), hi);
      return;
#elif defined(CPU_CAPABILITY_AVX2)
      const __m256 lo = _mm256_castsi256_ps(entries<256, uint64_t>(data_, p));
      const __m256 hi = _mm256_castsi256_ps(entries<256, uint64_t>(data_, p + kLanes / 2));
      // Per 128-bit lane, the even (odd) floats of lo then those of hi; the
      // 64-bit permutation puts the four halves in order.
      *loss = _mm256_castpd_ps(_mm256_permute4x64_pd(
          _mm256_castps_pd(_mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0))), 0xD8));
      *grad = _mm256_castpd_ps(_mm256_permute4x64_pd(
          _mm256_castps_pd(_mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1))), 0xD8));
      return;
#endif
    }
    acc_t l[kLanes], g[kLanes];
    for (int64_t k = 0; k < kLanes; ++k) {
      l[k] = data_[2 * table_index(p[k])];
      g[k] = data_[2 * table_index(p[k]) + 1];
    }
    *loss = Vec::loadu(l);
    *grad = Vec::loadu(g);
  }

  // The table of the calling thread, kept for its later calls: a fresh
  // 512 KiB block every call would fault its pages in, and 65536 evaluations
  // of the functor cost a twentieth of a training step's lookups.
  struct ThreadTable {
    std::vector<acc_t> values;
    const void* kind = nullptr;  // the fill<...> that wrote the values; null: none
    std::vector<unsigned char> key;  // its parameters and floating-point mode, bytewise
  };
  static ThreadTable& thread_table() {
    static thread_local ThreadTable table;
    return table;
  }

  // The rounding and denormal modes that the functor's results depend on
  // (MXCSR without its sticky exception flags; torch.set_flush_denormal
  // changes it).
  static uint32_t floating_point_mode() {
#if defined(__SSE__) || defined(_M_X64)
    return _mm_getcsr() & ~uint32_t(0x3F);
#else
    return 0;
#endif
  }

  // By pattern: (loss, gradient) pairs when both are wanted, else the one wanted.
  const acc_t* data_ = nullptr;
};

}  // namespace cpu
}  // namespace focal_plugin
