//! The candle glue shared by the fused ops: one macro writes their `CustomOp2`/`CustomOp3`
//! impls, which only forward to the op's own `fwd` and `bwd`, so the forwarding (names,
//! argument order, which gradients come back) is written once, not per op.

/// Implements candle's custom-op traits for a fused op with inherent methods
/// `fwd(&self, a, b, c) -> Result<(CpuStorage, Shape)>` (each input a `(&CpuStorage, &Layout)`)
/// and `bwd(&self, a, b, c, res, grad) -> Result<(Option<Tensor>, Option<Tensor>,
/// Option<Tensor>)>` (each input a `&Tensor`).
///
/// - `custom_ops!(Op, "name", "name-with-third")`: the third input (a bias) is optional, so
///   `fwd` and `bwd` take it as an `Option`; `CustomOp2` is the op without it and
///   `CustomOp3` the op with it.
/// - `custom_ops!(Op, "name")`: the third input is required; only `CustomOp3`.
macro_rules! custom_ops {
    ($op:ty, $name2:literal, $name3:literal) => {
        custom_ops!(@op3 $op, $name3, Some);
        impl candle_core::CustomOp2 for $op {
            fn name(&self) -> &'static str {
                $name2
            }
            fn cpu_fwd(
                &self,
                s1: &candle_core::CpuStorage,
                l1: &candle_core::Layout,
                s2: &candle_core::CpuStorage,
                l2: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                self.fwd((s1, l1), (s2, l2), None)
            }
            fn bwd(
                &self,
                a: &candle_core::Tensor,
                b: &candle_core::Tensor,
                res: &candle_core::Tensor,
                grad: &candle_core::Tensor,
            ) -> candle_core::Result<(Option<candle_core::Tensor>, Option<candle_core::Tensor>)>
            {
                // The inherent `bwd` (inherent items win over the trait's in a path).
                let (da, db, _) = <$op>::bwd(self, a, b, None, res, grad)?;
                Ok((da, db))
            }
        }
    };
    ($op:ty, $name3:literal) => {
        custom_ops!(@op3 $op, $name3, std::convert::identity);
    };
    // `$third` wraps the third input as the op's `fwd` and `bwd` take it.
    (@op3 $op:ty, $name3:literal, $third:path) => {
        impl candle_core::CustomOp3 for $op {
            fn name(&self) -> &'static str {
                $name3
            }
            fn cpu_fwd(
                &self,
                s1: &candle_core::CpuStorage,
                l1: &candle_core::Layout,
                s2: &candle_core::CpuStorage,
                l2: &candle_core::Layout,
                s3: &candle_core::CpuStorage,
                l3: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                self.fwd((s1, l1), (s2, l2), $third((s3, l3)))
            }
            fn bwd(
                &self,
                a: &candle_core::Tensor,
                b: &candle_core::Tensor,
                c: &candle_core::Tensor,
                res: &candle_core::Tensor,
                grad: &candle_core::Tensor,
            ) -> candle_core::Result<(
                Option<candle_core::Tensor>,
                Option<candle_core::Tensor>,
                Option<candle_core::Tensor>,
            )> {
                <$op>::bwd(self, a, b, $third(c), res, grad)
            }
        }
    };
}
