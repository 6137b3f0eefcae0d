// SPDX-License-Identifier: Apache-2.0
/// @file
/// Integer exp2 policies: the probability of one score, and the online-softmax rescale factor.
///
/// Every exp2 policy maps a non-negative distance `u` below a reference maximum (in the units of
/// its logit policy) to a probability `p = round(Pmax * 2^-u)` in [0, Pmax], plus a finer
/// `weight = p * 2^sum_bits` that feeds the row sum. `rescale_q30(d)` is 2^-d in Q1.30, used to
/// move accumulators from one maximum to a larger one; 2^30 (exactly one) when d == 0.
#pragma once

#include <concepts>
#include <cstdint>

#include "qflash/core/concepts.hpp"
#include "qflash/core/config.hpp"
#include "qflash/core/dyadic.hpp"
#include "qflash/core/fixed_point.hpp"
#include "qflash/core/int_traits.hpp"
#include "qflash/core/status.hpp"

namespace qflash {

/// One probability: `p` goes into P V, `weight` (p with `sum_bits` more fraction bits) into l.
struct Exp2Value {
  std::int32_t p;
  std::int32_t weight;
};

/// 1.0 in Q1.30: the rescale factor that leaves a value unchanged.
inline constexpr std::int32_t kOneQ30 = std::int32_t{1} << 30;

namespace detail {

/// round(x) for constant expressions (coefficient tables). |x| < 2^62.
constexpr std::int64_t constant_round(double x) noexcept {
  return x >= 0 ? static_cast<std::int64_t>(x + 0.5) : -static_cast<std::int64_t>(-x + 0.5);
}

/// floor(x / 2^s + 1/2) for 1 <= s < 32 and |x| + 2^(s-1) < 2^31: one add and one shift.
QFLASH_HOST_DEVICE constexpr std::int32_t round_half_up_shift(std::int32_t x, int s) noexcept {
  return (x + (std::int32_t{1} << (s - 1))) >> s;
}

/// Coefficients c_k of 2^-x ~ sum_k c_k x^k on [0, 1), endpoint-exact: c_0 = 1, sum c_k = 1/2.
template <int Degree>
struct Exp2Coefficients;

/// Quadratic, max relative error 0.27 % (numerics brief, section 3).
template <>
struct Exp2Coefficients<2> {
  static constexpr double c[3] = {1.0, -0.66988, 0.16988};
};

/// Cubic, max relative error 0.012 %.
template <>
struct Exp2Coefficients<3> {
  static constexpr double c[4] = {1.0, -0.69160, 0.23100, -0.03940};
};

}  // namespace detail

/// Polynomial exp2 in the log2 fixed-point domain: the "R+" exp of docs/numerics.md.
///
/// - In: u >= 0 in Q(F) octaves below the reference maximum (u < 0 is treated as 0), u < 2^31.
/// - Split: q = u >> F (whole octaves), f = u & (2^F - 1) (fraction, Q(F)).
/// - E(f) = Horner polynomial with Pmax * 2^G folded into the coefficients (G: Pmax * 2^G < 2^30),
///   so E ~ Pmax * 2^G * 2^(-f / 2^F), in [Pmax * 2^(G-1), Pmax * 2^G]. Each Horner step is one
///   unsigned 32-bit high multiply (floor) on the brackets of a_0 - f (|a_1| - f (|a_2| - ...));
///   E is non-increasing in f.
/// - Out: p = round(E / 2^(q+G)) in [0, Pmax], weight = round(E / 2^(q+G-SumBits)); both round
///   half away from zero; 0 once q + G >= 32.
/// - Error: the polynomial's (0.27 % quadratic, 0.012 % cubic) plus the final rounding.
/// - Origin: qflash numerics brief section 3 (design "R+"), replacing QFlash's linear 2^f.
template <int Degree = 2, int Pmax = 255, int SumBits = 6, int F = 16>
struct PolyExp2 {
  static_assert(Degree == 2 || Degree == 3, "PolyExp2: Degree must be 2 or 3");
  static_assert(Pmax >= 1 && Pmax <= 255, "PolyExp2: Pmax must be in [1, 255] (u8 P)");
  static_assert(F >= 8 && F <= 20, "PolyExp2: F (fraction bits) must be in [8, 20]");

