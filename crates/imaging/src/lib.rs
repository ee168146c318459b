//! Images in and out of the network: strict decoding to 8-bit RGB, the paper's resize and
//! centre crop (§3), and the crop geometry (random training crops, the 10 test crops) that
//! training and evaluation must agree on.
//!
//! It does not read folders or write artifacts (the stages do) and knows nothing of tensors
//! beyond writing a crop into a CHW float buffer.

pub mod crops;
pub mod decode;
pub mod resize;
mod slice_reader;

pub use crops::{Crop, centre_crop, random_crop, ten_crops, write_crop_chw};
pub use decode::{DecodeError, DecodeLimits, RgbImage, decode_rgb};
pub use resize::{ShortSideResizer, resize_short_side_centre_crop};
