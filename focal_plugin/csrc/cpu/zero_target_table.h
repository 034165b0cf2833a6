// Lookup tables for half-precision inputs, where the target is 0.
//
// A float16 or bfloat16 logit is one of 65536 bit patterns. Where an
// element's target is 0 (every column but the label's with class labels, and
// most of a detector's soft targets) and no per-class alpha is given, the
// loss and gradient of every elementwise member depend on the logit alone,
// times the element's weight. The kernel then evaluates the member's functor
// once per bit pattern, with the same vector code and parameters as the
// elements themselves, and looks each element's values up: two gathers
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

// The 16-bit patterns of Vectorized<int32_t>::size() half-precision values,
// zero-extended to 32-bit lanes: the table indices.
template <typename scalar_t>
inline Vectorized<int32_t> load_bit_patterns(const scalar_t* p) {
  static_assert(sizeof(scalar_t) == 2, "16-bit inputs only");
#if defined(CPU_CAPABILITY_AVX512)
  return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#elif defined(CPU_CAPABILITY_AVX2)
  return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#else
  int32_t bits[Vectorized<int32_t>::size()];
  for (int64_t k = 0; k < Vectorized<int32_t>::size(); ++k) {
    uint16_t b;
    std::memcpy(&b, p + k, sizeof(b));
    bits[k] = b;
  }
  return Vectorized<int32_t>::loadu(bits);
#endif
}

// Gathers that do not wait for the previous vector's results. A gather's
// destination register is also one of its inputs (the lanes its mask leaves
// alone), and the compiler, free to pick any register for it, picks the one
// the previous vector's arithmetic has just written: every gather then waits
// for the one before it (the lookups ran 1.5x slower). A destination zeroed by
// an instruction the compiler cannot remove (a zeroing idiom, which the CPU
// resolves without waiting for anything) and a mask it cannot see to be full
// (else it would drop the zeroing) make each gather independent.
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
// A register of zeros the compiler cannot see through. (A VEX instruction on
// the low 128 bits clears the rest of the register.)
template <typename Register>
inline Register opaque_zeros() {
  Register zeros;
  asm("vpxor %x0, %x0, %x0" : "=x"(zeros));
  return zeros;
}
#endif
#if defined(CPU_CAPABILITY_AVX512)
inline __m512d independent_gather(const double* base, __m256i index) {
  __mmask8 all;
  asm("kxnorb %0, %0, %0" : "=Yk"(all));
  return _mm512_mask_i32gather_pd(opaque_zeros<__m512d>(), all, index, base, 8);
}
inline __m512 independent_gather(const float* base, __m512i index) {
  __mmask16 all;
  asm("kxnorw %0, %0, %0" : "=Yk"(all));
  return _mm512_mask_i32gather_ps(opaque_zeros<__m512>(), all, index, base, 4);
}
#elif defined(CPU_CAPABILITY_AVX2)
inline __m256 independent_gather(const float* base, __m256i index) {
  __m256 all;
  asm("vpcmpeqd %0, %0, %0" : "=x"(all));
  return _mm256_mask_i32gather_ps(opaque_zeros<__m256>(), base, index, all, 4);
}
#endif

// The values at base[index] of a whole vector of indices.
template <typename acc_t>
inline Vectorized<acc_t> gather_lanes(const acc_t* base, const Vectorized<int32_t>& index) {
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
  if constexpr (std::is_same_v<acc_t, float>) return independent_gather(base, index);
#endif
  return at::vec::gather<sizeof(acc_t)>(base, index);
}

// The loss and gradient, for weight 1, of every bit pattern of a
// half-precision logit with target 0.
template <typename acc_t>
class ZeroTargetTable {
 public:
  using Vec = Vectorized<acc_t>;

  // Evaluates Loss's functor (with kLoss, kGrad, kBinary as the kernel does)
  // for every bit pattern. Deterministic: chunked_sum's single out-of-line
  // loop fills every entry, whatever the thread count.
  template <typename Loss, bool kLoss, bool kGrad, bool kBinary, typename scalar_t,
            typename Params>
  void fill(const LossArgs<scalar_t, acc_t, Params>& a) {
    constexpr int64_t kLanes = Vec::size();
    static_assert(Vectorized<int32_t>::size() == kLanes, "one index lane per value lane");
    std::vector<acc_t>& storage = thread_storage();
    storage.resize((kLoss && kGrad ? 2 : 1) * kTableEntries);
    acc_t* data = storage.data();
    data_ = data;
    chunked_sum(kTableEntries / kLanes, 256, [&](int64_t v) {
      uint16_t bits[kLanes];
      for (int64_t k = 0; k < kLanes; ++k) bits[k] = static_cast<uint16_t>(v * kLanes + k);
      scalar_t values[kLanes];
      std::memcpy(values, bits, sizeof(bits));
      const Vec x = Lanes<scalar_t, acc_t>::load(values, kLanes);
      Vec loss, grad;
      Loss::Math::template eval<math::VectorizedOps<acc_t>, kLoss, kGrad, kBinary>(
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
  }

  // The tabulated values of a whole vector of logits at p, times w.
  template <bool kLoss, bool kGrad, typename scalar_t>
  void lookup(const scalar_t* p, const Vec& w, Vec* loss, Vec* grad) const {
    const Vectorized<int32_t> index = load_bit_patterns(p);
    if constexpr (kLoss && kGrad) {
      gather_pairs(index, loss, grad);
      *loss = w * *loss;
      *grad = w * *grad;
    } else {
      *(kLoss ? loss : grad) = w * gather_lanes(data_, index);
    }
  }

 private:
  // Loss and gradient of each index from the interleaved pairs: with
  // AVX-512, one 64-bit gather per pair of lanes (gathers cost per element).
  void gather_pairs(const Vectorized<int32_t>& index, Vec* loss, Vec* grad) const {
#if defined(CPU_CAPABILITY_AVX512)
    if constexpr (std::is_same_v<acc_t, float>) {
      const __m512i i = index;
      const double* base = reinterpret_cast<const double*>(data_);
      const __m512 lo = _mm512_castpd_ps(independent_gather(base, _mm512_castsi512_si256(i)));
      const __m512 hi =
          _mm512_castpd_ps(independent_gather(base, _mm512_extracti64x4_epi64(i, 1)));
      const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                             28, 30);
      *loss = _mm512_permutex2var_ps(lo, even, hi);
      *grad = _mm512_permutex2var_ps(lo, _mm512_add_epi32(even, _mm512_set1_epi32(1)), hi);
      return;
    }
#endif
    const Vectorized<int32_t> twice = index + index;
    *loss = gather_lanes(data_, twice);
    *grad = gather_lanes(data_ + 1, twice);
  }

  // The table's memory, kept by the calling thread for its later calls: a
  // fresh 512 KiB block every call would fault its pages in every time.
  static std::vector<acc_t>& thread_storage() {
    static thread_local std::vector<acc_t> storage;
    return storage;
  }

  // By pattern: (loss, gradient) pairs when both are wanted, else the one wanted.
  const acc_t* data_ = nullptr;
};

}  // namespace cpu
}  // namespace focal_plugin
