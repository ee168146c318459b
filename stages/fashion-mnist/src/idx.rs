//! The IDX format of (Fashion-)MNIST: a big-endian magic (0, 0, type 0x08 = u8, number of
//! dims), one big-endian u32 per dim, then the data. Gzipped files are recognised by content.

use std::fs;
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};

use stage_api::Error;

/// An IDX file's dims and bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("not an IDX file: magic bytes are {0:02x?}, expected 00 00 08 <dims>")]
    BadMagic([u8; 4]),
    #[error("truncated IDX file: the header promises {expected} data bytes, found {found}")]
    Truncated { expected: u64, found: u64 },
    #[error(
        "the IDX header's dims {dims:?} make {bytes} bytes, more than the {MAX_IDX_DATA_BYTES} bytes \
         an IDX file may hold here"
    )]
    TooLarge { dims: Vec<u64>, bytes: String },
    #[error(
        "the IDX file holds more data than its header's dims {dims:?} promise ({expected} \
         bytes); it is not the file its header describes"
    )]
    TooLong { dims: Vec<u64>, expected: u64 },
}

/// The largest data section read from an IDX file (Fashion-MNIST's training images are 47 MB;
/// this bounds what a hostile header can make the reader allocate or inflate).
pub const MAX_IDX_DATA_BYTES: u64 = 1 << 32;

/// Reads an IDX file of unsigned bytes, gunzipping it if it is gzipped. The header is read
/// first; then exactly the bytes its dims promise are read (and inflated), never more: a
/// gzip stream that would inflate past them is refused after one byte too many.
pub fn read_idx(path: &Path) -> Result<Idx, IdxError> {
    let mut file = fs::File::open(path)?;
    let mut gzip_magic = [0u8; 2];
    let n_read = file.read(&mut gzip_magic)?;
    file.rewind()?;
    if n_read == 2 && gzip_magic == [0x1f, 0x8b] {
        read_idx_from(flate2::read::GzDecoder::new(io::BufReader::new(file)))
    } else {
        read_idx_from(io::BufReader::new(file))
    }
}

/// Reads an IDX stream (see [`read_idx`]).
pub fn read_idx_from(mut reader: impl Read) -> Result<Idx, IdxError> {
    let mut magic = [0u8; 4];
    let n_magic = read_up_to(&mut reader, &mut magic)?;
    if n_magic < 4 || magic[0] != 0 || magic[1] != 0 || magic[2] != 0x08 || magic[3] == 0 {
        return Err(IdxError::BadMagic(magic));
    }
    let n_dims = magic[3] as usize;
    let mut header = vec![0u8; 4 * n_dims];
    let n_header = read_up_to(&mut reader, &mut header)?;
    if n_header < header.len() {
        return Err(IdxError::Truncated {
            expected: (4 + header.len()) as u64,
            found: (4 + n_header) as u64,
        });
    }
    let dims: Vec<u64> = header
        .chunks_exact(4)
        .map(|bytes| u32::from_be_bytes(bytes.try_into().expect("4 bytes")) as u64)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1u64, |product, &dim| product.checked_mul(dim))
        .filter(|&bytes| bytes <= MAX_IDX_DATA_BYTES)
        .ok_or_else(|| IdxError::TooLarge {
            dims: dims.clone(),
            bytes: dims
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" x "),
        })?;
    // Grows with what arrives (a header can lie), and stops one byte past the promise.
    let mut data = Vec::new();
    reader.by_ref().take(expected + 1).read_to_end(&mut data)?;
    if (data.len() as u64) < expected {
        return Err(IdxError::Truncated {
            expected,
            found: data.len() as u64,
        });
    }
    if data.len() as u64 > expected {
        return Err(IdxError::TooLong { dims, expected });
    }
    Ok(Idx {
        dims: dims.into_iter().map(|dim| dim as usize).collect(),
        data,
    })
}

/// Fills `buffer` as far as the stream allows; returns how many bytes it read.
fn read_up_to(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// Finds `<stem>.gz` or `<stem>` in `dir`.
pub fn find(dir: &Path, stem: &str) -> Result<PathBuf, Error> {
    for candidate in [dir.join(format!("{stem}.gz")), dir.join(stem)] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(Error::input(
        dir,
        format!(
            "neither {stem}.gz nor {stem} is here; install Debian's dataset-fashion-mnist \
             (`make data`) or point the `dir` input at the folder holding the IDX files"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    pub(crate) fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0, 0, 8, dims.len() as u8];
        for dim in dims {
            bytes.extend_from_slice(&dim.to_be_bytes());
        }
        bytes.extend_from_slice(data);
        bytes
    }

    #[test]
    fn plain_and_gzipped_idx_files_read_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = idx_bytes(&[2, 2, 2], &[1, 2, 3, 4, 5, 6, 7, 8]);
        fs::write(dir.path().join("plain"), &bytes).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&bytes).unwrap();
        fs::write(dir.path().join("packed.gz"), gz.finish().unwrap()).unwrap();
        let plain = read_idx(&dir.path().join("plain")).unwrap();
        assert_eq!(plain.dims, vec![2, 2, 2]);
        assert_eq!(plain, read_idx(&dir.path().join("packed.gz")).unwrap());
    }

    #[test]
    fn truncated_and_foreign_files_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("short"), idx_bytes(&[10], &[1, 2, 3])).unwrap();
        assert_eq!(
            read_idx(&dir.path().join("short")).unwrap_err().to_string(),
            "truncated IDX file: the header promises 10 data bytes, found 3"
        );
        fs::write(dir.path().join("png"), b"\x89PNG\r\n").unwrap();
        assert!(
            read_idx(&dir.path().join("png"))
                .unwrap_err()
                .to_string()
                .starts_with("not an IDX file")
        );
    }

    /// A gzip stream that inflates far past what its IDX header promises (a "zip bomb" in
    /// miniature: 64 MB of zeros behind a 10-byte header) is refused after the promised bytes
    /// plus one; before the bound the reader inflated all of it and kept the first 10.
    #[test]
    fn inflation_stops_at_what_the_header_promises() {
        let dir = tempfile::tempdir().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&idx_bytes(&[10], &[7; 10])).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            gz.write_all(&zeros).unwrap();
        }
        let packed = gz.finish().unwrap();
        assert!(packed.len() < 1 << 20, "the bomb is small on disk");
        fs::write(dir.path().join("bomb.gz"), packed).unwrap();
        let error = read_idx(&dir.path().join("bomb.gz")).unwrap_err();
        assert!(
            matches!(error, IdxError::TooLong { expected: 10, .. }),
            "{error}"
        );
    }

    /// Dims whose product overflows, or exceeds the bound, are refused before anything is
    /// allocated (before: an overflow panic in debug builds, a wrapped size in release).
    #[test]
    fn dims_that_multiply_past_the_bound_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for dims in [&[u32::MAX, u32::MAX, u32::MAX][..], &[65_536, 65_536, 2]] {
            fs::write(dir.path().join("huge"), idx_bytes(dims, &[1, 2, 3])).unwrap();
            let error = read_idx(&dir.path().join("huge")).unwrap_err();
            assert!(matches!(error, IdxError::TooLarge { .. }), "{error}");
            assert!(
                error.to_string().contains("more than the 4294967296 bytes"),
                "{error}"
            );
        }
    }
}
