//! The fully connected layers' matrix products by cuBLAS GemmEx (row-major products
//! expressed column-major), f32 or bf16 operands, f32 accumulation and output.

use super::*;

impl CudaInner {
    /// Column-major C (f32) = op(A) op(B): SGEMM on f32 operands (TF32 where allowed), or
    /// GemmEx on bf16 operands with f32 accumulation and output.
    pub(super) fn gemm<T: Element>(
        &self,
        (transa, transb): (bool, bool),
        (m, n, k): (usize, usize, usize),
        (a, lda): (&CudaSlice<T>, usize),
        (b, ldb): (&CudaSlice<T>, usize),
        (c, ldc): (&mut CudaSlice<f32>, usize),
    ) {
        use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t};
        use cudarc::driver::{DevicePtr, DevicePtrMut};
        let op = |t: bool| {
            if t {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            }
        };
        let element = T::CUBLAS_TYPE;
        let (alpha, beta) = (1.0f32, 0.0f32);
        let (a_ptr, _a_guard) = a.device_ptr(&self.stream);
        let (b_ptr, _b_guard) = b.device_ptr(&self.stream);
        let (c_ptr, _c_guard) = c.device_ptr_mut(&self.stream);
        // SAFETY: the dimensions and leading dimensions describe buffers of the lengths the
        // engine allocated (checked by the callers' shapes); alpha and beta are f32 as the
        // 32F compute type requires; the handle is on this backend's stream.
        let result = unsafe {
            cudarc::cublas::result::gemm_ex(
                *self.blas.handle(),
                op(transa),
                op(transb),
                int(m, "a matrix dimension"),
                int(n, "a matrix dimension"),
                int(k, "a matrix dimension"),
                (&alpha) as *const f32 as *const _,
                a_ptr as *const _,
                element,
                int(lda, "a matrix dimension"),
                b_ptr as *const _,
                element,
                int(ldb, "a matrix dimension"),
                (&beta) as *const f32 as *const _,
                c_ptr as *mut _,
                cudaDataType::CUDA_R_32F,
                int(ldc, "a matrix dimension"),
                match self.precision {
                    Precision::Fp32 => cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    Precision::Tf32 => cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
                    Precision::Bf16 => cublasComputeType_t::CUBLAS_COMPUTE_32F,
                },
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        };
        check(result, "cuBLAS GEMM");
    }
}
