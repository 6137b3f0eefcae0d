// SPDX-License-Identifier: Apache-2.0
// PolyExp2 has quadratic and cubic coefficient tables only.
// expect: PolyExp2: Degree must be 2 or 3
#include <qflash/policy/exp2.hpp>

#ifdef QFLASH_SHOULD_FAIL
using Exp = qflash::PolyExp2<4>;
#else
using Exp = qflash::PolyExp2<3>;
#endif

int use_exp() { return Exp::apply(1 << 16).p; }
