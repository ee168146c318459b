//! Stage kind `dedup` (§5.2): "Using normalized correlation, we identified these few overlap
//! images and removed them from our ImageNet training set and then retrained."
//!
//! Every image becomes a zero-mean, unit-norm vector of its grayscale pixels, box-averaged
//! down to `size` x `size` (so that a one-pixel shift barely moves it); the normalised
//! correlation of two images is then the dot product of their vectors. Queries (the transfer
//! target set) are held in memory; references (the pre-training set) stream through in blocks,
//! and each block's correlations with all queries are screened in bf16 (AVX-512 BF16, when
//! timed faster than the f32 screen on this CPU) or by an f32 GEMM, within a proven error
//! margin, and the candidates recomputed exactly (`screen`) —
//! the full queries x references matrix is never materialised. Pairs above `threshold` are the
//! overlaps; the referenced images go to a removal manifest that `train` reads (`exclude`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use stage_api::device::Device;

use artifacts::images::{ImageRecord, ImagesReader};
use artifacts::table::TableRow;
use artifacts::table::rows::{DedupMatchRow, RemovalRow};
use rayon::prelude::*;
use stage_api::{
    Error, InputSpec, OutputSpec, ParamSpec, Result, RunSummary, StageContext, StageKind,
};

pub mod screen;

pub fn kinds() -> Vec<Arc<dyn StageKind>> {
    vec![Arc::new(Dedup)]
}

/// Zero-mean, unit-norm grayscale vector of an image box-averaged to `size` x `size`.
pub fn ncc_vector(image: &ImageRecord, size: usize) -> Vec<f32> {
    let (h, w, c) = (
        image.height as usize,
        image.width as usize,
        image.channels as usize,
    );
    let mut sums = vec![0.0f64; size * size];
    let mut counts = vec![0u32; size * size];
    for y in 0..h {
        for x in 0..w {
            let at = (y * w + x) * c;
            let gray = image.pixels[at..at + c]
                .iter()
                .map(|&v| v as f64)
                .sum::<f64>()
                / c as f64;
            let cell = (y * size / h) * size + x * size / w;
            sums[cell] += gray;
            counts[cell] += 1;
        }
    }
    let values: Vec<f64> = sums
        .iter()
        .zip(&counts)
        .map(|(s, &n)| s / n.max(1) as f64)
        .collect();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let centred: Vec<f64> = values.iter().map(|v| v - mean).collect();
    let norm = centred.iter().map(|v| v * v).sum::<f64>().sqrt();
    // A flat image has no texture to correlate: it matches nothing.
    if norm < 1e-9 {
        return vec![0.0; values.len()];
    }
    centred.iter().map(|v| (v / norm) as f32).collect()
}

/// One overlap found.
#[derive(Clone, Debug, PartialEq)]
pub struct Match {
    pub query_id: i64,
    pub query_label: i32,
    pub reference_id: i64,
    pub ncc: f32,
}

/// All (query, reference) pairs with correlation >= `threshold` on the CPU, references
/// streamed in blocks of `block` images. Deterministic: each query's list is sorted by
/// reference order. Whether the bf16 screen is faster is timed on the first call and kept in
/// `use_bf16` for the next (the stage calls this once per block of queries).
pub fn find_overlaps(
    queries: &[(i64, i32, Vec<f32>)],
    references: &Path,
    size: usize,
    threshold: f32,
    block: usize,
    use_bf16: &mut Option<bool>,
) -> Result<(Vec<Match>, usize)> {
    let query_matrix = query_matrix(queries);
    let dim = size * size;
    let use_bf16 = *use_bf16.get_or_insert_with(|| {
        screen::bf16_available() && screen::bf16_is_faster(&query_matrix, dim, threshold)
    });
    let screen = screen::CpuScreen::new(&query_matrix, dim, use_bf16);
    find_overlaps_with(
        &screen,
        queries,
        &query_matrix,
        references,
        size,
        threshold,
        block,
    )
}

