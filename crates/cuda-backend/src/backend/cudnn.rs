//! The convolutions by cuDNN: descriptors, the algorithm plan chosen once per shape and cached
//! with its workspace size, forward (fused with bias and ReLU where cuDNN takes it),
//! backward-data and backward-filter, in f32/TF32 or bf16.

use super::*;

/// The cuDNN descriptors of one convolution call over elements `T`.
pub(super) struct ConvDescriptors<T> {
    x: TensorDescriptor<T>,
    w: FilterDescriptor<T>,
    conv: ConvDescriptor<f32>,
    y: TensorDescriptor<T>,
}

/// cuDNN's choices for one convolution shape: each pass's algorithm and the math type it is
/// launched in (what Find timed it in; the precision's own under the heuristics).
#[derive(Clone, Copy, Debug)]
pub(super) struct ConvPlan {
    forward: cudnnConvolutionFwdAlgo_t,
    backward_data: cudnnConvolutionBwdDataAlgo_t,
    backward_filter: cudnnConvolutionBwdFilterAlgo_t,
    math: [cudnnMathType_t; 3],
    workspace_bytes: usize,
    /// "find" or "heuristics".
    chosen_by: &'static str,
}

/// A convolution's three passes, to pick a plan's math type.
#[derive(Clone, Copy, Debug)]
pub(super) enum Pass {
    Forward = 0,
    BackwardData = 1,
    BackwardFilter = 2,
}

impl CudaInner {
    /// y = relu(conv(x, w) + b) in one cuDNN call; an error if cuDNN refuses the call.
    pub(super) fn convolve_bias_relu(
        &self,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        g: &ConvGeometry,
        y: &mut CudaSlice<f32>,
    ) -> Result<(), String> {
        let n = x.len() / g.in_len();
        let bias = self.tensor::<f32>([1, g.out_channels, 1, 1]);
        self.with_conv::<f32, _>(g, n, Pass::Forward, |plan, d, workspace| {
            let op = ConvBiasActivationForward {
                conv: &d.conv,
                act: &self.relu,
                x: &d.x,
                w: &d.w,
                z: &d.y,
                bias: &bias,
                y: &d.y,
            };
            // cuDNN computes act(alpha1 conv(x) + alpha2 z + bias); with alpha2 = 0 the side
            // input z is y itself (cuDNN allows z to alias y), borrowed here through a second
            // handle on y's memory that is leaked, not freed, afterwards.
            // z = y is read (times 0) before it is written: it must hold numbers, not
            // whatever an uninitialised output buffer held (0 * NaN is NaN).
            check(self.stream.memset_zeros(y), "clearing the output");
            let (y_ptr, record) = cudarc::driver::DevicePtr::device_ptr(&*y, &self.stream);
            drop(record);
            // SAFETY: y_ptr is y's live allocation of y.len() f32s; `z` is leaked below, so
            // the memory is freed once, by y.
            let z = unsafe { self.stream.upgrade_device_ptr::<f32>(y_ptr, y.len()) };
            // SAFETY: x, w, z, y have the descriptors' shapes (NCHW f32), b is K floats.
            let launched = unsafe {
                op.launch(
                    plan.forward,
                    Some(workspace),
                    (1.0f32, 0.0f32),
                    x,
                    w,
                    &z,
                    b,
                    y,
                )
            };
            z.leak();
            launched.map_err(|error| format!("{error:?}"))
        })
    }

    pub(super) fn tensor<T: Element>(&self, dims: [usize; 4]) -> TensorDescriptor<T> {
        int(dims.iter().product(), "a cuDNN tensor");
        check(
            self.cudnn.create_4d_tensor::<T>(
                cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                dims.map(|d| int(d, "a tensor's dimension")),
            ),
            "creating a tensor descriptor",
        )
    }

    /// Descriptors of a convolution over `n` images.
    pub(super) fn conv_descriptors<T: Element>(
        &self,
        g: &ConvGeometry,
        n: usize,
    ) -> ConvDescriptors<T> {
        let x = self.tensor([n, g.in_channels, g.in_h, g.in_w]);
        let y = self.tensor([n, g.out_channels, g.out_h(), g.out_w()]);
        let w = check(
            self.cudnn.create_4d_filter::<T>(
                cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                [g.out_channels, g.in_channels, g.kernel, g.kernel]
                    .map(|d| int(d, "a filter's dimension")),
            ),
            "creating a filter descriptor",
        );
        let mut conv = check(
            self.cudnn.create_conv2d::<f32>(
                [int(g.pad, "a convolution's padding"); 2],
                [int(g.stride, "a convolution's stride"); 2],
                [1, 1],
                cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
            ),
            "creating a convolution descriptor",
        );
        check(
            conv.set_math_type(self.precision_math()),
            "setting the cuDNN math type",
        );
        ConvDescriptors { x, w, conv, y }
    }

