//! Strict decoding of JPEG, PNG, GIF and BMP bytes to 8-bit RGB.
//!
//! The format is guessed from the content, never from the file name. JPEG goes through
//! zune-jpeg in strict mode: measured on this project, the `image` crate decodes a JPEG cut at
//! 60% *without error*, filling the missing rows with grey — a silently damaged training image.
//! Strict mode rejects it. Grayscale, CMYK/YCCK, palette, alpha and 16-bit images become 8-bit
//! RGB (alpha is dropped, as PIL's `convert("RGB")` does); EXIF orientation is applied.
//! Image dimensions are checked against [`DecodeLimits`] *before* pixels are allocated, so a
//! decompression bomb (a small file whose header claims a huge image) is rejected cheaply.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, ImageFormat, ImageReader, Limits};
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use crate::slice_reader::SliceReader;

/// Largest image accepted, per side and in total pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Default 16384 (ImageNet's largest images are under 10k a side).
    pub max_side: u32,
    /// Default 64 megapixels (192 MB of RGB).
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_side: 16_384,
            max_pixels: 64 << 20,
        }
    }
}

/// A decoded 8-bit RGB image, row-major HWC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

/// Why a file was rejected; the message is what the `rejects` artifact records.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty file")]
    Empty,
    #[error("not an image: the content matches no supported format (JPEG, PNG, GIF, BMP)")]
    UnknownFormat,
    #[error("unsupported image format {0}; convert it to JPEG or PNG")]
    Unsupported(String),
    #[error(
        "image is {width}x{height}, larger than the limit ({max_side} a side, {max_pixels} pixels): a decompression bomb or a corrupt header"
    )]
    TooLarge {
        width: u32,
        height: u32,
        max_side: u32,
        max_pixels: u64,
    },
    #[error("corrupt or truncated {format}: {message}")]
    Corrupt {
        format: &'static str,
        message: String,
    },
}

/// Decodes `bytes` (any supported format, guessed from the content) into RGB.
pub fn decode_rgb(bytes: &[u8], limits: DecodeLimits) -> Result<RgbImage, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let format = image::guess_format(bytes).map_err(|_| DecodeError::UnknownFormat)?;
    match format {
        ImageFormat::Jpeg => decode_jpeg(bytes, limits),
        ImageFormat::Png | ImageFormat::Gif | ImageFormat::Bmp => {
            decode_with_image_crate(bytes, format, limits)
        }
        other => Err(DecodeError::Unsupported(format!("{other:?}"))),
    }
}

fn check_size(width: u32, height: u32, limits: DecodeLimits) -> Result<(), DecodeError> {
    if width == 0
        || height == 0
        || width > limits.max_side
        || height > limits.max_side
        || width as u64 * height as u64 > limits.max_pixels
    {
        return Err(DecodeError::TooLarge {
            width,
            height,
            max_side: limits.max_side,
            max_pixels: limits.max_pixels,
        });
    }
    Ok(())
}

fn decode_jpeg(bytes: &[u8], limits: DecodeLimits) -> Result<RgbImage, DecodeError> {
    let corrupt = |message: String| DecodeError::Corrupt {
        format: "JPEG",
        message,
    };
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(limits.max_side as usize)
        .set_max_height(limits.max_side as usize)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = JpegDecoder::new_with_options(SliceReader::new(bytes), options);
    decoder.decode_headers().map_err(|error| {
        let message = error.to_string();
        if message.contains("larger than") || message.contains("greater than") {
            DecodeError::Corrupt {
                format: "JPEG",
                message: format!("header claims an oversized image ({message})"),
            }
        } else {
            corrupt(message)
        }
    })?;
    let (width, height) = decoder
        .dimensions()
        .map(|(w, h)| (w as u32, h as u32))
        .ok_or_else(|| corrupt("no dimensions in the header".to_owned()))?;
    check_size(width, height, limits)?;
    let orientation = decoder
        .exif()
        .and_then(|exif| Orientation::from_exif_chunk(exif));
    let pixels = decoder
        .decode()
        .map_err(|error| corrupt(error.to_string()))?;
    if pixels.len() != width as usize * height as usize * 3 {
        return Err(corrupt(format!(
            "decoded {} bytes for a {width}x{height} RGB image",
            pixels.len()
        )));
    }
    let image = RgbImage {
        width,
        height,
        pixels,
    };
    Ok(match orientation {
        Some(orientation) if orientation != Orientation::NoTransforms => orient(image, orientation),
        _ => image,
    })
}

