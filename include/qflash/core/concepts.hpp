// SPDX-License-Identifier: Apache-2.0
/// @file
/// C++20 concepts for every policy family and for kernel configurations.
///
/// A policy is a small struct with a trivially copyable `Params` aggregate (runtime constants,
/// computed on the host by `calibrate` and passed by value to kernels) and `QFLASH_HOST_DEVICE
/// static constexpr` functions. These concepts state exactly what the reference and the CUDA
/// kernel call, so a downstream policy that satisfies them works in both.
#pragma once

#include <concepts>
#include <cstdint>
#include <type_traits>

#include "qflash/core/fixed_point.hpp"
#include "qflash/core/status.hpp"

namespace qflash {

struct Exp2Value;
struct RowState;
struct MergeFactors;

/// What a softmax quantizes a block's P against: the row's running maximum, or the block's own
/// (tile-local) maximum, for which reference_max needs no row state.
enum class MaxMode : std::uint8_t { running, tile_local };

/// What an exp2 policy declares about itself (specialize next to your policy; never probed).
/// `has_apply_visible`: the policy has `apply_visible(u, prm)`, equal to `apply(u, prm)` for
/// every u >= 0, which the kernel calls where u >= 0 is known. Declared true, the function must
/// exist (Exp2Policy checks it), so a misspelled hook fails to compile instead of going unused.
/// A specialization derives from the defaults and redeclares what it changes.
/// `has_wide_input`: the policy has `apply_wide(u, prm)` for a distance u in Q32 octaves
/// (int64, u >= -(2^16 - 1)) and `product_wide(v)`, its headroom form, for logits that keep 16
/// more fraction bits (LogitTraits::has_wide_form).
struct Exp2TraitsDefaults {
  static constexpr bool has_apply_visible = false;
  static constexpr bool has_wide_input = false;
};
template <class E>
struct Exp2Traits : Exp2TraitsDefaults {};

/// What a logit policy declares about itself (specialize next to your policy; never probed).
/// `has_wide_form`: the policy has `apply_wide(score, bias, prm)`, the logit in Q32 octaves
/// (int64) whose floor to Q16 is `apply`, and `apply_wide_offset(score, offset_q32, prm)`, the
/// same without the bias plus an offset; the probabilities then take the 16 extra fraction bits
/// (the exp policy must declare `has_wide_input`).
struct LogitTraitsDefaults {
  static constexpr bool has_wide_form = false;
};
template <class L>
struct LogitTraits : LogitTraitsDefaults {};

/// Runtime constants of a policy: plain data that can be memcpy'd to a GPU.
template <class P>
concept PolicyParams = std::is_trivially_copyable_v<P> && std::is_default_constructible_v<P>;

/// Scores (exact int32 Q K^T) plus a Q16-octave bias -> integer logits; `calibrate` derives the
/// Params from sm_scale (octaves per Q K^T unit) and the head dim; `validate` accepts exactly
/// the Params for which `apply` is defined and accurate (every policy family has one: entry
/// points check parameters they did not make).
template <class L>
concept LogitPolicy = PolicyParams<typename L::Params> &&
    requires(std::int32_t score, std::int32_t bias, const typename L::Params& prm,
             typename L::Params& out, double sm_scale, int head_dim) {
  { L::apply(score, bias, prm) } -> std::same_as<std::int32_t>;
  { L::calibrate(sm_scale, head_dim, out) } -> std::same_as<Status>;
  { L::validate(prm, head_dim) } -> std::same_as<Status>;
} &&(!LogitTraits<L>::has_wide_form ||
     requires(std::int32_t score, std::int64_t offset, const typename L::Params& prm) {
       { L::apply_wide(score, score, prm) } -> std::same_as<std::int64_t>;
       { L::apply_wide_offset(score, offset, prm) } -> std::same_as<std::int64_t>;
     });

/// Distance below a maximum -> probability p in [0, pmax] and its row-sum weight; `rescale_q30`
/// gives 2^-d in Q1.30, in [0, 2^30] (the online softmax relies on that range). pmax <= 255 so that
/// P fits the u8 operand of the tensor-core P V.
template <class E>
concept Exp2Policy = PolicyParams<typename E::Params> &&
    requires(std::int32_t u, const typename E::Params& prm, typename E::Params& out, double x) {
  { E::pmax } -> std::convertible_to<int>;
  { E::sum_bits } -> std::convertible_to<int>;
  { E::apply(u, prm) } -> std::same_as<Exp2Value>;
  { E::rescale_q30(u, prm) } -> std::same_as<std::int32_t>;
  { E::calibrate(x, out) } -> std::same_as<Status>;
  { E::validate(prm) } -> std::same_as<Status>;
} &&(E::pmax >= 1 && E::pmax <= 255 && E::sum_bits >= 0 && E::sum_bits <= 8) &&
    (!Exp2Traits<E>::has_apply_visible ||
     requires(std::int32_t u, const typename E::Params& prm) {
       { E::apply_visible(u, prm) } -> std::same_as<Exp2Value>;
     }) &&
    (!Exp2Traits<E>::has_wide_input || requires(std::int64_t u, const typename E::Params& prm) {
      { E::apply_wide(u, prm) } -> std::same_as<Exp2Value>;
      { E::product_wide(u) } -> std::same_as<std::uint64_t>;
    });

/// What a softmax policy declares about itself (specialize next to your policy; never probed).
/// Each hook declared true must exist (SoftmaxPolicy checks it): a misspelled hook fails to
/// compile instead of leaving a kernel on its plain path.
/// - `accumulates_in_place`: a merge is acc = rescale(acc, state factor) + P V with the tile
///   factor always 1 (merge_element and merge_row say how), so a kernel can rescale its
///   accumulators first and let the P V mma add into them directly (see InPlaceConfig).
/// - `merges_biased`: `merge_element_biased(acc_b, pv_b, f)`, merge_element on values biased by
///   2^31 (mod 2^32) returning the biased result; the general kernel then keeps its
///   accumulators biased.
/// - `identity_merge_is_sum` (with merges_biased): merge_element_biased with identity factors
///   (2^30, 2^30) is acc_b + pv_b - 2^31 (mod 2^32), so a block in which no row rescales merges
///   with one add.
/// A specialization derives from the defaults and redeclares what it changes.
struct SoftmaxTraitsDefaults {
  static constexpr bool accumulates_in_place = false;
  static constexpr bool merges_biased = false;
  static constexpr bool identity_merge_is_sum = false;
};
template <class S>
struct SoftmaxTraits : SoftmaxTraitsDefaults {};

/// The online-softmax merge rule (see policy/online_softmax.hpp).
template <class S>
concept SoftmaxPolicy = Exp2Policy<typename S::exp_policy> &&
    requires(RowState& row, const RowState& crow, std::int32_t m, std::int64_t l,
             const typename S::exp_policy::Params& prm, std::int32_t x, MergeFactors f) {
  { S::max_keys } -> std::convertible_to<std::int64_t>;
  { S::max_mode } -> std::convertible_to<MaxMode>;
  { S::reference_max(crow, m) } -> std::same_as<std::int32_t>;
  { S::merge_row(row, m, l, prm) } -> std::same_as<MergeFactors>;
  { S::merge_element(x, x, f) } -> std::same_as<std::int32_t>;
} &&(!SoftmaxTraits<S>::merges_biased ||
     requires(std::uint32_t a, MergeFactors f) {
       { S::merge_element_biased(a, a, f) } -> std::same_as<std::uint32_t>;
     }) &&
    (!SoftmaxTraits<S>::identity_merge_is_sum || SoftmaxTraits<S>::merges_biased);

/// Final normalisation into the output element type: `prepare` does the per-row work once (the
/// row sum l), `apply(acc, row)` finishes one element; `calibrate(v_scale, out_scale, sum_bits)`.
template <class O>
concept OutputPolicy = PolicyParams<typename O::Params> &&
    std::is_trivially_copyable_v<typename O::value_type> &&
    std::is_trivially_copyable_v<typename O::Row> &&
    requires(std::int32_t acc, std::int64_t l, const typename O::Params& prm,
             typename O::Params& out, double scale, int bits, const typename O::Row& row) {
  { O::prepare(l, prm) } -> std::same_as<typename O::Row>;
  { O::apply(acc, row) } -> std::same_as<typename O::value_type>;
  { O::apply(acc, l, prm) } -> std::same_as<typename O::value_type>;
  { O::calibrate(scale, scale, bits, out) } -> std::same_as<Status>;
  { O::validate(prm, bits) } -> std::same_as<Status>;
  { O::default_scale_divisor() } -> std::convertible_to<double>;
};

/// A kernel configuration: the policy bundle plus the KV block size that fixes the result
/// (online rescaling rounds once per KV block, so the reference must use the same block_n).
template <class C>
concept KernelConfig = LogitPolicy<typename C::Logit> && Exp2Policy<typename C::Exp> &&
    SoftmaxPolicy<typename C::Softmax> &&
    std::same_as<typename C::Softmax::exp_policy, typename C::Exp> && requires {
  { C::block_n } -> std::convertible_to<int>;
  { C::output_rounding } -> std::convertible_to<Rounding>;
} &&(C::block_n == 32 || C::block_n == 64 || C::block_n == 128) &&
    (!LogitTraits<typename C::Logit>::has_wide_form || Exp2Traits<typename C::Exp>::has_wide_input);

/// A configuration the in-place kernel (device/in_place_kernel.cuh) serves: its softmax
/// declares `accumulates_in_place` and has the frame rescale (`frame_move`, `rescale_biased`),
/// the logit has the offset form (t + c in one multiply-add, non-decreasing in the score) and
/// the exp the headroom form (v = kHeadroom - u -> one 64-bit product whose high word gives p
/// and weight). A configuration that declares the trait but lacks a hook does not compile.
template <class C>
concept InPlaceConfig = KernelConfig<C> &&
    SoftmaxTraits<typename C::Softmax>::accumulates_in_place &&
    requires(std::int32_t x, std::uint32_t w, std::uint64_t a, const typename C::Logit::Params& lp,
             const typename C::Exp::Params& ep) {
  { C::Logit::apply_offset(x, x, lp) } -> std::same_as<std::int32_t>;
  { C::Exp::product(x) } -> std::same_as<std::uint64_t>;
  { C::Exp::from_high_word(w) } -> std::same_as<Exp2Value>;
  { C::Exp::kHeadroom } -> std::convertible_to<std::int32_t>;
  { C::Softmax::frame_move(x, x, ep) } -> std::same_as<MergeFactors>;
  { C::Softmax::biased_addend(x, x) } -> std::same_as<std::uint64_t>;
  { C::Softmax::rescale_biased(w, a, x, x) } -> std::same_as<std::uint32_t>;
};

}  // namespace qflash
