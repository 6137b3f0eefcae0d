// SPDX-License-Identifier: Apache-2.0
// The device quantize pass and device calibration equal the host helpers bit for bit, and the
// fp16 pipeline (quantize -> calibrate on device -> attention) equals the host reference run on
// the host-quantized inputs.
#include "qflash/reference/quantize.hpp"

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <random>
#include <utility>
#include <vector>

#include "device/gpu_buffer.hpp"
#include "qflash/core/float16.hpp"
#include "qflash_instances.hpp"
#include "support/catch.hpp"

namespace {

using namespace qflash;
using instances::OutputType;
using instances::Preset;
using test::GpuBuffer;

struct HalfTensor {
  std::int64_t z, h, n, d;
  std::vector<std::uint16_t> bits;
  std::vector<float> values;  // the same numbers as floats (exact)
};

HalfTensor random_half(std::int64_t z, std::int64_t h, std::int64_t n, std::int64_t d,
                       std::mt19937& rng, std::int64_t zero_head) {
  HalfTensor t{z, h, n, d, {}, {}};
  std::uniform_real_distribution<float> u(-4.0f, 4.0f);
  for (std::int64_t i = 0; i < z * h * n * d; ++i) {
    const std::int64_t head = (i / (n * d)) % h;
    const std::uint16_t b = head == zero_head ? std::uint16_t{0} : float_to_half_bits(u(rng));
    t.bits.push_back(b);
    t.values.push_back(half_bits_to_float(b));
  }
  return t;
}

/// The host helpers' scales (count per tensor, in tensor order) and codes (BHND, after
/// `offset` zero bytes) of the given tensors.
struct HostQuantized {
  std::vector<float> scales;
  std::vector<std::vector<std::int8_t>> codes;
};

HostQuantized host_quantize(std::initializer_list<const HalfTensor*> tensors, std::int64_t count,
                            std::size_t offset = 0) {
  HostQuantized result;
  for (const HalfTensor* t : tensors) {
    const auto fview = bhnd<const float>(t->values.data(), t->z, t->h, t->n, t->d);
    std::vector<float> s;
    if (count == 1) {
      s.push_back(reference::symmetric_scale(reference::amax(fview)));
    } else {
      for (const float a : reference::amax_per_head(fview))
        s.push_back(reference::symmetric_scale(a));
    }
    std::vector<std::int8_t> codes(offset + t->values.size(), 0);
    REQUIRE(reference::quantize(fview, s, bhnd(codes.data() + offset, t->z, t->h, t->n, t->d)) ==
            Status::ok);
    result.scales.insert(result.scales.end(), s.begin(), s.end());
    result.codes.push_back(std::move(codes));
  }
  return result;
}

}  // namespace

