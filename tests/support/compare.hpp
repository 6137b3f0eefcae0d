// SPDX-License-Identifier: Apache-2.0
/// @file
/// Element-wise comparison of two arrays with a report that says where they differ: the number
/// of mismatches, the first and the last one (index, optional [z, h, n, d] coordinates, both
/// values) and the seed of the inputs. Generic over the element type (integers, floats compared
/// bit for bit, and bit-pattern structs such as qflash::Float16), header-only and free of Catch2,
/// so host tests and the drivers of GPU tests share it.
///
///   const auto r = qflash::test::compare_exact(expected, actual, {"O, Precise s8", seed});
///   INFO(r.describe());
///   CHECK(r.ok());
///
/// `ViolationLog` is the scalar counterpart for exhaustive loops: it counts failed checks and
/// keeps the first few messages, built only on failure (a Catch2 CHECK per element would make a
/// 2^24-element sweep take minutes).
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <iomanip>
#include <limits>
#include <ranges>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace qflash::test {

/// What a report prints besides the values.
struct CompareOptions {
  std::string label;                    ///< what is compared
  std::uint64_t seed = 0;               ///< seed of the inputs (printed when has_seed)
  bool has_seed = false;                ///< set by the seeded constructor
  std::array<std::int64_t, 4> shape{};  ///< [Z, H, N, D] of a contiguous BHND array, or 0s
  CompareOptions() = default;
  CompareOptions(std::string what) : label(std::move(what)) {}  // NOLINT: implicit on purpose
  CompareOptions(const char* what) : label(what) {}             // NOLINT: implicit on purpose
  CompareOptions(std::string what, std::uint64_t input_seed)
      : label(std::move(what)), seed(input_seed), has_seed(true) {}
  /// Prints indices as [z, h, n, d] of a contiguous [Z, H, N, D] array.
  CompareOptions& with_shape(std::int64_t z, std::int64_t h, std::int64_t n, std::int64_t d) {
    shape = {z, h, n, d};
    return *this;
  }
};

namespace detail {

template <class T>
concept BitPattern = requires(const T& t) {
  { t.bits } -> std::convertible_to<std::uint64_t>;
};

template <class T>
std::string format_value(const T& v) {
  std::ostringstream os;
  if constexpr (std::is_same_v<T, bool>) {
    os << (v ? "true" : "false");
  } else if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) {
    os << static_cast<long long>(v);
  } else if constexpr (std::is_integral_v<T>) {
    os << static_cast<unsigned long long>(v);
  } else if constexpr (std::is_floating_point_v<T>) {
    os << std::setprecision(std::numeric_limits<T>::max_digits10) << v << " (" << std::hexfloat << v
       << ")";
  } else if constexpr (BitPattern<T>) {
    os << "bits 0x" << std::hex << static_cast<unsigned long long>(v.bits);
  } else {
    os << "<unprintable>";
  }
  return os.str();
}

/// Integers by value, floats and bit-pattern structs bit for bit (NaN equals the same NaN,
/// +0 differs from -0: the contract is bit-exactness).
template <class T>
bool same_value(const T& a, const T& b) {
  if constexpr (BitPattern<T>) {
    return a.bits == b.bits;
  } else if constexpr (std::is_floating_point_v<T>) {
    return std::memcmp(&a, &b, sizeof(T)) == 0;
  } else {
    return a == b;
  }
}

}  // namespace detail

/// The outcome of one comparison; `describe()` is meant for INFO / UNSCOPED_INFO.
struct CompareReport {
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);
  CompareOptions options;
  std::size_t expected_size = 0, actual_size = 0;
  std::size_t mismatches = 0;
  std::size_t first = npos, last = npos;
  std::string first_expected, first_actual, last_expected, last_actual;
  bool has_max_diff = false;  ///< set by compare_within
  double max_abs_diff = 0.0;
  std::size_t max_diff_index = npos;

  bool ok() const noexcept { return expected_size == actual_size && mismatches == 0; }

  std::string where(std::size_t index) const {
    std::ostringstream os;
    os << index;
    const auto& s = options.shape;
    if (s[0] > 0 && s[1] > 0 && s[2] > 0 && s[3] > 0) {
      auto i = static_cast<std::int64_t>(index);
      const std::int64_t d = i % s[3];
      i /= s[3];
      const std::int64_t n = i % s[2];
      i /= s[2];
      const std::int64_t h = i % s[1];
      os << " [z " << i / s[1] << ", h " << h << ", n " << n << ", d " << d << "]";
    }
    return os.str();
  }

  std::string describe() const {
    std::ostringstream os;
    os << (options.label.empty() ? std::string("comparison") : options.label) << ": ";
    if (expected_size != actual_size) {
      os << "size mismatch (expected " << expected_size << ", actual " << actual_size << "); ";
    }
    if (mismatches == 0) {
      os << "no mismatch in " << (expected_size < actual_size ? expected_size : actual_size)
         << " elements";
    } else {
      os << mismatches << " mismatches of " << expected_size << "; first at " << where(first)
         << " expected " << first_expected << " actual " << first_actual << "; last at "
         << where(last) << " expected " << last_expected << " actual " << last_actual;
    }
    if (has_max_diff && max_diff_index != npos) {
      os << "; max |diff| " << max_abs_diff << " at " << where(max_diff_index);
    }
    if (options.has_seed) {
      os << "; seed 0x" << std::hex << options.seed << " (QFLASH_TEST_SEED=0x" << options.seed
         << ")";
    }
    return os.str();
  }
};

