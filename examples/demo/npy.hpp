// SPDX-License-Identifier: Apache-2.0
/// @file
/// The demo's NumPy .npy reading and writing (format versions 1.0, 2.0 and 3.0), so that real
/// activations can be fed to the demo. Part of the demo application, not of the library.
///
/// Supported: little-endian, C-order arrays of dtypes <f2 <f4 <f8 |i1 |u1 |b1 <i4 (for one-byte
/// types any byte-order character is accepted). Not supported, and reported as an NpyError:
/// big-endian data, Fortran order, structured or object dtypes, and any other dtype. Values are
/// decoded byte by byte, so the host's own byte order does not matter.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <ios>
#include <istream>
#include <limits>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "qflash/core/float16.hpp"

namespace qflash::npy {

/// A problem with a .npy file; what() names the file and the problem, e.g.
/// "q.npy: unsupported dtype '<c8'".
class NpyError : public std::runtime_error {
 public:
  NpyError(const std::string& source, const std::string& problem)
      : std::runtime_error(source + ": " + problem) {}
};

/// The element types this reader understands (NumPy's descr in parentheses).
enum class NpyDtype : std::uint8_t {
  float16,  ///< <f2, IEEE binary16
  float32,  ///< <f4
  float64,  ///< <f8
  int8,     ///< |i1
  uint8,    ///< |u1
  boolean,  ///< |b1, one byte per element, 0 = false
  int32,    ///< <i4
};

/// Bytes per element.
constexpr std::size_t npy_item_size(NpyDtype dtype) noexcept {
  switch (dtype) {
    case NpyDtype::float16:
      return 2;
    case NpyDtype::float32:
    case NpyDtype::int32:
      return 4;
    case NpyDtype::float64:
      return 8;
    case NpyDtype::int8:
    case NpyDtype::uint8:
    case NpyDtype::boolean:
      return 1;
  }
  return 0;
}

/// The descr string NumPy writes for the dtype.
constexpr const char* npy_descr(NpyDtype dtype) noexcept {
  switch (dtype) {
    case NpyDtype::float16:
      return "<f2";
    case NpyDtype::float32:
      return "<f4";
    case NpyDtype::float64:
      return "<f8";
    case NpyDtype::int8:
      return "|i1";
    case NpyDtype::uint8:
      return "|u1";
    case NpyDtype::boolean:
      return "|b1";
    case NpyDtype::int32:
      return "<i4";
  }
  return "?";
}

/// The first six bytes of every .npy file.
inline constexpr unsigned char kNpyMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

namespace detail {

/// The unsigned little-endian integer at `bytes`.
template <class UInt>
UInt load_little_endian(const std::byte* bytes) noexcept {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < sizeof(UInt); ++i) {
    value |= std::uint64_t{std::to_integer<std::uint8_t>(bytes[i])} << (8 * i);
  }
  return static_cast<UInt>(value);
}

/// Appends the bytes of `value`, least significant first.
template <class UInt>
void store_little_endian(UInt value, std::vector<std::byte>& out) {
  const std::uint64_t wide = value;
  for (std::size_t i = 0; i < sizeof(UInt); ++i) {
    out.push_back(static_cast<std::byte>((wide >> (8 * i)) & 0xffu));
  }
}

/// A recursive-descent parser for the header: a Python dict literal with the keys 'descr' (a
/// string), 'fortran_order' (True or False) and 'shape' (a tuple of non-negative integers).
class NpyHeaderParser {
 public:
  NpyHeaderParser(std::string_view text, const std::string& source)
      : text_(text), source_(source) {}

  struct Header {
    std::string descr;
    bool fortran_order = false;
    std::vector<std::int64_t> shape;
  };

