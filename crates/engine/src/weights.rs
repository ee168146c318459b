//! A trained model as one safetensors file: every parameter (`conv1.weight`, `conv1.bias`,
//! ...), the per-pixel mean the network subtracts (`input_mean`, [S, S, 3]), and metadata:
//! the architecture (JSON), the image size S, and the class names.

use std::collections::BTreeMap;
use std::path::Path;

use artifacts::Provenance;
use artifacts::tensors::{NamedTensor, TensorFile, read_tensors, write_tensors};

use crate::{Architecture, Backend, Network};

pub const ARCHITECTURE_KEY: &str = "zfnet.architecture";
pub const IMAGE_SIZE_KEY: &str = "zfnet.image_size";
pub const CLASS_NAMES_KEY: &str = "zfnet.class_names";

/// Everything besides weights that makes a model usable.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub architecture: Architecture,
    /// Side of the preprocessed images the crops are taken from.
    pub image_size: usize,
    pub class_names: Vec<String>,
    /// HWC, image_size^2 * 3 values.
    pub mean: Vec<f32>,
}

impl ModelInfo {
    /// The network's input for one preprocessed image (HWC, `image_size` x `image_size`): its
    /// centre crop of `crop` pixels — §3's test-time view — minus the per-pixel mean, as CHW.
    pub fn centre_input(&self, pixels_hwc: &[u8], image_size: u32, crop: usize, out: &mut [f32]) {
        imaging::write_crop_chw(
            pixels_hwc,
            image_size,
            Some(&self.mean),
            imaging::centre_crop(image_size, crop as u32),
            crop as u32,
            out,
        );
    }
}

/// The network's parameters as named tensors.
pub fn export<B: Backend>(network: &Network<B>) -> Vec<NamedTensor> {
    let b = &network.backend;
    let mut tensors = Vec::new();
    for p in &network.params {
        tensors.push(NamedTensor::new(
            format!("{}.weight", p.name),
            p.shape.clone(),
            b.download(&p.weight),
        ));
        tensors.push(NamedTensor::new(
            format!("{}.bias", p.name),
            vec![p.shape[0]],
            b.download(&p.bias),
        ));
    }
    tensors
}

/// Loads named tensors into the network's parameters (shapes must match).
pub fn import<B: Backend>(
    network: &mut Network<B>,
    file: &TensorFile,
    path: &Path,
) -> artifacts::Result<()> {
    for p in &mut network.params {
        let weight = file.get(&format!("{}.weight", p.name), path)?;
        let bias = file.get(&format!("{}.bias", p.name), path)?;
        if weight.shape != p.shape || bias.values.len() != p.shape[0] {
            return Err(artifacts::Error::Contract {
                path: path.to_path_buf(),
                message: format!(
                    "`{}` has shape {:?}, the architecture needs {:?}",
                    p.name, weight.shape, p.shape
                ),
            });
        }
        p.weight = network.backend.upload(&weight.values);
        p.bias = network.backend.upload(&bias.values);
    }
    Ok(())
}

/// Writes a model file.
pub fn save_model<B: Backend>(
    path: &Path,
    network: &Network<B>,
    info: &ModelInfo,
    provenance: &Provenance,
) -> artifacts::Result<()> {
    let mut tensors = export(network);
    tensors.push(NamedTensor::new(
        "input_mean",
        vec![info.image_size, info.image_size, 3],
        info.mean.clone(),
    ));
    let metadata = BTreeMap::from([
        (
            ARCHITECTURE_KEY.to_owned(),
            serde_json::to_string(&info.architecture).expect("architecture serialises"),
        ),
        (IMAGE_SIZE_KEY.to_owned(), info.image_size.to_string()),
        (
            CLASS_NAMES_KEY.to_owned(),
            serde_json::to_string(&info.class_names).expect("names serialise"),
        ),
    ]);
    write_tensors(path, provenance, &tensors, &metadata)
}

/// A model file's architecture, from its header alone (no weights are read).
pub fn read_architecture(path: &Path) -> artifacts::Result<Architecture> {
    artifacts::tensors::read_tensor_metadata(path)?
        .get(ARCHITECTURE_KEY)
        .and_then(|json| serde_json::from_str(json).ok())
        .ok_or_else(|| artifacts::Error::Contract {
            path: path.to_path_buf(),
            message: "no architecture in the metadata: not a zfnet model".to_owned(),
        })
}

/// Reads a model file into a network on `backend`, with the rest of what makes it usable.
pub fn load_model<B: Backend>(
    path: &Path,
    backend: B,
) -> artifacts::Result<(Network<B>, ModelInfo)> {
    let file = read_tensors(path)?;
    let bad = |message: String| artifacts::Error::Contract {
        path: path.to_path_buf(),
        message,
    };
    let architecture: Architecture = file
        .metadata
        .get(ARCHITECTURE_KEY)
        .and_then(|json| serde_json::from_str(json).ok())
        .ok_or_else(|| bad("no architecture in the metadata: not a zfnet model".to_owned()))?;
    let image_size: usize = file
        .metadata
        .get(IMAGE_SIZE_KEY)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad("no image size in the metadata".to_owned()))?;
    let class_names: Vec<String> = file
        .metadata
        .get(CLASS_NAMES_KEY)
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default();
    let mean = file.get("input_mean", path)?.values.clone();
    let mut network = Network::new(backend, architecture.clone(), 0.0, 0);
    import(&mut network, &file, path)?;
    Ok((
        network,
        ModelInfo {
            architecture,
            image_size,
            class_names,
            mean,
        },
    ))
}
