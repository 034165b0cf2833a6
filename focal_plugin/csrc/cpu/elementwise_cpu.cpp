// CPU kernels of the elementwise members of the family (sigmoid focal,
// quality focal, varifocal, gaussian focal): one driver, generic over the
// member's math functor. Vectorised with at::vec::Vectorized, parallel with
// at::parallel_for, and deterministic: reductions use a fixed chunking of
// rows, each chunk summed in order, chunks combined in order, so 1 and N
// threads give bitwise-identical results. Large half-precision calls look
// the values of zero-target elements up in a table of the functor over every
// 16-bit logit (zero_target_table.h).
//
// Memory: no N x C temporaries; the only N x C buffers are the outputs (the
// per-element loss for 'none', the gradient), taken from cpu_output_cache.h
// so that their pages are not faulted in afresh every training step. (The
// table is 512 KiB, whatever the shape.)
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <atomic>
#include <tuple>

#include "../focal_loss_ops.h"
#include "cpu_kernel_utils.h"
#include "cpu_output_cache.h"
#include "vectorized_ops.h"
#include "zero_target_table.h"

namespace focal_plugin {
namespace cpu {
namespace {

// Evaluates row i and hands each group of lanes to sink(offset, n, loss, grad).
// Ignored rows are handed zeros (even for NaN logits: they are not part of
// the loss). Soft targets outside [0, 1] set lanes of `bad_target` where
// the member requires [0, 1]. Whole vectors of zero targets are looked up in
// `table` when one is given. (Background rows with a table go to
// eval_background_run instead.)
template <typename Loss, bool kLoss, bool kGrad, bool kBinary, typename scalar_t, typename acc_t,
          typename Params, typename Sink>
inline void eval_row(const LossArgs<scalar_t, acc_t, Params>& a, int64_t i,
                     const ZeroTargetTable<acc_t>* table, Vectorized<acc_t>& bad_target,
                     Sink&& sink) {
  using Vec = Vectorized<acc_t>;
  using IO = Lanes<scalar_t, acc_t>;
  using Ops = math::VectorizedOps<acc_t>;
  constexpr int64_t kLanes = Vec::size();
  const int64_t C = a.classes;
  const int64_t row_offset = i * C;
  const Vec zero(acc_t(0)), one(acc_t(1));

  const int64_t label = a.labels != nullptr ? a.labels[i] : -1;
  if (a.labels != nullptr && label == a.ignore_index) {
    for (int64_t j = 0; j < C; j += kLanes) sink(row_offset + j, std::min(kLanes, C - j), zero, zero);
    return;
  }
  const acc_t row_weight = (a.weight != nullptr && !a.weight_per_element) ? a.weight[i] : acc_t(1);
  const Vec label_value = a.label_score != nullptr ? Vec(a.label_score[i]) : one;
  // Locals, not reads through `a` and `table`: the output stores may alias
  // any memory, so those would be loaded again after every store, and each
  // vector's loads would wait for the previous vector's store.
  const scalar_t* const pred = a.pred + row_offset;
  const Params params = a.params;
  const ZeroTargetTable<acc_t> zero_target_table =
      table != nullptr ? *table : ZeroTargetTable<acc_t>();
  alignas(64) acc_t lane_index[kLanes];
  for (int64_t k = 0; k < kLanes; ++k) lane_index[k] = static_cast<acc_t>(k);
  const Vec iota = Vec::loadu(lane_index);

  for (int64_t j = 0; j < C; j += kLanes) {
    const int64_t n = std::min(kLanes, C - j);
    const Vec x = IO::load(pred + j, n);
    Vec y;
    bool zero_target;
    if (a.labels != nullptr) {
      // The label is compared as a lane offset below kLanes, which every float
      // type holds exactly (a float label would round for C > 2^24).
      const int64_t label_lane = label - j;
      zero_target = !(label_lane >= 0 && label_lane < kLanes);
      y = zero_target ? zero
                      : Vec::blendv(zero, label_value, iota == Vec(static_cast<acc_t>(label_lane)));
    } else {
      y = IO::load(a.soft_target + row_offset + j, n);
      if (Loss::kTargetsInUnitRange) bad_target = bad_target | (y < zero) | (y > one);
      zero_target = Ops::all(y == zero);
    }
    Vec w(row_weight);
    if (a.weight_per_element) w = w * Vec::loadu(a.weight + row_offset + j, n);
    if constexpr (kTabulatedInput<scalar_t>) {
      if (table != nullptr && zero_target && n == kLanes) {
        Vec loss, grad;
        zero_target_table.template lookup<kLoss, kGrad>(pred + j, w, &loss, &grad);
        sink(row_offset + j, n, loss, grad);
        continue;
      }
    }
    Vec alpha;
    if (a.class_alpha != nullptr) alpha = Vec::loadu(a.class_alpha + j, n);
    const Vec* const alpha_ptr = a.class_alpha != nullptr ? &alpha : nullptr;
    Vec loss, grad;
    // Background vectors (target 0 in every lane, ~99% of a detector's) take
    // the functor's zero-target form: the same values, fewer operations.
    if (zero_target) {
      Loss::Math::template eval<Ops, kLoss, kGrad, kBinary, true>(params, x, zero, w, alpha_ptr,
                                                                  &loss, &grad);
    } else {
      Loss::Math::template eval<Ops, kLoss, kGrad, kBinary, false>(params, x, y, w, alpha_ptr,
                                                                   &loss, &grad);
    }
    sink(row_offset + j, n, loss, grad);
  }
}

// Background rows (label C: target 0 in every column) are taken as runs:
// consecutive such rows of the same row weight are one flat stretch of
// memory, a whole vector at a time across row boundaries, looked up in the
// table (half precision) or evaluated in the functor's zero-target form.
// (Row by row, a detector's 80 classes are five vectors, and the per-row
// work cost a fifth of the half-precision kernel, 3-5% of the float32 one.)
// Compiled only for members that take labels: the extra loop slowed the
// soft-target members' code.
template <typename Loss, typename scalar_t>
constexpr bool kBackgroundRuns = Loss::kTargets != Targets::kSoft;

// The end of the run of background rows that starts at row i (i itself if
// row i is not one), at most `end`.
template <typename scalar_t, typename acc_t, typename Params>
int64_t background_run_end(const LossArgs<scalar_t, acc_t, Params>& a, int64_t i, int64_t end) {
  if (a.labels == nullptr || a.weight_per_element) return i;
  const auto background = [&](int64_t r) {
    return a.labels[r] == a.classes && a.labels[r] != a.ignore_index;
  };
  const auto same_weight = [&](int64_t r) {  // bit for bit: -0.0 is not 0.0 here
    return a.weight == nullptr || std::memcmp(a.weight + r, a.weight + i, sizeof(acc_t)) == 0;
  };
  int64_t r = i;
  while (r < end && background(r) && same_weight(r)) ++r;
  return r;
}

// Every element of the background rows [begin, end), handed to sink as in
// eval_row; `flush` is called after every kRunVectorsPerSum vectors and at
// the end, so that the lanes summed in float stay as short as a row's.
template <typename Loss, bool kLoss, bool kGrad, bool kBinary, typename scalar_t, typename acc_t,
          typename Params, typename Sink, typename Flush>
inline void eval_background_run(const LossArgs<scalar_t, acc_t, Params>& a, int64_t begin,
                                int64_t end, const ZeroTargetTable<acc_t> table, Sink&& sink,
                                Flush&& flush) {
  using Vec = Vectorized<acc_t>;
  constexpr int64_t kLanes = Vec::size();
  constexpr int64_t kRunVectorsPerSum = 8;
  const Vec w(a.weight != nullptr ? a.weight[begin] : acc_t(1));
  const int64_t last = end * a.classes;
  const scalar_t* const pred = a.pred;  // locals: see eval_row
  const Params params = a.params;
  int64_t e = begin * a.classes;
  // Groups of kRunVectorsPerSum vectors, unrolled: the lookups of one vector
  // overlap the arithmetic of the others (9% faster than one vector per
  // iteration with a flush test). Without a table (float32, float64) each
  // vector is evaluated in the functor's zero-target form.
  const auto look_up = [=](int64_t offset) {
    Vec loss, grad;
    if constexpr (kTabulatedInput<scalar_t>) {
      table.template lookup<kLoss, kGrad>(pred + offset, w, &loss, &grad);
    } else {
      Loss::Math::template eval<math::VectorizedOps<acc_t>, kLoss, kGrad, kBinary, true>(
          params, Lanes<scalar_t, acc_t>::load(pred + offset, kLanes), Vec(acc_t(0)), w,
          nullptr, &loss, &grad);
    }
    sink(offset, kLanes, loss, grad);
  };
  for (; e + kRunVectorsPerSum * kLanes <= last; e += kRunVectorsPerSum * kLanes) {
#pragma GCC unroll 8
    for (int64_t v = 0; v < kRunVectorsPerSum; ++v) look_up(e + v * kLanes);
    flush();
  }
  for (; e + kLanes <= last; e += kLanes) look_up(e);
  if (e < last) {  // fewer than a vector's worth left: evaluated directly
    const int64_t n = last - e;
    const Vec x = Lanes<scalar_t, acc_t>::load(pred + e, n);
    Vec loss, grad;
    Loss::Math::template eval<math::VectorizedOps<acc_t>, kLoss, kGrad, kBinary, true>(
        params, x, Vec(acc_t(0)), w, nullptr, &loss, &grad);
    sink(e, n, loss, grad);
  }
  flush();
}

// Raises the ValueError for the first soft target outside [0, 1].
template <typename Loss, typename scalar_t, typename acc_t, typename Params>
[[noreturn]] void report_bad_target(const LossArgs<scalar_t, acc_t, Params>& a) {
  for (int64_t k = 0; k < a.rows * a.classes; ++k) {
    const acc_t y = static_cast<acc_t>(a.soft_target[k]);
    if (y < 0 || y > 1) {
      TORCH_CHECK_VALUE(false, "focal_plugin.", Loss::kName, ": target holds ", y, " at (",
                        k / a.classes, ", ", k % a.classes, "); expected values in [0, 1]");
    }
  }
  TORCH_INTERNAL_ASSERT(false, "a target outside [0, 1] was flagged but not found");
}

// The one driver of every elementwise kernel. Per element it writes
//   the loss to loss_out ('none'), or adds it to the returned sum when
//   loss_out is null (kLoss);
//   the derivative to grad_out, times grad_output: go_element (per element,
//   'none') or go_scale (kGrad).
template <typename Loss, bool kLoss, bool kGrad, bool kBinary, typename scalar_t, typename acc_t,
          typename Params>
double run_targets(const LossArgs<scalar_t, acc_t, Params>& a, scalar_t* loss_out,
                   scalar_t* grad_out, const scalar_t* go_element, acc_t go_scale) {
  using Vec = Vectorized<acc_t>;
  using IO = Lanes<scalar_t, acc_t>;
  ZeroTargetTable<acc_t> zero_target_table;
  const ZeroTargetTable<acc_t>* table = nullptr;
  if constexpr (kTabulatedInput<scalar_t>) {
    if (a.class_alpha == nullptr && a.rows * a.classes >= kTableMinElements) {
      zero_target_table.template fill<Loss, kLoss, kGrad, kBinary>(a);
      table = &zero_target_table;
    }
  }
  std::atomic<bool> bad_target{false};
  const double total = chunked_sum_by_chunk(a.rows, rows_per_chunk(a.classes), [&](int64_t begin,
                                                                                    int64_t end) {
    double chunk_total = 0;
    Vec lane_sums(acc_t(0)), bad(acc_t(0));
    // The outputs by value: the vector stores may alias any memory, so values
    // read through references would be loaded again after every store.
    auto sink = [=, &lane_sums](int64_t off, int64_t n, const Vec& loss, const Vec& grad) {
      if (kGrad) {
        Vec g = grad;
        if (go_element != nullptr) {
          g = g * IO::load(go_element + off, n);
        } else if (go_scale != acc_t(1)) {
          g = g * Vec(go_scale);
        }
        IO::store(g, grad_out + off, n);
      }
      if (kLoss) {
        if (loss_out != nullptr) {
          IO::store(loss, loss_out + off, n);
        } else {
          lane_sums = lane_sums + Vec::set(Vec(acc_t(0)), loss, n);
        }
      }
    };
    // Adds the float lanes to the chunk's total in double.
    const auto flush = [&] {
      if (kLoss && loss_out == nullptr) {
        chunk_total += IO::sum(lane_sums);
        lane_sums = Vec(acc_t(0));
      }
    };
    for (int64_t i = begin; i < end;) {
      if constexpr (kBackgroundRuns<Loss, scalar_t>) {
        // Runs need the table (half precision) or, evaluated directly, one
        // alpha for every column.
        const bool runs = kTabulatedInput<scalar_t> ? table != nullptr : a.class_alpha == nullptr;
        const int64_t run_end = runs ? background_run_end(a, i, end) : i;
        if (run_end > i) {
          eval_background_run<Loss, kLoss, kGrad, kBinary>(
              a, i, run_end, table != nullptr ? *table : ZeroTargetTable<acc_t>(), sink, flush);
          i = run_end;
          continue;
        }
      }
      eval_row<Loss, kLoss, kGrad, kBinary>(a, i, table, bad, sink);
      flush();
      ++i;
    }
    if (a.soft_target != nullptr && math::VectorizedOps<acc_t>::any(bad)) {
      bad_target.store(true, std::memory_order_relaxed);
    }
    return chunk_total;
  });
  if (bad_target.load()) report_bad_target<Loss>(a);
  return total;
}

template <typename Loss, bool kLoss, bool kGrad, typename scalar_t, typename acc_t,
          typename Params>
double run(const LossArgs<scalar_t, acc_t, Params>& a, scalar_t* loss_out, scalar_t* grad_out,
           const scalar_t* go_element, acc_t go_scale) {
  // 0/1 targets (labels without scores) let the functor skip a division.
  if (a.labels != nullptr && a.label_score == nullptr) {
    return run_targets<Loss, kLoss, kGrad, true>(a, loss_out, grad_out, go_element, go_scale);
  }
  return run_targets<Loss, kLoss, kGrad, false>(a, loss_out, grad_out, go_element, go_scale);
}

at::Tensor empty_sum(const Inputs& in) {
  return at::empty({}, in.pred.options().dtype(accumulate_type(in.pred.scalar_type())));
}

// The CPU backend of focal_loss_ops.h for the elementwise members.
struct CpuElementwise {
  static constexpr bool kElementwise = true;