  Header parse() {
    Header header;
    bool seen_descr = false, seen_order = false, seen_shape = false;
    expect('{');
    skip_space();
    while (peek() != '}') {
      const std::string key = parse_string();
      expect(':');
      skip_space();
      if (key == "descr") {
        if (peek() == '[') fail("structured dtypes are not supported");
        header.descr = parse_string();
        seen_descr = true;
      } else if (key == "fortran_order") {
        header.fortran_order = parse_bool();
        seen_order = true;
      } else if (key == "shape") {
        header.shape = parse_shape();
        seen_shape = true;
      } else {
        fail("unexpected header key '" + key + "'");
      }
      skip_space();
      if (peek() == ',') {
        ++pos_;
        skip_space();
      } else if (peek() != '}') {
        fail("expected ',' or '}' in the header");
      }
    }
    if (!seen_descr || !seen_order || !seen_shape) {
      fail("header lacks 'descr', 'fortran_order' or 'shape'");
    }
    return header;
  }

 private:
  [[noreturn]] void fail(const std::string& problem) const {
    throw NpyError(source_, "malformed header (" + problem + ")");
  }
  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t')) ++pos_;
  }
  void expect(char c) {
    skip_space();
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++pos_;
  }
  std::string parse_string() {
    skip_space();
    const char quote = peek();
    if (quote != '\'' && quote != '"') fail("expected a quoted string");
    const std::size_t end = text_.find(quote, pos_ + 1);
    if (end == std::string_view::npos) fail("unterminated string");
    std::string result(text_.substr(pos_ + 1, end - pos_ - 1));
    pos_ = end + 1;
    return result;
  }
  bool parse_bool() {
    if (text_.substr(pos_, 4) == "True") {
      pos_ += 4;
      return true;
    }
    if (text_.substr(pos_, 5) == "False") {
      pos_ += 5;
      return false;
    }
    fail("fortran_order must be True or False");
  }
  std::vector<std::int64_t> parse_shape() {
    expect('(');
    std::vector<std::int64_t> shape;
    skip_space();
    while (peek() != ')') {
      if (peek() < '0' || peek() > '9') fail("shape entries must be non-negative integers");
      std::int64_t value = 0;
      while (peek() >= '0' && peek() <= '9') {
        if (value > (std::numeric_limits<std::int64_t>::max() - 9) / 10) fail("shape too large");
        value = value * 10 + (peek() - '0');
        ++pos_;
      }
      if (peek() == 'L') ++pos_;  // Python 2 long literal
      shape.push_back(value);
      skip_space();
      if (peek() == ',') {
        ++pos_;
        skip_space();
      } else if (peek() != ')') {
        fail("expected ',' or ')' in the shape");
      }
    }
    ++pos_;
    return shape;
  }

  std::string_view text_;
  const std::string& source_;
  std::size_t pos_ = 0;
};

inline NpyDtype parse_descr(const std::string& descr, const std::string& source) {
  const auto unsupported = [&](const std::string& why) {
    return NpyError(source, "unsupported dtype '" + descr + "'" + why);
  };
  if (descr.size() != 3) throw unsupported("");
  const char order = descr[0];
  const std::string type = descr.substr(1);
  const bool one_byte = type == "i1" || type == "u1" || type == "b1";
  if (order != '<' && order != '|' && order != '>' && order != '=') throw unsupported("");
  if (!one_byte && order != '<') {
    throw unsupported(order == '>' ? " (big-endian data)" : " (byte order must be '<')");
  }
  if (type == "f2") return NpyDtype::float16;
  if (type == "f4") return NpyDtype::float32;
  if (type == "f8") return NpyDtype::float64;
  if (type == "i1") return NpyDtype::int8;
  if (type == "u1") return NpyDtype::uint8;
  if (type == "b1") return NpyDtype::boolean;
  if (type == "i4") return NpyDtype::int32;
  throw unsupported("");
}

}  // namespace detail

/// One array: its shape (C order; empty for a 0-d scalar), element type and raw little-endian
/// bytes (size() * npy_item_size(dtype) of them), plus where it came from for error messages.
struct NpyArray {
  std::vector<std::int64_t> shape;
  NpyDtype dtype = NpyDtype::float32;
  std::vector<std::byte> data;
  std::string source = "<memory>";

  /// Number of elements: the product of the shape (1 for a scalar).
  std::int64_t size() const noexcept {
    std::int64_t n = 1;
    for (const std::int64_t extent : shape) n *= extent;
    return n;
  }

  /// True for f2, f4 and f8.
  bool is_floating() const noexcept {
    return dtype == NpyDtype::float16 || dtype == NpyDtype::float32 || dtype == NpyDtype::float64;
  }

