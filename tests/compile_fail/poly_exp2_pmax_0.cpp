// SPDX-License-Identifier: Apache-2.0
// P must be a non-empty u8 range: Pmax = 0 leaves no probabilities.
// expect: PolyExp2: Pmax must be in \[1, 255\]
#include <qflash/policy/exp2.hpp>

#ifdef QFLASH_SHOULD_FAIL
using Exp = qflash::PolyExp2<2, 0>;
#else
using Exp = qflash::PolyExp2<2, 1>;
#endif

int use_exp() { return Exp::apply(0).p; }