  template <typename Loss, typename Scalars>
  static at::Tensor forward(const Inputs& in, const Scalars& scalars) {
    check_label_targets<Loss>(in);
    at::Tensor out = in.sum ? empty_sum(in) : cpu_cache_tensor(in.pred.sizes(), in.pred.options());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.pred.scalar_type(), Loss::kName, [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const auto a = make_args<Loss, scalar_t, acc_t>(in, scalars);
      scalar_t* loss_out = in.sum ? nullptr : out.data_ptr<scalar_t>();
      const double total =
          run<Loss, true, false>(a, loss_out, static_cast<scalar_t*>(nullptr),
                                 static_cast<const scalar_t*>(nullptr), acc_t(1));
      if (in.sum) out.fill_(total);
    });
    return out;
  }

  // Training path: the loss and its per-element derivative (times grad_scale)
  // in one pass, so the transcendental functions run once per element
  // instead of twice.
  template <typename Loss, typename Scalars>
  static std::tuple<at::Tensor, at::Tensor> with_grad(const Inputs& in, const Scalars& scalars,
                                                      double grad_scale) {
    check_label_targets<Loss>(in);
    at::Tensor loss = in.sum ? empty_sum(in) : cpu_cache_tensor(in.pred.sizes(), in.pred.options());
    at::Tensor grad = cpu_cache_tensor(in.pred.sizes(), in.pred.options());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.pred.scalar_type(), Loss::kName, [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const auto a = make_args<Loss, scalar_t, acc_t>(in, scalars);
      scalar_t* loss_out = in.sum ? nullptr : loss.data_ptr<scalar_t>();
      const double total = run<Loss, true, true>(a, loss_out, grad.data_ptr<scalar_t>(),
                                                 static_cast<const scalar_t*>(nullptr),
                                                 static_cast<acc_t>(grad_scale));
      if (in.sum) loss.fill_(total);
    });
    return {loss, grad};
  }