TEST_CASE("device quantize + calibrate == host quantize + calibrate", "[gpu][quantize]") {
  std::mt19937 rng(11);
  const std::int64_t z = 2, h = 3, nq = 50, nkv = 70, d = 64;
  const HalfTensor q = random_half(z, h, nq, d, rng, -1);
  const HalfTensor k = random_half(z, h, nkv, d, rng, -1);
  const HalfTensor v = random_half(z, h, nkv, d, rng, 1);  // head 1 all zero: scale 1
  GpuBuffer<std::uint16_t> dq(q.bits.size()), dk(k.bits.size()), dv(v.bits.size());
  dq.upload(q.bits);
  dk.upload(k.bits);
  dv.upload(v.bits);

  for (const Preset preset : {Preset::paper, Preset::precise}) {
    for (const std::int64_t count : {std::int64_t{1}, h}) {
      INFO("preset " << instances::name(preset) << ", scale count " << count);
      const instances::Ops& ops = instances::ops(preset, OutputType::s8);
      GpuBuffer<std::int8_t> q8(q.bits.size()), k8(k.bits.size()), v8(v.bits.size());
      GpuBuffer<float> scales(3 * static_cast<std::size_t>(count)),
          amax(3 * static_cast<std::size_t>(count));
      GpuBuffer<unsigned char> params(ops.params_size * static_cast<std::size_t>(count));
      GpuBuffer<Status> statuses(static_cast<std::size_t>(count));
      instances::HalfPipelineWorkspace ws{q8.get(),   k8.get(),     v8.get(),       scales.get(),
                                          amax.get(), params.get(), statuses.get(), count};
      const auto view = [](const GpuBuffer<std::uint16_t>& b, const HalfTensor& t) {
        return bhnd<const std::uint16_t>(b.get(), t.z, t.h, t.n, t.d);
      };
      REQUIRE(ops.quantize_half(view(dq, q), view(dk, k), view(dv, v), ws, nullptr) == Status::ok);

      // Host: the same conventions.
      const HostQuantized host = host_quantize({&q, &k, &v}, count);
      const std::vector<float>& host_scales = host.scales;
      const std::vector<std::vector<std::int8_t>>& host_codes = host.codes;
      CHECK(scales.download() == host_scales);
      CHECK(q8.download() == host_codes[0]);
      CHECK(k8.download() == host_codes[1]);
      CHECK(v8.download() == host_codes[2]);

      std::vector<unsigned char> host_params(params.size());
      const auto n = static_cast<std::size_t>(count);
      const std::span<const float> all(host_scales);
      REQUIRE(
          ops.calibrate(QuantScales{all.subspan(0, n), all.subspan(n, n), all.subspan(2 * n, n)},
                        static_cast<int>(d), host_params.data(), count) == Status::ok);
      const auto device_params = params.download();
      CHECK(ops.params_equal(device_params.data(), host_params.data(), count));
      for (const Status s : statuses.download()) CHECK(s == Status::ok);
    }
  }
}