  /// Values of a floating-point array (f2 and f4 exactly, f8 rounded to nearest float).
  std::vector<float> to_float() const {
    require(is_floating(), "float");
    std::vector<float> out(element_count());
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(load_floating(i));
    return out;
  }
  /// Values of a floating-point array (f2, f4 and f8), exact.
  std::vector<double> to_double() const {
    require(is_floating(), "double");
    std::vector<double> out(element_count());
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = load_floating(i);
    return out;
  }
  /// Values of an i1 array.
  std::vector<std::int8_t> to_int8() const {
    require(dtype == NpyDtype::int8, "int8");
    std::vector<std::int8_t> out(element_count());
    std::memcpy(out.data(), data.data(), out.size());
    return out;
  }
  /// Values of a u1 array, or of a b1 array as 0 / 1 (any nonzero byte is true).
  std::vector<std::uint8_t> to_uint8() const {
    require(dtype == NpyDtype::uint8 || dtype == NpyDtype::boolean, "uint8");
    std::vector<std::uint8_t> out(element_count());
    for (std::size_t i = 0; i < out.size(); ++i) {
      const auto byte = std::to_integer<std::uint8_t>(data[i]);
      out[i] = dtype == NpyDtype::boolean ? (byte != 0 ? 1 : 0) : byte;
    }
    return out;
  }
  /// Values of an i4 array, or of any one-byte integer or bool array (widened exactly).
  std::vector<std::int32_t> to_int32() const {
    std::vector<std::int32_t> out(element_count());
    if (dtype == NpyDtype::int32) {
      for (std::size_t i = 0; i < out.size(); ++i) {
        out[i] = std::bit_cast<std::int32_t>(
            detail::load_little_endian<std::uint32_t>(data.data() + 4 * i));
      }
    } else if (dtype == NpyDtype::int8) {
      const std::vector<std::int8_t> narrow = to_int8();
      for (std::size_t i = 0; i < out.size(); ++i) out[i] = narrow[i];
    } else {
      require(dtype == NpyDtype::uint8 || dtype == NpyDtype::boolean, "int32");
      const std::vector<std::uint8_t> narrow = to_uint8();
      for (std::size_t i = 0; i < out.size(); ++i) out[i] = narrow[i];
    }
    return out;
  }

 private:
  std::size_t element_count() const { return static_cast<std::size_t>(size()); }
  void require(bool ok, const char* target) const {
    if (!ok) {
      throw NpyError(source,
                     std::string("cannot convert dtype '") + npy_descr(dtype) + "' to " + target);
    }
  }
  double load_floating(std::size_t i) const {
    switch (dtype) {
      case NpyDtype::float16:
        return static_cast<double>(
            half_bits_to_float(detail::load_little_endian<std::uint16_t>(data.data() + 2 * i)));
      case NpyDtype::float32:
        return static_cast<double>(
            std::bit_cast<float>(detail::load_little_endian<std::uint32_t>(data.data() + 4 * i)));
      case NpyDtype::float64:
        return std::bit_cast<double>(
            detail::load_little_endian<std::uint64_t>(data.data() + 8 * i));
      default:
        require(false, "float");
    }
    return 0.0;
  }
};

/// The longest header the readers accept, in bytes. Headers of the arrays this reader supports
/// are far shorter (NumPy itself refuses more than 10000 bytes by default): the bound keeps a
/// corrupt length field from being trusted.
inline constexpr std::size_t kNpyMaxHeaderLength = std::size_t{1} << 20;

namespace detail {

/// The data is read in pieces of at least this many bytes (the buffer then doubles), so that a
/// shape that claims more bytes than the file holds costs no more memory than the file has.
inline constexpr std::size_t kNpyReadChunk = std::size_t{1} << 20;

/// The bytes of a .npy file in memory, taken in order.
class NpySpanReader {
 public:
  explicit NpySpanReader(std::span<const std::byte> bytes) : bytes_(bytes) {}