  template <typename Loss, typename Scalars>
  static at::Tensor backward(const at::Tensor& grad_output, const Inputs& in,
                             const Scalars& scalars) {
    check_label_targets<Loss>(in);
    at::Tensor grad_input = cpu_cache_tensor(in.pred.sizes(), in.pred.options());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.pred.scalar_type(), Loss::kName, [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const auto a = make_args<Loss, scalar_t, acc_t>(in, scalars);
      // grad_output is per element ('none') or one scalar ('sum', read on the
      // host: a CPU tensor, so no device synchronisation).
      at::Tensor go;
      const scalar_t* go_element = nullptr;
      acc_t go_scale = 1;
      if (in.sum) {
        go_scale = static_cast<acc_t>(grad_output.item<double>());
      } else {
        go = grad_output.to(in.pred.scalar_type()).contiguous();
        go_element = go.data_ptr<scalar_t>();
      }
      run<Loss, false, true>(a, static_cast<scalar_t*>(nullptr), grad_input.data_ptr<scalar_t>(),
                             go_element, go_scale);
    });
    return grad_input;
  }
};

}  // namespace
}  // namespace cpu

TORCH_LIBRARY_IMPL(focal_plugin, CPU, m) {
  impl_family<cpu::CpuElementwise>(m);
}

}  // namespace focal_plugin
