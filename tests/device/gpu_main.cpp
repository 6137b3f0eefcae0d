// SPDX-License-Identifier: Apache-2.0
// Catch2 main for the GPU suite: exits with 77 (CTest "Skipped") when no CUDA device is
// visible, except while tests are being listed, so that test discovery works on any machine.
#include <cstdio>
#include <cstring>

#include "qflash_instances.hpp"

#if __has_include(<catch2/catch_session.hpp>)
#include <catch2/catch_session.hpp>
#else
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#endif

int main(int argc, char* argv[]) {
  bool listing = false;
  for (int i = 1; i < argc; ++i) listing = listing || std::strncmp(argv[i], "--list", 6) == 0;
  if (!listing) {
    const qflash::instances::GpuInfo gpu = qflash::instances::gpu_info();
    if (!gpu.available) {
      std::puts("no CUDA device: GPU tests skipped");
      return 77;
    }
    std::printf("GPU: %s (sm_%d%d)\n", gpu.name.c_str(), gpu.major, gpu.minor);
  }
  return Catch::Session().run(argc, argv);
}