  /// Copies up to `count` bytes to `out` and returns how many (fewer only at the end).
  std::size_t read(std::byte* out, std::size_t count) {
    const std::size_t n = std::min(count, bytes_.size() - position_);
    if (n > 0) std::memcpy(out, bytes_.data() + position_, n);
    position_ += n;
    return n;
  }
  bool at_end() const { return position_ == bytes_.size(); }
  /// The number of bytes left.
  std::optional<std::uint64_t> remaining() const { return bytes_.size() - position_; }

 private:
  std::span<const std::byte> bytes_;
  std::size_t position_ = 0;
};

/// The bytes of a .npy stream, taken in order; a failing stream is an NpyError naming `source`.
/// `size`: the stream's length in bytes, when known (a regular file).
class NpyStreamReader {
 public:
  NpyStreamReader(std::istream& in, const std::string& source, std::optional<std::uint64_t> size)
      : in_(in), source_(source), size_(size) {}

  /// Copies up to `count` bytes to `out` and returns how many (fewer only at the end).
  std::size_t read(std::byte* out, std::size_t count) {
    std::size_t n = 0;
    try {
      in_.read(reinterpret_cast<char*>(out), static_cast<std::streamsize>(count));
      n = static_cast<std::size_t>(in_.gcount());
    } catch (const std::ios_base::failure& e) {
      throw NpyError(source_, std::string("read error (") + e.what() + ")");
    }
    if (in_.bad()) throw NpyError(source_, "read error");
    consumed_ += n;
    return n;
  }
  bool at_end() {
    bool end = false;
    try {
      end = in_.peek() == std::istream::traits_type::eof();
    } catch (const std::ios_base::failure& e) {
      throw NpyError(source_, std::string("read error (") + e.what() + ")");
    }
    if (in_.bad()) throw NpyError(source_, "read error");
    return end;
  }
  /// The number of bytes left, when the stream's length is known.
  std::optional<std::uint64_t> remaining() const {
    if (!size_ || *size_ < consumed_) return std::nullopt;
    return *size_ - consumed_;
  }

 private:
  std::istream& in_;
  const std::string& source_;
  std::optional<std::uint64_t> size_;
  std::uint64_t consumed_ = 0;
};

/// Reads one array from `reader` (an NpySpanReader or NpyStreamReader) in the order of the
/// format, checking each part before reading the next: the magic string, the version, the header
/// length (at most kNpyMaxHeaderLength), the header, then exactly the data bytes that the shape
/// and dtype need, and finally that nothing follows.
template <class Reader>
NpyArray read_npy_from(Reader& reader, const std::string& source) {
  std::byte prefix[12];
  if (reader.read(prefix, sizeof kNpyMagic) != sizeof kNpyMagic ||
      std::memcmp(prefix, kNpyMagic, sizeof kNpyMagic) != 0) {
    throw NpyError(source, "bad magic (not a .npy file)");
  }
  if (reader.read(prefix + 6, 2) != 2) throw NpyError(source, "truncated header");
  const auto major = std::to_integer<unsigned>(prefix[6]);
  const auto minor = std::to_integer<unsigned>(prefix[7]);
  if ((major != 1 && major != 2 && major != 3) || minor != 0) {
    throw NpyError(source, "unsupported format version " + std::to_string(major) + "." +
                               std::to_string(minor));
  }
  const std::size_t length_bytes = major == 1 ? 2 : 4;
  if (reader.read(prefix + 8, length_bytes) != length_bytes) {
    throw NpyError(source, "truncated header");
  }
  const std::size_t header_length = major == 1 ? load_little_endian<std::uint16_t>(prefix + 8)
                                               : load_little_endian<std::uint32_t>(prefix + 8);
  if (header_length > kNpyMaxHeaderLength) {
    throw NpyError(source, "header length " + std::to_string(header_length) +
                               " exceeds the limit of " + std::to_string(kNpyMaxHeaderLength) +
                               " bytes");
  }
  std::string header_text(header_length, '\0');
  if (reader.read(reinterpret_cast<std::byte*>(header_text.data()), header_length) !=
      header_length) {
    throw NpyError(source, "truncated header");
  }

  const auto header = NpyHeaderParser(header_text, source).parse();
  NpyArray array;
  array.source = source;
  array.dtype = parse_descr(header.descr, source);
  if (header.fortran_order) throw NpyError(source, "fortran_order True is not supported");
  array.shape = header.shape;

  std::size_t expected = npy_item_size(array.dtype);
  for (const std::int64_t extent : array.shape) {
    const auto e = static_cast<std::size_t>(extent);
    if (e != 0 && expected > std::numeric_limits<std::size_t>::max() / 2 / e) {
      throw NpyError(source, "shape too large");
    }
    expected *= e;
  }
  if (const auto left = reader.remaining()) {
    array.data.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(expected, *left)));
  }
  std::size_t got = 0;
  while (got < expected) {
    const std::size_t chunk = std::min(expected - got, std::max(got, kNpyReadChunk));
    array.data.resize(got + chunk);
    const std::size_t n = reader.read(array.data.data() + got, chunk);
    got += n;
    if (n < chunk) {
      throw NpyError(source, "truncated data: the shape needs " + std::to_string(expected) +
                                 " bytes, the file has " + std::to_string(got));
    }
  }
  if (!reader.at_end()) {
    const auto left = reader.remaining();
    throw NpyError(source, (left && *left > 0 ? std::to_string(*left) + " " : std::string()) +
                               "unexpected bytes after the data (wrong shape?)");
  }
  return array;
}

}  // namespace detail

