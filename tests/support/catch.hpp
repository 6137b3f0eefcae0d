// SPDX-License-Identifier: Apache-2.0
/// @file
/// Catch2 v2/v3 shim: Debian bookworm ships v2.13 (<catch2/catch.hpp>); newer systems ship v3.
/// Tests include this file and use only macros both versions have (no SKIP()), plus the helpers
/// below in place of what the versions name differently (Catch::Contains is
/// Catch::Matchers::ContainsSubstring in v3).
#pragma once

#if __has_include(<catch2/catch_test_macros.hpp>)
#include <catch2/catch_approx.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
using Catch::Approx;
#else
#include <catch2/catch.hpp>
#endif

#include <exception>
#include <string>
#include <vector>

namespace qflash_test {

/// What a call threw: `kind` says whether it threw at all and whether the exception had the
/// expected type; `what` is its what() (empty when there is none).
struct Thrown {
  enum class Kind { nothing, expected_type, other_type, not_std_exception };
  Kind kind = Kind::nothing;
  std::string what;
};

/// Runs `call` and reports what it threw; `Expected` must derive from std::exception.
template <class Expected, class Call>
Thrown thrown_by(Call&& call) {
  try {
    call();
  } catch (const std::exception& e) {
    const bool expected = dynamic_cast<const Expected*>(&e) != nullptr;
    return {expected ? Thrown::Kind::expected_type : Thrown::Kind::other_type, e.what()};
  } catch (...) {
    return {Thrown::Kind::not_std_exception, ""};
  }
  return {};
}

inline const char* describe(Thrown::Kind kind) {
  switch (kind) {
    case Thrown::Kind::nothing:
      return "threw nothing";
    case Thrown::Kind::expected_type:
      return "threw the expected type";
    case Thrown::Kind::other_type:
      return "threw another type";
    case Thrown::Kind::not_std_exception:
      return "threw something not derived from std::exception";
  }
  return "?";
}

}  // namespace qflash_test

/// Checks that `expr` throws an `exception_type` (a std::exception) whose what() contains each
/// of the strings that follow (const char* or std::string), e.g.
///   QFLASH_CHECK_THROWS_AS_CONTAINING(read_npy(path), NpyError, path.string(), "bad magic");
#define QFLASH_CHECK_THROWS_AS_CONTAINING(expr, exception_type, ...)                 \
  do {                                                                               \
    const ::qflash_test::Thrown qflash_thrown_ =                                     \
        ::qflash_test::thrown_by<exception_type>([&] { static_cast<void>(expr); });  \
    INFO(#expr " " << ::qflash_test::describe(qflash_thrown_.kind) << ", what(): \"" \
                   << qflash_thrown_.what << "\"");                                  \
    CHECK(qflash_thrown_.kind == ::qflash_test::Thrown::Kind::expected_type);        \
    for (const std::string& qflash_part_ : std::vector<std::string>{__VA_ARGS__}) {  \
      INFO("expected in what(): \"" << qflash_part_ << "\"");                        \
      CHECK(qflash_thrown_.what.find(qflash_part_) != std::string::npos);            \
    }                                                                                \
  } while (false)

/// Checks that `expr` throws a std::exception whose what() contains each of the strings that
/// follow (const char* or std::string).
#define QFLASH_CHECK_THROWS_CONTAINING(expr, ...) \
  QFLASH_CHECK_THROWS_AS_CONTAINING(expr, std::exception, __VA_ARGS__)
