//! Stage kind `preprocess` (§3): every image to SxS 8-bit RGB — "resize the smallest dimension
//! to 256, crop the centre 256x256".
//!
//! Reads either an `image_files` listing (decoding each file strictly, see `imaging::decode`)
//! or an `images` artifact (already decoded, e.g. Fashion-MNIST). Works in chunks of at most
//! [`CHUNK`] images and [`CHUNK_BYTES`] of results ([`chunk_images`]), decoded in parallel and
//! written in input order, so memory is bounded at any size S and the output is byte-identical
//! for any thread count (the writer groups rows by its own rule, whatever the chunks). A file that cannot be used goes to the
//! `rejects` artifact with its reason; `accepted + rejected == files seen` always holds.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use artifacts::image_files::{IMAGE_FILES, ImageFile, read_image_files};
use artifacts::images::{IMAGES, ImageRecord, ImagesRangeReader, ImagesReader, ImagesWriter};
use artifacts::parquet_io::read_header;
use artifacts::rejects::{Reject, read_rejects, write_rejects};
use imaging::{DecodeLimits, RgbImage, ShortSideResizer, decode_rgb};
use rayon::prelude::*;
use stage_api::{
    Error, InputSpec, OutputSpec, ParamSpec, Result, RunSummary, Shard, StageContext, StageKind,
};

/// Images decoded in parallel before being written in order, at most.
pub const CHUNK: usize = 256;

/// The most bytes of results a chunk holds (256 images at S = 256 are 50 MB; at S = 4,096 one
/// image is 50 MB, so a chunk there is 5 images, not 256 = 12.9 GB).
pub const CHUNK_BYTES: usize = 256 << 20;

/// Images in a chunk at size `size`: as many as [`CHUNK_BYTES`] holds, from 1 to [`CHUNK`].
pub fn chunk_images(size: u32) -> usize {
    let image_bytes = (size as usize).pow(2) * 3;
    (CHUNK_BYTES / image_bytes.max(1)).clamp(1, CHUNK)
}

pub fn kinds() -> Vec<Arc<dyn StageKind>> {
    vec![Arc::new(Preprocess)]
}

pub struct Preprocess;

impl StageKind for Preprocess {
    fn name(&self) -> &'static str {
        "preprocess"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "Decodes, resizes the shortest side to S and centre-crops SxS (§3); rejects bad files."
    }

    fn peak_memory(&self) -> &'static str {
        "A chunk of min(256, 256 MiB / (3 S^2)) results, at most 256 MiB (50 MB at S = 256; 5 images at S = 4096), an images writer (up to 3 such groups), and per thread one decoded file (capped at 64 Mpx, 192 MiB) with resize buffers; plus the listing and the rejects, which grow with N (~100 bytes a file)."
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::int(
                "size",
                256,
                8,
                4096,
                "S: the shortest side is resized to S, then the centre SxS is kept (paper: 256).",
            ),
            ParamSpec::int(
                "max_side",
                16_384,
                64,
                65_535,
                "Images with a longer side are rejected (decompression-bomb guard).",
            ),
        ]
    }

    fn inputs(&self) -> Vec<InputSpec> {
        vec![InputSpec::artifact(
            "images",
            "an image_files listing or an images artifact",
        )]
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![
            OutputSpec::new("images", "images", "images artifact, SxS RGB"),
            OutputSpec::new(
                "rejects",
                "rejects.parquet",
                "rejects artifact: files that could not be used, with the reason",
            ),
        ]
    }

    fn run(&self, ctx: &StageContext) -> Result<RunSummary> {
        preprocess(ctx, None)
    }

    fn shardable(&self) -> bool {
        true
    }

    fn run_shard(&self, ctx: &StageContext, shard: Shard) -> Result<RunSummary> {
        preprocess(ctx, Some(shard))
    }

    /// The shards' images pushed, in shard order, through one writer (its row groups fall
    /// where one run's do), and their rejects concatenated: the bytes of one run.
    fn merge_shards(
        &self,
        ctx: &StageContext,
        parts: &[BTreeMap<String, PathBuf>],
    ) -> Result<RunSummary> {
        let mut writer = ImagesWriter::create(ctx.output("images"), &ctx.provenance)?;
        let mut rejects = Vec::new();
        let bar = ctx.progress_bar(parts.len() as u64, "merging shards");
        for part in parts {
            let path = |name: &str| {
                part.get(name).ok_or_else(|| {
                    Error::Config(format!(
                        "a shard of `{}` lacks its `{name}` output",
                        ctx.stage_name
                    ))
                })
            };
            let chunk = chunk_images(ctx.params.int("size") as u32);
            for chunk in ImagesReader::open(path("images")?, chunk)? {
                for image in chunk? {
                    writer.push(image)?;
                }
            }
            rejects.extend(read_rejects(path("rejects")?)?);
            bar.inc(1);
        }
        bar.finish_and_clear();
        let accepted = writer.finish()? as usize;
        write_rejects(ctx.output("rejects"), &ctx.provenance, &rejects)?;
        let size = ctx.params.int("size");
        Ok(summarise(
            format!(
                "accepted {accepted}, rejected {} of {} files ({size}x{size}, merged from {} shards)",
                rejects.len(),
                accepted + rejects.len(),
                parts.len()
            ),
            &rejects,
        ))
    }
}

