//! [`SliceReader`]: JPEG bytes in memory, as zune-jpeg reads them.
//!
//! zune-core implements its reader trait for every `BufRead + Seek` (so for
//! `std::io::Cursor`, and, with its `std` feature, for its own `ZCursor`), through
//! `std::io::Read`: each of the Huffman decoder's 4-byte refills became a `memcpy` call of a
//! length unknown at compile time (12% of the preprocess benchmark's time in `perf`). This
//! reader implements the trait directly on a slice, so the refill's fixed-size copy inlines to
//! one load. It keeps the semantics of the `Cursor` it replaces: reads past the end return
//! what there is (0 for a single byte) without moving past it, and a failed exact read leaves
//! the position where it was.

use zune_core::bytestream::{ZByteIoError, ZByteReaderTrait, ZSeekFrom};

pub(crate) struct SliceReader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> SliceReader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        SliceReader { bytes, position: 0 }
    }

    /// The bytes from the position on (none past the end).
    #[inline(always)]
    fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.position..).unwrap_or(&[])
    }
}

impl ZByteReaderTrait for SliceReader<'_> {
    #[inline(always)]
    fn read_byte_no_error(&mut self) -> u8 {
        match self.rest().first() {
            Some(&byte) => {
                self.position += 1;
                byte
            }
            None => 0,
        }
    }

    #[inline(always)]
    fn read_exact_bytes(&mut self, buf: &mut [u8]) -> Result<(), ZByteIoError> {
        let rest = self.rest();
        match rest.get(..buf.len()) {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                self.position += buf.len();
                Ok(())
            }
            None => {
                // As the Cursor did: what there is lands in `buf`, the position stays.
                buf[..rest.len()].copy_from_slice(rest);
                Err(ZByteIoError::NotEnoughBytes(rest.len(), buf.len()))
            }
        }
    }

    #[inline(always)]
    fn read_bytes(&mut self, buf: &mut [u8]) -> Result<usize, ZByteIoError> {
        let count = self.peek_bytes(buf)?;
        self.position += count;
        Ok(count)
    }

    #[inline(always)]
    fn peek_bytes(&mut self, buf: &mut [u8]) -> Result<usize, ZByteIoError> {
        let rest = self.rest();
        let count = rest.len().min(buf.len());
        buf[..count].copy_from_slice(&rest[..count]);
        Ok(count)
    }

    #[inline(always)]
    fn peek_exact_bytes(&mut self, buf: &mut [u8]) -> Result<(), ZByteIoError> {
        let start = self.position;
        let result = self.read_exact_bytes(buf);
        self.position = start;
        result
    }

    fn z_seek(&mut self, from: ZSeekFrom) -> Result<u64, ZByteIoError> {
        let (base, offset) = match from {
            ZSeekFrom::Start(n) => {
                self.position = usize::try_from(n).map_err(ZByteIoError::TryFromIntError)?;
                return Ok(n);
            }
            ZSeekFrom::End(n) => (self.bytes.len(), n),
            ZSeekFrom::Current(n) => (self.position, n),
        };
        let offset = isize::try_from(offset).map_err(ZByteIoError::TryFromIntError)?;
        match base.checked_add_signed(offset) {
            Some(position) => {
                self.position = position;
                Ok(position as u64)
            }
            None => Err(ZByteIoError::SeekError("seek to a negative position")),
        }
    }

    #[inline(always)]
    fn is_eof(&mut self) -> Result<bool, ZByteIoError> {
        Ok(self.position >= self.bytes.len())
    }

    #[inline(always)]
    fn z_position(&mut self) -> Result<u64, ZByteIoError> {
        Ok(self.position as u64)
    }

    fn read_remaining(&mut self, sink: &mut Vec<u8>) -> Result<usize, ZByteIoError> {
        let rest = self.rest();
        sink.extend_from_slice(rest);
        self.position += rest.len();
        Ok(rest.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_stop_at_it_and_failed_exact_reads_do_not_move() {
        let mut reader = SliceReader::new(&[1, 2, 3]);
        let mut two = [0u8; 2];
        reader.read_exact_bytes(&mut two).unwrap();
        assert_eq!(two, [1, 2]);
        let mut four = [9u8; 4];
        assert!(reader.read_exact_bytes(&mut four).is_err());
        assert_eq!(
            reader.z_position().unwrap(),
            2,
            "a failed exact read stays put"
        );
        assert_eq!(reader.read_byte_no_error(), 3);
        assert_eq!(reader.read_byte_no_error(), 0, "past the end: 0");
        assert_eq!(reader.z_position().unwrap(), 3);
        assert!(reader.is_eof().unwrap());
        assert_eq!(reader.z_seek(ZSeekFrom::Current(-3)).unwrap(), 0);
        let mut peeked = [0u8; 3];
        reader.peek_exact_bytes(&mut peeked).unwrap();
        assert_eq!((peeked, reader.z_position().unwrap()), ([1, 2, 3], 0));
        assert!(reader.z_seek(ZSeekFrom::Current(-1)).is_err());
        let mut rest = Vec::new();
        assert_eq!(reader.read_remaining(&mut rest).unwrap(), 3);
        assert_eq!(rest, [1, 2, 3]);
    }

    /// zune-jpeg reads a JPEG through this reader exactly as through the `Cursor` it
    /// replaces: the same pixels whole, and the same verdict on every truncation.
    #[test]
    fn jpegs_decode_as_they_did_through_a_cursor_whole_and_cut() {
        use image::ImageEncoder;
        use zune_core::options::DecoderOptions;
        use zune_jpeg::JpegDecoder;

        let (width, height) = (96u32, 72u32);
        let pixels: Vec<u8> = (0..width * height * 3)
            .map(|i| ((i * 7919) ^ (i / 13)) as u8)
            .collect();
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .write_image(&pixels, width, height, image::ExtendedColorType::Rgb8)
            .unwrap();
        let options = DecoderOptions::default().set_strict_mode(true);
        let through_slice = |bytes: &[u8]| {
            JpegDecoder::new_with_options(SliceReader::new(bytes), options)
                .decode()
                .map_err(|e| e.to_string())
        };
        let through_cursor = |bytes: &[u8]| {
            JpegDecoder::new_with_options(std::io::Cursor::new(bytes), options)
                .decode()
                .map_err(|e| e.to_string())
        };
        let whole = through_slice(&jpeg).expect("the whole JPEG decodes");
        assert_eq!(whole.len(), (width * height * 3) as usize);
        assert_eq!(Ok(whole), through_cursor(&jpeg));
        for cut in (0..jpeg.len()).step_by(97) {
            let (slice, cursor) = (through_slice(&jpeg[..cut]), through_cursor(&jpeg[..cut]));
            assert_eq!(
                slice.is_ok(),
                cursor.is_ok(),
                "cut at {cut} of {}",
                jpeg.len()
            );
            if let (Ok(slice), Ok(cursor)) = (slice, cursor) {
                assert_eq!(slice, cursor, "cut at {cut}");
            }
        }
    }
}
