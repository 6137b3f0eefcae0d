// SPDX-License-Identifier: Apache-2.0
// The demo's CUDA backend: runs each demo case through the project's compiled kernels
// (instances/), checks the output against the integer reference element for element and
// times the kernel (median of 50 calls after 10 warm-up calls, CUDA events, inputs already int8
// and on the device, no L2 flush).
#include <cstdio>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <type_traits>
#include <variant>

#include "demo_backend.hpp"
#include "qflash_instances.hpp"

namespace qflash::demo {

namespace {

using instances::OutputType;
using instances::Preset;

template <class Cfg>
constexpr Preset preset_of() {
  if constexpr (std::is_same_v<Cfg, presets::Paper>) {
    return Preset::paper;
  } else if constexpr (std::is_same_v<Cfg, presets::Precise>) {
    return Preset::precise;
  } else if constexpr (std::is_same_v<Cfg, presets::PreciseCubic>) {
    return Preset::precise_cubic;
  } else if constexpr (std::is_same_v<Cfg, presets::Fast>) {
    return Preset::fast;
  } else {
    static_assert(std::is_same_v<Cfg, presets::FastLong>, "demo: unknown preset");
    return Preset::fast_long;
  }
}

template <class T>
constexpr OutputType output_of() {
  if constexpr (std::is_same_v<T, std::int8_t>) {
    return OutputType::s8;
  } else if constexpr (std::is_same_v<T, std::int16_t>) {
    return OutputType::s16;
  } else if constexpr (std::is_same_v<T, std::int32_t>) {
    return OutputType::s32;
  } else {
    static_assert(std::is_same_v<T, Float16>, "demo: unknown output type");
    return OutputType::f16;
  }
}

}  // namespace

DemoBackend make_cuda_demo_backend() {
  return DemoBackend{
      "cuda", [](const DemoWorkload& w, std::span<const DemoCase> cases) {
        std::vector<DemoRow> rows;
        const instances::GpuInfo gpu = instances::gpu_info();
        if (!gpu.available) {
          static std::once_flag said;  // once per run, not once per workload
          std::call_once(said, [] {
            std::fprintf(stderr, "qflash_demo: no CUDA device: reference rows only\n");
          });
          return rows;
        }
        const AttentionProblem problem = w.problem();
        for (const DemoCase& c : cases) {
          if (c.status != Status::ok) continue;  // rejected by calibrate: nothing to run
          std::visit(
              [&](const auto& typed) {
                using Typed = std::decay_t<decltype(typed)>;
                using T = typename Typed::value_type;
                std::vector<T> out(typed.reference.size());
                double median_us = 0.0;
                const Status s = instances::time_on_device(
                    preset_of<typename Typed::config>(), output_of<T>(), problem,
                    typed.params.data(), static_cast<std::int64_t>(typed.params.size()), out.data(),
                    10, 50, &median_us);
                if (s != Status::ok) {
                  throw std::runtime_error("cuda backend, " + w.name + " " + c.preset + "/" +
                                           c.output + ": " + to_string(s));
                }
                DemoRow row = make_row(w, c, "cuda", std::span<const T>(out));
                row.bit_exact =
                    std::memcmp(out.data(), typed.reference.data(), out.size() * sizeof(T)) == 0;
                row.time_us = median_us;
                rows.push_back(row);
              },
              c.data);
        }
        return rows;
      }};
}

}  // namespace qflash::demo
