//! `zfnet run --executor slurm` against a real Slurm: the one-node cluster that
//! `scripts/slurm-local.sh start` brings up (`make test` and `.ci/run` start it and set
//! `SLURM_CONF`). Without a cluster these tests say so and pass as skipped — unless
//! `ZFNET_REQUIRE_SLURM=1` (set by `make test`), where a missing cluster fails them.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tests::Project;
use tests::smoke::{PIPELINE as SMOKE, without_timings, write_smoke_inputs};

/// Whether a Slurm cluster takes jobs here.
fn slurm_is_up() -> bool {
    let up = Command::new("sinfo")
        .args(["-h", "-o", "%T"])
        .output()
        .is_ok_and(|output| {
            output.status.success()
                && String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .any(|state| matches!(state.trim(), "idle" | "mixed" | "allocated"))
        });
    if !up {
        assert!(
            std::env::var("ZFNET_REQUIRE_SLURM").as_deref() != Ok("1"),
            "ZFNET_REQUIRE_SLURM=1 but no Slurm node is up (SLURM_CONF={:?}); \
             scripts/slurm-local.sh start brings one up",
            std::env::var("SLURM_CONF")
        );
        eprintln!(
            "SKIPPED: no Slurm cluster answers here (SLURM_CONF={:?}); run \
             `scripts/slurm-local.sh start` and `eval $(scripts/slurm-local.sh env)` first",
            std::env::var("SLURM_CONF")
        );
    }
    up
}

/// Quick polling and small jobs, so that the one-node test cluster runs two at once.
const EXECUTOR: &str = r#"
executor:
  slurm:
    poll_seconds: 0.25
    defaults: { cpus: 1, memory_mb: 2048 }
"#;

/// (stage -> key) and (key -> output name -> content hash) of a cache, from `status --json`
/// and the manifests.
fn keys_and_hashes(
    project: &Project,
    cache: &str,
) -> (
    BTreeMap<String, String>,
    BTreeMap<String, BTreeMap<String, String>>,
) {
    let status = project.zfnet(&["status", "--json", "--cache-dir", cache]);
    let statuses: serde_json::Value = serde_json::from_str(status.ok()).unwrap();
    let mut keys = BTreeMap::new();
    let mut hashes = BTreeMap::new();
    for entry in statuses.as_array().unwrap() {
        assert_eq!(entry["state"], "fresh", "{entry}");
        let stage = entry["stage"].as_str().unwrap().to_owned();
        let key = entry["key"].as_str().unwrap().to_owned();
        let manifest = manifest(&project.path(cache), &key);
        let outputs = manifest["outputs"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, record)| (name.clone(), record["hash"].to_string()))
            .collect();
        hashes.insert(key.clone(), outputs);
        keys.insert(stage, key);
    }
    (keys, hashes)
}

