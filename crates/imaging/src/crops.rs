//! Crop geometry of §3, shared by training (random crops + flips) and evaluation (the 10 test
//! crops: 4 corners and the centre, each also mirrored, whose predictions are averaged).

/// One crop of a square image: its top-left corner and whether it is mirrored horizontally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crop {
    pub top: u32,
    pub left: u32,
    pub flip: bool,
}

/// The centre crop (validation during training uses it alone).
pub fn centre_crop(image_size: u32, crop_size: u32) -> Crop {
    assert!(
        crop_size <= image_size,
        "crop {crop_size} > image {image_size}"
    );
    let offset = (image_size - crop_size) / 2;
    Crop {
        top: offset,
        left: offset,
        flip: false,
    }
}

/// The paper's 10 test crops: centre, top-left, top-right, bottom-left, bottom-right, then the
/// same five mirrored.
pub fn ten_crops(image_size: u32, crop_size: u32) -> [Crop; 10] {
    let centre = centre_crop(image_size, crop_size);
    let far = image_size - crop_size;
    let corners = [
        (centre.top, centre.left),
        (0, 0),
        (0, far),
        (far, 0),
        (far, far),
    ];
    std::array::from_fn(|i| {
        let (top, left) = corners[i % 5];
        Crop {
            top,
            left,
            flip: i >= 5,
        }
    })
}

/// A training crop drawn from 64 random bits (from the stage's seeded RNG): a uniform corner
/// over all `(image_size - crop_size + 1)^2` positions and a fair coin for the flip.
pub fn random_crop(image_size: u32, crop_size: u32, random_bits: u64) -> Crop {
    assert!(
        crop_size <= image_size,
        "crop {crop_size} > image {image_size}"
    );
    let positions = (image_size - crop_size + 1) as u64;
    Crop {
        top: ((random_bits & 0x1F_FFFF) % positions) as u32,
        left: (((random_bits >> 21) & 0x1F_FFFF) % positions) as u32,
        flip: (random_bits >> 63) == 1,
    }
}

/// Writes one crop of a square HWC u8 image into `out` as CHW f32, subtracting the per-pixel
/// mean (HWC, same size as the image, §3) when given. `out.len()` must be `3 * crop_size^2`.
pub fn write_crop_chw(
    pixels_hwc: &[u8],
    image_size: u32,
    mean_hwc: Option<&[f32]>,
    crop: Crop,
    crop_size: u32,
    out: &mut [f32],
) {
    let (size, crop_size) = (image_size as usize, crop_size as usize);
    assert_eq!(pixels_hwc.len(), size * size * 3);
    assert_eq!(out.len(), 3 * crop_size * crop_size);
    assert!(crop.top as usize + crop_size <= size && crop.left as usize + crop_size <= size);
    let plane = crop_size * crop_size;
    for y in 0..crop_size {
        let source_row = (crop.top as usize + y) * size;
        for x in 0..crop_size {
            let source_x = if crop.flip {
                crop.left as usize + crop_size - 1 - x
            } else {
                crop.left as usize + x
            };
            let source = (source_row + source_x) * 3;
            for channel in 0..3 {
                let mean = mean_hwc.map_or(0.0, |mean| mean[source + channel]);
                out[channel * plane + y * crop_size + x] =
                    pixels_hwc[source + channel] as f32 - mean;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ten_crops_are_the_four_corners_and_centre_each_with_its_mirror() {
        let crops = ten_crops(256, 224);
        assert_eq!(
            crops[0],
            Crop {
                top: 16,
                left: 16,
                flip: false
            }
        );
        assert_eq!(
            crops[4],
            Crop {
                top: 32,
                left: 32,
                flip: false
            }
        );
        for i in 0..5 {
            assert_eq!(
                (crops[i].top, crops[i].left),
                (crops[i + 5].top, crops[i + 5].left)
            );
            assert!(!crops[i].flip && crops[i + 5].flip);
        }
    }

    #[test]
    fn random_crops_cover_every_position_and_both_flips() {
        let mut seen = std::collections::BTreeSet::new();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..2000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let crop = random_crop(10, 8, state);
            assert!(crop.top <= 2 && crop.left <= 2);
            seen.insert((crop.top, crop.left, crop.flip));
        }
        assert_eq!(seen.len(), 3 * 3 * 2);
    }

    #[test]
    fn a_mirrored_crop_reverses_columns_and_the_mean_is_subtracted_per_pixel() {
        // 3x3 image whose red channel is the column index * 10.
        let mut pixels = vec![0u8; 27];
        for y in 0..3 {
            for x in 0..3 {
                pixels[(y * 3 + x) * 3] = (x * 10) as u8;
            }
        }
        let mean = vec![1.0f32; 27];
        let mut out = vec![0.0; 12];
        let crop = Crop {
            top: 1,
            left: 1,
            flip: true,
        };
        write_crop_chw(&pixels, 3, Some(&mean), crop, 2, &mut out);
        assert_eq!(&out[..4], &[19.0, 9.0, 19.0, 9.0], "red plane, mirrored");
        assert_eq!(&out[4..8], &[-1.0; 4], "green plane is 0 - mean");
    }
}
