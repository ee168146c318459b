//! Drawing Fashion-MNIST pictures on canvases, and encoding them as RGB, grayscale or CMYK
//! JPEG, PNG or truncated JPEG.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::Error;
use crate::source::Source;

/// How an image is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Rgb,
    Gray,
    Cmyk,
    Png,
    Truncated,
}

impl Format {
    pub(crate) fn describe(self) -> Option<&'static str> {
        match self {
            Format::Rgb => None,
            Format::Gray => Some("grayscale JPEG"),
            Format::Cmyk => Some("CMYK JPEG (Adobe)"),
            Format::Png => Some("PNG"),
            Format::Truncated => Some("truncated JPEG (preprocess rejects it)"),
        }
    }
}

/// One object on a canvas: a picture, its colour, size and place.
pub(crate) struct Object<'a> {
    pub(crate) picture: &'a [u8; 784],
    pub(crate) colour: [f32; 3],
    pub(crate) mirrored: bool,
    pub(crate) size: u32,
    pub(crate) x: u32,
    pub(crate) y: u32,
}

/// A canvas of `width` x `height` with a two-colour gradient and a little noise.
pub(crate) struct Canvas {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl Canvas {
    pub(crate) fn new(width: u32, height: u32, rng: &mut ChaCha8Rng) -> Canvas {
        // A gradient in a random direction and three waves of random frequency, orientation
        // and phase, per channel, plus noise: unrelated canvases must not correlate (the
        // overlap removal of §5.2 compares images by normalised correlation; vertical
        // gradients alone made most pairs of miniature images look like duplicates).
        let base: [f32; 3] = std::array::from_fn(|_| rng.random_range(70.0..170.0));
        let angle = rng.random_range(0.0..std::f32::consts::TAU);
        let slope: [f32; 3] = std::array::from_fn(|_| rng.random_range(-50.0..50.0));
        let waves: Vec<([f32; 2], f32, [f32; 3])> = (0..3)
            .map(|_| {
                let cycles = rng.random_range(1.0..7.0_f32);
                let direction = rng.random_range(0.0..std::f32::consts::TAU);
                let frequency = [
                    cycles * libm::cosf(direction) * std::f32::consts::TAU,
                    cycles * libm::sinf(direction) * std::f32::consts::TAU,
                ];
                let phase = rng.random_range(0.0..std::f32::consts::TAU);
                let amplitude = std::array::from_fn(|_| rng.random_range(-30.0..30.0));
                (frequency, phase, amplitude)
            })
            .collect();
        // libm, not the platform's: the same bytes on every machine.
        let (cos, sin) = (libm::cosf(angle), libm::sinf(angle));
        let mut pixels = Vec::with_capacity(width as usize * height as usize * 3);
        for y in 0..height {
            let v = y as f32 / height as f32;
            for x in 0..width {
                let u = x as f32 / width as f32;
                let along = (u - 0.5) * cos + (v - 0.5) * sin;
                let noise: f32 = rng.random_range(-8.0..8.0);
                let mut value = [0.0f32; 3];
                for (channel, slot) in value.iter_mut().enumerate() {
                    *slot = base[channel] + slope[channel] * along + noise;
                }
                for (frequency, phase, amplitude) in &waves {
                    let wave = libm::sinf(frequency[0] * u + frequency[1] * v + phase);
                    for (channel, slot) in value.iter_mut().enumerate() {
                        *slot += amplitude[channel] * wave;
                    }
                }
                pixels.extend(value.map(|value| value.clamp(0.0, 255.0) as u8));
            }
        }
        Canvas {
            width,
            height,
            pixels,
        }
    }