fn decode_with_image_crate(
    bytes: &[u8],
    format: ImageFormat,
    limits: DecodeLimits,
) -> Result<RgbImage, DecodeError> {
    let name = match format {
        ImageFormat::Png => "PNG",
        ImageFormat::Gif => "GIF",
        _ => "BMP",
    };
    let corrupt = |message: String| DecodeError::Corrupt {
        format: name,
        message,
    };
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    // Dimensions are checked by `check_size` right after the header is read, with our
    // message; the allocation cap is a second line of defence inside the decoders.
    let mut image_limits = Limits::default();
    image_limits.max_alloc = Some(limits.max_pixels * 8);
    reader.limits(image_limits);
    let mut decoder = reader
        .into_decoder()
        .map_err(|error| corrupt(error.to_string()))?;
    let (width, height) = image::ImageDecoder::dimensions(&decoder);
    check_size(width, height, limits)?;
    let orientation = image::ImageDecoder::orientation(&mut decoder).ok();
    let mut decoded = DynamicImage::from_decoder(decoder).map_err(|error| match error {
        image::ImageError::Limits(_) => DecodeError::TooLarge {
            width,
            height,
            max_side: limits.max_side,
            max_pixels: limits.max_pixels,
        },
        other => corrupt(other.to_string()),
    })?;
    if let Some(orientation) = orientation {
        decoded.apply_orientation(orientation);
    }
    let rgb = decoded.into_rgb8();
    Ok(RgbImage {
        width: rgb.width(),
        height: rgb.height(),
        pixels: rgb.into_raw(),
    })
}

