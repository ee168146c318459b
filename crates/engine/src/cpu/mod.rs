//! CPU kernels. The reference kernels (one op per file) are generic over f32 (the network)
//! and f64 (gradient checks); `implicit_gemm`, `dense_dot` and `pool::max_pool_f32` are the
//! f32 AVX-512 paths, each tested against its reference. The functions below pick the
//! fastest path this CPU has (`is_x86_feature_detected`, cached by std).

pub mod activation;
pub mod conv;
#[cfg(target_arch = "x86_64")]
pub mod dense_dot;
#[cfg(target_arch = "x86_64")]
pub mod implicit_gemm;
pub mod linear;
pub mod lrn;
pub mod pool;
pub mod sgd;
pub mod softmax;

use crate::geometry::ConvGeometry;

/// f32 convolution forward (then ReLU when `relu`) on the fastest path this CPU has: the
/// implicit GEMM with an AVX-512 microkernel, else im2col + matrixmultiply.
pub fn conv_forward(x: &[f32], w: &[f32], b: &[f32], g: &ConvGeometry, relu: bool, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if implicit_gemm::available() {
        return implicit_gemm::conv_forward(x, w, b, g, relu, y);
    }
    conv::conv_forward(x, w, b, g, y);
    if relu {
        activation::relu(y);
    }
}

/// Whether the stride-1 input gradient / deconvnet filtering runs as an implicit GEMM here.
#[cfg(target_arch = "x86_64")]
fn transpose_by_implicit_gemm(g: &ConvGeometry) -> bool {
    g.stride == 1 && g.pad < g.kernel && implicit_gemm::available()
}

/// f32 convolution backward on the fastest path this CPU has. With AVX-512: the weight and
/// bias gradients on the implicit-GEMM microkernel, the input gradient of stride-1 layers as
/// an implicit-GEMM transposed convolution (others, e.g. zf's stride-2 conv2, by GEMM +
/// col2im). Without: im2col + GEMM throughout.
pub fn conv_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    g: &ConvGeometry,
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    db: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if implicit_gemm::available() {
        implicit_gemm::conv_weight_gradient(x, dy, g, dw, db);
        match dx {
            Some(dx) if transpose_by_implicit_gemm(g) => {
                implicit_gemm::conv_transpose_stride1(dy, w, g, dx);
            }
            Some(dx) => {
                conv::conv_transpose(dy, w, g, dx);
            }
            None => {}
        }
        return;
    }
    conv::conv_backward(x, w, dy, g, dx, dw, db);
}

/// f32 deconvnet filtering (transposed convolution), fastest path first as in
/// [`conv_backward`].
pub fn conv_transpose(y: &[f32], w: &[f32], g: &ConvGeometry, x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if transpose_by_implicit_gemm(g) {
        return implicit_gemm::conv_transpose_stride1(y, w, g, x);
    }
    conv::conv_transpose(y, w, g, x);
}

/// f32 fully connected forward: dot products streaming the weights once (AVX-512), else
/// GEMM.
pub fn linear_forward(x: &[f32], w: &[f32], b: &[f32], n_in: usize, n_out: usize, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if dense_dot::available() {
        return dense_dot::linear_forward(x, w, b, n_in, n_out, y);
    }
    linear::linear_forward(x, w, b, n_in, n_out, y);
}