  struct Params {  ///< no runtime constants: the coefficients are compile-time
    friend constexpr bool operator==(const Params&, const Params&) = default;
  };

  static constexpr int pmax = Pmax;
  static constexpr int sum_bits = SumBits;
  static constexpr int fraction_bits = F;

  /// Largest G with Pmax * 2^G < 2^30: E carries about 30 significant bits, so every partial
  /// Horner sum and twice it fit int32.
  static constexpr int guard_bits = [] {
    int g = 0;
    while ((std::int64_t{Pmax} << (g + 1)) < (std::int64_t{1} << 30)) ++g;
    return g;
  }();
  static_assert(guard_bits >= SumBits, "PolyExp2: SumBits exceeds the precision of E");

  /// a_k = round(c_k * Pmax * 2^G); a_0 = Pmax * 2^G exactly. Compile-time constants only: no
  /// floating-point arithmetic reaches device code.
  template <int K>
  static constexpr std::int32_t coefficient = static_cast<std::int32_t>(
      detail::constant_round(detail::Exp2Coefficients<Degree>::c[K] *
                             static_cast<double>(std::int64_t{Pmax} << guard_bits)));
  /// b_k = round(c_k * 2^30), the same polynomial in Q1.30 for rescale factors.
  template <int K>
  static constexpr std::int64_t coefficient_q30 =
      detail::constant_round(detail::Exp2Coefficients<Degree>::c[K] * 1073741824.0);

  /// The coefficients alternate in sign (a_0 > 0, a_1 < 0, ...) and shrink in magnitude from
  /// a_1 on, so the polynomial is a_0 - f (|a_1| - f (|a_2| - ...)) with every bracket
  /// positive: Horner runs on unsigned magnitudes.
  template <int K>
  static constexpr std::uint32_t magnitude = static_cast<std::uint32_t>(coefficient<K> < 0
                                                                            ? -coefficient<K>
                                                                            : coefficient<K>);
  static constexpr bool alternating_and_shrinking = [] {
    bool ok = coefficient<0> > 0 && coefficient<1> < 0 && coefficient<2> > 0 &&
              magnitude<1> > magnitude<2>;
    if constexpr (Degree == 3) ok = ok && coefficient<3> < 0 && magnitude<2> > magnitude<3>;
    return ok;
  }();
  static_assert(alternating_and_shrinking, "PolyExp2: unexpected coefficient signs");

  /// The bracket of degree K >= 1 at f_high = f * 2^(32 - F): |a_K| - floor(f * (bracket K+1)
  /// / 2^F), one unsigned 32-bit high multiply per step (mul_high(f_high, x) = floor(f x / 2^F)).
  /// Positive, because |a_K| > |a_{K+1}| > bracket K+1 and f < 2^F.
  template <int K = 1>
  QFLASH_HOST_DEVICE static constexpr std::uint32_t bracket(std::uint32_t f_high) noexcept {
    if constexpr (K == Degree) {
      return magnitude<K>;
    } else {
      return magnitude<K> - mul_high(f_high, bracket<K + 1>(f_high));
    }
  }

  /// E = a_0 - floor(f * bracket_1 / 2^F) from f_high = f * 2^(32 - F) (the kernel gets f_high
  /// from u with one shift: the octave bits leave the word). Each step is off by less than one
  /// unit while E falls by more than 0.34 * 2^(30 - F) units per step of f, so E is
  /// non-increasing in f (monotone, tested exhaustively).
  QFLASH_HOST_DEVICE static constexpr std::int32_t mantissa_high(std::uint32_t f_high) noexcept {
    return coefficient<0> - static_cast<std::int32_t>(mul_high(f_high, bracket<1>(f_high)));
  }

  /// E for a fraction f in [0, 2^F).
  QFLASH_HOST_DEVICE static constexpr std::int32_t mantissa(std::int32_t f) noexcept {
    return mantissa_high(static_cast<std::uint32_t>(f) << (32 - F));
  }

  /// The Q1.30 Horner evaluation, in int64 (products < 2^(30+F)).
  template <int K = 0>
  QFLASH_HOST_DEVICE static constexpr std::int64_t mantissa_q30(std::int64_t f) noexcept {
    if constexpr (K == Degree) {
      return coefficient_q30<K>;
    } else {
      return coefficient_q30<K> +
             ((f * mantissa_q30<K + 1>(f) + (std::int64_t{1} << (F - 1))) >> F);
    }
  }