/// Parses the bytes of a .npy file; `source` names it in error messages. Throws NpyError for a
/// bad magic string, an unsupported format version, a malformed header or one longer than
/// kNpyMaxHeaderLength, an unsupported dtype, Fortran order, and data that is shorter
/// ("truncated data") or longer than the shape says.
inline NpyArray parse_npy(std::span<const std::byte> bytes, const std::string& source) {
  detail::NpySpanReader reader(bytes);
  return detail::read_npy_from(reader, source);
}

/// Reads a .npy array from `in`, which must end right after the array's data; `source` names
/// the stream in error messages. Reads the header first and then exactly the bytes its shape
/// needs, plus one byte to check for trailing data, so an endless or huge stream is never
/// consumed past that. Throws NpyError as `parse_npy` does, and for a failing stream.
inline NpyArray read_npy(std::istream& in, const std::string& source) {
  detail::NpyStreamReader reader(in, source, std::nullopt);
  return detail::read_npy_from(reader, source);
}

/// Reads a .npy file, as the stream overload does. Throws NpyError naming the file when it is a
/// directory, cannot be opened or read, or cannot be parsed.
inline NpyArray read_npy(const std::filesystem::path& path) {
  const std::string source = path.string();
  std::error_code error;
  const std::filesystem::file_status status = std::filesystem::status(path, error);
  if (std::filesystem::is_directory(status)) {
    throw NpyError(source, "is a directory, not a .npy file");
  }
  std::ifstream file(path, std::ios::binary);
  if (!file) throw NpyError(source, "cannot open file for reading");
  std::optional<std::uint64_t> size;
  if (std::filesystem::is_regular_file(status)) {
    const std::uintmax_t bytes = std::filesystem::file_size(path, error);
    if (!error) size = bytes;
  }
  detail::NpyStreamReader reader(file, source, size);
  return detail::read_npy_from(reader, source);
}