/// The queries' vectors as one row-major matrix.
pub fn query_matrix(queries: &[(i64, i32, Vec<f32>)]) -> Vec<f32> {
    queries.iter().flat_map(|q| q.2.iter().copied()).collect()
}

/// [`find_overlaps`] with a chosen screen (the CPU's, or an engine backend's) over the
/// queries, whose vectors are `query_matrix` ([`query_matrix`], built once by the caller).
pub fn find_overlaps_with(
    screen: &dyn screen::Screen,
    queries: &[(i64, i32, Vec<f32>)],
    query_matrix: &[f32],
    references: &Path,
    size: usize,
    threshold: f32,
    block: usize,
) -> Result<(Vec<Match>, usize)> {
    let dim = size * size;
    let mut matches = Vec::new();
    let mut n_references = 0;
    for chunk in ImagesReader::open(references, block)? {
        let chunk = chunk?;
        let reference_matrix: Vec<f32> = chunk
            .par_iter()
            .map(|image| ncc_vector(image, size))
            .collect::<Vec<_>>()
            .concat();
        for (q, r, ncc) in
            screen::pairs_at_least(screen, query_matrix, &reference_matrix, dim, threshold)
        {
            let (query_id, query_label, _) = &queries[q];
            matches.push(Match {
                query_id: *query_id,
                query_label: *query_label,
                reference_id: chunk[r].image_id,
                ncc: ncc as f32,
            });
        }
        n_references += chunk.len();
    }
    matches.sort_by_key(|m| (m.query_id, m.reference_id));
    Ok((matches, n_references))
}

/// What a blocked search found.
struct Blocked {
    matches: Vec<Match>,
    n_references: usize,
    n_queries: usize,
    passes: usize,
    /// Seconds spent searching (reading the queries and their vectors excluded).
    search_seconds: f64,
}

/// Reads the queries `query_block` at a time (their vectors) and runs `search` on each block
/// against every reference; the matches sorted by (query, reference). Each pair is decided
/// exactly, so they do not depend on the blocking.
fn search_in_blocks(
    query: &Path,
    size: usize,
    query_block: usize,
    mut search: impl FnMut(&[(i64, i32, Vec<f32>)]) -> Result<(Vec<Match>, usize)>,
) -> Result<Blocked> {
    let mut found = Blocked {
        matches: Vec::new(),
        n_references: 0,
        n_queries: 0,
        passes: 0,
        search_seconds: 0.0,
    };
    let mut queries = Vec::new();
    let mut flush = |queries: &mut Vec<(i64, i32, Vec<f32>)>| -> Result<()> {
        let started = std::time::Instant::now();
        let (matches, references) = search(queries)?;
        found.search_seconds += started.elapsed().as_secs_f64();
        found.matches.extend(matches);
        found.n_references = references;
        found.n_queries += queries.len();
        found.passes += 1;
        queries.clear();
        Ok(())
    };
    for chunk in ImagesReader::open(query, query_block.min(QUERY_CHUNK))? {
        for image in chunk? {
            queries.push((image.image_id, image.label, ncc_vector(&image, size)));
            if queries.len() == query_block {
                flush(&mut queries)?;
            }
        }
    }
    if !queries.is_empty() {
        flush(&mut queries)?;
    }
    found.matches.sort_by_key(|m| (m.query_id, m.reference_id));
    Ok(found)
}

/// Query images read (and decoded) at a time.
const QUERY_CHUNK: usize = 1024;

/// The blocked search with the GPU's GEMM as the screen: one backend for every block.
struct GpuDedup<'a> {
    query: &'a Path,
    references: &'a Path,
    size: usize,
    threshold: f32,
    block: usize,
    query_block: usize,
}

