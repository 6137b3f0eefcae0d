// SPDX-License-Identifier: Apache-2.0
// P feeds the u8 operand of the tensor-core P V: Pmax = 256 does not fit.
// expect: PolyExp2: Pmax must be in \[1, 255\]
#include <qflash/policy/exp2.hpp>

#ifdef QFLASH_SHOULD_FAIL
using Exp = qflash::PolyExp2<2, 256>;
#else
using Exp = qflash::PolyExp2<2, 255>;
#endif

int use_exp() { return Exp::apply(0).p; }