/// The bytes of a .npy file for `array`: format 1.0 (2.0 when the header exceeds 65535 bytes),
/// the header padded with spaces and a newline so that the data starts at a multiple of 64, as
/// NumPy writes it. Throws NpyError when the byte count does not match the shape.
inline std::vector<std::byte> serialize_npy(const NpyArray& array) {
  if (array.data.size() != static_cast<std::size_t>(array.size()) * npy_item_size(array.dtype)) {
    throw NpyError(array.source, "data size does not match the shape");
  }
  std::string header =
      std::string("{'descr': '") + npy_descr(array.dtype) + "', 'fortran_order': False, 'shape': (";
  for (std::size_t i = 0; i < array.shape.size(); ++i) {
    header += std::to_string(array.shape[i]);
    if (i + 1 < array.shape.size() || array.shape.size() == 1) header += ",";
    if (i + 1 < array.shape.size()) header += " ";
  }
  header += "), }";
  // Magic (6) + version (2) + header length (2 bytes in 1.0, 4 in 2.0), then header + '\n'.
  const auto padded_size = [&](std::size_t prefix) {
    return (prefix + header.size() + 1 + 63) / 64 * 64 - prefix;
  };
  const bool version1 = padded_size(10) <= 65535;
  const std::size_t header_size = padded_size(version1 ? 10 : 12);
  header.append(header_size - header.size() - 1, ' ');
  header += '\n';

  std::vector<std::byte> out;
  out.reserve(12 + header.size() + array.data.size());
  for (const unsigned char c : kNpyMagic) out.push_back(std::byte{c});
  out.push_back(std::byte{static_cast<unsigned char>(version1 ? 1 : 2)});
  out.push_back(std::byte{0});
  if (version1) {
    detail::store_little_endian(static_cast<std::uint16_t>(header.size()), out);
  } else {
    detail::store_little_endian(static_cast<std::uint32_t>(header.size()), out);
  }
  for (const char c : header) out.push_back(static_cast<std::byte>(c));
  out.insert(out.end(), array.data.begin(), array.data.end());
  return out;
}

/// Writes `array` as a .npy file. Throws NpyError naming the file on failure.
inline void write_npy(const std::filesystem::path& path, const NpyArray& array) {
  const std::vector<std::byte> bytes = serialize_npy(array);
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file) throw NpyError(path.string(), "cannot open file for writing");
  file.write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
  if (!file) throw NpyError(path.string(), "write error");
}

namespace detail {
template <class T>
constexpr NpyDtype npy_dtype_of() noexcept {
  if constexpr (std::is_same_v<T, Float16>) return NpyDtype::float16;
  if constexpr (std::is_same_v<T, float>) return NpyDtype::float32;
  if constexpr (std::is_same_v<T, double>) return NpyDtype::float64;
  if constexpr (std::is_same_v<T, std::int8_t>) return NpyDtype::int8;
  if constexpr (std::is_same_v<T, std::uint8_t>) return NpyDtype::uint8;
  if constexpr (std::is_same_v<T, bool>) return NpyDtype::boolean;
  if constexpr (std::is_same_v<T, std::int32_t>) return NpyDtype::int32;
}
template <class T>
concept NpyElement = std::is_same_v<T, Float16> || std::is_same_v<T, float> ||
    std::is_same_v<T, double> || std::is_same_v<T, std::int8_t> ||
    std::is_same_v<T, std::uint8_t> || std::is_same_v<T, bool> || std::is_same_v<T, std::int32_t>;
}  // namespace detail

/// An array of `values` (C order) with `shape`; the dtype follows T (Float16 -> <f2, float ->
/// <f4, double -> <f8, int8_t -> |i1, uint8_t -> |u1, bool -> |b1, int32_t -> <i4).
/// Throws NpyError when values.size() differs from the product of the shape.
template <detail::NpyElement T>
NpyArray make_npy(std::span<const T> values, std::vector<std::int64_t> shape) {
  NpyArray array;
  array.shape = std::move(shape);
  array.dtype = detail::npy_dtype_of<T>();
  for (const std::int64_t extent : array.shape) {
    if (extent < 0) throw NpyError(array.source, "negative extent in the shape");
  }
  if (static_cast<std::size_t>(array.size()) != values.size()) {
    throw NpyError(array.source, "values do not match the shape");
  }
  array.data.reserve(values.size() * sizeof(T));
  for (const T& value : values) {
    if constexpr (std::is_same_v<T, Float16>) {
      detail::store_little_endian(value.bits, array.data);
    } else if constexpr (std::is_same_v<T, bool>) {
      array.data.push_back(std::byte{static_cast<unsigned char>(value ? 1 : 0)});
    } else if constexpr (sizeof(T) == 1) {
      array.data.push_back(std::bit_cast<std::byte>(value));
    } else if constexpr (sizeof(T) == 4) {
      detail::store_little_endian(std::bit_cast<std::uint32_t>(value), array.data);
    } else {
      detail::store_little_endian(std::bit_cast<std::uint64_t>(value), array.data);
    }
  }
  return array;
}

}  // namespace qflash::npy