/// The report with its provenance table's last column ("ran on") removed.
fn without_ran_on(readme: &str) -> String {
    let mut in_runs = false;
    let mut out = String::new();
    for line in readme.lines() {
        in_runs = line.starts_with("| stage | kind | seconds | cache key | ran on |")
            || (in_runs && line.starts_with('|'));
        if in_runs {
            let cells = line.trim_end_matches('|');
            let (kept, _) = cells.rsplit_once('|').unwrap();
            out.push_str(kept);
            out.push_str("|\n");
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// An artifact's rows as CSV, without its `seconds` column; `slurm_missing()` when it has none
/// (then the hash difference is not explained by timings).
fn without_seconds(project: &Project, cache: &str, artifact: &str) -> Vec<String> {
    let csv = project.zfnet(&[
        "show",
        artifact,
        "--format",
        "csv",
        "--limit",
        "100000",
        "--cache-dir",
        cache,
    ]);
    let mut lines = csv.ok().lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let Some(seconds) = header.iter().position(|name| *name == "seconds") else {
        return slurm_missing();
    };
    let kept = |cells: &mut dyn Iterator<Item = &str>| {
        cells
            .enumerate()
            .filter(|(i, _)| *i != seconds)
            .map(|(_, cell)| cell.to_owned())
            .collect::<Vec<_>>()
            .join(",")
    };
    std::iter::once(kept(&mut header.iter().copied()))
        .chain(lines.map(|line| kept(&mut line.split(','))))
        .collect()
}

fn slurm_missing() -> Vec<String> {
    vec!["(no seconds column)".to_owned()]
}

fn manifest(cache: &Path, key: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(cache.join("runs").join(key).join("manifest.json"))
        .unwrap_or_else(|e| panic!("manifest of {key} in {}: {e}", cache.display()));
    serde_json::from_str(&text).unwrap()
}

/// The same graph, run by Slurm jobs, reaches the same cache keys and the same output bytes as
/// a local run: what a job computes does not depend on where it ran. (Every output of the
/// smoke pipeline is compared except the ones that record wall-clock time, named here.)
#[test]
fn the_smoke_pipeline_through_slurm_gives_the_keys_and_outputs_of_a_local_run() {
    if !slurm_is_up() {
        return;
    }
    let project = Project::new(&format!("{SMOKE}{EXECUTOR}"));
    write_smoke_inputs(&project);
    let local = project.zfnet(&["run", "--jobs", "2", "--cache-dir", "local-cache"]);
    assert!(
        local.ok().contains("26 ran, 0 fresh, 0 failed"),
        "{}",
        local.stdout
    );
    let slurm = project.zfnet(&[
        "run",
        "--executor",
        "slurm",
        "--jobs",
        "2",
        "--cache-dir",
        "slurm-cache",
    ]);
    let stdout = slurm.ok();
    assert!(stdout.contains("26 ran, 0 fresh, 0 failed"), "{stdout}");
    assert_eq!(stdout.matches("as Slurm job ").count(), 26, "{stdout}");
    assert!(
        stdout.contains("submitted  train as Slurm job ") && stdout.contains("(1 CPU, 2048 MB)"),
        "{stdout}"
    );

    let (local_keys, local_hashes) = keys_and_hashes(&project, "local-cache");
    let (slurm_keys, slurm_hashes) = keys_and_hashes(&project, "slurm-cache");
    // Outputs that record wall-clock seconds (a `seconds` column; the report's timing
    // cells) differ between any two runs; they are compared without them.
    let mut compared = 0;
    for (stage, key) in &local_keys {
        for (output, hash) in &local_hashes[key] {
            compared += 1;
            let artifact = format!("{stage}.{output}");
            let same_key = slurm_keys.get(stage) == Some(key);
            if same_key && slurm_hashes[key].get(output) == Some(hash) {
                continue;
            }
            if artifact == "report.report" {
                let read = |cache: &str| {
                    let out = format!("exported-{cache}");
                    project
                        .zfnet(&["export", "report.report", &out, "--cache-dir", cache])
                        .ok();
                    without_timings(
                        &fs::read_to_string(project.path(&out).join("README.md")).unwrap(),
                    )
                };
                let slurm_report = read("slurm-cache");
                assert!(
                    slurm_report.contains("| stage | kind | seconds | cache key | ran on |")
                        && slurm_report.contains("| Slurm job "),
                    "the provenance names each run's job and node:\n{slurm_report}"
                );
                assert_eq!(
                    read("local-cache"),
                    without_ran_on(&slurm_report),
                    "the report, timings and jobs aside"
                );
            } else {
                assert!(
                    same_key,
                    "`{stage}` has another cache key in the Slurm run: {:?} vs {key}",
                    slurm_keys.get(stage)
                );
                let local = without_seconds(&project, "local-cache", &artifact);
                let slurm = without_seconds(&project, "slurm-cache", &artifact);
                assert_ne!(local, slurm_missing(), "`{artifact}` records no seconds");
                assert_eq!(local, slurm, "`{artifact}` differs, seconds aside");
            }
        }
    }
    assert!(compared >= 40, "{compared} outputs compared");

    // Each entry names its job and node; a second run submits nothing.
    let train = manifest(&project.path("slurm-cache"), &slurm_keys["train"]);
    assert!(
        train["slurm_job"]["id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{train}"
    );
    assert!(train["peak_rss_bytes"].as_u64().is_some(), "{train}");
    let again = project.zfnet(&["run", "--executor", "slurm", "--cache-dir", "slurm-cache"]);
    assert!(again.ok().contains("0 ran, 26 fresh"), "{}", again.stdout);
    assert!(!again.stdout.contains("Slurm job"), "{}", again.stdout);
}

const STEPS: &str = r#"name: steps
executor:
  slurm:
    poll_seconds: 0.25
    defaults: { cpus: 1, memory_mb: 512 }
    stages:
      slow: { time: "1" }
stages:
  - name: first
    kind: test_step
  - name: broken
    kind: test_step
    inputs: { upstream: [first.table] }
    params: { fail: false }
  - name: after_broken
    kind: test_step
    inputs: { upstream: [broken.table] }
  - name: slow
    kind: test_step
    inputs: { upstream: [first.table] }
    params: { sleep_ms: 1000 }
"#;

fn job_state(id: &str) -> String {
    let output = Command::new("scontrol")
        .args(["show", "job", "-o", id])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.split_whitespace()
        .find_map(|pair| pair.strip_prefix("JobState="))
        .unwrap_or("?")
        .to_owned()
}

fn entries(project: &Project) -> usize {
    std::fs::read_dir(project.path(".zfnet/cache/runs"))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

/// A stage that fails on its node fails its stage with the end of the job's stderr, skips
/// its downstream, leaves no entry, and a rerun resubmits only what is missing.
#[test]
fn a_failing_job_fails_its_stage_with_its_stderr_and_a_rerun_resubmits_only_it() {
    if !slurm_is_up() {
        return;
    }
    let project = Project::new(STEPS);
    let run = project.zfnet(&[
        "run",
        "--executor",
        "slurm",
        "--jobs",
        "2",
        "--set",
        "broken.fail=true",
        "after_broken",
    ]);
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    let failed = run
        .stdout
        .lines()
        .skip_while(|line| !line.starts_with("FAILED     broken"))
        .take(20)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(failed.contains("failed (exit code 1:0)"), "{}", run.stdout);
    assert!(
        failed.contains("asked to fail"),
        "the job's stderr: {failed}"
    );
    assert!(
        run.stdout
            .contains("skipped    after_broken: upstream `broken` failed"),
        "{}",
        run.stdout
    );
    assert_eq!(entries(&project), 1, "only `first` committed");

    let rerun = project.zfnet(&["run", "--executor", "slurm", "after_broken"]);
    let stdout = rerun.ok();
    assert!(stdout.contains("fresh      first"), "{stdout}");
    assert!(
        stdout.contains("submitted  broken as Slurm job"),
        "{stdout}"
    );
    assert!(stdout.contains("2 ran, 1 fresh, 0 failed"), "{stdout}");
}

/// A job over its time limit is ended by Slurm and reported as such (with the limit to raise),
/// not as a failure of zfnet; it leaves no cache entry.
#[test]
fn a_job_over_its_time_limit_is_reported_as_ended_by_slurm_and_leaves_no_entry() {
    if !slurm_is_up() {
        return;
    }
    let project = Project::new(STEPS);
    // One minute is Slurm's smallest limit; the stage would sleep for three.
    let started = Instant::now();
    let run = project.zfnet(&[
        "run",
        "--executor",
        "slurm",
        "--set",
        "slow.sleep_ms=180000",
        "slow",
    ]);
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(170),
        "ended by its limit, not by finishing"
    );
    assert!(
        run.stdout.contains(
            "was ended by Slurm: TIMEOUT, over its time limit of 1 (raise `time` in executor.slurm)"
        ),
        "{}",
        run.stdout
    );
    let slow_entries = std::fs::read_dir(project.path(".zfnet/cache/runs"))
        .unwrap()
        .filter(|entry| {
            let manifest = entry.as_ref().unwrap().path().join("manifest.json");
            std::fs::read_to_string(manifest).is_ok_and(|text| text.contains("\"stage\": \"slow\""))
        })
        .count();
    assert_eq!(slow_entries, 0, "no entry for the stage Slurm ended");
}

/// A job over its memory is ended by Slurm and reported as out of memory, with the field to
/// raise, leaving no entry. (The local cluster enforces memory by sampling, jobacct_gather's
/// OverMemoryKill, where Slurm marks the job FAILED and its step's stderr says why; with
/// cgroups the state is OUT_OF_MEMORY, which the unit tests cover.)
#[test]
fn a_job_over_its_memory_is_reported_as_out_of_memory_and_leaves_no_entry() {
    if !slurm_is_up() {
        return;
    }
    let project = Project::new(&STEPS.replace(
        r#"slow: { time: "1" }"#,
        r#"slow: { time: "1", memory_mb: 256 }"#,
    ));
    let run = project.zfnet(&[
        "run",
        "--executor",
        "slurm",
        "--set",
        "slow.allocate_mb=700",
        "--set",
        "slow.sleep_ms=20000",
        "slow",
    ]);
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(
            "was ended by Slurm: OUT_OF_MEMORY, over its 256 MB (raise `memory_mb` in \
             executor.slurm)"
        ),
        "{}",
        run.stdout
    );
    let status = project.zfnet(&["status", "slow"]);
    assert!(status.stdout.contains("missing"), "{}", status.stdout);
}

/// A job Slurm will never start (here: a time limit above the partition's week, so it pends
/// with `PartitionTimeLimit`) is cancelled and reported with what to change, not polled for
/// ever.
#[test]
fn a_job_that_can_never_start_is_cancelled_and_named_for_why() {
    if !slurm_is_up() {
        return;
    }
    let project =
        Project::new(&STEPS.replace(r#"slow: { time: "1" }"#, r#"slow: { time: "8-00:00:00" }"#));
    let started = Instant::now();
    let run = project.zfnet(&["run", "--executor", "slurm", "slow"]);
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "given up at once, not after {:?}",
        started.elapsed()
    );
    // Slurm 22.05 says PartitionConfig here, later versions PartitionTimeLimit.
    assert!(
        run.stdout.contains(": Slurm will never start it: ")
            && run.stdout.contains("(reason: Partition")
            && run.stdout.contains("zfnet cancelled it"),
        "{}",
        run.stdout
    );
    let id = run
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("FAILED     slow: Slurm job "))
        .and_then(|rest| rest.split(':').next())
        .expect("the job id in the message");
    let state = job_state(id);
    assert!(
        state.is_empty() || state == "CANCELLED",
        "job {id} left in state {state}"
    );
}

/// Ctrl-C on a Slurm run cancels the jobs it submitted (`scancel`): nothing keeps running on
/// the cluster, no entry is made; `zfnet status` showed the job while it ran.
#[test]
fn interrupting_a_slurm_run_cancels_its_jobs() {
    if !slurm_is_up() {
        return;
    }
    let project = Project::new(STEPS);
    let child = project.spawn(&[
        "run",
        "--executor",
        "slurm",
        "--set",
        "slow.sleep_ms=120000",
        "slow",
    ]);
    // Wait until `status` shows the job running.
    let deadline = Instant::now() + Duration::from_secs(90);
    let job_id = loop {
        assert!(Instant::now() < deadline, "the job never showed as running");
        let status = project.zfnet(&["status", "slow"]);
        if let Some(line) = status.stdout.lines().find(|l| l.starts_with("slow"))
            && line.contains(": RUNNING on ")
        {
            let id = line
                .split("Slurm job ")
                .nth(1)
                .and_then(|rest| rest.split(':').next())
                .unwrap()
                .to_owned();
            break id;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(job_state(&job_id), "RUNNING");
    // SIGINT, as Ctrl-C sends it.
    unsafe_kill(child.id(), 2);
    let outcome = Project::finish(child);
    assert_eq!(
        outcome.code,
        Some(130),
        "{}\n{}",
        outcome.stdout,
        outcome.stderr
    );
    assert!(
        outcome
            .stderr
            .contains(&format!("interrupted: cancelled Slurm job(s) {job_id}")),
        "{}",
        outcome.stderr
    );
    // The run's lock owner file went with it (another host would otherwise wait 90 s).
    assert!(
        !project.path(".zfnet/cache/lock.owner").exists(),
        "lock.owner left behind"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while job_state(&job_id) != "CANCELLED" {
        assert!(
            Instant::now() < deadline,
            "job {job_id}: {}",
            job_state(&job_id)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = project.zfnet(&["status", "slow"]);
    assert!(!status.stdout.contains("Slurm job"), "{}", status.stdout);
    assert!(
        status.stdout.contains("slow") && status.stdout.contains("missing"),
        "{}",
        status.stdout
    );
}

fn unsafe_kill(pid: u32, signal: i32) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// What each job asks Slurm for, as `run --dry-run --executor slurm` shows it: a stage's own
/// block beats the defaults; memory comes from the stage's own budget (`memory_limit_mb` plus
/// 2048 MB for what the budget leaves out) unless a block names one; a GPU stage gets a GPU.
/// (No cluster needed: nothing is submitted.)
#[test]
fn each_job_asks_for_the_resources_its_stage_states() {
    let project = Project::new(
        r#"name: requests
executor:
  slurm:
    defaults: { cpus: 4, memory_mb: 6000, time: "2:00:00", partition: main }
    stages:
      small: { cpus: 1, time: "10" }
      gpu_step: { gpus: 2, partition: gpu }
stages:
  - name: small
    kind: test_step
  - name: gpu_step
    kind: test_step
    params: { gpu: true }
  - name: files
    kind: fashion_mnist
    inputs: { dir: fashion }
    params: { split: train }
  - name: images
    kind: preprocess
    inputs: { images: files.images }
    params: { size: 32 }
  - name: train
    kind: train
    inputs: { train: images.images, val: images.images, mean: images.images }
    params: { arch: zf_small, memory_limit_mb: 3000 }
"#,
    );
    tests::write_fashion(&project.path("fashion"));
    let dry = project.zfnet(&["run", "--dry-run", "--executor", "slurm"]);
    let stdout = dry.ok();
    let line = |stage: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("would run  {stage}:")))
            .unwrap_or_else(|| panic!("no line for {stage}:\n{stdout}"))
            .to_owned()
    };
    assert!(
        line("small").ends_with("[as a Slurm job: 1 CPU, 6000 MB, time limit 10, partition main]"),
        "{stdout}"
    );
    assert!(
        line("gpu_step").ends_with(
            "[as a Slurm job: 4 CPUs, 6000 MB, 2 GPUs, time limit 2:00:00, partition gpu]"
        ),
        "{stdout}"
    );
    assert!(
        line("train")
            .ends_with("[as a Slurm job: 4 CPUs, 5048 MB, time limit 2:00:00, partition main]"),
        "{stdout}"
    );
    // Locally, nothing about jobs.
    let local = project.zfnet(&["run", "--dry-run"]);
    assert!(!local.ok().contains("Slurm"), "{}", local.stdout);
}

/// Mistakes in the `executor:` section are reported together, each at its line, before
/// anything runs.
#[test]
fn a_wrong_executor_section_is_reported_at_its_lines() {
    let project = Project::new(
        r#"name: wrong
executor:
  default: slurn
  slurm:
    defaults: { time: "1h", sbatch_args: ["--mem=4G", "--qos=long"] }
    stages:
      trian: { memory_mb: 10 }
stages:
  - name: train
    kind: test_step
"#,
    );
    let dag = project.zfnet(&["dag"]);
    assert_eq!(dag.code, Some(2), "{}", dag.stderr);
    for expected in [
        "pipeline.yaml:3: executor.default is `slurn`; it must be `local` or `slurm`",
        "pipeline.yaml:5: executor.slurm.defaults: time `1h` is not a Slurm time limit",
        "pipeline.yaml:5: executor.slurm.defaults: sbatch_args `--mem=4G` sets what zfnet sets itself",
        "pipeline.yaml:7: executor.slurm.stages names `trian`, which is no stage of this pipeline (did you mean `train`?)",
        "pipeline.yaml:7: executor.slurm.stages.trian: memory_mb is 10; give 64 to",
    ] {
        assert!(dag.stderr.contains(expected), "{expected}\n{}", dag.stderr);
    }
    assert!(!dag.stderr.contains("--qos=long"), "{}", dag.stderr);
}

/// A sharded preprocess (`shards: 3`: a Slurm array of three tasks over thirds of the
/// listing, then a merge job) writes exactly the bytes of one local run — images and
/// rejects — on a Caltech-256 miniature with odd files (gray and CMYK JPEGs, a truncated one).
#[test]
fn a_sharded_preprocess_through_a_slurm_array_writes_the_bytes_of_one_run() {
    if !slurm_is_up() {
        return;
    }
    let project = Project::new(
        r#"name: shards
executor:
  slurm:
    poll_seconds: 0.25
    defaults: { cpus: 1, memory_mb: 1024 }
    stages:
      images: { shards: 3 }
stages:
  - name: files
    kind: caltech256
    inputs: { root: data/caltech256 }
  - name: images
    kind: preprocess
    inputs: { images: files.files }
    params: { size: 48 }
"#,
    );
    let fashion = Path::new("/usr/share/datasets/fashion-mnist");
    assert!(
        fashion.join("train-images-idx3-ubyte.gz").is_file(),
        "Fashion-MNIST is not installed: run `make data` (make test does)"
    );
    miniatures::write_miniatures(fashion, &project.path("data"), &miniatures::Scale::CI).unwrap();

    let local = project.zfnet(&["run", "--cache-dir", "local-cache"]);
    local.ok();
    let slurm = project.zfnet(&["run", "--executor", "slurm", "--cache-dir", "slurm-cache"]);
    let stdout = slurm.ok();
    assert!(stdout.contains("(an array of 3 shards)"), "{stdout}");
    assert!(stdout.contains("(merging the shards of "), "{stdout}");
    assert!(stdout.contains("merged from 3 shards"), "{stdout}");

    let (local_keys, local_hashes) = keys_and_hashes(&project, "local-cache");
    let (slurm_keys, slurm_hashes) = keys_and_hashes(&project, "slurm-cache");
    assert_eq!(local_keys, slurm_keys);
    let key = &local_keys["images"];
    assert_eq!(
        local_hashes[key], slurm_hashes[key],
        "images and rejects, byte for byte"
    );
    let rejects = project.zfnet(&[
        "show",
        "images.rejects",
        "--format",
        "csv",
        "--cache-dir",
        "slurm-cache",
    ]);
    assert!(
        rejects.ok().lines().count() >= 2,
        "the miniature's truncated file is rejected: {}",
        rejects.stdout
    );
    // The shards' partial outputs are gone once merged.
    let leftovers: Vec<_> = fs::read_dir(project.path("slurm-cache/tmp"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `shards` only where the kind can be split, and never in the defaults.
#[test]
fn shards_are_refused_for_a_kind_that_cannot_be_split() {
    let project = Project::new(
        r#"name: unsplittable
executor:
  slurm:
    defaults: { shards: 2 }
    stages:
      step: { shards: 4 }
stages:
  - name: step
    kind: test_step
"#,
    );
    let dag = project.zfnet(&["dag"]);
    assert_eq!(dag.code, Some(2), "{}", dag.stderr);
    assert!(
        dag.stderr.contains(
            "pipeline.yaml:4: executor.slurm.defaults: `shards` belongs in a stage's block"
        ),
        "{}",
        dag.stderr
    );
    assert!(
        dag.stderr.contains(
            "pipeline.yaml:6: executor.slurm.stages.step: stage kind `test_step` cannot be split into shards"
        ),
        "{}",
        dag.stderr
    );
}