fn orient(image: RgbImage, orientation: Orientation) -> RgbImage {
    let buffer = image::RgbImage::from_raw(image.width, image.height, image.pixels)
        .expect("buffer size matches");
    let mut dynamic = DynamicImage::ImageRgb8(buffer);
    dynamic.apply_orientation(orientation);
    let rgb = dynamic.into_rgb8();
    RgbImage {
        width: rgb.width(),
        height: rgb.height(),
        pixels: rgb.into_raw(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::codecs::jpeg::JpegEncoder;
    use image::{ImageEncoder, Rgb, RgbImage as Buffer};

    /// A smooth gradient JPEG of `width` x `height`.
    pub(crate) fn jpeg(width: u32, height: u32) -> Vec<u8> {
        let image = Buffer::from_fn(width, height, |x, y| {
            Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 128])
        });
        let mut bytes = Vec::new();
        JpegEncoder::new_with_quality(&mut bytes, 90)
            .write_image(
                image.as_raw(),
                width,
                height,
                image::ExtendedColorType::Rgb8,
            )
            .unwrap();
        bytes
    }

    fn png(image: DynamicImage) -> Vec<u8> {
        let mut bytes = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .unwrap();
        bytes
    }

    #[test]
    fn a_whole_jpeg_decodes_to_rgb_of_its_size() {
        let decoded = decode_rgb(&jpeg(64, 48), DecodeLimits::default()).unwrap();
        assert_eq!((decoded.width, decoded.height), (64, 48));
        assert_eq!(decoded.pixels.len(), 64 * 48 * 3);
        // Top-left is dark red-green, bottom-right bright: the gradient survived.
        assert!(decoded.pixels[0] < 20);
        assert!(decoded.pixels[decoded.pixels.len() - 3] > 200);
    }

    #[test]
    fn a_jpeg_cut_at_60_percent_is_rejected_not_filled_with_grey() {
        let bytes = jpeg(128, 128);
        let cut = &bytes[..bytes.len() * 6 / 10];
        let error = decode_rgb(cut, DecodeLimits::default()).unwrap_err();
        assert!(
            matches!(error, DecodeError::Corrupt { format: "JPEG", .. }),
            "{error}"
        );
    }

    #[test]
    fn empty_and_non_image_files_are_rejected_with_their_reason() {
        assert_eq!(
            decode_rgb(b"", DecodeLimits::default()).unwrap_err(),
            DecodeError::Empty
        );
        // What macOS leaves in folders.
        let ds_store = b"\0\0\0\x01Bud1\0\0\x10\0\0\0\x08\0";
        assert_eq!(
            decode_rgb(ds_store, DecodeLimits::default()).unwrap_err(),
            DecodeError::UnknownFormat
        );
        let tiff = b"II*\0\x08\0\0\0";
        assert!(matches!(
            decode_rgb(tiff, DecodeLimits::default()).unwrap_err(),
            DecodeError::Unsupported(_)
        ));
    }

    #[test]
    fn a_header_claiming_a_huge_image_is_rejected_before_decoding() {
        // A valid 4x4 BMP (58 bytes), its header patched to claim 30000 x 30000.
        let mut bytes = Vec::new();
        DynamicImage::new_rgb8(4, 4)
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Bmp)
            .unwrap();
        bytes[18..22].copy_from_slice(&30_000i32.to_le_bytes());
        bytes[22..26].copy_from_slice(&30_000i32.to_le_bytes());
        let error = decode_rgb(&bytes, DecodeLimits::default()).unwrap_err();
        assert!(matches!(error, DecodeError::TooLarge { .. }), "{error}");
        assert!(error.to_string().contains("30000x30000"), "{error}");
    }

    #[test]
    fn grayscale_palette_alpha_and_16_bit_pngs_become_8_bit_rgb() {
        let gray = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(3, 2, image::Luma([77])));
        let decoded = decode_rgb(&png(gray), DecodeLimits::default()).unwrap();
        assert_eq!(decoded.pixels, vec![77; 3 * 2 * 3]);

        let rgba = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
            2,
            2,
            image::Rgba([10, 20, 30, 0]),
        ));
        let decoded = decode_rgb(&png(rgba), DecodeLimits::default()).unwrap();
        assert_eq!(&decoded.pixels[..3], &[10, 20, 30]);

        let deep = DynamicImage::ImageRgb16(image::ImageBuffer::from_pixel(
            2,
            2,
            image::Rgb([65535u16, 0, 32896]),
        ));
        let decoded = decode_rgb(&png(deep), DecodeLimits::default()).unwrap();
        assert_eq!(&decoded.pixels[..3], &[255, 0, 128]);
    }

    #[test]
    fn gif_and_bmp_decode() {
        let image = DynamicImage::ImageRgb8(Buffer::from_pixel(5, 4, Rgb([200, 100, 0])));
        for format in [ImageFormat::Gif, ImageFormat::Bmp] {
            let mut bytes = Vec::new();
            image
                .write_to(&mut Cursor::new(&mut bytes), format)
                .unwrap();
            let decoded = decode_rgb(&bytes, DecodeLimits::default()).unwrap();
            assert_eq!((decoded.width, decoded.height), (5, 4), "{format:?}");
            assert!(decoded.pixels[0] > 150, "{format:?}");
        }
    }

    #[test]
    fn exif_orientation_is_applied_to_jpegs() {
        // A 4x2 JPEG with an APP1 EXIF segment saying "rotate 90° clockwise" (orientation 6).
        let plain = jpeg(40, 20);
        let exif_tiff: Vec<u8> = [
            &b"II*\0"[..],
            &8u32.to_le_bytes(),
            &1u16.to_le_bytes(),
            &0x0112u16.to_le_bytes(),
            &3u16.to_le_bytes(),
            &1u32.to_le_bytes(),
            &6u16.to_le_bytes(),
            &[0, 0],
            &0u32.to_le_bytes(),
        ]
        .concat();
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&exif_tiff);
        let mut bytes = plain[..2].to_vec();
        bytes.extend_from_slice(&[0xFF, 0xE1]);
        bytes.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        bytes.extend_from_slice(&app1);
        bytes.extend_from_slice(&plain[2..]);
        let decoded = decode_rgb(&bytes, DecodeLimits::default()).unwrap();
        assert_eq!(
            (decoded.width, decoded.height),
            (20, 40),
            "rotated to portrait"
        );
    }
}