// The quantize pass walks the (z, n) rows of each head in blocks, with 16-byte loads and 8-byte
// stores where the views allow and element by element where they do not; every layout must give
// the host helpers' codes and scales. D = 32: 512 rows per block, so each head of Q (Z * N =
// 2000 rows) spans four blocks and K, V (600 rows) two, and blocks cross from z = 0 into z = 1;
// one Q element is NaN (amax ignores it, its code is 0). A second shape has D = 80 (10 vector
// lanes per row: 6 idle threads per block), N = 1 for Q and K longer than Q.
TEST_CASE("device quantize: vectorized and element-wise layouts, row blocks == host helpers",
          "[gpu][quantize]") {
  struct Shape {
    std::int64_t z, h, nq, nkv, d;
  };
  const Shape shape = GENERATE(Shape{2, 3, 1000, 300, 32}, Shape{3, 2, 1, 77, 80});
  const std::int64_t z = shape.z, h = shape.h, nq = shape.nq, nkv = shape.nkv, d = shape.d;
  INFO("Z " << z << " H " << h << " Nq " << nq << " Nkv " << nkv << " D " << d);
  std::mt19937 rng(23);
  HalfTensor q = random_half(z, h, nq, d, rng, -1);
  const std::size_t nan_at = q.bits.size() / 2 + 1;
  q.bits[nan_at] = 0x7e00;  // NaN
  q.values[nan_at] = half_bits_to_float(0x7e00);
  const HalfTensor k = random_half(z, h, nkv, d, rng, -1);
  const HalfTensor v = random_half(z, h, nkv, d, rng, h - 1);  // last head all zero: scale 1

  struct Layout {
    const char* name;
    std::int64_t element_offset;  // of the input's first element in its buffer
    std::int64_t output_offset;   // of the int8 output's first element in its buffer
    bool bnhd;                    // [Z, N, H, D] memory order, seen as a BHND view
    std::int64_t d_stride;        // 2: every other element along D
  };
  const Layout layouts[] = {{"contiguous BHND (vectorized)", 0, 0, false, 1},
                            {"BNHD view (vectorized)", 0, 0, true, 1},
                            {"input misaligned by one element", 1, 0, false, 1},
                            {"output misaligned by one byte", 0, 1, false, 1},
                            {"D stride 2", 0, 0, false, 2}};
  for (const Layout& layout : layouts) {
    // Device copies of q, k, v in this layout; host values stay logical BHND.
    const auto place = [&](const HalfTensor& t, std::vector<std::uint16_t>& memory) {
      const std::int64_t ds = layout.d_stride;
      const std::int64_t sd = ds, ss = layout.bnhd ? t.h * t.d * ds : t.d * ds,
                         sh = layout.bnhd ? t.d * ds : t.n * t.d * ds, sb = t.h * t.n * t.d * ds;
      memory.assign(static_cast<std::size_t>(layout.element_offset + t.z * sb), 0x7c00);  // +inf
      for (std::int64_t b = 0; b < t.z; ++b)
        for (std::int64_t hh = 0; hh < t.h; ++hh)
          for (std::int64_t n = 0; n < t.n; ++n)
            for (std::int64_t dd = 0; dd < t.d; ++dd)
              memory[static_cast<std::size_t>(layout.element_offset + b * sb + hh * sh + n * ss +
                                              dd * sd)] =
                  t.bits[static_cast<std::size_t>(((b * t.h + hh) * t.n + n) * t.d + dd)];
      return Tensor4<const std::uint16_t>{nullptr, t.z, t.h, t.n, t.d, sb, sh, ss, sd};
    };
    std::vector<std::uint16_t> mq, mk, mv;
    Tensor4<const std::uint16_t> vq = place(q, mq), vk = place(k, mk), vv = place(v, mv);
    GpuBuffer<std::uint16_t> dq(mq.size()), dk(mk.size()), dv(mv.size());
    dq.upload(mq);
    dk.upload(mk);
    dv.upload(mv);
    vq.data = dq.get() + layout.element_offset;
    vk.data = dk.get() + layout.element_offset;
    vv.data = dv.get() + layout.element_offset;

    for (const std::int64_t count : {std::int64_t{1}, h}) {
      INFO(layout.name << ", scale count " << count);
      const instances::Ops& ops = instances::ops(Preset::precise, OutputType::s8);
      const auto o = static_cast<std::size_t>(layout.output_offset);
      GpuBuffer<std::int8_t> q8(o + q.bits.size()), k8(o + k.bits.size()), v8(o + v.bits.size());
      GpuBuffer<float> scales(3 * static_cast<std::size_t>(count)),
          amax(3 * static_cast<std::size_t>(count));
      GpuBuffer<unsigned char> params(ops.params_size * static_cast<std::size_t>(count));
      GpuBuffer<Status> statuses(static_cast<std::size_t>(count));
      const instances::HalfPipelineWorkspace ws{q8.get() + o,   k8.get() + o, v8.get() + o,
                                                scales.get(),   amax.get(),   params.get(),
                                                statuses.get(), count};
      REQUIRE(ops.quantize_half(vq, vk, vv, ws, nullptr) == Status::ok);

      const HostQuantized host = host_quantize({&q, &k, &v}, count, o);
      const std::vector<float>& host_scales = host.scales;
      const std::vector<std::vector<std::int8_t>>& host_codes = host.codes;
      CHECK(scales.download() == host_scales);
      // The codes after the output offset (the byte before it is never written).
      const auto past_offset = [&](const std::vector<std::int8_t>& codes) {
        return std::vector<std::int8_t>(codes.begin() + layout.output_offset, codes.end());
      };
      const auto codes_q = q8.download();
      CHECK(past_offset(codes_q) == past_offset(host_codes[0]));
      CHECK(past_offset(k8.download()) == past_offset(host_codes[1]));
      CHECK(past_offset(v8.download()) == past_offset(host_codes[2]));
      CHECK(codes_q[o + nan_at] == 0);  // the NaN
    }
  }
}

