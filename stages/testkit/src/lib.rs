//! Small stage kinds for the orchestrator's end-to-end tests; never in a real pipeline.
//!
//! The `zfnet` binary registers them only when `ZFNET_ENABLE_TEST_STAGES=1`, so the tests can
//! drive the real binary (and kill it mid-write) without the default pipeline seeing them.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use artifacts::parquet_io::{SchemaId, read_all, write_table};
use stage_api::{
    Error, InputKind, InputSpec, OutputSpec, ParamSpec, Params, Resources, Result, RunSummary,
    StageContext, StageKind,
};

/// Every test kind, for the registry.
pub fn kinds() -> Vec<Arc<dyn StageKind>> {
    vec![Arc::new(TestStep)]
}

const TEST_TABLE: SchemaId = SchemaId {
    name: "test_table",
    version: 1,
};

/// Writes a small table derived from its params and inputs. Logs its start and end (with
/// timestamps) to the file named by `log`, so tests can see what ran and what overlapped.
pub struct TestStep;

impl StageKind for TestStep {
    fn name(&self) -> &'static str {
        "test_step"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "Test-only: writes a small table from its params and inputs."
    }

    fn peak_memory(&self) -> &'static str {
        "Touches allocate_mb MiB (allocate_mb x 2^20 bytes, held through sleep_ms, freed before writing), then holds its upstream tables and `rows` copies of `text`, twice while writing. Test-only."
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::string("text", "hello", "Text written into every row."),
            ParamSpec::int("rows", 3, 0, 1_000_000, "Rows of its own to write."),
            ParamSpec::string("log", "", "File to append `start`/`end` lines to."),
            ParamSpec::int("sleep_ms", 0, 0, 600_000, "Time to sleep while running."),
            ParamSpec::bool("gpu", false, "Ask for the GPU token."),
            ParamSpec::bool(
                "abort_midway",
                false,
                "Write half the output, then kill the process.",
            ),
            ParamSpec::bool("fail", false, "Return an error instead of an output."),
            ParamSpec::int(
                "allocate_mb",
                0,
                0,
                1 << 30,
                "Memory to allocate and touch while running (out-of-memory tests).",
            ),
        ]
    }

    fn inputs(&self) -> Vec<InputSpec> {
        vec![
            InputSpec::artifact_list("upstream", "tables whose rows are copied"),
            InputSpec {
                name: "file",
                kind: InputKind::Path,
                required: false,
                doc: "a file whose text becomes one row",
            },
        ]
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![OutputSpec::new("table", "table.parquet", "the rows")]
    }

    fn resources(&self, params: &Params) -> Resources {
        Resources {
            gpu: params.bool("gpu"),
        }
    }

    fn validate(&self, params: &Params) -> Vec<String> {
        if params.bool("abort_midway") && params.bool("fail") {
            vec!["`abort_midway` and `fail` cannot both be true".to_owned()]
        } else {
            Vec::new()
        }
    }

    fn run(&self, ctx: &StageContext) -> Result<RunSummary> {
        let params = &ctx.params;
        log_line(params.str("log"), &format!("start {}", ctx.stage_name))?;
        // Allocated and touched first, held through the sleep (so that a sampler of the
        // process's memory, as Slurm's jobacct_gather, sees it), then freed.
        let allocate_bytes = (params.int("allocate_mb") as usize).saturating_mul(1 << 20);
        let touched = vec![1u8; allocate_bytes];
        std::hint::black_box(&touched);
        std::thread::sleep(Duration::from_millis(params.int("sleep_ms") as u64));
        drop(touched);
        if params.bool("fail") {
            return Err(Error::Config("asked to fail".to_owned()));
        }
        let mut texts: Vec<String> = Vec::new();
        for path in ctx.input_list("upstream") {
            for batch in read_all(path)? {
                let column = batch
                    .column(1)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| Error::input(path, "not a test table"))?;
                texts.extend(column.iter().map(|v| v.unwrap_or_default().to_owned()));
            }
        }
        if let Some(file) = ctx.optional_input("file") {
            let text = fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
            texts.push(text.trim().to_owned());
        }
        for _ in 0..params.int("rows") {
            texts.push(params.str("text").to_owned());
        }
        let output = ctx.output("table");
        if params.bool("abort_midway") {
            let mut file = fs::File::create(output).map_err(|e| Error::io(output, e))?;
            file.write_all(b"PAR1 half of a parquet file")
                .map_err(|e| Error::io(output, e))?;
            file.sync_all().map_err(|e| Error::io(output, e))?;
            std::process::abort();
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("row", DataType::Int64, false),
            Field::new("text", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from_iter_values(0..texts.len() as i64)),
                Arc::new(StringArray::from(texts.clone())),
            ],
        )
        .map_err(artifacts::Error::from)?;
        write_table(output, schema, TEST_TABLE, &ctx.provenance, &[batch])?;
        log_line(params.str("log"), &format!("end {}", ctx.stage_name))?;
        Ok(RunSummary::default().line(format!("wrote {} rows", texts.len())))
    }
}

fn log_line(log: &str, what: &str) -> Result<()> {
    if log.is_empty() {
        return Ok(());
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::io(Path::new(log), e))?;
    // One write of the whole line: with O_APPEND a single small write is atomic, so lines of
    // stages running at the same time never interleave (`writeln!` may write in pieces).
    file.write_all(format!("{what} {now}\n").as_bytes())
        .map_err(|e| Error::io(Path::new(log), e))
}