  /// p = round(E / 2^(q+G)) and weight = round(E / 2^(q+G-SumBits)), from one shift:
  /// t = floor(2E / 2^s) with s = min(q + G - SumBits, 31) (2E < 2^31). Then
  /// weight = (t + 1) >> 1 and p = (t + 2^SumBits) >> (SumBits + 1), because nested floors with
  /// integer divisors collapse (floor((floor(x) + a) / b) = floor((x + a) / b)). Capping s at 31
  /// changes nothing: from s = 31 on, t = 0 and both results are 0, as the exact values are
  /// (E / 2^s < 1/2). Equal to round_shift_nonneg applied twice (tested exhaustively).
  QFLASH_HOST_DEVICE static constexpr Exp2Value apply(std::int32_t u, Params = {}) noexcept {
    const auto nonneg = static_cast<std::uint32_t>(u < 0 ? 0 : u);
    const int octaves = static_cast<int>(nonneg >> F);  // < 2^(31-F): no overflow below
    return from_shift(nonneg, min(octaves + (guard_bits - SumBits), 31));
  }

  /// Octave at which p and weight are 0 whatever the fraction (the shift of `apply` reaches 31).
  static constexpr std::int32_t kZeroOctave = 31 - (guard_bits - SumBits);
  static_assert(kZeroOctave >= 0 && kZeroOctave < (1 << (30 - F)), "PolyExp2: octave range");
  /// Largest u that `apply_visible` distinguishes: every u above it gives p = weight = 0.
  static constexpr std::int32_t kVisibleCap = ((kZeroOctave + 1) << F) - 1;

  /// `apply(u)` for u >= 0, the case of every visible entry (u = reference - t, reference >= t).
  /// u is capped at kVisibleCap instead of the shift at 31: from octave kZeroOctave on both give
  /// t = (2E) >> 31 = 0, so the values agree for every u >= 0 (tested exhaustively), and the
  /// kernel folds the cap into the subtraction that forms u (one min-add instruction).
  QFLASH_HOST_DEVICE static constexpr Exp2Value apply_visible(std::int32_t u,
                                                              Params = {}) noexcept {
    const auto capped = static_cast<std::uint32_t>(u < kVisibleCap ? u : kVisibleCap);
    return from_shift(capped, static_cast<int>(capped >> F) + (guard_bits - SumBits));  // s <= 31
  }

 private:
  /// p and weight of a distance `nonneg` >= 0 whose shift s (in [0, 31]) the caller formed: the
  /// fraction is nonneg's low F bits (shifting by 32 - F leaves only them in the word), then
  /// t = (2E) >> s, weight = (t + 1) >> 1, p = (t + 2^SumBits) >> (SumBits + 1) (see apply).
  QFLASH_HOST_DEVICE static constexpr Exp2Value from_shift(std::uint32_t nonneg, int s) noexcept {
    const auto e = static_cast<std::uint32_t>(mantissa_high(nonneg << (32 - F)));  // < 2^30
    const std::uint32_t t = (e << 1) >> s;
    return Exp2Value{static_cast<std::int32_t>((t + (1u << SumBits)) >> (SumBits + 1)),
                     static_cast<std::int32_t>((t + 1u) >> 1)};
  }

 public:
  /// 2^(-d / 2^F) in Q1.30 for d >= 0 (d < 0 is treated as 0): at most 2^30, exactly 2^30 at 0.
  QFLASH_HOST_DEVICE static constexpr std::int32_t rescale_q30(std::int32_t d,
                                                               Params = {}) noexcept {
    const std::int32_t nonneg = d < 0 ? 0 : d;
    const int octaves = nonneg >> F;
    const std::int64_t fraction = nonneg & ((std::int32_t{1} << F) - 1);
    // The mantissa lies in (2^29, 2^30]: the 32-bit rounding shift is exact (0 from 32 on).
    return static_cast<std::int32_t>(
        round_shift_nonneg(static_cast<std::uint32_t>(mantissa_q30(fraction)), octaves));
  }