    /// The math type the precision allows: FMA only for true fp32 (cuDNN would otherwise use
    /// TF32 tensor cores from Ampere on), tensor cores for TF32 and bf16.
    fn precision_math(&self) -> cudnnMathType_t {
        match self.precision {
            Precision::Fp32 => cudnnMathType_t::CUDNN_FMA_MATH,
            Precision::Tf32 | Precision::Bf16 => cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
        }
    }

    /// The cached plan for a shape, choosing it on first use.
    pub(super) fn plan<T: Element>(&self, g: &ConvGeometry, n: usize) -> ConvPlan {
        let key = (*g, n, T::NAME);
        let mut plans = self.plans.lock().expect("plans lock");
        if let Some(plan) = plans.get(&key) {
            return *plan;
        }
        if let Some(finder) = &self.finder {
            match finder.find(g, n, T::DATA_TYPE, self.precision_math()) {
                Ok(found) => {
                    let plan = ConvPlan {
                        forward: found.forward.algorithm,
                        backward_data: found.backward_data.algorithm,
                        backward_filter: found.backward_filter.algorithm,
                        math: [
                            found.forward.math,
                            found.backward_data.math,
                            found.backward_filter.math,
                        ],
                        workspace_bytes: found
                            .forward
                            .workspace_bytes
                            .max(found.backward_data.workspace_bytes)
                            .max(found.backward_filter.workspace_bytes),
                        chosen_by: "find",
                    };
                    tracing::debug!(?g, n, chosen_by = plan.chosen_by, ?plan, "cuDNN plan");
                    plans.insert(key, plan);
                    return plan;
                }
                Err(error) => tracing::warn!(
                    ?g,
                    n,
                    %error,
                    "cuDNN's Find failed for this shape; cuDNN's heuristics choose"
                ),
            }
        }
        let d = self.conv_descriptors::<T>(g, n);
        let forward_op = ConvForward {
            conv: &d.conv,
            x: &d.x,
            w: &d.w,
            y: &d.y,
        };
        let forward = check(forward_op.pick_algorithm(), "choosing a forward algorithm");
        let data_op = ConvBackwardData {
            conv: &d.conv,
            dx: &d.x,
            w: &d.w,
            dy: &d.y,
        };
        let backward_data = check(
            data_op.pick_algorithm(),
            "choosing a backward-data algorithm",
        );
        let filter_op = ConvBackwardFilter {
            conv: &d.conv,
            x: &d.x,
            dw: &d.w,
            dy: &d.y,
        };
        let backward_filter = check(
            filter_op.pick_algorithm(),
            "choosing a backward-filter algorithm",
        );
        let workspace_bytes = [
            check(
                forward_op.get_workspace_size(forward),
                "forward workspace size",
            ),
            check(
                data_op.get_workspace_size(backward_data),
                "backward-data workspace size",
            ),
            check(
                filter_op.get_workspace_size(backward_filter),
                "backward-filter workspace size",
            ),
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        let plan = ConvPlan {
            forward,
            backward_data,
            backward_filter,
            math: [self.precision_math(); 3],
            workspace_bytes,
            chosen_by: "heuristics",
        };
        tracing::debug!(?g, n, chosen_by = plan.chosen_by, ?plan, "cuDNN plan");
        plans.insert(key, plan);
        plan
    }

    /// Runs one cuDNN convolution call (`pass`) of shape `g` over `n` images: `f` gets the
    /// cached plan, fresh descriptors in the plan's math type for the pass, and a workspace
    /// big enough for the plan.
    pub(super) fn with_conv<T: Element, R>(
        &self,
        g: &ConvGeometry,
        n: usize,
        pass: Pass,
        f: impl FnOnce(&ConvPlan, &ConvDescriptors<T>, &mut CudaSlice<u8>) -> R,
    ) -> R {
        let plan = self.plan::<T>(g, n);
        let mut descriptors = self.conv_descriptors::<T>(g, n);
        check(
            descriptors.conv.set_math_type(plan.math[pass as usize]),
            "setting the plan's math type",
        );
        self.with_workspace(plan.workspace_bytes, |workspace| {
            f(&plan, &descriptors, workspace)
        })
    }

    /// Runs `f` with a workspace of at least `bytes` (grown, never shrunk).
    pub(super) fn with_workspace<R>(
        &self,
        bytes: usize,
        f: impl FnOnce(&mut CudaSlice<u8>) -> R,
    ) -> R {
        let mut workspace = self.workspace.lock().expect("workspace lock");
        let big_enough = workspace.as_ref().is_some_and(|w| w.len() >= bytes.max(1));
        if !big_enough {
            *workspace = Some(check(
                self.stream.alloc_zeros::<u8>(bytes.max(1)),
                "allocating the cuDNN workspace",
            ));
        }
        f(workspace.as_mut().expect("allocated above"))
    }

    /// y = conv(x, w) (no bias) over elements `T`.
    pub(super) fn conv_forward_of<T: Element>(
        &self,
        x: &CudaSlice<T>,
        w: &CudaSlice<T>,
        g: &ConvGeometry,
        y: &mut CudaSlice<T>,
    ) {
        let n = x.len() / g.in_len();
        self.with_conv::<T, _>(g, n, Pass::Forward, |plan, d, workspace| {
            let op = ConvForward {
                conv: &d.conv,
                x: &d.x,
                w: &d.w,
                y: &d.y,
            };
            // SAFETY: x, w, y have the descriptors' shapes (NCHW).
            let launched =
                unsafe { op.launch(plan.forward, Some(workspace), (T::ONE, T::ZERO), x, w, y) };
            check(launched, "cuDNN convolution forward");
        });
    }

    /// dx = the input gradient of a convolution, given dy (also the deconvnet's filtering).
    pub(super) fn conv_data_backward_of<T: Element>(
        &self,
        dy: &CudaSlice<T>,
        w: &CudaSlice<T>,
        g: &ConvGeometry,
        dx: &mut CudaSlice<T>,
    ) {
        let n = dy.len() / g.out_len();
        self.with_conv::<T, _>(g, n, Pass::BackwardData, |plan, d, workspace| {
            let op = ConvBackwardData {
                conv: &d.conv,
                dx: &d.x,
                w: &d.w,
                dy: &d.y,
            };
            // SAFETY: dy, w, dx have the descriptors' shapes (NCHW): the engine allocates
            // them from the same geometry.
            let launched = unsafe {
                op.launch(
                    plan.backward_data,
                    Some(workspace),
                    (T::ONE, T::ZERO),
                    dx,
                    w,
                    dy,
                )
            };
            check(launched, "cuDNN convolution backward-data");
        });
    }

    /// dw = the filter gradient of a convolution.
    pub(super) fn conv_filter_backward_of<T: Element>(
        &self,
        x: &CudaSlice<T>,
        dy: &CudaSlice<T>,
        g: &ConvGeometry,
        dw: &mut CudaSlice<T>,
    ) {
        let n = x.len() / g.in_len();
        self.with_conv::<T, _>(g, n, Pass::BackwardFilter, |plan, d, workspace| {
            let op = ConvBackwardFilter {
                conv: &d.conv,
                x: &d.x,
                dw: &d.w,
                dy: &d.y,
            };
            // SAFETY: x, dw, dy have the descriptors' shapes (NCHW).
            let launched = unsafe {
                op.launch(
                    plan.backward_filter,
                    Some(workspace),
                    (T::ONE, T::ZERO),
                    x,
                    dw,
                    dy,
                )
            };
            check(launched, "cuDNN convolution backward-filter");
        });
    }

    /// y = conv(x, w) + b, rectified when `relu`: in f32 (or TF32), or in bf16 with the bias
    /// (and ReLU) applied as the result is widened back to f32.
    pub(super) fn conv_bias(
        &self,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        g: &ConvGeometry,
        y: &mut CudaSlice<f32>,
        relu: bool,
    ) {
        let total = int(y.len(), "a convolution's output");
        let (channels, plane) = (
            int(g.out_channels, "a convolution's channels"),
            int(g.out_h() * g.out_w(), "an output plane"),
        );
        if self.is_bf16() {
            let (x16, w16) = (self.to_bf16(x), self.to_bf16(w));
            let mut y16 = self.scratch::<bf16>(y.len());
            self.conv_forward_of(&x16, &w16, g, &mut y16);
            let relu = i32::from(relu);
            launch!(
                self,
                "from_bf16_bias",
                launch_1d(y.len()),
                &y16,
                b,
                y,
                &total,
                &channels,
                &plane,
                &relu
            );
            return;
        }
        self.conv_forward_of(x, w, g, y);
        if relu {
            launch!(
                self,
                "add_channel_bias_relu",
                launch_1d(y.len()),
                y,
                b,
                &total,
                &channels,
                &plane
            );
        } else {
            launch!(
                self,
                "add_channel_bias",
                launch_1d(y.len()),
                y,
                b,
                &total,
                &channels,
                &plane
            );
        }
    }

    /// The input gradient (or deconvnet filtering) in the backend's precision.
    pub(super) fn conv_data_backward(
        &self,
        dy: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        g: &ConvGeometry,
        dx: &mut CudaSlice<f32>,
    ) {
        if self.is_bf16() {
            let (dy16, w16) = (self.to_bf16(dy), self.to_bf16(w));
            self.conv_data_backward_bf16(&dy16, &w16, g, dx);
        } else {
            self.conv_data_backward_of(dy, w, g, dx);
        }
    }

    pub(super) fn conv_data_backward_bf16(
        &self,
        dy16: &CudaSlice<bf16>,
        w16: &CudaSlice<bf16>,
        g: &ConvGeometry,
        dx: &mut CudaSlice<f32>,
    ) {
        let mut dx16 = self.scratch::<bf16>(dx.len());
        self.conv_data_backward_of(dy16, w16, g, &mut dx16);
        self.widen_bf16(&dx16, dx);
    }
}
