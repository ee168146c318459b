//! The IDX format of (Fashion-)MNIST: a big-endian magic (0, 0, type 0x08 = u8, number of
//! dims), one big-endian u32 per dim, then the data. Gzipped files are recognised by content.

use std::fs;
use std::io::Read;
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
    Truncated { expected: usize, found: usize },
}

/// Reads an IDX file of unsigned bytes, gunzipping it if it is gzipped.
pub fn read_idx(path: &Path) -> Result<Idx, IdxError> {
    let raw = fs::read(path)?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out)?;
        out
    } else {
        raw
    };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 || bytes[3] == 0 {
        let mut magic = [0u8; 4];
        for (slot, byte) in magic.iter_mut().zip(&bytes) {
            *slot = *byte;
        }
        return Err(IdxError::BadMagic(magic));
    }
    let n_dims = bytes[3] as usize;
    let header = 4 + 4 * n_dims;
    if bytes.len() < header {
        return Err(IdxError::Truncated {
            expected: header,
            found: bytes.len(),
        });
    }
    let dims: Vec<usize> = (0..n_dims)
        .map(|i| {
            let at = 4 + 4 * i;
            u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize
        })
        .collect();
    let expected: usize = dims.iter().product();
    let found = bytes.len() - header;
    if found < expected {
        return Err(IdxError::Truncated { expected, found });
    }
    Ok(Idx {
        dims,
        data: bytes[header..header + expected].to_vec(),
    })
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
}