  /// No runtime constants: every Params value is valid.
  QFLASH_HOST_DEVICE static constexpr Status validate(const Params& /*prm*/) noexcept {
    return Status::ok;
  }

  /// No runtime constants to derive; present for the calibration interface.
  QFLASH_HOST_DEVICE static constexpr Status calibrate(double /*octaves_per_unit*/,
                                                       Params& /*out*/) noexcept {
    return Status::ok;
  }
};

/// PolyExp2 has apply_visible (equal to apply for every u >= 0, tested in exp2_test).
template <int Degree, int Pmax, int SumBits, int F>
struct Exp2Traits<PolyExp2<Degree, Pmax, SumBits, F>> : Exp2TraitsDefaults {
  static constexpr bool has_apply_visible = true;
};

/// Polynomial exp2 with the octave applied by one multiply: the exp of the in-place kernel.
///
/// - In: u >= 0 in Q16 octaves below the reference (u < 0 is treated as 0). The work runs on
///   the headroom form v = H - u, H = (9 + SumBits) * 2^16 (`kHeadroom`), which the in-place
///   kernel gets from the logit's multiply-add (`ScaledLog2Logit::apply_offset`, offset H - F;
///   for a wide logit `WideLog2Logit::apply_wide_offset`, offset (H - F) 2^16, see below).
/// - Split: w = v >> 16 (arithmetic, <= 9 + SumBits), x = (v mod 2^16) / 2^16 as f_high = v << 16.
/// - Mantissa: E = A0 (1 + c1 x + c2 x^2) ~ A0 * 2^x in [A0, 2 A0), A0 = Pmax * 2^23, by two
///   unsigned high multiplies in ascending Horner form (B1 = A1 + hi(f_high * A2), E = A0 +
///   hi(f_high * B1), both floor); c1 = 0.660234, c2 = 1 - c1 (A2 = A0 - A1: E reaches 2 A0 at
///   the octave's end and never decreases in x, so P and the weight are monotone in u, tested).
///   Max relative error of the polynomial: 0.268 %.
/// - One product X = E * 2^w + R (64 bits; 2^w = 0 for w < 0, i.e. u > 9 + SumBits octaves,
///   where p * 2^SumBits < 1/2), R = 2^(31 + SumBits) + 2^31, so that with p = Pmax 2^-u:
///     weight = (X >> 32) - 2^(SumBits-1) = floor(p 2^SumBits + 1/2)    (round half up)
///     p      = X >> (32 + SumBits)       = floor(p + 1/2 + 2^-(SumBits+1)) in [0, Pmax]
///   P V sees P; the row sum sees the weight (SumBits more bits, unbiased rounding).
/// - Cost on the GPU: three shifts (w, 2^w, f_high), two IMAD.HI, one IMAD.WIDE.U32 and the
///   shift of P per score; the weight is the product's high word.
/// - Wide input (`apply_wide`, `product_wide`; Exp2Traits): u in Q32 and v = H 2^16 - u, split
///   as w = v >> 32 and f_high = v mod 2^32, so a Q32 logit (WideLog2Logit, the Fast preset)
///   feeds the fraction all 32 bits. One IMAD.WIDE of the score gives v (no shifts for w and
///   f_high); the same two Horner steps and product follow.
template <int Pmax = 255, int SumBits = 6>
struct AscendingPolyExp2 {
  static_assert(Pmax >= 1 && Pmax <= 255, "AscendingPolyExp2: Pmax must be in [1, 255]");
  static_assert(SumBits >= 1 && SumBits <= 8, "AscendingPolyExp2: SumBits must be in [1, 8]");
  struct Params {  ///< no runtime constants
    friend constexpr bool operator==(const Params&, const Params&) = default;
  };

  static constexpr int pmax = Pmax;
  static constexpr int sum_bits = SumBits;
  static constexpr int fraction_bits = 16;
  /// v = kHeadroom - u: w = v >> 16 is the left shift of E, 9 + SumBits at u = 0.
  static constexpr std::int32_t kHeadroom = std::int32_t{9 + SumBits} << 16;
  /// The rounding addend R of the product (see the class comment).
  static constexpr std::uint64_t kRounding =
      (std::uint64_t{1} << (31 + SumBits)) + (std::uint64_t{1} << 31);
  /// weight = (X >> 32) - kWeightOffset.
  static constexpr std::int32_t kWeightOffset = std::int32_t{1} << (SumBits - 1);