/// One run, or one shard's slice of it (the rows of `shard.range(n)`).
fn preprocess(ctx: &StageContext, shard: Option<Shard>) -> Result<RunSummary> {
    let input = ctx.input("images");
    let size = ctx.params.int("size") as u32;
    let limits = DecodeLimits {
        max_side: ctx.params.int("max_side") as u32,
        ..DecodeLimits::default()
    };
    let header = read_header(input)?;
    let mut writer = ImagesWriter::create(ctx.output("images"), &ctx.provenance)?;
    let mut rejects = Vec::new();
    let started = std::time::Instant::now();
    let seen = if header.schema == IMAGE_FILES.name {
        let all = read_image_files(input)?;
        let files = match shard {
            Some(shard) => &all[shard.range(all.len())],
            None => &all[..],
        };
        let bar = ctx.progress_bar(files.len() as u64, "decoding and resizing");
        for chunk in files.chunks(chunk_images(size)) {
            let results: Vec<Result<ImageRecord, Reject>> = chunk
                .par_iter()
                .map_init(ShortSideResizer::default, |resizer, file| {
                    load_file(file, size, limits, resizer)
                })
                .collect();
            write_results(results, &mut writer, &mut rejects)?;
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        files.len()
    } else if header.schema == IMAGES.name {
        let rows = match shard {
            Some(shard) => shard.range(header.num_rows as usize),
            None => 0..header.num_rows as usize,
        };
        let bar = ctx.progress_bar(rows.len() as u64, "resizing");
        let chunks: Box<dyn Iterator<Item = artifacts::Result<Vec<ImageRecord>>>> = match shard {
            // A shard reads only the row groups of its slice.
            Some(_) => Box::new(ImagesRangeReader::open(input, rows, chunk_images(size))?),
            None => Box::new(ImagesReader::open(input, chunk_images(size))?),
        };
        let mut seen = 0;
        for chunk in chunks {
            let chunk = chunk?;
            seen += chunk.len();
            let results: Vec<Result<ImageRecord, Reject>> = chunk
                .into_par_iter()
                .map_init(ShortSideResizer::default, |resizer, image| {
                    Ok(resize_record(image, size, resizer))
                })
                .collect();
            bar.inc(results.len() as u64);
            write_results(results, &mut writer, &mut rejects)?;
        }
        bar.finish_and_clear();
        seen
    } else {
        return Err(Error::input(
            input,
            format!(
                "expected an `image_files` or `images` artifact, found `{}`; wire a \
                 dataset reader's output into `preprocess.images`",
                header.schema
            ),
        ));
    };
    let accepted = writer.finish()? as usize;
    write_rejects(ctx.output("rejects"), &ctx.provenance, &rejects)?;
    assert_eq!(
        accepted + rejects.len(),
        seen,
        "every file is accepted or rejected"
    );
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        accepted,
        rejected = rejects.len(),
        images_per_s = seen as f64 / seconds.max(1e-9),
        "preprocessed"
    );
    let shard_note = shard
        .map(|s| format!(", shard {} of {}", s.index + 1, s.count))
        .unwrap_or_default();
    Ok(summarise(
        format!(
            "accepted {accepted}, rejected {} of {seen} files ({size}x{size}, {:.0} images/s{shard_note})",
            rejects.len(),
            seen as f64 / seconds.max(1e-9)
        ),
        &rejects,
    ))
}

/// The summary: its first line, then the rejects counted by reason.
fn summarise(first: String, rejects: &[Reject]) -> RunSummary {
    let mut summary = RunSummary::default().line(first);
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for reject in rejects {
        let kind = reject.reason.split(':').next().unwrap_or("").to_owned();
        *reasons.entry(kind).or_default() += 1;
    }
    for (reason, count) in reasons {
        summary = summary.line(format!("rejected {count}: {reason}"));
    }
    summary
}

fn write_results(
    results: Vec<Result<ImageRecord, Reject>>,
    writer: &mut ImagesWriter,
    rejects: &mut Vec<Reject>,
) -> Result<()> {
    for result in results {
        match result {
            Ok(image) => writer.push(image)?,
            Err(reject) => {
                tracing::debug!(source = %reject.source, reason = %reject.reason, "rejected");
                rejects.push(reject);
            }
        }
    }
    Ok(())
}

/// Reads, decodes and resizes one listed file, or says why it cannot be used.
fn load_file(
    file: &ImageFile,
    size: u32,
    limits: DecodeLimits,
    resizer: &mut ShortSideResizer,
) -> Result<ImageRecord, Reject> {
    let reject = |reason: String| Reject {
        image_id: file.image_id,
        source: file.path.clone(),
        reason,
    };
    let bytes = std::fs::read(&file.path).map_err(|e| reject(format!("unreadable: {e}")))?;
    let decoded = decode_rgb(&bytes, limits).map_err(|e| reject(e.to_string()))?;
    Ok(ImageRecord {
        image_id: file.image_id,
        label: file.label,
        class_name: file.class_name.clone(),
        source: file.path.clone(),
        height: size,
        width: size,
        channels: 3,
        pixels: resizer.resize(&decoded, size),
    })
}

fn resize_record(image: ImageRecord, size: u32, resizer: &mut ShortSideResizer) -> ImageRecord {
    let rgb = RgbImage {
        width: image.width,
        height: image.height,
        pixels: image.pixels,
    };
    ImageRecord {
        pixels: resizer.resize(&rgb, size),
        height: size,
        width: size,
        channels: 3,
        ..image
    }
}