// Bad views return a named Status before any device work (the statuses are decided on the
// host; the huge shapes below have stride-0 inputs and are never read).
TEST_CASE("device quantize: bad views and overlapping buffers are named statuses",
          "[gpu][quantize][errors]") {
  const instances::Ops& ops = instances::ops(Preset::precise, OutputType::s8);
  GpuBuffer<std::uint16_t> input(64 * 32);
  GpuBuffer<std::int8_t> codes(3 * 64 * 32);
  GpuBuffer<float> scales(3), amax(3);
  GpuBuffer<unsigned char> params(ops.params_size);
  GpuBuffer<Status> statuses(1);
  const auto contiguous = bhnd<const std::uint16_t>(input.get(), 1, 1, 64, 32);
  const instances::HalfPipelineWorkspace ws{codes.get(),
                                            codes.get() + 64 * 32,
                                            codes.get() + 2 * 64 * 32,
                                            scales.get(),
                                            amax.get(),
                                            params.get(),
                                            statuses.get(),
                                            1};
  REQUIRE(ops.quantize_half(contiguous, contiguous, contiguous, ws, nullptr) == Status::ok);

  SECTION("Z * H from 2^31: too_many_heads, not a crash") {
    const Tensor4<const std::uint16_t> wide{
        input.get(), std::int64_t{1} << 20, std::int64_t{1} << 11, 1, 32, 0, 0, 0, 1};
    CHECK(ops.quantize_half(wide, wide, wide, ws, nullptr) == Status::too_many_heads);
  }
  SECTION("Z = 2^33, H = 2^31: the int8 output would pass 2^48 bytes: invalid_stride") {
    const Tensor4<const std::uint16_t> huge{
        input.get(), std::int64_t{1} << 33, std::int64_t{1} << 31, 1, 32, 0, 0, 0, 1};
    CHECK(ops.quantize_half(huge, huge, huge, ws, nullptr) == Status::invalid_stride);
  }
  SECTION("two outputs on the same bytes") {
    instances::HalfPipelineWorkspace bad = ws;
    bad.k8 = bad.q8;
    CHECK(ops.quantize_half(contiguous, contiguous, contiguous, bad, nullptr) ==
          Status::output_overlaps_input);
  }
  SECTION("an output over an input") {
    instances::HalfPipelineWorkspace bad = ws;
    bad.v8 = reinterpret_cast<std::int8_t*>(input.get());
    CHECK(ops.quantize_half(contiguous, contiguous, contiguous, bad, nullptr) ==
          Status::output_overlaps_input);
  }
  SECTION("the scales on the amax workspace") {
    instances::HalfPipelineWorkspace bad = ws;
    bad.amax = bad.scales;
    CHECK(ops.quantize_half(contiguous, contiguous, contiguous, bad, nullptr) ==
          Status::output_overlaps_input);
  }
}

TEST_CASE("fp16 pipeline on the device == host reference on host-quantized inputs",
          "[gpu][quantize]") {
  std::mt19937 rng(5);
  const std::int64_t z = 2, h = 4, n = 197, d = 64;
  const HalfTensor q = random_half(z, h, n, d, rng, -1);
  const HalfTensor k = random_half(z, h, n, d, rng, -1);
  const HalfTensor v = random_half(z, h, n, d, rng, -1);
  GpuBuffer<std::uint16_t> dq(q.bits.size()), dk(k.bits.size()), dv(v.bits.size());
  dq.upload(q.bits);
  dk.upload(k.bits);
  dv.upload(v.bits);
  for (const Preset preset : {Preset::paper, Preset::precise}) {
    for (const OutputType out_type : {OutputType::s8, OutputType::f16}) {
      INFO("preset " << instances::name(preset) << " output " << instances::name(out_type));
      const instances::Ops& ops = instances::ops(preset, out_type);
      GpuBuffer<std::int8_t> q8(q.bits.size()), k8(k.bits.size()), v8(v.bits.size());
      GpuBuffer<float> scales(3), amax(3);
      GpuBuffer<unsigned char> params(ops.params_size);
      GpuBuffer<Status> statuses(1);
      GpuBuffer<unsigned char> out(q.bits.size() * instances::element_size(out_type));
      const instances::HalfPipelineWorkspace ws{
          q8.get(), k8.get(), v8.get(), scales.get(), amax.get(), params.get(), statuses.get(), 1};
      const std::int64_t strides[4] = {h * n * d, n * d, d, 1};
      const auto view = [&](const GpuBuffer<std::uint16_t>& b) {
        return bhnd<const std::uint16_t>(b.get(), z, h, n, d);
      };
      REQUIRE(ops.launch_from_half(view(dq), view(dk), view(dv), {}, {}, out.get(), strides, ws,
                                   nullptr) == Status::ok);
      const auto actual = out.download();

      // Host: quantize with the host helpers, calibrate, run the integer reference.
      std::vector<float> s;
      std::vector<std::vector<std::int8_t>> codes;
      for (const HalfTensor* t : {&q, &k, &v}) {
        const auto fview = bhnd<const float>(t->values.data(), z, h, n, d);
        s.push_back(reference::symmetric_scale(reference::amax(fview)));
        codes.emplace_back(t->values.size());
        REQUIRE(reference::quantize(fview, std::span<const float>(&s.back(), 1),
                                    bhnd(codes.back().data(), z, h, n, d)) == Status::ok);
      }
      std::vector<unsigned char> host_params(ops.params_size);
      REQUIRE(ops.calibrate(QuantScales{{&s[0], 1}, {&s[1], 1}, {&s[2], 1}}, static_cast<int>(d),
                            host_params.data(), 1) == Status::ok);
      std::vector<unsigned char> expected(actual.size(), 0);
      const AttentionProblem hp{bhnd<const std::int8_t>(codes[0].data(), z, h, n, d),
                                bhnd<const std::int8_t>(codes[1].data(), z, h, n, d),
                                bhnd<const std::int8_t>(codes[2].data(), z, h, n, d)};
      REQUIRE(ops.reference(hp, host_params.data(), 1, expected.data(), strides) == Status::ok);
      std::size_t mismatches = 0;
      for (std::size_t i = 0; i < expected.size(); ++i) mismatches += expected[i] != actual[i];
      CHECK(mismatches == 0);
    }
  }
}