  static constexpr double c1 = 0.660234;
  /// A0 = Pmax * 2^23, A1 = round(c1 A0), A2 = A0 - A1.
  static constexpr std::uint32_t a0 = static_cast<std::uint32_t>(Pmax) << 23;
  static constexpr std::uint32_t a1 =
      static_cast<std::uint32_t>(detail::constant_round(c1 * static_cast<double>(a0)));
  static constexpr std::uint32_t a2 = a0 - a1;
  /// The Q1.30 rescale factor's cubic, R0 (1 + d1 x + d2 x^2 + d3 x^3), R0 = 2^30, d3 = 1 - d1 -
  /// d2 (exact at both ends; max relative error 0.011 %). A frame moves at almost every block, so
  /// the carried state is multiplied by one factor per block: with the quadratic's 0.27 % the
  /// error of a 16k-key row grew to 42.6 dB SQNR against exact attention on the int8 codes (62.3
  /// with the cubic). It costs one multiply per row and block, not per score.
  static constexpr double d1 = 0.6955020102552258;
  static constexpr double d2 = 0.22626981564297857;
  static constexpr std::uint32_t r0 = std::uint32_t{1} << 30;
  static constexpr std::uint32_t r1 =
      static_cast<std::uint32_t>(detail::constant_round(d1 * static_cast<double>(r0)));
  static constexpr std::uint32_t r2 =
      static_cast<std::uint32_t>(detail::constant_round(d2 * static_cast<double>(r0)));
  static constexpr std::uint32_t r3 = r0 - r1 - r2;

  /// c0 * 2^x in [c0, 2 c0) for x = f_high / 2^32 (c2k = c0 - c1k): partial sums < 2 c0 <= 2^32.
  QFLASH_HOST_DEVICE static constexpr std::uint32_t mantissa(std::uint32_t f_high, std::uint32_t c0,
                                                             std::uint32_t c1k,
                                                             std::uint32_t c2k) noexcept {
    // c + hi(f * m) as one 64-bit multiply-add (c * 2^32 never carries out: sums < 2^32); the
    // GPU keeps the constant addends in uniform registers this way.
    const auto step = [f_high](std::uint32_t m, std::uint32_t c) {
      return opaque_u32(
          static_cast<std::uint32_t>((std::uint64_t{f_high} * m + (std::uint64_t{c} << 32)) >> 32));
    };
    return step(step(c2k, c1k), c0);
  }
  /// R0 2^x in [R0, 2 R0] for x = f_high / 2^32, by the cubic (ascending Horner, floors):
  /// non-decreasing in f_high, partial sums <= 2^31.
  QFLASH_HOST_DEVICE static constexpr std::uint32_t rescale_mantissa(
      std::uint32_t f_high) noexcept {
    const auto step = [f_high](std::uint32_t m, std::uint32_t c) {
      return opaque_u32(
          static_cast<std::uint32_t>((std::uint64_t{f_high} * m + (std::uint64_t{c} << 32)) >> 32));
    };
    return step(step(step(r3, r2), r1), r0);
  }

  /// 2^w for w in [0, 31], 0 otherwise (shl.b32 semantics: the count is read as unsigned).
  QFLASH_HOST_DEVICE static constexpr std::uint32_t power_of_two(std::int32_t w) noexcept {
#if defined(__CUDA_ARCH__)
    std::uint32_t r;
    asm("shl.b32 %0, %1, %2;" : "=r"(r) : "r"(1u), "r"(w));
    return r;
#else
    return static_cast<std::uint32_t>(w) < 32u ? 1u << w : 0u;
#endif
  }

