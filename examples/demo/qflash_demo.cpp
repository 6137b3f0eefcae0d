// SPDX-License-Identifier: Apache-2.0
// qflash_demo: how close integer-only attention gets to float attention.
//
// For each workload (the QFlash paper's A1-A7, a 4096-token sequence, "flat" attention, or your
// own tensors from .npy files) it prints the SQNR against a float64 oracle of every preset and
// output type of the bit-exact integer reference, next to the ceiling: exact attention on the
// same int8 inputs. Run `qflash_demo --help` for the options. The command line is in
// demo_cli.hpp, the machinery in demo_runner.hpp.
#include <iostream>
#include <string>
#include <vector>

#include "demo_backend.hpp"
#include "demo_cli.hpp"

namespace {

using namespace qflash::demo;

// ---- Backend registry ------------------------------------------------------------------------
// Every backend besides the reference. A backend adds rows with "bit_exact" and "time_us"
// (see demo_backend.hpp for the interface and how a CUDA build defines QFLASH_DEMO_WITH_CUDA).
std::vector<DemoBackend> registered_backends() {
  std::vector<DemoBackend> backends;
#if defined(QFLASH_DEMO_WITH_CUDA)
  backends.push_back(make_cuda_demo_backend());
#endif
  return backends;
}
// ---- end of backend registry -----------------------------------------------------------------

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  return run_cli(args, std::cout, std::cerr, registered_backends());
}
