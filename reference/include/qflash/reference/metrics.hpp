// SPDX-License-Identifier: Apache-2.0
/// @file
/// Error metrics of a test output against a reference output (both as real values, in double).
#pragma once

#include <cmath>
#include <cstddef>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>

namespace qflash::reference {

/// How far `test` is from `reference`, element by element (e_i = test_i - reference_i).
struct ErrorStats {
  /// Signal-to-quantization-noise ratio in dB: 10 * log10(sum reference_i^2 / sum e_i^2).
  /// +infinity when every e_i is 0; -infinity when the reference is all zeros and e is not.
  double sqnr_db;
  /// max |e_i|, in the units of the values.
  double max_abs;
  /// (1 / n) * sum |e_i|, in the units of the values.
  double mean_abs;
  /// sum reference_i * test_i / (||reference|| * ||test||), in [-1, 1]; 1 when both vectors are
  /// all zeros, 0 when exactly one of them is.
  double cosine;
};

/// The ErrorStats of `test` against `reference`. Sums are plain double accumulations in index
/// order (deterministic); a NaN in either input makes sqnr_db, max_abs and mean_abs NaN. Throws
/// std::invalid_argument when the sizes differ or are zero.
inline ErrorStats compare(std::span<const double> reference, std::span<const double> test) {
  if (reference.size() != test.size()) {
    throw std::invalid_argument("qflash::reference::compare: reference has " +
                                std::to_string(reference.size()) + " values, test has " +
                                std::to_string(test.size()));
  }
  if (reference.empty()) throw std::invalid_argument("qflash::reference::compare: no values");

  double signal = 0.0, noise = 0.0, max_abs = 0.0, sum_abs = 0.0;
  double dot = 0.0, test_energy = 0.0;
  for (std::size_t i = 0; i < reference.size(); ++i) {
    const double r = reference[i], t = test[i], e = t - r;
    signal += r * r;
    noise += e * e;
    sum_abs += std::fabs(e);
    if (std::fabs(e) > max_abs || std::isnan(e)) max_abs = std::fabs(e);
    dot += r * t;
    test_energy += t * t;
  }

  ErrorStats stats{};
  stats.sqnr_db =
      noise == 0.0 ? std::numeric_limits<double>::infinity() : 10.0 * std::log10(signal / noise);
  stats.max_abs = max_abs;
  stats.mean_abs = sum_abs / static_cast<double>(reference.size());
  if (signal == 0.0 && test_energy == 0.0) {
    stats.cosine = 1.0;
  } else if (signal == 0.0 || test_energy == 0.0) {
    stats.cosine = 0.0;
  } else {
    const double cosine = dot / (std::sqrt(signal) * std::sqrt(test_energy));
    stats.cosine = cosine > 1.0 ? 1.0 : (cosine < -1.0 ? -1.0 : cosine);  // rounding can exceed 1
  }
  return stats;
}

}  // namespace qflash::reference