impl cuda_backend::BackendTask for GpuDedup<'_> {
    type Output = Result<Blocked>;

    fn run<B: engine::Backend>(self, backend: B) -> Self::Output {
        search_in_blocks(self.query, self.size, self.query_block, |queries| {
            let matrix = query_matrix(queries);
            let screen =
                screen::BackendScreen::new(backend.clone(), &matrix, self.size * self.size);
            find_overlaps_with(
                &screen,
                queries,
                &matrix,
                self.references,
                self.size,
                self.threshold,
                self.block,
            )
        })
    }
}

pub struct Dedup;

impl StageKind for Dedup {
    fn name(&self) -> &'static str {
        "dedup"
    }

    fn version(&self) -> u32 {
        // 2: bf16 screening with an exact f64 re-check; correlations are now exact (f64,
        // stored as f32) instead of f32 GEMM sums.
        2
    }

    fn summary(&self) -> &'static str {
        "Overlap between a target set and the training set by normalised correlation (§5.2); a removal manifest for train."
    }

    fn peak_memory(&self) -> &'static str {
        "One reference block of `block` images, decoded and as vectors (~1.6 GB at block 4096 and S = 256), the screen's packed copy of the block (f32 or bf16; the whole Q x block scores on a GPU), a chunk of up to 1,024 query images being read, and a block of query vectors (3 size^2 4 bytes a query, with the screen's copy) as large as memory_limit_mb leaves (all Q when they fit: one pass over the references); checked before reading. Outside it: the candidate pairs and matches, which grow with the pairs near the threshold."
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::int(
                "size",
                16,
                2,
                256,
                "Images are compared as size x size grayscale.",
            ),
            ParamSpec::float(
                "threshold",
                0.95,
                -1.0,
                1.0,
                "Normalised correlation at or above which two images overlap.",
            ),
            ParamSpec::int(
                "block",
                4096,
                1,
                1_000_000,
                "Reference images per GEMM block.",
            ),
            ParamSpec::int(
                "memory_limit_mb",
                16_384,
                1,
                i64::MAX,
                "The most the run may hold: one reference block (from the references' first \
                 image) and as many query vectors as fit beside it; more queries are searched \
                 in several blocks, the references streamed again for each (the same matches).",
            ),
            stage_api::device::device_param(),
        ]
    }

    fn inputs(&self) -> Vec<InputSpec> {
        vec![
            InputSpec::artifact("query", "the transfer target images"),
            InputSpec::artifact("reference", "the pre-training images"),
        ]
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![
            OutputSpec::new(
                "matches",
                "matches.parquet",
                "query_id, query_label, reference_id, ncc",
            ),
            OutputSpec::new(
                "removal",
                "removal.parquet",
                "image_id of reference images to leave out of training",
            ),
        ]
    }

    fn resources(&self, params: &stage_api::Params) -> stage_api::Resources {
        stage_api::device::device_resources(params)
    }

    fn run(&self, ctx: &StageContext) -> Result<RunSummary> {
        let size = ctx.params.usize("size");
        let threshold = ctx.params.float("threshold") as f32;
        let block = ctx.params.usize("block");
        let device = Device::of(&ctx.params)?;
        let query_block = query_block(
            ctx.input("query"),
            ctx.input("reference"),
            size,
            block,
            (ctx.params.int("memory_limit_mb") as u64).saturating_mul(1_000_000),
        )?;
        // The queries a block at a time, as many as the budget leaves beside a reference
        // block; every block meets every reference (streamed again for each).
        let found = if device == Device::Cpu {
            // Whether bf16 screens faster is timed once, on the first block.
            let mut use_bf16: Option<bool> = None;
            search_in_blocks(ctx.input("query"), size, query_block, |queries| {
                find_overlaps(
                    queries,
                    ctx.input("reference"),
                    size,
                    threshold,
                    block,
                    &mut use_bf16,
                )
            })?
        } else {
            let task = GpuDedup {
                query: ctx.input("query"),
                references: ctx.input("reference"),
                size,
                threshold,
                block,
                query_block,
            };
            cuda_backend::run_on(device, task).map_err(|e| Error::Config(e.to_string()))??
        };
        let Blocked {
            matches,
            n_references,
            n_queries,
            passes,
            search_seconds: seconds,
        } = found;
        if n_queries == 0 {
            return Err(Error::input(ctx.input("query"), "no query images"));
        }
        let match_rows: Vec<DedupMatchRow> = matches
            .iter()
            .map(|m| DedupMatchRow {
                query_id: m.query_id,
                query_label: m.query_label as i64,
                reference_id: m.reference_id,
                ncc: m.ncc as f64,
            })
            .collect();
        DedupMatchRow::write(&match_rows, ctx.output("matches"), &ctx.provenance)?;
        let mut removal: BTreeMap<i64, f32> = BTreeMap::new();
        for m in &matches {
            let best = removal.entry(m.reference_id).or_insert(m.ncc);
            *best = best.max(m.ncc);
        }
        let removal_rows: Vec<RemovalRow> = removal
            .iter()
            .map(|(&image_id, &best)| RemovalRow {
                image_id,
                best_ncc: best as f64,
            })
            .collect();
        RemovalRow::write(&removal_rows, ctx.output("removal"), &ctx.provenance)?;
        let mut per_class: BTreeMap<i32, std::collections::BTreeSet<i64>> = BTreeMap::new();
        for m in &matches {
            per_class
                .entry(m.query_label)
                .or_default()
                .insert(m.query_id);
        }
        let overlapping: usize = per_class.values().map(|s| s.len()).sum();
        let max_per_class = per_class.values().map(|s| s.len()).max().unwrap_or(0);
        let gflops = 2.0 * n_queries as f64 * n_references as f64 * (size * size) as f64
            / seconds.max(1e-9)
            / 1e9;
        Ok(RunSummary::default()
            .line(format!(
                "{overlapping} of {n_queries} target images overlap the {n_references} training images (ncc >= {threshold}; at most {max_per_class} per class); {} training images to remove",
                removal.len()
            ))
            .line(if passes == 1 {
                "the queries in one block".to_owned()
            } else {
                format!(
                    "the queries in {passes} blocks of up to {query_block} (memory_limit_mb), \
                     the references read once for each"
                )
            })
            .line(format!("correlations at {gflops:.1} GFLOP/s")))
    }
}

