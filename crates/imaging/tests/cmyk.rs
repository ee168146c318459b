//! A CMYK JPEG (as Photoshop and print workflows write them) decodes to the same RGB as
//! Pillow gives (the fixture's README says how it was made).

use imaging::{DecodeLimits, decode_rgb};

#[test]
fn a_cmyk_jpeg_decodes_to_rgb_like_pillow() {
    let bytes = include_bytes!("fixtures/red-8x6-cmyk.jpg");
    let image = decode_rgb(bytes, DecodeLimits::default()).unwrap();
    assert_eq!((image.width, image.height), (8, 6));
    for pixel in image.pixels.chunks(3) {
        // Pillow: (255, 0, 0); allow JPEG rounding.
        assert!(
            pixel[0] > 240 && pixel[1] < 15 && pixel[2] < 15,
            "{pixel:?}"
        );
    }
}
