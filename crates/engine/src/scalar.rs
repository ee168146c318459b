//! The float types the CPU kernels are written for: f32 for the network, f64 for the
//! finite-difference gradient checks of every layer (same code, higher precision).

use std::fmt::Debug;
use std::iter::Sum;

use num_traits::Float;

/// A float the kernels run on, with its GEMM.
pub trait Scalar: Float + Debug + Default + Sum + Send + Sync + 'static {
    /// C = alpha * A B + beta * C, with A m x k, B k x n, C m x n, each given by its
    /// (row stride, column stride) so that transposes cost nothing.
    ///
    /// # Safety
    /// The pointers and strides must describe valid, non-aliasing (for C) memory.
    #[allow(clippy::too_many_arguments)]
    unsafe fn raw_gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );

    /// `e^self`, `ln(self)` and `self^power` from the pure-Rust `libm` crate: the same bits on
    /// every CPU and operating system (the C library's versions differ between machines
    /// in the last bit, now and then).
    fn exp_everywhere(self) -> Self;
    fn ln_everywhere(self) -> Self;
    fn powf_everywhere(self, power: Self) -> Self;

    fn from_f64(value: f64) -> Self {
        <Self as num_traits::NumCast>::from(value).expect("finite")
    }
}

impl Scalar for f32 {
    fn exp_everywhere(self) -> f32 {
        libm::expf(self)
    }

    fn ln_everywhere(self) -> f32 {
        libm::logf(self)
    }

    fn powf_everywhere(self, power: f32) -> f32 {
        libm::powf(self, power)
    }

    unsafe fn raw_gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: f32,
        a: *const f32,
        rsa: isize,
        csa: isize,
        b: *const f32,
        rsb: isize,
        csb: isize,
        beta: f32,
        c: *mut f32,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: forwarded; the caller upholds the contract.
        unsafe {
            matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
        }
    }
}

impl Scalar for f64 {
    fn exp_everywhere(self) -> f64 {
        libm::exp(self)
    }

    fn ln_everywhere(self) -> f64 {
        libm::log(self)
    }

    fn powf_everywhere(self, power: f64) -> f64 {
        libm::pow(self, power)
    }

    unsafe fn raw_gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: f64,
        a: *const f64,
        rsa: isize,
        csa: isize,
        b: *const f64,
        rsb: isize,
        csb: isize,
        beta: f64,
        c: *mut f64,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: forwarded; the caller upholds the contract.
        unsafe {
            matrixmultiply::dgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
        }
    }
}

/// A matrix operand: a slice with its (row stride, column stride).
#[derive(Clone, Copy)]
pub struct MatRef<'a, S> {
    pub data: &'a [S],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a, S> MatRef<'a, S> {
    /// A row-major `rows x cols` matrix.
    pub fn row_major(data: &'a [S], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose of this matrix, without moving data.
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    fn check(&self) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride;
            assert!(last < self.data.len(), "matrix operand out of bounds");
        }
    }
}

/// C (row-major `a.rows x b.cols`) = alpha * A B + beta * C, single-threaded (callers
/// parallelise over images or output blocks, never inside a GEMM, to avoid oversubscribing
/// the cores).
pub fn gemm<S: Scalar>(alpha: S, a: MatRef<S>, b: MatRef<S>, beta: S, c: &mut [S]) {
    assert_eq!(a.cols, b.rows, "inner dimensions agree");
    a.check();
    b.check();
    assert!(c.len() >= a.rows * b.cols, "output large enough");
    // SAFETY: bounds checked above; `c` is an exclusive borrow distinct from `a` and `b`.
    unsafe {
        S::raw_gemm(
            a.rows,
            a.cols,
            b.cols,
            alpha,
            a.data.as_ptr(),
            a.row_stride as isize,
            a.col_stride as isize,
            b.data.as_ptr(),
            b.row_stride as isize,
            b.col_stride as isize,
            beta,
            c.as_mut_ptr(),
            b.cols as isize,
            1,
        )
    }
}