  /// The product X = E * 2^w + R from the headroom form v (any int32 v; p <= Pmax for
  /// v <= kHeadroom, the only case `apply` and the kernel produce).
  QFLASH_HOST_DEVICE static constexpr std::uint64_t product(std::int32_t v) noexcept {
    const std::uint32_t e = mantissa(static_cast<std::uint32_t>(v) << 16, a0, a1, a2);
    return static_cast<std::uint64_t>(e) * power_of_two(v >> 16) + kRounding;
  }
  /// The product from the wide headroom form v = H * 2^16 - u, u in Q32 octaves: the same
  /// split with 16 more fraction bits (w = v >> 32, f_high = v mod 2^32). For v >> 16 = v16 and
  /// v mod 2^16 = 0 it equals product(v16). p <= Pmax for v <= H * 2^16 + 2^16 - 1, i.e.
  /// u >= kMinWideDistance (at most 2^-16 octave above H; tests/host/fast_policies_test.cpp).
  QFLASH_HOST_DEVICE static constexpr std::uint64_t product_wide(std::int64_t v) noexcept {
    const std::uint32_t e = mantissa(opaque_u32(static_cast<std::uint32_t>(v)), a0, a1, a2);
    return static_cast<std::uint64_t>(e) * power_of_two(static_cast<std::int32_t>(v >> 32)) +
           kRounding;
  }
  /// The smallest distance `apply_wide` takes: a logit less than one Q16 unit above the frame
  /// (t = F with fraction bits 2^16 - 1).
  static constexpr std::int64_t kMinWideDistance = -((std::int64_t{1} << 16) - 1);

  /// p and weight from the product's high word (X >> 32).
  QFLASH_HOST_DEVICE static constexpr Exp2Value from_high_word(std::uint32_t high) noexcept {
    return Exp2Value{static_cast<std::int32_t>(high >> SumBits),
                     static_cast<std::int32_t>(high) - kWeightOffset};
  }
  QFLASH_HOST_DEVICE static constexpr Exp2Value from_headroom(std::int32_t v) noexcept {
    return from_high_word(static_cast<std::uint32_t>(product(v) >> 32));
  }

  /// round(Pmax * 2^(-u / 2^16)) up to the polynomial; every int32 u (u < 0 counts as 0).
  QFLASH_HOST_DEVICE static constexpr Exp2Value apply(std::int32_t u, Params = {}) noexcept {
    return from_headroom(kHeadroom - (u < 0 ? 0 : u));  // > -2^31 for every u: no overflow
  }
  /// round(Pmax * 2^(-u / 2^32)) up to the polynomial, u in Q32 octaves: u = (F - t) * 2^16 -
  /// (t_wide mod 2^16) for a logit t_wide below a frame F >= t = floor(t_wide / 2^16), so
  /// u >= kMinWideDistance (smaller u counts as that); any int64 u. apply_wide(u * 2^16) ==
  /// apply(u) for u >= 0.
  QFLASH_HOST_DEVICE static constexpr Exp2Value apply_wide(std::int64_t u, Params = {}) noexcept {
    const std::int64_t v =
        (std::int64_t{kHeadroom} << 16) - (u < kMinWideDistance ? kMinWideDistance : u);
    return from_high_word(static_cast<std::uint32_t>(product_wide(v) >> 32));
  }

  /// 2^(-d / 2^16) in Q1.30 for d >= 0 (d < 0 counts as 0): 2^30 * 2^x * 2^w with w = (-d) >> 16,
  /// rounded half up; exactly 2^30 at d = 0 and exactly 2^(30 - k) at d = k * 2^16.
  QFLASH_HOST_DEVICE static constexpr std::int32_t rescale_q30(std::int32_t d,
                                                               Params = {}) noexcept {
    const std::int32_t v = -(d < 0 ? 0 : d);  // in [-(2^31 - 1), 0]
    const std::uint32_t e = rescale_mantissa(static_cast<std::uint32_t>(v) << 16);  // < 2^31
    return static_cast<std::int32_t>(round_shift_nonneg(e, -(v >> 16)));
  }

