//! The orchestrator's promises, checked through the real `zfnet` binary on small pipelines of
//! test stage kinds: a user must be able to trust the cache with days of GPU work.

use std::fs;

use tests::Project;

/// a -> b -> c, plus an independent d; `a` reads a data file.
const CHAIN: &str = r#"name: chain
stages:
  - name: a
    kind: test_step
    params: { text: alpha, log: LOG }
    inputs: { file: data/words.txt }
  - name: b
    kind: test_step
    params: { text: beta, log: LOG }
    inputs: { upstream: [a.table] }
  - name: c
    kind: test_step
    params: { text: gamma, log: LOG }
    inputs: { upstream: [b.table] }
  - name: d
    kind: test_step
    params: { text: delta, log: LOG }
"#;

fn chain() -> Project {
    let project = Project::new("");
    let log = project.path("log.txt");
    project.write(
        "pipeline.yaml",
        &CHAIN.replace("LOG", log.to_str().unwrap()),
    );
    project.write("data/words.txt", "hello");
    project
}

fn states(project: &Project) -> Vec<(String, String)> {
    project
        .status()
        .into_iter()
        .map(|(stage, state, _)| (stage, state))
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[test]
fn a_fresh_pipeline_is_missing_then_fresh_after_one_run() {
    let project = chain();
    assert_eq!(
        states(&project),
        pairs(&[
            ("a", "missing"),
            ("b", "missing"),
            ("c", "missing"),
            ("d", "missing")
        ])
    );
    let stdout = project.zfnet(&["run"]).ok().to_owned();
    assert_eq!(Project::executed(&stdout), ["a", "b", "c", "d"]);
    assert!(stdout.contains("4 ran, 0 fresh, 0 failed"), "{stdout}");
    assert!(states(&project).iter().all(|(_, state)| state == "fresh"));
}

#[test]
fn nothing_changed_means_zero_stages_run() {
    let project = chain();
    project.zfnet(&["run"]).ok();
    let stdout = project.zfnet(&["run"]).ok().to_owned();
    assert!(Project::executed(&stdout).is_empty(), "{stdout}");
    assert!(stdout.contains("0 ran, 4 fresh"), "{stdout}");
}

#[test]
fn changing_one_param_reruns_only_that_stage_and_its_downstream() {
    let project = chain();
    project.zfnet(&["run"]).ok();
    let edited = fs::read_to_string(project.path("pipeline.yaml"))
        .unwrap()
        .replace("text: beta", "text: BETA");
    project.write("pipeline.yaml", &edited);

    let status = project.status();
    assert_eq!(status[0].1, "fresh");
    assert_eq!(status[1].1, "stale");
    assert_eq!(status[1].2, r#"param `text` changed: "beta" -> "BETA""#);
    assert_eq!(
        status[2],
        ("c".into(), "stale".into(), "upstream `b` is stale".into())
    );
    assert_eq!(status[3].1, "fresh");

    let dry = project.zfnet(&["run", "--dry-run"]).ok().to_owned();
    assert!(dry.contains("fresh      a"), "{dry}");
    assert!(dry.contains("would run  b: param `text` changed"), "{dry}");
    assert!(dry.contains("would run  c: upstream `b` is stale"), "{dry}");
    assert!(dry.contains("fresh      d"), "{dry}");
    assert_eq!(states(&project)[1].1, "stale", "--dry-run changes nothing");

    let stdout = project.zfnet(&["run"]).ok().to_owned();
    assert_eq!(Project::executed(&stdout), ["b", "c"]);
}

#[test]
fn a_set_override_acts_like_an_edit_and_reverting_it_reuses_the_old_entry() {
    let project = chain();
    project.zfnet(&["run"]).ok();
    let stdout = project.zfnet(&["run", "--set", "d.rows=5"]).ok().to_owned();
    assert_eq!(Project::executed(&stdout), ["d"]);
    let stdout = project.zfnet(&["run"]).ok().to_owned();
    assert!(
        Project::executed(&stdout).is_empty(),
        "the original params' entry is still cached: {stdout}"
    );
}

#[test]
fn changing_an_input_file_reruns_its_consumers() {
    let project = chain();
    project.zfnet(&["run"]).ok();
    project.write("data/words.txt", "goodbye");
    let status = project.status();
    assert_eq!(status[0].1, "stale");
    assert!(
        status[0].2.contains("input `file` changed"),
        "{:?}",
        status[0]
    );
    let stdout = project.zfnet(&["run"]).ok().to_owned();
    assert_eq!(Project::executed(&stdout), ["a", "b", "c"]);
}

#[test]
fn an_upstream_rerun_with_identical_output_does_not_rerun_downstream() {
    let project = chain();
    project.zfnet(&["run"]).ok();
    let stdout = project.zfnet(&["run", "--force", "a"]).ok().to_owned();
    assert_eq!(
        Project::executed(&stdout),
        ["a"],
        "b's inputs hash the same, so b is reused: {stdout}"
    );
}

#[test]
fn a_run_of_one_stage_brings_only_its_upstream_up_to_date() {
    let project = chain();
    let stdout = project.zfnet(&["run", "b"]).ok().to_owned();
    assert_eq!(Project::executed(&stdout), ["a", "b"]);
    assert_eq!(
        states(&project),
        pairs(&[
            ("a", "fresh"),
            ("b", "fresh"),
            ("c", "missing"),
            ("d", "missing")
        ])
    );
}

#[test]
fn a_stage_killed_mid_write_leaves_no_cache_entry_and_the_next_run_completes() {
    let project = chain();
    project.zfnet(&["run", "a"]).ok();
    let killed = project.zfnet(&["run", "b", "--set", "b.abort_midway=true"]);
    assert_ne!(killed.code, Some(0), "the process was aborted");
    assert_eq!(killed.code, None, "killed by a signal: {killed:?}");
    let leftovers = fs::read_dir(project.path(".zfnet/cache/tmp"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 1, "the half-written run stays in tmp/ only");
    let status = project.status();
    assert_eq!(
        status[1].1, "missing",
        "nothing looks like a result: {status:?}"
    );

    let stdout = project.zfnet(&["run"]).ok().to_owned();
    assert_eq!(Project::executed(&stdout), ["b", "c", "d"]);
    let leftovers = fs::read_dir(project.path(".zfnet/cache/tmp"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0, "the next run cleans tmp/");
}

#[test]
fn a_flipped_byte_in_a_cached_artifact_is_detected_rerun_and_reported() {
    let project = chain();
    project.zfnet(&["run"]).ok();
    let show = project.zfnet(&["show", "b.table"]);
    let path = show
        .stderr
        .lines()
        .find_map(|line| line.strip_prefix("# b.table: "))
        .and_then(|rest| rest.split(" (").next())
        .expect("show prints the artifact path")
        .to_owned();
    let mut bytes = fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    fs::write(&path, bytes).unwrap();

    let status = project.status();
    assert_eq!(status[1].1, "stale");
    assert!(status[1].2.contains("corrupted"), "{:?}", status[1]);

    let run = project.zfnet(&["run"]);
    let stdout = run.ok().to_owned();
    assert!(
        run.stderr
            .contains("does not match its recorded content hash"),
        "a warning is printed: {}",
        run.stderr
    );
    assert_eq!(
        Project::executed(&stdout),
        ["b"],
        "b is rebuilt with identical content, so c is reused"
    );
    assert!(states(&project).iter().all(|(_, state)| state == "fresh"));
}

#[test]
fn a_deleted_cache_entry_is_rebuilt() {
    let project = chain();
    project.zfnet(&["run"]).ok();
    let key = &project.zfnet(&["status", "--json"]).stdout;
    let json: serde_json::Value = serde_json::from_str(key).unwrap();
    let key_d = json[3]["key"].as_str().unwrap();
    fs::remove_dir_all(project.path(&format!(".zfnet/cache/runs/{key_d}"))).unwrap();
    let status = project.status();
    assert_eq!(status[3].2, "its cache entry was removed");
    let stdout = project.zfnet(&["run"]).ok().to_owned();
    assert_eq!(Project::executed(&stdout), ["d"]);
}

const PARALLEL: &str = r#"name: parallel
stages:
  - name: left
    kind: test_step
    params: { log: LOG, sleep_ms: 800, gpu: GPU }
  - name: right
    kind: test_step
    params: { log: LOG, sleep_ms: 800, gpu: GPU, text: other }
"#;

/// (stage, start, end) in microseconds, from the test stages' log.
fn intervals(log: &str) -> Vec<(String, u128, u128)> {
    let mut starts = std::collections::BTreeMap::new();
    let mut result = Vec::new();
    for line in log.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let time: u128 = parts[2].parse().unwrap();
        match parts[0] {
            "start" => {
                starts.insert(parts[1].to_owned(), time);
            }
            _ => result.push((parts[1].to_owned(), starts[parts[1]], time)),
        }
    }
    result
}

fn overlap(intervals: &[(String, u128, u128)]) -> bool {
    let (a, b) = (&intervals[0], &intervals[1]);
    a.1 < b.2 && b.1 < a.2
}

#[test]
fn two_independent_stages_run_concurrently_with_two_jobs() {
    let project = Project::new("");
    let log = project.path("log.txt");
    let yaml = PARALLEL
        .replace("LOG", log.to_str().unwrap())
        .replace("GPU", "false");
    project.write("pipeline.yaml", &yaml);
    project.zfnet(&["run", "--jobs", "2"]).ok();
    let spans = intervals(&fs::read_to_string(&log).unwrap());
    assert_eq!(spans.len(), 2);
    assert!(overlap(&spans), "with --jobs 2 both run at once: {spans:?}");
}

#[test]
fn two_gpu_stages_never_overlap_even_with_two_jobs() {
    let project = Project::new("");
    let log = project.path("log.txt");
    let yaml = PARALLEL
        .replace("LOG", log.to_str().unwrap())
        .replace("GPU", "true");
    project.write("pipeline.yaml", &yaml);
    project.zfnet(&["run", "--jobs", "2"]).ok();
    let spans = intervals(&fs::read_to_string(&log).unwrap());
    assert_eq!(spans.len(), 2);
    assert!(!overlap(&spans), "the GPU token serialises them: {spans:?}");
}

#[test]
fn a_failed_stage_skips_its_downstream_exits_1_and_caches_nothing() {
    let project = chain();
    let run = project.zfnet(&["run", "--set", "b.fail=true"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stdout
            .contains("FAILED     b: bad configuration: asked to fail"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("skipped    c: upstream `b` failed"),
        "{}",
        run.stdout
    );
    assert_eq!(
        Project::executed(&run.stdout),
        ["a", "d"],
        "independent d still ran"
    );
    assert!(run.stderr.contains("1 stage(s) failed"), "{}", run.stderr);
}

#[test]
fn every_pipeline_error_is_reported_at_once_with_file_and_line_and_exit_2() {
    let project = Project::new(
        r#"name: broken
stages:
  - name: a
    kind: test_stepp
  - name: b
    kind: test_step
    params: { rows: many, colour: red }
    inputs: { upstream: [nope.table], file: missing/dataset }
  - name: b
    kind: test_step
  - name: c
    kind: test_step
    inputs: { upstream: [d.table] }
  - name: d
    kind: test_step
    inputs: { upstream: [c.table] }
  - name: e
    kind: test_step
    inputs: { upstream: [d.tabel] }
"#,
    );
    let outcome = project.zfnet(&["status"]);
    assert_eq!(outcome.code, Some(2));
    let expected = [
        "pipeline.yaml:4: stage `a` has unknown kind `test_stepp` (did you mean `test_step`?)",
        "pipeline.yaml:7: stage `b`: kind `test_step` has no param `colour`",
        "pipeline.yaml:7: stage `b`, param `rows`: expected an integer, found \"many\"",
        "pipeline.yaml:8: stage `b`, input `file`: path",
        "missing/dataset` does not exist",
        "pipeline.yaml:8: stage `b`, input `upstream`: `nope.table` names stage `nope`, which does not exist",
        "pipeline.yaml:9: duplicate stage name `b` (first defined at line 5)",
        "the stages form a cycle: ",
        "pipeline.yaml:19: stage `e`, input `upstream`: `d.tabel`: stage `d` (kind `test_step`) has no output `tabel` (did you mean `table`?); its outputs: table",
    ];
    for fragment in expected {
        assert!(
            outcome.stderr.contains(fragment),
            "missing `{fragment}` in:\n{}",
            outcome.stderr
        );
    }
    assert!(
        outcome.stderr.contains("c -> d -> c") || outcome.stderr.contains("d -> c -> d"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn yaml_shape_errors_name_the_line() {
    let project =
        Project::new("name: x\nstages:\n  - name: a\n    kind: test_step\n    bogus: 1\n");
    let outcome = project.zfnet(&["run"]);
    assert_eq!(outcome.code, Some(2));
    assert!(
        outcome
            .stderr
            .contains("pipeline.yaml:5: unknown field `bogus`"),
        "{}",
        outcome.stderr
    );
    let project = Project::new(
        "name: x\nstages:\n  - name: a\n    kind: test_step\n    params: {rows: 1, rows: 2}\n",
    );
    let outcome = project.zfnet(&["run"]);
    assert_eq!(outcome.code, Some(2));
    assert!(
        outcome
            .stderr
            .contains("pipeline.yaml:5: duplicate mapping key"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn bad_command_line_overrides_and_stage_names_exit_2() {
    let project = chain();
    let outcome = project.zfnet(&["run", "--set", "a.nope=1"]);
    assert_eq!(outcome.code, Some(2));
    assert!(
        outcome
            .stderr
            .contains("kind `test_step` has no param `nope`"),
        "{}",
        outcome.stderr
    );
    // A typo gets the nearest name.
    let outcome = project.zfnet(&["run", "--set", "a.txet=x"]);
    assert!(
        outcome
            .stderr
            .contains("has no param `txet` (did you mean `text`?)"),
        "{}",
        outcome.stderr
    );
    let outcome = project.zfnet(&["run", "--set", "a.rows=-4"]);
    assert_eq!(outcome.code, Some(2));
    assert!(
        outcome.stderr.contains("outside the allowed range"),
        "{}",
        outcome.stderr
    );
    let outcome = project.zfnet(&["run", "zzz"]);
    assert_eq!(outcome.code, Some(2));
    assert!(
        outcome.stderr.contains("no stage named `zzz`"),
        "{}",
        outcome.stderr
    );
    let outcome = project.zfnet(&["-f", "nope.yaml", "status"]);
    assert_eq!(outcome.code, Some(2));
    assert!(
        outcome
            .stderr
            .contains("nope.yaml: cannot read the pipeline file"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn a_matrix_sweeps_a_param_into_named_instances_that_a_list_input_gathers() {
    let project = Project::new(
        r#"name: sweep
stages:
  - name: base
    kind: test_step
  - name: sweep
    kind: test_step
    matrix: { rows: [1, 2, 3] }
    inputs: { upstream: [base.table] }
  - name: gather
    kind: test_step
    params: { rows: 0 }
    inputs: { upstream: [sweep.table] }
"#,
    );
    let stdout = project.zfnet(&["run"]).ok().to_owned();
    assert_eq!(
        Project::executed(&stdout),
        [
            "base",
            "sweep@rows=1",
            "sweep@rows=2",
            "sweep@rows=3",
            "gather"
        ]
    );
    let table = project.zfnet(&["show", "gather.table", "--format", "csv", "--limit", "100"]);
    // 3 base rows reach each instance, which adds 1, 2 and 3 of its own: 4 + 5 + 6.
    assert_eq!(table.ok().lines().count(), 1 + 15);
    let stdout = project
        .zfnet(&["run", "--set", "sweep.text=x", "--dry-run"])
        .ok()
        .to_owned();
    assert_eq!(stdout.matches("would run  sweep@").count(), 3, "{stdout}");
}

#[test]
fn dag_text_lists_stages_in_run_order_with_non_default_params_and_inputs() {
    let project = chain();
    let text = project.zfnet(&["dag"]).ok().to_owned();
    let log = project.path("log.txt");
    let expected = format!(
        "pipeline `chain`: 4 stages
a [test_step v1]
  log = \"{log}\"
  text = \"alpha\"
  file <- {dir}/data/words.txt
b [test_step v1]
  log = \"{log}\"
  text = \"beta\"
  upstream <- a.table
c [test_step v1]
  log = \"{log}\"
  text = \"gamma\"
  upstream <- b.table
d [test_step v1]
  log = \"{log}\"
  text = \"delta\"
",
        log = log.display(),
        dir = project.dir.path().display()
    );
    assert_eq!(text, expected);
    let mermaid = project
        .zfnet(&["dag", "--format", "mermaid"])
        .ok()
        .to_owned();
    assert!(mermaid.contains("a -->|table→upstream| b"), "{mermaid}");
    let dot = project.zfnet(&["dag", "--format", "dot"]).ok().to_owned();
    assert!(dot.contains("\"b\" -> \"c\""), "{dot}");
}

#[test]
fn show_prints_an_artifact_as_table_csv_or_json_with_its_path() {
    let project = chain();
    project.zfnet(&["run"]).ok();
    let table = project.zfnet(&["show", "b.table"]);
    assert!(table.ok().starts_with("row  text"), "{}", table.stdout);
    assert!(
        table.stderr.contains(".zfnet/cache/runs/"),
        "{}",
        table.stderr
    );
    let json = project.zfnet(&["show", "b.table", "--format", "json", "--limit", "2"]);
    assert_eq!(
        json.ok(),
        "{\"row\":0,\"text\":\"hello\"}\n{\"row\":1,\"text\":\"alpha\"}\n"
    );
    let stale = project.zfnet(&["show", "c.table", "--set", "c.rows=9"]);
    assert_eq!(stale.code, Some(2));
    assert!(
        stale.stderr.contains("run `zfnet run c` first"),
        "{}",
        stale.stderr
    );
}

#[test]
fn gc_removes_only_entries_nothing_refers_to() {
    let project = chain();
    project.zfnet(&["run"]).ok();
    project.zfnet(&["run", "--set", "d.rows=7"]).ok();
    // d's last run is rows=7; the rows=3 entry of the file's params is still "current".
    let gc = project.zfnet(&["gc"]);
    assert!(gc.ok().contains("removed 0 cache entries"), "{}", gc.stdout);
    let edited = fs::read_to_string(project.path("pipeline.yaml"))
        .unwrap()
        .replace("text: delta", "text: DELTA");
    project.write("pipeline.yaml", &edited);
    project.zfnet(&["run"]).ok();
    let gc = project.zfnet(&["gc", "--dry-run"]);
    assert!(
        gc.ok().contains("would remove 2 cache entries"),
        "{}",
        gc.stdout
    );
    let gc = project.zfnet(&["gc"]);
    assert!(gc.ok().contains("removed 2 cache entries"), "{}", gc.stdout);
    assert!(states(&project).iter().all(|(_, state)| state == "fresh"));
}

#[test]
fn pyarrow_reads_our_artifacts() {
    let project = chain();
    project.zfnet(&["run"]).ok();
    let show = project.zfnet(&["show", "c.table"]);
    let path = show
        .stderr
        .lines()
        .find_map(|line| line.strip_prefix("# c.table: "))
        .and_then(|rest| rest.split(" (").next())
        .unwrap()
        .to_owned();
    let script = format!(
        "import json, pyarrow.parquet as pq\n\
         t = pq.read_table({path:?})\n\
         meta = t.schema.metadata\n\
         prov = json.loads(meta[b'zfnet.provenance'])\n\
         print(t.num_rows, t.column('text').to_pylist()[-1], meta[b'zfnet.schema'].decode(), prov['stage'])\n"
    );
    let output = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "pyarrow must be installed (`make test` installs it): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "10 gamma test_table c\n"
    );
}

#[test]
fn a_stage_run_alone_reports_its_peak_memory_and_records_it_in_its_manifest() {
    let project = Project::new(
        "name: memory\nstages:\n  - name: big\n    kind: test_step\n    params: { allocate_mb: 300 }\n  - name: small\n    kind: test_step\n    params: { text: small }\n",
    );
    let alone = project.zfnet(&["run", "--jobs", "1"]);
    let stdout = alone.ok();
    let peak_gb = |stage: &str| -> f64 {
        let line = stdout
            .lines()
            .find(|line| line.starts_with(&format!("done       {stage} in")))
            .unwrap_or_else(|| panic!("no done line for {stage}:\n{stdout}"));
        let (_, after) = line
            .split_once("peak RSS ")
            .unwrap_or_else(|| panic!("no peak RSS in `{line}`"));
        after.split(" GB").next().unwrap().parse().unwrap()
    };
    // 300 MiB touched: the peak is at least that (plus the process's own), and the small
    // stage's peak, measured from its own start, is well below it.
    assert!(peak_gb("big") >= 0.314, "{stdout}");
    assert!(peak_gb("small") < peak_gb("big") - 0.25, "{stdout}");
    let growth_gb = |stage: &str| -> f64 {
        let line = stdout
            .lines()
            .find(|line| line.starts_with(&format!("done       {stage} in")))
            .unwrap();
        let (_, after) = line.split_once("(+").unwrap();
        after.split(" GB").next().unwrap().parse().unwrap()
    };
    assert!(growth_gb("big") >= 0.30, "{stdout}");
    assert!(growth_gb("small") < 0.05, "{stdout}");
    let manifests: Vec<String> = fs::read_dir(project.path(".zfnet/cache/runs"))
        .unwrap()
        .map(|entry| fs::read_to_string(entry.unwrap().path().join("manifest.json")).unwrap())
        .collect();
    assert!(
        manifests.iter().all(|m| m.contains("\"peak_rss_bytes\"")),
        "{manifests:?}"
    );

    // Beside another stage the process's peak is not one stage's: nothing is claimed.
    let together = project.zfnet(&["run", "--force", "--jobs", "2"]);
    assert!(!together.ok().contains("peak RSS"), "{}", together.stdout);
}
