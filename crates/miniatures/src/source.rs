//! The Fashion-MNIST training pictures every miniature is drawn from, grouped by class.

use std::path::Path;

use crate::Error;
use crate::imagenet::{TSHIRTS_FROM, has_sleeves};

/// Fashion-MNIST's training pictures grouped by class.
pub struct Source {
    by_class: Vec<Vec<[u8; 784]>>,
}

impl Source {
    /// Reads `train-images-idx3-ubyte[.gz]` and `train-labels-idx1-ubyte[.gz]` from `dir`.
    pub fn read(dir: &Path) -> Result<Source, Error> {
        let find = |stem: &str| {
            fashion_mnist::find_idx(dir, stem).map_err(|error| Error::Source(error.to_string()))
        };
        let images_path = find("train-images-idx3-ubyte")?;
        let labels_path = find("train-labels-idx1-ubyte")?;
        let read = |path: &Path| {
            fashion_mnist::read_idx(path)
                .map_err(|error| Error::Source(format!("{}: {error}", path.display())))
        };
        let images = read(&images_path)?;
        let labels = read(&labels_path)?;
        if images.dims.len() != 3 || images.dims[1] != 28 || images.dims[2] != 28 {
            return Err(Error::Source(format!(
                "{}: expected N x 28 x 28 images, found dims {:?}",
                images_path.display(),
                images.dims
            )));
        }
        if labels.dims != [images.dims[0]] {
            return Err(Error::Source(format!(
                "{} has {:?} labels for {} images",
                labels_path.display(),
                labels.dims,
                images.dims[0]
            )));
        }
        let mut by_class = vec![Vec::new(); 10];
        for (label, pixels) in labels.data.iter().zip(images.data.chunks_exact(784)) {
            let Some(class) = by_class.get_mut(usize::from(*label)) else {
                return Err(Error::Source(format!(
                    "{}: label {label} is not a Fashion-MNIST class (0-9)",
                    labels_path.display()
                )));
            };
            class.push(pixels.try_into().expect("chunks of 784"));
        }
        Ok(Source { by_class })
    }

    /// The first `n` T-shirts with sleeves ([`has_sleeves`]) from picture [`TSHIRTS_FROM`]
    /// of class 0 on.
    pub(crate) fn tshirts_with_sleeves(&self, n: usize) -> Result<Vec<&[u8; 784]>, Error> {
        let found: Vec<&[u8; 784]> = self.by_class[0]
            .iter()
            .skip(TSHIRTS_FROM)
            .filter(|picture| has_sleeves(picture))
            .take(n)
            .collect();
        if found.len() < n {
            return Err(Error::Source(format!(
                "Fashion-MNIST has fewer than {n} T-shirts with sleeves past picture \
                 {TSHIRTS_FROM} of class 0"
            )));
        }
        Ok(found)
    }

    /// The `n`th picture of `class` (wrapping around).
    pub(crate) fn picture(&self, class: usize, n: usize) -> Result<&[u8; 784], Error> {
        let pictures = &self.by_class[class % 10];
        if pictures.is_empty() {
            return Err(Error::Source(format!(
                "Fashion-MNIST holds no picture of class {class}"
            )));
        }
        Ok(&pictures[n % pictures.len()])
    }
}