    /// Draws the picture upscaled bilinearly to `size` x `size`, its ink in `colour`.
    pub(crate) fn draw(&mut self, object: &Object) {
        let scale = 28.0 / object.size as f32;
        for dy in 0..object.size {
            let y = object.y + dy;
            if y >= self.height {
                break;
            }
            let sy = ((dy as f32 + 0.5) * scale - 0.5).clamp(0.0, 27.0);
            for dx in 0..object.size {
                let x = object.x + dx;
                if x >= self.width {
                    break;
                }
                let mut sx = ((dx as f32 + 0.5) * scale - 0.5).clamp(0.0, 27.0);
                if object.mirrored {
                    sx = 27.0 - sx;
                }
                let ink = bilinear(object.picture, sx, sy) / 255.0;
                let at = (y as usize * self.width as usize + x as usize) * 3;
                for channel in 0..3 {
                    let old = f32::from(self.pixels[at + channel]);
                    let new = old * (1.0 - ink) + object.colour[channel] * ink;
                    self.pixels[at + channel] = new.round().clamp(0.0, 255.0) as u8;
                }
            }
        }
    }

    pub(crate) fn encode(&self, format: Format) -> Result<Vec<u8>, Error> {
        let encode_error = |error: &dyn std::fmt::Display| Error::Encode(error.to_string());
        let mut bytes = Vec::new();
        match format {
            Format::Rgb | Format::Truncated => {
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
                    .encode(
                        &self.pixels,
                        self.width,
                        self.height,
                        image::ExtendedColorType::Rgb8,
                    )
                    .map_err(|e| encode_error(&e))?;
                if format == Format::Truncated {
                    bytes.truncate(bytes.len() * 2 / 5);
                }
            }
            Format::Gray => {
                let gray: Vec<u8> = self
                    .pixels
                    .chunks_exact(3)
                    .map(|p| {
                        (0.299 * f32::from(p[0])
                            + 0.587 * f32::from(p[1])
                            + 0.114 * f32::from(p[2]))
                        .round() as u8
                    })
                    .collect();
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
                    .encode(&gray, self.width, self.height, image::ExtendedColorType::L8)
                    .map_err(|e| encode_error(&e))?;
            }
            Format::Cmyk => {
                // Plain CMYK (not inverted): jpeg-encoder stores it the Adobe way.
                let cmyk: Vec<u8> = self
                    .pixels
                    .chunks_exact(3)
                    .flat_map(|p| {
                        let k = 255 - p[0].max(p[1]).max(p[2]);
                        let scale = 255 - k;
                        let channel = |v: u8| {
                            if scale == 0 {
                                0
                            } else {
                                ((u32::from(scale - (v.min(scale))) * 255 + u32::from(scale) / 2)
                                    / u32::from(scale)) as u8
                            }
                        };
                        [channel(p[0]), channel(p[1]), channel(p[2]), k]
                    })
                    .collect();
                let width = u16::try_from(self.width).map_err(|e| encode_error(&e))?;
                let height = u16::try_from(self.height).map_err(|e| encode_error(&e))?;
                jpeg_encoder::Encoder::new(&mut bytes, 90)
                    .encode(&cmyk, width, height, jpeg_encoder::ColorType::Cmyk)
                    .map_err(|e| encode_error(&e))?;
            }
            Format::Png => {
                use image::ImageEncoder;
                image::codecs::png::PngEncoder::new(&mut bytes)
                    .write_image(
                        &self.pixels,
                        self.width,
                        self.height,
                        image::ExtendedColorType::Rgb8,
                    )
                    .map_err(|e| encode_error(&e))?;
            }
        }
        Ok(bytes)
    }
}

fn bilinear(picture: &[u8; 784], x: f32, y: f32) -> f32 {
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(27), (y0 + 1).min(27));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let at = |x: usize, y: usize| f32::from(picture[y * 28 + x]);
    let top = at(x0, y0) * (1.0 - fx) + at(x1, y0) * fx;
    let bottom = at(x0, y1) * (1.0 - fx) + at(x1, y1) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// The ink colour of a class: one hue per class, its brightness varied per image.
pub(crate) fn class_colour(class: usize, rng: &mut ChaCha8Rng) -> [f32; 3] {
    let hue = (class as f32 * 36.0 + if class >= 10 { 18.0 } else { 0.0 }) % 360.0;
    let value = rng.random_range(0.75..1.0_f32);
    hsv(hue, 0.75, value)
}

fn hsv(hue: f32, saturation: f32, value: f32) -> [f32; 3] {
    let c = value * saturation;
    let h = hue / 60.0;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = value - c;
    [(r + m) * 255.0, (g + m) * 255.0, (b + m) * 255.0]
}

/// Draws a one-object picture of Fashion class `class` (its `n`th picture); `None` draws an
/// empty canvas (clutter).
pub(crate) fn single_object(
    source: &Source,
    class: Option<usize>,
    n: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Canvas, Error> {
    // Canvases from 3:1 landscape to 1:2 portrait, the short side 120-360 pixels.
    let short = rng.random_range(120..=360_u32);
    let aspect = rng.random_range(0.5..3.0_f32);
    let (width, height) = if aspect >= 1.0 {
        ((short as f32 * aspect) as u32, short)
    } else {
        (short, (short as f32 / aspect) as u32)
    };
    let mut canvas = Canvas::new(width, height, rng);
    if let Some(class) = class {
        let size = (short as f32 * rng.random_range(0.6..0.95_f32)) as u32;
        let object = Object {
            picture: source.picture(class, n)?,
            colour: class_colour(class, rng),
            mirrored: rng.random_bool(0.5),
            size,
            x: rng.random_range(0..=width - size),
            y: rng.random_range(0..=height - size),
        };
        canvas.draw(&object);
    }
    Ok(canvas)
}

/// The format of the `index`th image of a set: mostly RGB, some grayscale and CMYK.
pub(crate) fn usual_format(index: usize) -> Format {
    if index % 9 == 4 {
        Format::Gray
    } else if index % 13 == 7 {
        Format::Cmyk
    } else {
        Format::Rgb
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imaging::{DecodeLimits, decode_rgb};
    use rand::SeedableRng;

    fn canvas(seed: u64) -> Canvas {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let picture = [200u8; 784];
        let mut canvas = Canvas::new(96, 64, &mut rng);
        canvas.draw(&Object {
            picture: &picture,
            colour: class_colour(3, &mut rng),
            mirrored: false,
            size: 40,
            x: 10,
            y: 12,
        });
        canvas
    }

    fn mean_abs_difference(a: &[u8], b: &[u8]) -> f64 {
        assert_eq!(a.len(), b.len());
        let total: u64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| u64::from(x.abs_diff(*y)))
            .sum();
        total as f64 / a.len() as f64
    }

    #[test]
    fn every_format_but_the_truncated_one_decodes_to_the_picture_that_was_drawn() {
        let canvas = canvas(1);
        for format in [Format::Rgb, Format::Cmyk, Format::Png] {
            let bytes = canvas.encode(format).unwrap();
            let decoded = decode_rgb(&bytes, DecodeLimits::default()).unwrap();
            assert_eq!((decoded.width, decoded.height), (96, 64), "{format:?}");
            let difference = mean_abs_difference(&decoded.pixels, &canvas.pixels);
            // JPEG at quality 90 on a noisy canvas: a few levels; a CMYK file read with the
            // wrong inversion would be ~100 levels off.
            assert!(
                difference < 6.0,
                "{format:?}: mean |difference| {difference}"
            );
        }
        let gray = canvas.encode(Format::Gray).unwrap();
        let decoded = decode_rgb(&gray, DecodeLimits::default()).unwrap();
        assert!(
            decoded
                .pixels
                .chunks_exact(3)
                .all(|p| p[0] == p[1] && p[1] == p[2])
        );
        let truncated = canvas.encode(Format::Truncated).unwrap();
        assert!(decode_rgb(&truncated, DecodeLimits::default()).is_err());
    }
}
