//! CPU kernels. The reference kernels (one op per file) are generic over f32 and f64 (the
//! finite-difference gradient checks) and run on any GEMM; the network's f32 ops run on the
//! fixed-arithmetic kernels of [`implicit_gemm`], [`dense`] and [`microkernel`], on the
//! [`path::CpuPath`] this process selected — with the same bits on every path (see [`path`]).

pub mod activation;
pub mod conv;
pub mod dense;
mod gather;
pub mod implicit_gemm;
pub mod linear;
pub mod lrn;
pub mod microkernel;
pub mod path;
pub mod pool;
pub mod sgd;
pub mod softmax;

pub use path::{CpuPath, selected};

use crate::geometry::ConvGeometry;

/// f32 convolution forward (then ReLU when `relu`): the implicit GEMM.
pub fn conv_forward(x: &[f32], w: &[f32], b: &[f32], g: &ConvGeometry, relu: bool, y: &mut [f32]) {
    implicit_gemm::conv_forward(selected(), x, w, b, g, relu, y);
}

/// f32 convolution backward: the weight and bias gradients on the implicit-GEMM microkernel;
/// the input gradient of stride-1 layers as an implicit-GEMM transposed convolution, of the
/// others (zf's stride-2 conv2, krizhevsky's conv1) as columns on the panel GEMM + col2im.
pub fn conv_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    g: &ConvGeometry,
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    db: &mut [f32],
) {
    let path = selected();
    implicit_gemm::conv_weight_gradient(path, x, dy, g, dw, db);
    if let Some(dx) = dx {
        transpose_on(path, dy, w, g, dx);
    }
}

/// f32 deconvnet filtering (transposed convolution), as the input gradient of
/// [`conv_backward`].
pub fn conv_transpose(y: &[f32], w: &[f32], g: &ConvGeometry, x: &mut [f32]) {
    transpose_on(selected(), y, w, g, x);
}

fn transpose_on(path: CpuPath, y: &[f32], w: &[f32], g: &ConvGeometry, x: &mut [f32]) {
    if g.stride == 1 && g.pad < g.kernel {
        implicit_gemm::conv_transpose_stride1(path, y, w, g, x);
    } else {
        implicit_gemm::conv_transpose_by_columns(path, y, w, g, x);
    }
}

/// f32 fully connected forward: dot products streaming the weights once.
pub fn linear_forward(x: &[f32], w: &[f32], b: &[f32], n_in: usize, n_out: usize, y: &mut [f32]) {
    dense::linear_forward(selected(), x, w, b, n_in, n_out, y);
}

/// f32 fully connected backward on the panel GEMM.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    n_in: usize,
    n_out: usize,
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    db: &mut [f32],
) {
    dense::linear_backward(selected(), x, w, dy, n_in, n_out, dx, dw, db);
}