  QFLASH_HOST_DEVICE static constexpr Status validate(const Params& /*prm*/) noexcept {
    return Status::ok;
  }
  QFLASH_HOST_DEVICE static constexpr Status calibrate(double /*octaves_per_unit*/,
                                                       Params& /*out*/) noexcept {
    return Status::ok;
  }
};

/// AscendingPolyExp2 takes wide logits (apply_wide, product_wide; tested in fast_policies_test)
/// where Pmax 2^SumBits <= 2^15: at u = kMinWideDistance the fraction raises the product's high
/// word by Pmax 2^SumBits c1 2^-16 < 1/2 above Pmax 2^SumBits + 2^(SumBits-1), so the weight stays
/// <= Pmax 2^SumBits, the bound of the Q16 form (at Pmax 255, SumBits 8 it would be one more).
template <int Pmax, int SumBits>
struct Exp2Traits<AscendingPolyExp2<Pmax, SumBits>> : Exp2TraitsDefaults {
  static constexpr bool has_wide_input = (Pmax << SumBits) <= (1 << 15);
};

/// The published QFlash exp2 (`exp2_i32_shift` + `requantize`), with its defects fixed.
///
/// Units: u is in raw Q K^T units (the logit policy is `PaperLogit`); R = round(1 / sm_scale)
/// units make one octave, sm_scale = log2(e) * softmax_scale * s_q * s_k.
/// - q = floor(-x * exp_m / 2^16) with x = -u, exp_m = round(-sm_scale * 2^16) (an estimate of
///   floor(u / R)); r = x + q * R; p = ((r >> 1) + R) >> q: R * 2^-q * (1 + f / 2), the linear
///   fraction of I-ViT's Shiftmax (up to 6.15 % high).
/// - P = (p * req_m + 2^15) >> 16 with req_m = round(sm_scale * 127 * 2^16): 7-bit P, Pmax = 127.
/// Fixed defects (numerics brief section 2): all arithmetic in int64 (no int32 overflow of
/// x * exp_m); a negative base ((r >> 1) + R < 0) gives 0 instead of -1; shifts of 63 or more give
/// 0; P is clamped to [0, 127] (no wrap of 128 to -128). Masked entries never reach this function.
/// The row sum uses P itself (sum_bits = 0), as the paper does.
struct PaperShiftExp2 {
  struct Params {
    std::int32_t r;      ///< round(1 / sm_scale), in [1, 127 * 2^17]
    std::int32_t exp_m;  ///< round(-sm_scale * 2^16), in [-2^17, 0]
    std::int32_t req_m;  ///< round(sm_scale * 127 * 2^16)
    std::int32_t l_m;    ///< round(2^30 / r): turns a p value in [0, r] into Q1.30
    friend constexpr bool operator==(const Params&, const Params&) = default;
  };

  static constexpr int pmax = 127;
  static constexpr int sum_bits = 0;
  /// Largest R: the 16-bit requantization multiplier req_m = round(127 * 2^16 / R) of the
  /// released code is 0 for R > 127 * 2^17, which would make every P 0; such scales are rejected.
  /// Below, req_m loses precision gradually (R = 10^6: the row maximum gets P = 122, not 127).
  static constexpr std::int32_t max_r = 127 * (std::int32_t{1} << 17);

  /// The linear-fraction shift exp: ~ R * 2^(-u / R), in [0, 2R].
  QFLASH_HOST_DEVICE static constexpr std::int64_t shift_exp(std::int32_t u,
                                                             const Params& prm) noexcept {
    // Bounds: |x| < 2^31, |exp_m| <= 2^17, so 0 <= q < 2^32; q * r < 2^56; all int64.
    const std::int64_t x = -static_cast<std::int64_t>(u < 0 ? 0 : u);
    const std::int64_t q = (x * prm.exp_m) >> 16;
    const std::int64_t r = x + q * prm.r;
    const std::int64_t base = (r >> 1) + prm.r;
    if (base <= 0) return 0;
    const std::int64_t p = shift_right_floor(base, q >= 63 ? 63 : static_cast<int>(q));
    const std::int64_t cap = std::int64_t{2} * prm.r;  // any p >= 2R already saturates P at 127
    return p < cap ? p : cap;
  }

  QFLASH_HOST_DEVICE static constexpr Exp2Value apply(std::int32_t u, const Params& prm) noexcept {
    const std::int64_t p = shift_exp(u, prm);
    const std::int64_t requantized = (p * prm.req_m + (std::int64_t{1} << 15)) >> 16;
    const auto clamped = static_cast<std::int32_t>(requantized > pmax ? pmax : requantized);
    return Exp2Value{clamped, clamped};
  }

  /// alpha * l_m with alpha = shift_exp(d): the paper's scale_release factor, capped at 2^30.
  QFLASH_HOST_DEVICE static constexpr std::int32_t rescale_q30(std::int32_t d,
                                                               const Params& prm) noexcept {
    const std::int64_t factor = shift_exp(d, prm) * prm.l_m;
    return static_cast<std::int32_t>(factor > kOneQ30 ? kOneQ30 : factor);
  }