/// Compares element by element with `equal(expected_i, actual_i)`.
template <std::ranges::contiguous_range E, std::ranges::contiguous_range A, class Equal>
CompareReport compare_with(const E& expected, const A& actual, Equal equal,
                           CompareOptions options = {}) {
  CompareReport r;
  r.options = std::move(options);
  r.expected_size = static_cast<std::size_t>(std::ranges::size(expected));
  r.actual_size = static_cast<std::size_t>(std::ranges::size(actual));
  const auto* e = std::ranges::data(expected);
  const auto* a = std::ranges::data(actual);
  const std::size_t n = r.expected_size < r.actual_size ? r.expected_size : r.actual_size;
  for (std::size_t i = 0; i < n; ++i) {
    if (equal(e[i], a[i])) continue;
    ++r.mismatches;
    if (r.first == CompareReport::npos) {
      r.first = i;
      r.first_expected = detail::format_value(e[i]);
      r.first_actual = detail::format_value(a[i]);
    }
    r.last = i;
  }
  if (r.last != CompareReport::npos) {
    r.last_expected = detail::format_value(e[r.last]);
    r.last_actual = detail::format_value(a[r.last]);
  }
  return r;
}

/// Bit-exact comparison (integers by value, floats and Float16 by bits).
template <std::ranges::contiguous_range E, std::ranges::contiguous_range A>
CompareReport compare_exact(const E& expected, const A& actual, CompareOptions options = {}) {
  using T = std::ranges::range_value_t<E>;
  static_assert(std::is_same_v<T, std::ranges::range_value_t<A>>,
                "compare_exact: both arrays must have the same element type");
  return compare_with(
      expected, actual, [](const T& x, const T& y) { return detail::same_value(x, y); },
      std::move(options));
}

/// |expected - actual| <= tolerance for arithmetic element types; also records the largest
/// difference. NaN never matches.
template <std::ranges::contiguous_range E, std::ranges::contiguous_range A>
CompareReport compare_within(const E& expected, const A& actual, double tolerance,
                             CompareOptions options = {}) {
  using T = std::ranges::range_value_t<E>;
  static_assert(std::is_arithmetic_v<T> && std::is_arithmetic_v<std::ranges::range_value_t<A>>,
                "compare_within: arithmetic element types only");
  CompareReport r = compare_with(
      expected, actual,
      [tolerance](const auto& x, const auto& y) {
        const double diff = static_cast<double>(x) - static_cast<double>(y);
        return diff <= tolerance && -diff <= tolerance;
      },
      std::move(options));
  r.has_max_diff = true;
  const auto* e = std::ranges::data(expected);
  const auto* a = std::ranges::data(actual);
  const std::size_t n = r.expected_size < r.actual_size ? r.expected_size : r.actual_size;
  for (std::size_t i = 0; i < n; ++i) {
    double diff = static_cast<double>(e[i]) - static_cast<double>(a[i]);
    diff = diff < 0 ? -diff : diff;
    if (!(diff <= r.max_abs_diff)) {  // also catches NaN once
      r.max_abs_diff = diff;
      r.max_diff_index = i;
    }
  }
  return r;
}

/// Counts failed scalar checks and keeps the first `keep` messages. `message` is a callable
/// returning something streamable; it runs only for failures.
class ViolationLog {
 public:
  explicit ViolationLog(std::string what, std::size_t keep = 4)
      : what_(std::move(what)), keep_(keep) {}

  template <class Message>
  bool check(bool ok, Message&& message) {
    ++checked_;
    if (ok) return true;
    if (count_ < keep_) {
      std::ostringstream os;
      os << message();
      examples_.push_back(os.str());
    }
    ++count_;
    return false;
  }

  std::size_t count() const noexcept { return count_; }
  std::size_t checked() const noexcept { return checked_; }
  bool ok() const noexcept { return count_ == 0; }

  std::string describe() const {
    std::ostringstream os;
    os << what_ << ": " << count_ << " violations in " << checked_ << " checks";
    for (const auto& e : examples_) os << "\n  " << e;
    if (count_ > examples_.size()) os << "\n  ...";
    return os.str();
  }

 private:
  std::string what_;
  std::size_t keep_;
  std::size_t checked_ = 0, count_ = 0;
  std::vector<std::string> examples_;
};

/// An integer output as doubles in units of V (each element divided by `units_per_v`), for
/// comparisons with the float oracle.
template <class OutT>
std::vector<double> to_v_units(const std::vector<OutT>& o, double units_per_v) {
  std::vector<double> r(o.size());
  for (std::size_t i = 0; i < o.size(); ++i) r[i] = static_cast<double>(o[i]) / units_per_v;
  return r;
}

}  // namespace qflash::test
