//! Named f32 tensors in safetensors files: model weights, optimizer state, the mean image.
//!
//! String metadata (provenance, architecture, RNG state) rides in the safetensors header, so a
//! checkpoint is one self-describing file that PyTorch's `safetensors.torch.load_file` opens.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors};

use crate::parquet_io::PROVENANCE_KEY;
use crate::{Error, Provenance, Result};

/// A named f32 tensor, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl NamedTensor {
    pub fn new(name: impl Into<String>, shape: Vec<usize>, values: Vec<f32>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            values.len(),
            "shape and data agree"
        );
        NamedTensor {
            name: name.into(),
            shape,
            values,
        }
    }
}

/// Writes tensors and metadata (plus provenance) to `path`.
///
/// The header is written here rather than by `safetensors::serialize`, whose metadata map is a
/// `HashMap`: its key order (and so the file's bytes and content hash) changed from one process
/// to the next. Here metadata keys are sorted and tensors keep the given order, so the same
/// tensors always make the same bytes — which content-addressed caching relies on.
pub fn write_tensors(
    path: &Path,
    provenance: &Provenance,
    tensors: &[NamedTensor],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    use std::io::Write;
    let mut info = metadata.clone();
    info.insert(
        PROVENANCE_KEY.to_owned(),
        serde_json::to_string(provenance).expect("provenance serialises"),
    );
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".to_owned(),
        serde_json::Value::Object(
            info.into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect(),
        ),
    );
    let mut offset = 0usize;
    for tensor in tensors {
        let bytes = tensor.values.len() * 4;
        header.insert(
            tensor.name.clone(),
            serde_json::json!({
                "dtype": "F32",
                "shape": tensor.shape,
                "data_offsets": [offset, offset + bytes],
            }),
        );
        offset += bytes;
    }
    let mut header_bytes =
        serde_json::to_vec(&serde_json::Value::Object(header)).expect("header serialises");
    // The data must start 8-byte aligned; the format pads the header with spaces.
    while !header_bytes.len().is_multiple_of(8) {
        header_bytes.push(b' ');
    }
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut out = std::io::BufWriter::new(file);
    let io = |e| Error::io(path, e);
    out.write_all(&(header_bytes.len() as u64).to_le_bytes())
        .map_err(io)?;
    out.write_all(&header_bytes).map_err(io)?;
    for tensor in tensors {
        for value in &tensor.values {
            out.write_all(&value.to_le_bytes()).map_err(io)?;
        }
    }
    let file = out
        .into_inner()
        .map_err(|e| Error::io(path, e.into_error()))?;
    file.sync_all().map_err(io)
}

/// Everything in a safetensors file of f32 tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorFile {
    pub tensors: BTreeMap<String, NamedTensor>,
    pub metadata: BTreeMap<String, String>,
}

impl TensorFile {
    /// The tensor `name`, or a contract error naming the file.
    pub fn get(&self, name: &str, path: &Path) -> Result<&NamedTensor> {
        self.tensors.get(name).ok_or_else(|| {
            Error::contract(path, format!("no tensor `{name}` in this safetensors file"))
        })
    }
}

/// The string metadata of a safetensors file (provenance, architecture, ...), reading only
/// its header: cheap even for a model of hundreds of megabytes.
pub fn read_tensor_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    use std::io::Read;
    let bad = |why: String| Error::contract(path, format!("not a safetensors file: {why}"));
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut length = [0u8; 8];
    file.read_exact(&mut length)
        .map_err(|e| bad(format!("no header length ({e})")))?;
    let length = u64::from_le_bytes(length);
    if length > 100_000_000 {
        return Err(bad(format!("header of {length} bytes")));
    }
    let mut header = vec![0u8; length as usize];
    file.read_exact(&mut header)
        .map_err(|e| bad(format!("header cut short ({e})")))?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header is not JSON ({e})")))?;
    Ok(header
        .get("__metadata__")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default())
}

pub fn read_tensors(path: &Path) -> Result<TensorFile> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let parsed = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::contract(path, format!("not a safetensors file: {e}")))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::contract(path, format!("not a safetensors file: {e}")))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in parsed.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(Error::contract(
                path,
                format!("tensor `{name}` is {:?}, expected F32", view.dtype()),
            ));
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        tensors.insert(
            name.clone(),
            NamedTensor {
                name,
                shape: view.shape().to_vec(),
                values,
            },
        );
    }
    let metadata = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    Ok(TensorFile { tensors, metadata })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_alone_is_read_from_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let metadata = BTreeMap::from([("zfnet.architecture".to_owned(), "{}".to_owned())]);
        let tensors = [NamedTensor::new("w", vec![2], vec![1.0, 2.0])];
        write_tensors(&path, &Provenance::ad_hoc("t"), &tensors, &metadata).unwrap();
        let read = read_tensor_metadata(&path).unwrap();
        assert_eq!(read, read_tensors(&path).unwrap().metadata);
        assert_eq!(read["zfnet.architecture"], "{}");
        std::fs::write(&path, b"\x05\0\0\0\0\0\0\0{").unwrap();
        let error = read_tensor_metadata(&path).unwrap_err().to_string();
        assert!(error.contains("not a safetensors file"), "{error}");
    }

    #[test]
    fn tensors_and_metadata_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let tensors = vec![
            NamedTensor::new(
                "conv1.weight",
                vec![2, 1, 2, 2],
                (0..8).map(|i| i as f32 * 0.5).collect(),
            ),
            NamedTensor::new("conv1.bias", vec![2], vec![-1.0, 1.0]),
        ];
        let metadata = BTreeMap::from([("arch".to_owned(), "zf".to_owned())]);
        write_tensors(&path, &Provenance::ad_hoc("t"), &tensors, &metadata).unwrap();
        let file = read_tensors(&path).unwrap();
        assert_eq!(file.get("conv1.weight", &path).unwrap(), &tensors[0]);
        assert_eq!(file.metadata["arch"], "zf");
        assert!(file.metadata.contains_key(PROVENANCE_KEY));
        assert!(file.get("fc6.weight", &path).is_err());
    }

    #[test]
    fn the_same_tensors_always_make_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let tensors = vec![NamedTensor::new("w", vec![2], vec![1.0, 2.0])];
        let metadata: BTreeMap<String, String> = (0..20)
            .map(|i| (format!("key{i}"), i.to_string()))
            .collect();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        write_tensors(&a, &Provenance::ad_hoc("t"), &tensors, &metadata).unwrap();
        write_tensors(&b, &Provenance::ad_hoc("t"), &tensors, &metadata).unwrap();
        assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
    }
}