  /// Octaves over which P can be non-zero: 127 * 2^-8 rounds to 0 (P <= round(127 * 2^-u)
  /// up to the linear fraction's 6.15 %).
  static constexpr int kVisibleOctaves = 8;

  /// True when the 16-bit estimate q = floor(u * |exp_m| / 2^16) of floor(u / R) is off by at
  /// most one octave for every visible u (u < 8 R): |u |exp_m| / 2^16 - u / R| < 1 there, i.e.
  /// 8 * | |exp_m| * R - 2^16 | < 2^16. Always true for R < 2^14 (|exp_m| R is within R / 2 of
  /// 2^16); above, only where round(2^16 / R) happens to be close (R near a power of two). Past
  /// that, q can be wrong by several octaves and P by any amount (R = 2^17: exp_m = 0, every
  /// key gets the maximum's octave).
  QFLASH_HOST_DEVICE static constexpr bool octave_estimate_holds(std::int64_t r,
                                                                 std::int64_t exp_m) noexcept {
    const std::int64_t miss = -exp_m * r - (std::int64_t{1} << 16);
    return kVisibleOctaves * (miss < 0 ? -miss : miss) < (std::int64_t{1} << 16);
  }

  /// invalid_params unless `prm` satisfies what `calibrate` guarantees: R in [1, max_r], exp_m in
  /// [-2^17, 0] with `octave_estimate_holds`, req_m >= 1 with |req_m R - 127 * 2^16| <=
  /// (req_m + R) / 2 + 1 (both rounded from one sm_scale: the row maximum gets P of about 127)
  /// and |l_m R - 2^30| <= R / 2. These bounds keep every int64 product of `shift_exp` and
  /// `apply` below 2^57.
  QFLASH_HOST_DEVICE static constexpr Status validate(const Params& prm) noexcept {
    const std::int64_t r = prm.r, req = prm.req_m, l = prm.l_m;
    if (r < 1 || r > max_r || prm.exp_m < -(std::int32_t{1} << 17) || prm.exp_m > 0 ||
        !octave_estimate_holds(r, prm.exp_m) || req < 1) {
      return Status::invalid_params;
    }
    const std::int64_t req_miss = req * r - std::int64_t{127} * 65536;
    const std::int64_t l_miss = l * r - (std::int64_t{1} << 30);
    const bool consistent = 2 * (req_miss < 0 ? -req_miss : req_miss) <= req + r + 2 &&
                            2 * (l_miss < 0 ? -l_miss : l_miss) <= r;
    return consistent ? Status::ok : Status::invalid_params;
  }

  /// The released code's host constants from sm_scale (octaves per Q K^T unit). R must land in
  /// [1, 127 * 2^17] (below, one unit spans more than an octave; above, req_m is 0) and the
  /// 16-bit exp_m must estimate octaves to within one (`octave_estimate_holds`): otherwise
  /// scale_out_of_range.
  QFLASH_HOST_DEVICE static constexpr Status calibrate(double sm_scale, Params& out) noexcept {
    if (!is_positive_finite(sm_scale)) return Status::invalid_scale;
    const double inverse = 1.0 / sm_scale;
    if (!(inverse >= 0.5) || !(inverse < static_cast<double>(max_r) + 0.5)) {
      return Status::scale_out_of_range;
    }
    const auto r = static_cast<std::int32_t>(round_to_int64(inverse));
    const auto req_m = static_cast<std::int32_t>(round_to_int64(sm_scale * 127.0 * 65536.0));
    if (req_m < 1) return Status::scale_out_of_range;  // 1 / sm_scale just above 127 * 2^17
    const auto exp_m = static_cast<std::int32_t>(round_to_int64(-sm_scale * 65536.0));
    if (!octave_estimate_holds(r, exp_m)) return Status::scale_out_of_range;
    out.r = r;
    out.exp_m = exp_m;
    out.req_m = req_m;
    out.l_m = static_cast<std::int32_t>(round_to_int64(1073741824.0 / static_cast<double>(r)));
    return Status::ok;
  }
};

}  // namespace qflash
