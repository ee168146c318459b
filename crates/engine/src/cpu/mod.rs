//! CPU kernels, generic over f32 (the network) and f64 (gradient checks). One op per file.

pub mod activation;
pub mod conv;
pub mod linear;
pub mod lrn;
pub mod pool;
pub mod sgd;
pub mod softmax;