/// Queries per block: as many as `limit` bytes hold beside one reference block (its images
/// as read and decoded, their vectors and the screen's packed copy) and a chunk of query
/// images being read, at ~3 size^2 f32 a query (with the screen's copy). The image sizes are read from each artifact's first image. A budget that cannot hold a reference block and one query is
/// refused, with the parts.
fn query_block(
    query: &Path,
    references: &Path,
    size: usize,
    block: usize,
    limit: u64,
) -> Result<usize> {
    let first_image_bytes = |path: &Path| -> Result<u64> {
        let first = ImagesReader::open(path, 1)?
            .next()
            .transpose()?
            .and_then(|images| images.into_iter().next());
        Ok(first.map_or(0, |image| image.pixels.len() as u64))
    };
    let (image_bytes, query_image_bytes) =
        (first_image_bytes(references)?, first_image_bytes(query)?);
    let (block64, dim) = (block as u64, (size * size) as u64);
    // Its vectors as read, in the query matrix, and the screen's copy: f32 panels (or bf16,
    // half that).
    let per_query = 3 * dim * 4;
    let need = stage_api::memory::MemoryNeed::default()
        .part(
            format!("a reference block of {block} images, read and decoded"),
            2 * block64 * image_bytes,
        )
        .part(
            "their vectors and the screen's packed copy (f32, or bf16)",
            block64 * 3 * dim * 4,
        )
        .part(
            format!("a chunk of up to {QUERY_CHUNK} query images, read and decoded"),
            2 * QUERY_CHUNK as u64 * query_image_bytes,
        )
        .part("one query's vectors", per_query);
    need.check(limit, "lower block (reference images per block) or size")?;
    let left = limit - (need.total() - per_query);
    Ok(usize::try_from(left / per_query)
        .unwrap_or(usize::MAX)
        .max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use artifacts::Provenance;
    use artifacts::images::ImagesWriter;

    fn image(id: i64, seed: u64) -> ImageRecord {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let pixels = (0..32 * 32)
            .flat_map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let v = (state % 256) as u8;
                [v, v, v]
            })
            .collect();
        ImageRecord {
            image_id: id,
            label: 0,
            class_name: "c".into(),
            source: String::new(),
            height: 32,
            width: 32,
            channels: 3,
            pixels,
        }
    }

    /// Smooth random image (so that a 1-pixel shift keeps it recognisable, as in real photos).
    fn smooth(id: i64, seed: u64) -> ImageRecord {
        let noise = image(0, seed);
        let mut out = noise.clone();
        out.image_id = id;
        for y in 0..32 {
            for x in 0..32 {
                // A 9x9 box blur (wrapping at the edges) of the noise.
                let mut total = 0u32;
                for dy in 0..9 {
                    for dx in 0..9 {
                        total += noise.pixels[((y + dy) % 32 * 32 + (x + dx) % 32) * 3] as u32;
                    }
                }
                let v = (total / 81) as u8;
                out.pixels[(y * 32 + x) * 3..(y * 32 + x) * 3 + 3].copy_from_slice(&[v, v, v]);
            }
        }
        out
    }

    fn write(dir: &Path, name: &str, images: &[ImageRecord]) -> std::path::PathBuf {
        let path = dir.join(name);
        let mut writer = ImagesWriter::create(&path, &Provenance::ad_hoc("t")).unwrap();
        for image in images {
            writer.push(image.clone()).unwrap();
        }
        writer.finish().unwrap();
        path
    }

    #[test]
    fn blockwise_gemm_correlations_equal_brute_force() {
        let dir = tempfile::tempdir().unwrap();
        let references: Vec<ImageRecord> = (0..37).map(|i| image(i, i as u64 + 100)).collect();
        let path = write(dir.path(), "refs", &references);
        let queries: Vec<(i64, i32, Vec<f32>)> = (0..5)
            .map(|i| {
                (
                    i,
                    0,
                    ncc_vector(&image(i, i as u64 + 100 + 7 * (i as u64 % 2)), 8),
                )
            })
            .collect();
        let (matches, n) = find_overlaps(&queries, &path, 8, -1.0, 10, &mut None).unwrap();
        assert_eq!(n, 37);
        assert_eq!(matches.len(), 5 * 37, "threshold -1 keeps every pair");
        for m in &matches {
            let q = &queries.iter().find(|q| q.0 == m.query_id).unwrap().2;
            let r = ncc_vector(&references[m.reference_id as usize], 8);
            let brute: f32 = q.iter().zip(&r).map(|(a, b)| a * b).sum();
            assert!((brute - m.ncc).abs() < 1e-5, "{brute} vs {}", m.ncc);
        }
    }

    #[test]
    fn planted_duplicates_are_found_despite_brightness_contrast_and_a_one_pixel_shift() {
        let dir = tempfile::tempdir().unwrap();
        let references: Vec<ImageRecord> = (0..50).map(|i| smooth(i, i as u64 + 1)).collect();
        let path = write(dir.path(), "refs", &references);
        // Query 1000: reference 7, brighter and lower contrast, shifted right by one pixel.
        let mut copy = references[7].clone();
        copy.image_id = 1000;
        for y in 0..32 {
            for x in (1..32).rev() {
                for c in 0..3 {
                    let v = references[7].pixels[(y * 32 + x - 1) * 3 + c] as f32;
                    copy.pixels[(y * 32 + x) * 3 + c] = (40.0 + 0.7 * v).min(255.0) as u8;
                }
            }
        }
        let distinct = smooth(2000, 999);
        let queries: Vec<(i64, i32, Vec<f32>)> = [copy, distinct]
            .iter()
            .map(|q| (q.image_id, 0, ncc_vector(q, 16)))
            .collect();
        let (all, _) = find_overlaps(&queries, &path, 16, -1.0, 16, &mut None).unwrap();
        let best = |q: i64| {
            all.iter()
                .filter(|m| m.query_id == q)
                .map(|m| m.ncc)
                .fold(f32::MIN, f32::max)
        };
        let (matches, _) = find_overlaps(&queries, &path, 16, 0.95, 16, &mut None).unwrap();
        assert!(
            best(2000) < 0.95,
            "a distinct image stays below the threshold: {}",
            best(2000)
        );
        assert_eq!(
            matches
                .iter()
                .map(|m| (m.query_id, m.reference_id))
                .collect::<Vec<_>>(),
            vec![(1000, 7)]
        );
    }

    /// The queries are searched in blocks as large as `memory_limit_mb` leaves beside a
    /// reference block: several blocks give exactly the one block's tables, and a budget
    /// that cannot hold a reference block and one query is refused before any query is read.
    #[test]
    fn queries_in_blocks_under_the_budget_give_the_tables_of_one_block() {
        use stage_api::ParamValue::{Float, Int};
        let dir = tempfile::tempdir().unwrap();
        let references: Vec<ImageRecord> = (0..50).map(|i| smooth(i, i as u64 + 1)).collect();
        let reference_path = write(dir.path(), "refs", &references);
        let queries: Vec<ImageRecord> = (0..30)
            .map(|i| {
                let mut copy = if i % 3 == 0 {
                    references[i as usize].clone()
                } else {
                    image(0, 500 + i as u64)
                };
                copy.image_id = 1000 + i;
                copy.label = (i % 4) as i32;
                copy
            })
            .collect();
        let query_path = write(dir.path(), "queries", &queries);
        let run = |budget_mb: i64| {
            let name = format!("b{budget_mb}");
            let params = stage_api::Params::defaults_with(
                &Dedup.params(),
                &[
                    ("size", Int(256)),
                    ("block", Int(16)),
                    ("threshold", Float(0.9)),
                    ("memory_limit_mb", Int(budget_mb)),
                ],
            );
            let ctx = StageContext::for_tests(
                params,
                BTreeMap::from([
                    ("query".into(), vec![query_path.clone()]),
                    ("reference".into(), vec![reference_path.clone()]),
                ]),
                BTreeMap::from([
                    (
                        "matches".into(),
                        dir.path().join(format!("{name}_matches.parquet")),
                    ),
                    (
                        "removal".into(),
                        dir.path().join(format!("{name}_removal.parquet")),
                    ),
                ]),
                dir.path().join("scratch"),
            );
            Dedup.run(&ctx).map(|summary| {
                let read = |what: &str| {
                    std::fs::read(dir.path().join(format!("{name}_{what}.parquet"))).unwrap()
                };
                (summary.lines, read("matches"), read("removal"))
            })
        };
        // At size 256 a query holds ~0.79 MB (with the screen's copy), a reference block of 16
        // ~12.6 MB and a chunk of 1,024 query images being read 6.3 MB: 22 MB leaves room for
        // three queries a block, so several passes.
        let (one_lines, one_matches, one_removal) = run(1_000).unwrap();
        assert!(
            one_lines.iter().any(|l| l == "the queries in one block"),
            "{one_lines:?}"
        );
        assert!(
            one_lines[0].starts_with("10 of 30 target images overlap"),
            "{one_lines:?}"
        );
        let (lines, matches, removal) = run(22).unwrap();
        assert!(
            lines.iter().any(|l| l.contains("blocks of up to")),
            "{lines:?}"
        );
        assert!(matches == one_matches && removal == one_removal);
        let error = run(5).unwrap_err().to_string();
        assert!(error.contains("a reference block of 16 images"), "{error}");
        assert!(error.contains("memory_limit_mb is 5"), "{error}");
    }
}
