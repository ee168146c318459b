//! Stage kind `mean_image` (§3): "subtract the per-pixel mean (across all images)".
//!
//! One streaming pass over a preprocessed `images` artifact, summing pixels in u64 (exact, so
//! the mean is the same whatever the chunking or thread count), then dividing once. The mean
//! is written as a safetensors tensor `mean` of shape [S, S, 3] (HWC, like the pixels), which
//! training, evaluation and every analysis subtract before the network sees an image.

use std::collections::BTreeMap;
use std::sync::Arc;

use artifacts::images::ImagesReader;
use artifacts::tensors::{NamedTensor, write_tensors};
use stage_api::{
    Error, InputSpec, OutputSpec, ParamSpec, Result, RunSummary, StageContext, StageKind,
};

pub fn kinds() -> Vec<Arc<dyn StageKind>> {
    vec![Arc::new(MeanImage)]
}

pub struct MeanImage;

impl StageKind for MeanImage {
    fn name(&self) -> &'static str {
        "mean_image"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "Per-pixel mean of a training images artifact (§3), as a safetensors tensor [S, S, 3]."
    }

    fn peak_memory(&self) -> &'static str {
        "One read batch of 512 images, Arrow and decoded copies (2 x 512 S^2 3 bytes: ~200 MB at S = 256), plus the u64 sums and the f32 mean (12 S^2 3 bytes). Does not grow with N."
    }

    fn params(&self) -> Vec<ParamSpec> {
        Vec::new()
    }

    fn inputs(&self) -> Vec<InputSpec> {
        vec![InputSpec::artifact(
            "images",
            "the preprocessed training images (all SxS)",
        )]
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![OutputSpec::new(
            "mean",
            "mean.safetensors",
            "tensor `mean` [S, S, 3] f32",
        )]
    }

    fn run(&self, ctx: &StageContext) -> Result<RunSummary> {
        let input = ctx.input("images");
        let mut sums: Vec<u64> = Vec::new();
        let mut shape = (0u32, 0u32, 0u32);
        let mut count = 0u64;
        let reader = ImagesReader::open(input, 512)?;
        let bar = ctx.progress_bar(reader.num_images, "summing pixels");
        for chunk in reader {
            for image in chunk? {
                let this = (image.height, image.width, image.channels);
                if count == 0 {
                    shape = this;
                    sums = vec![0; image.pixels.len()];
                } else if this != shape {
                    return Err(Error::input(
                        input,
                        format!(
                            "image {} is {}x{}x{} but the first was {}x{}x{}: run \
                             `preprocess` first so every image is SxS",
                            image.image_id, this.0, this.1, this.2, shape.0, shape.1, shape.2
                        ),
                    ));
                }
                for (sum, &pixel) in sums.iter_mut().zip(&image.pixels) {
                    *sum += pixel as u64;
                }
                count += 1;
                bar.inc(1);
            }
        }
        bar.finish_and_clear();
        if count == 0 {
            return Err(Error::input(
                input,
                "no images: the mean of nothing is undefined",
            ));
        }
        let mean: Vec<f32> = sums
            .iter()
            .map(|&sum| (sum as f64 / count as f64) as f32)
            .collect();
        let overall = mean.iter().map(|&v| v as f64).sum::<f64>() / mean.len() as f64;
        let tensor = NamedTensor::new(
            "mean",
            vec![shape.0 as usize, shape.1 as usize, shape.2 as usize],
            mean,
        );
        let metadata = BTreeMap::from([("n_images".to_owned(), count.to_string())]);
        write_tensors(ctx.output("mean"), &ctx.provenance, &[tensor], &metadata)?;
        Ok(RunSummary::default().line(format!(
            "mean of {count} images of {}x{}x{}; overall mean pixel {overall:.2}",
            shape.0, shape.1, shape.2
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use artifacts::Provenance;
    use artifacts::images::{ImageRecord, ImagesWriter};
    use artifacts::tensors::read_tensors;
    use stage_api::Params;

    #[test]
    fn the_mean_is_per_pixel_and_per_channel() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        let mut writer = ImagesWriter::create(&images, &Provenance::ad_hoc("t")).unwrap();
        for (id, base) in [(0, 0u8), (1, 10), (2, 20)] {
            writer
                .push(ImageRecord {
                    image_id: id,
                    label: 0,
                    class_name: "c".into(),
                    source: String::new(),
                    height: 1,
                    width: 2,
                    channels: 3,
                    pixels: vec![base, base + 1, base + 2, 255, 0, base],
                })
                .unwrap();
        }
        writer.finish().unwrap();
        let out = dir.path().join("mean.safetensors");
        let ctx = StageContext::for_tests(
            Params::default(),
            BTreeMap::from([("images".to_owned(), vec![images])]),
            BTreeMap::from([("mean".to_owned(), out.clone())]),
            dir.path().to_path_buf(),
        );
        MeanImage.run(&ctx).unwrap();
        let file = read_tensors(&out).unwrap();
        let mean = file.get("mean", &out).unwrap();
        assert_eq!(mean.shape, vec![1, 2, 3]);
        assert_eq!(mean.values, vec![10.0, 11.0, 12.0, 255.0, 0.0, 10.0]);
        assert_eq!(file.metadata["n_images"], "3");
    }
}
