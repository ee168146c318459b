//! Output sizes of convolution and pooling (Fig. 3's 224 -> 110 -> 55 -> 26 -> 13 -> 13 -> 13
//! -> 6 follows from these rules).

use serde::{Deserialize, Serialize};

use crate::lrn::LrnConfig;

/// A fully connected layer's size, per image: `n_in` inputs to `n_out` outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LinearGeometry {
    pub n_in: usize,
    pub n_out: usize,
}

/// What a local response normalisation works on, per image: `channels` maps of `plane`
/// values each, normalised across maps with `config`'s constants.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrnGeometry {
    pub channels: usize,
    pub plane: usize,
    pub config: LrnConfig,
}

/// A convolution's shape: input planes, filters, kernel, stride, zero padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConvGeometry {
    pub in_channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
}

impl ConvGeometry {
    pub fn out_h(&self) -> usize {
        (self.in_h + 2 * self.pad - self.kernel) / self.stride + 1
    }

    pub fn out_w(&self) -> usize {
        (self.in_w + 2 * self.pad - self.kernel) / self.stride + 1
    }

    /// Rows of the im2col matrix: one per (input channel, kernel row, kernel column).
    pub fn patch_len(&self) -> usize {
        self.in_channels * self.kernel * self.kernel
    }

    pub fn weight_len(&self) -> usize {
        self.out_channels * self.patch_len()
    }

    pub fn in_len(&self) -> usize {
        self.in_channels * self.in_h * self.in_w
    }

    pub fn out_len(&self) -> usize {
        self.out_channels * self.out_h() * self.out_w()
    }
}

/// Max pooling over `size x size` windows every `stride` pixels, in "ceil" mode: a last,
/// partial window is kept where the input does not divide evenly (cuda-convnet's rule, which
/// gives the paper's 110 -> 55 and 26 -> 13).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolGeometry {
    pub channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub size: usize,
    pub stride: usize,
}

impl PoolGeometry {
    fn out(len: usize, size: usize, stride: usize) -> usize {
        if len <= size {
            1
        } else {
            (len - size).div_ceil(stride) + 1
        }
    }

    pub fn out_h(&self) -> usize {
        Self::out(self.in_h, self.size, self.stride)
    }

    pub fn out_w(&self) -> usize {
        Self::out(self.in_w, self.size, self.stride)
    }

    pub fn in_len(&self) -> usize {
        self.channels * self.in_h * self.in_w
    }

    pub fn out_len(&self) -> usize {
        self.channels * self.out_h() * self.out_w()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fig3_feature_map_sizes_follow_from_the_geometry() {
        let conv1 = ConvGeometry {
            in_channels: 3,
            in_h: 224,
            in_w: 224,
            out_channels: 96,
            kernel: 7,
            stride: 2,
            pad: 1,
        };
        assert_eq!(conv1.out_h(), 110);
        let pool = |len| {
            PoolGeometry {
                channels: 1,
                in_h: len,
                in_w: len,
                size: 3,
                stride: 2,
            }
            .out_h()
        };
        assert_eq!(pool(110), 55);
        let conv2 = ConvGeometry {
            in_h: 55,
            in_w: 55,
            kernel: 5,
            stride: 2,
            pad: 0,
            ..conv1
        };
        assert_eq!(conv2.out_h(), 26);
        assert_eq!(pool(26), 13);
        assert_eq!(pool(13), 6);
    }
}
