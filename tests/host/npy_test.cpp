// SPDX-License-Identifier: Apache-2.0
// .npy files: round trips through a temporary directory, the three format versions, and every
// error the reader reports.
#include "npy.hpp"

#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <optional>
#include <streambuf>
#include <string>
#include <utility>
#include <vector>

#include "support/catch.hpp"

namespace {

using namespace qflash::npy;
namespace fs = std::filesystem;

/// A fresh directory under the system temp directory, removed with its files at scope exit.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() /
            ("qflash_npy_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  fs::path file(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream file(path, std::ios::binary);
  file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(file.good());
}

/// A .npy file with a hand-written header (padded with spaces to a multiple of 64) and data.
std::string npy_bytes(int major, const std::string& dict, const std::string& data) {
  const std::size_t prefix = major == 1 ? 10 : 12;
  std::string header = dict;
  while ((prefix + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(major);
  out += '\0';
  const auto length = static_cast<std::uint32_t>(header.size());
  for (std::size_t i = 0; i < (major == 1 ? 2u : 4u); ++i) {
    out += static_cast<char>((length >> (8 * i)) & 0xffu);
  }
  return out + header + data;
}

std::string float_bytes(const std::vector<float>& values) {
  std::string out(values.size() * 4, '\0');
  std::memcpy(out.data(), values.data(), out.size());  // the test host is little-endian (x86)
  return out;
}

/// An input stream of `prefix` followed by `fill_count` copies of `fill` (endless when
/// fill_count is npos) that counts the bytes handed out: peeking is not reading.
class CountingStreamBuf : public std::streambuf {
 public:
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);
  CountingStreamBuf(std::string prefix, char fill, std::size_t fill_count)
      : prefix_(std::move(prefix)), fill_(fill), fill_count_(fill_count) {}
  /// Bytes read so far.
  std::size_t consumed() const { return position_; }

 protected:
  int_type underflow() override {
    const std::optional<char> c = at(position_);
    return c ? traits_type::to_int_type(*c) : traits_type::eof();
  }
  int_type uflow() override {
    const int_type c = underflow();
    if (c != traits_type::eof()) ++position_;
    return c;
  }
  std::streamsize xsgetn(char* out, std::streamsize count) override {
    std::streamsize n = 0;
    for (; n < count; ++n) {
      const std::optional<char> c = at(position_);
      if (!c) break;
      out[n] = *c;
      ++position_;
    }
    return n;
  }

 private:
  std::optional<char> at(std::size_t i) const {
    if (i < prefix_.size()) return prefix_[i];
    if (fill_count_ != npos && i - prefix_.size() >= fill_count_) return std::nullopt;
    return fill_;
  }
  std::string prefix_;
  char fill_;
  std::size_t fill_count_;
  std::size_t position_ = 0;
};

template <class T>
NpyArray round_trip(const TempDir& dir, const std::vector<T>& values,
                    std::vector<std::int64_t> shape) {
  const fs::path path = dir.file("round_trip.npy");
  const std::vector<std::int64_t> expected_shape = shape;
  write_npy(path, make_npy(std::span<const T>(values.data(), values.size()), std::move(shape)));
  NpyArray back = read_npy(path);
  CHECK(back.shape == expected_shape);
  CHECK(back.source == path.string());
  return back;
}

}  // namespace

TEST_CASE("npy: round trips of every dtype", "[npy]") {
  const TempDir dir;
  const std::vector<float> f32 = {1.5f, -2.25f, 3.0e-8f, 65504.0f, -0.0f, 7.0f};
  NpyArray a = round_trip(dir, f32, {2, 3});
  CHECK(a.dtype == NpyDtype::float32);
  CHECK(a.to_float() == f32);

  const std::vector<double> f64 = {0.1, -1.0e300, 3.0};
  a = round_trip(dir, f64, {3});
  CHECK(a.dtype == NpyDtype::float64);
  CHECK(a.to_double() == f64);
  CHECK(a.to_float() == std::vector<float>{0.1f, -std::numeric_limits<float>::infinity(), 3.0f});

  const std::vector<qflash::Float16> f16 = {{0x3c00}, {0xc000}, {0x3555}, {0x7bff}};
  a = round_trip(dir, f16, {2, 2});
  CHECK(a.dtype == NpyDtype::float16);
  CHECK(a.to_float() == std::vector<float>{1.0f, -2.0f, 0.333251953125f, 65504.0f});

  const std::vector<std::int8_t> i8 = {-128, -1, 0, 127};
  a = round_trip(dir, i8, {1, 4});
  CHECK(a.to_int8() == i8);
  CHECK(a.to_int32() == std::vector<std::int32_t>{-128, -1, 0, 127});

  const std::vector<std::uint8_t> u8 = {0, 1, 200, 255};
  a = round_trip(dir, u8, {4});
  CHECK(a.dtype == NpyDtype::uint8);
  CHECK(a.to_uint8() == u8);

  const bool flags[] = {true, false, true};
  const fs::path bool_path = dir.file("bool.npy");
  write_npy(bool_path, make_npy(std::span<const bool>(flags), {3}));
  a = read_npy(bool_path);
  CHECK(a.dtype == NpyDtype::boolean);
  CHECK(a.to_uint8() == std::vector<std::uint8_t>{1, 0, 1});

  const std::vector<std::int32_t> i32 = {-2147483647 - 1, 2147483647, 5, -6};
  a = round_trip(dir, i32, {2, 1, 2});
  CHECK(a.dtype == NpyDtype::int32);
  CHECK(a.to_int32() == i32);
}

TEST_CASE("npy: scalars, empty arrays and the written header layout", "[npy]") {
  const TempDir dir;
  NpyArray a = round_trip(dir, std::vector<float>{4.0f}, {});
  CHECK(a.size() == 1);
  CHECK(a.to_float() == std::vector<float>{4.0f});
  a = round_trip(dir, std::vector<float>{}, {0, 3});
  CHECK(a.size() == 0);
  CHECK(a.to_float().empty());

  const std::vector<float> values = {0, 1, 2, 3, 4, 5};
  const auto bytes = serialize_npy(make_npy(std::span<const float>(values), {2, 3}));
  const std::string text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  REQUIRE(text.size() == 128 + 24);  // data starts at byte 128
  CHECK(text.substr(0, 8) == std::string("\x93NUMPY\x01\x00", 8));
  CHECK(static_cast<unsigned char>(text[8]) == 118);  // header length, little-endian
  CHECK(text[9] == 0);
  CHECK(text.substr(10, dict.size()) == dict);
  CHECK(text[127] == '\n');
  CHECK(text.substr(128) == float_bytes(values));

  // One-element shapes are written with the tuple comma, as Python's repr does.
  const auto one = serialize_npy(make_npy(std::span<const float>(values.data(), 1), {1}));
  CHECK(std::string(reinterpret_cast<const char*>(one.data()), one.size()).find("(1,)") !=
        std::string::npos);
  CHECK_THROWS_AS(make_npy(std::span<const float>(values), {4}), NpyError);
}

TEST_CASE("npy: format versions 1.0, 2.0 and 3.0 and NumPy's header variants", "[npy]") {
  const TempDir dir;
  const std::string data = float_bytes({1.0f, 2.0f, 3.0f});
  for (int major : {1, 2, 3}) {
    const fs::path path = dir.file(std::string("v").append(std::to_string(major)).append(".npy"));
    // Keys in another order, double quotes, no trailing comma, the padding NumPy adds for
    // growing the first axis, and a Python 2 long.
    std::string dict = "{\"shape\": (3L,), 'fortran_order': False, 'descr': '<f4'}";
    dict.append(21, ' ');
    write_bytes(path, npy_bytes(major, dict, data));
    const NpyArray a = read_npy(path);
    CHECK(a.shape == std::vector<std::int64_t>{3});
    CHECK(a.to_float() == std::vector<float>{1.0f, 2.0f, 3.0f});
  }
  // Any byte-order character is fine for one-byte types.
  const fs::path path = dir.file("i1.npy");
  write_bytes(path, npy_bytes(1, "{'descr': '<i1', 'fortran_order': False, 'shape': (2,), }",
                              std::string("\xff\x05", 2)));
  CHECK(read_npy(path).to_int8() == std::vector<std::int8_t>{-1, 5});
}

TEST_CASE("npy: errors name the file and the problem", "[npy][errors]") {
  const TempDir dir;
  const std::string good_data = float_bytes({1.0f, 2.0f});
  const auto expect_error = [&](const std::string& name, const std::string& bytes,
                                const std::string& problem) {
    const fs::path path = dir.file(name);
    write_bytes(path, bytes);
    INFO("file " << name);
    QFLASH_CHECK_THROWS_AS_CONTAINING(read_npy(path), NpyError, path.string(), problem);
  };
  const auto header = [](const std::string& descr, const std::string& order,
                         const std::string& shape) {
    return "{'descr': '" + descr + "', 'fortran_order': " + order + ", 'shape': " + shape + ", }";
  };

  expect_error("magic.npy", "PK\x03\x04 not numpy at all", "bad magic");
  expect_error("empty.npy", "", "bad magic");
  expect_error("version.npy", npy_bytes(4, header("<f4", "False", "(2,)"), good_data),
               "unsupported format version 4.0");
  expect_error("fortran.npy", npy_bytes(1, header("<f4", "True", "(2,)"), good_data),
               "fortran_order True");
  expect_error("complex.npy", npy_bytes(1, header("<c8", "False", "(1,)"), good_data),
               "unsupported dtype '<c8'");
  expect_error("int64.npy", npy_bytes(1, header("<i8", "False", "(1,)"), good_data),
               "unsupported dtype '<i8'");
  expect_error("bigendian.npy", npy_bytes(1, header(">f4", "False", "(2,)"), good_data),
               "big-endian");
  expect_error("truncated.npy", npy_bytes(1, header("<f4", "False", "(3,)"), good_data),
               "truncated data");
  expect_error("trailing.npy", npy_bytes(1, header("<f4", "False", "(1,)"), good_data),
               "unexpected bytes");
  expect_error("short_header.npy", npy_bytes(1, header("<f4", "False", "(2,)"), "").substr(0, 40),
               "truncated header");
  expect_error("no_shape.npy",
               npy_bytes(1, "{'descr': '<f4', 'fortran_order': False, }", good_data),
               "malformed header");
  expect_error("bad_shape.npy", npy_bytes(1, header("<f4", "False", "(-2,)"), good_data),
               "malformed header");
  expect_error(
      "structured.npy",
      npy_bytes(1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", good_data),
      "structured dtypes");
  QFLASH_CHECK_THROWS_AS_CONTAINING(read_npy(dir.file("missing.npy")), NpyError, "missing.npy",
                                    "cannot open");

  // Converters refuse dtypes they cannot represent.
  const fs::path path = dir.file("floats.npy");
  write_bytes(path, npy_bytes(1, header("<f4", "False", "(2,)"), good_data));
  const NpyArray floats = read_npy(path);
  QFLASH_CHECK_THROWS_AS_CONTAINING(floats.to_int8(), NpyError, "floats.npy", "int8");
  CHECK_THROWS_AS(floats.to_uint8(), NpyError);
  CHECK_THROWS_AS(floats.to_int32(), NpyError);
  const std::int8_t small[] = {1};
  CHECK_THROWS_AS(make_npy(std::span<const std::int8_t>(small), {1}).to_float(), NpyError);
}

TEST_CASE("npy: a directory, /dev/zero or an oversized header length is an NpyError naming it",
          "[npy][errors]") {
  const TempDir dir;
  const fs::path directory = dir.file("arrays.npy");
  fs::create_directories(directory);
  QFLASH_CHECK_THROWS_AS_CONTAINING(read_npy(directory), NpyError, directory.string(),
                                    "is a directory");
  // The magic string is checked on the first six bytes: an endless device is no .npy file.
  QFLASH_CHECK_THROWS_AS_CONTAINING(read_npy("/dev/zero"), NpyError, "/dev/zero", "bad magic");
  // A 2.0 header claiming 2^31 - 1 bytes is refused before anything is allocated for it.
  const fs::path path = dir.file("huge_header.npy");
  write_bytes(path, std::string("\x93NUMPY\x02\x00\xff\xff\xff\x7f{'descr': '<f4'", 27));
  QFLASH_CHECK_THROWS_AS_CONTAINING(read_npy(path), NpyError, path.string(),
                                    "header length 2147483647 exceeds the limit");
}

TEST_CASE("npy: a stream is read no further than its header and shape say", "[npy][errors]") {
  const std::string header =
      npy_bytes(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", "");
  {
    INFO("endless zeros: no magic");
    CountingStreamBuf zeros("", '\0', CountingStreamBuf::npos);
    std::istream in(&zeros);
    QFLASH_CHECK_THROWS_AS_CONTAINING(read_npy(in, "zeros"), NpyError, "zeros: bad magic");
    CHECK(zeros.consumed() == 6);
  }
  {
    INFO("a header, then endless data: the shape's 16 bytes are read, then one is peeked at");
    CountingStreamBuf endless(header, '\1', CountingStreamBuf::npos);
    std::istream in(&endless);
    QFLASH_CHECK_THROWS_AS_CONTAINING(read_npy(in, "endless"), NpyError,
                                      "endless: unexpected bytes after the data");
    CHECK(endless.consumed() == header.size() + 16);
  }
  {
    INFO("a header length beyond the limit, then endless spaces");
    CountingStreamBuf spaces(std::string("\x93NUMPY\x03\x00\xff\xff\xff\xff", 12), ' ',
                             CountingStreamBuf::npos);
    std::istream in(&spaces);
    QFLASH_CHECK_THROWS_AS_CONTAINING(read_npy(in, "spaces"), NpyError, "exceeds the limit");
    CHECK(spaces.consumed() == 12);
  }
  {
    INFO("a shape of 2^40 bytes over 100 bytes of data: truncated, without a 1 TiB buffer");
    const std::string big =
        npy_bytes(1, "{'descr': '|u1', 'fortran_order': False, 'shape': (1099511627776,), }", "");
    CountingStreamBuf short_data(big, '\2', 100);
    std::istream in(&short_data);
    QFLASH_CHECK_THROWS_AS_CONTAINING(read_npy(in, "short"), NpyError, "short: truncated data",
                                      "needs 1099511627776 bytes, the file has 100");
  }
  {
    INFO("exactly the data: the stream overload reads the array");
    CountingStreamBuf exact(header + float_bytes({1.0f, 2.0f, 3.0f, 4.0f}), '\0', 0);
    std::istream in(&exact);
    CHECK(read_npy(in, "exact").to_float() == std::vector<float>{1.0f, 2.0f, 3.0f, 4.0f});
  }
}