// A head whose device-calibrated scales the preset cannot serve (q, k ~ U[-100, 100] at D = 64:
// Precise's logits could saturate) reports its status and writes NaN (binary16) or 0 (integers),
// never a plausible value computed from stale parameter bytes.
TEST_CASE("fp16 pipeline: a head that calibrate rejects outputs NaN or 0 and says why",
          "[gpu][quantize]") {
  std::mt19937 rng(11);
  const std::int64_t z = 1, h = 2, n = 49, d = 64;
  HalfTensor q = random_half(z, h, n, d, rng, -1);
  for (auto& b : q.bits) b = float_to_half_bits(half_bits_to_float(b) * 25.0f);  // U[-100, 100]
  const HalfTensor v = random_half(z, h, n, d, rng, -1);
  GpuBuffer<std::uint16_t> dq(q.bits.size()), dv(v.bits.size());
  dq.upload(q.bits);
  dv.upload(v.bits);
  for (const OutputType out_type : {OutputType::s8, OutputType::f16}) {
    INFO("output " << instances::name(out_type));
    const instances::Ops& ops = instances::ops(Preset::precise, out_type);
    GpuBuffer<std::int8_t> q8(q.bits.size()), k8(q.bits.size()), v8(v.bits.size());
    GpuBuffer<float> scales(3), amax(3);
    GpuBuffer<unsigned char> params(ops.params_size);
    params.fill_bytes(0x5a);  // stale bytes that must not be used
    GpuBuffer<Status> statuses(1);
    const std::size_t bytes = q.bits.size() * instances::element_size(out_type);
    GpuBuffer<unsigned char> out(bytes);
    const instances::HalfPipelineWorkspace ws{
        q8.get(), k8.get(), v8.get(), scales.get(), amax.get(), params.get(), statuses.get(), 1};
    const std::int64_t strides[4] = {h * n * d, n * d, d, 1};
    const auto q_view = bhnd<const std::uint16_t>(dq.get(), z, h, n, d);
    const auto v_view = bhnd<const std::uint16_t>(dv.get(), z, h, n, d);
    REQUIRE(ops.launch_from_half(q_view, q_view, v_view, {}, {}, out.get(), strides, ws, nullptr) ==
            Status::ok);
    CHECK(statuses.download()[0] == Status::logit_range_exceeded);
    const auto actual = out.download();
    if (out_type == OutputType::f16) {
      std::size_t nans = 0;
      for (std::size_t i = 0; i < actual.size(); i += 2) {
        const auto bits = static_cast<std::uint16_t>(actual[i] | (actual[i + 1] << 8));
        if (std::isnan(half_bits_to_float(bits))) ++nans;
      }
      CHECK(nans == actual.size() / 2);
    } else {
      for (const auto b : actual) REQUIRE(b == 0);
    }
  }
}
