//! Nothing lost, nothing escapes: no zfnet command destroys a file zfnet did not create, runs
//! that share a cache wait for each other, and every size read from a config or a cache file
//! is checked before it is used. Each test here failed before the fix it guards (issue #16).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use tests::{Outcome, Project};

fn outcome_of(command: &mut std::process::Command) -> Outcome {
    Outcome::from(command.output().expect("the command runs"))
}

/// One stage `a` (reads a data file) and a downstream `b`; `SLEEP` in `a` for the tests that
/// need a run in progress.
const PIPELINE: &str = r#"name: safety
stages:
  - name: a
    kind: test_step
    params: { text: alpha, log: LOG, sleep_ms: SLEEP }
    inputs: { file: data/words.txt }
  - name: b
    kind: test_step
    params: { text: beta, log: LOG }
    inputs: { upstream: [a.table] }
"#;

fn project_with_sleep(sleep_ms: u32) -> Project {
    let project = Project::new("");
    let log = project.path("log.txt");
    project.write(
        "pipeline.yaml",
        &PIPELINE
            .replace("LOG", log.to_str().unwrap())
            .replace("SLEEP", &sleep_ms.to_string()),
    );
    project.write("data/words.txt", "hello");
    project.write("notes.txt", "the user's own notes");
    project
}

fn project() -> Project {
    project_with_sleep(0)
}

fn assert_untouched(project: &Project) {
    assert_eq!(
        fs::read_to_string(project.path("notes.txt")).unwrap(),
        "the user's own notes"
    );
    assert!(project.path("pipeline.yaml").is_file());
    assert!(project.path("data/words.txt").is_file());
    assert!(project.path(".zfnet/cache/runs").is_dir());
}

/// The cache entry (key) that `stage`'s last run used.
fn state_key(project: &Project, stage: &str) -> String {
    let state = project.path(&format!(".zfnet/cache/state/safety/{stage}.json"));
    let json: serde_json::Value = serde_json::from_slice(&fs::read(state).unwrap()).unwrap();
    json["key"].as_str().unwrap().to_owned()
}

fn stderr_line_count(text: &str, needle: &str) -> usize {
    text.lines().filter(|line| line.contains(needle)).count()
}

// ---- export writes only what it creates ----

#[test]
fn exporting_to_the_project_folder_or_above_it_refuses_and_deletes_nothing() {
    let project = project();
    project.zfnet(&["run"]).ok();
    let root = project.dir.path().to_str().unwrap().to_owned();
    let cache = project.path(".zfnet/cache");
    let inside_cache = cache.join("runs/mine");
    for destination in [
        ".",
        "..",
        "/",
        "./",
        "data/..",
        root.as_str(),
        cache.to_str().unwrap(),
        inside_cache.to_str().unwrap(),
    ] {
        let outcome = project.zfnet(&["export", "--force", "b.table", destination]);
        assert_eq!(outcome.code, Some(2), "{destination}: {outcome:?}");
        assert!(
            outcome.stderr.contains("will not export to"),
            "{destination}: {}",
            outcome.stderr
        );
        assert_untouched(&project);
    }
    assert_eq!(
        project.status().iter().filter(|s| s.1 == "fresh").count(),
        2
    );
}

#[test]
fn an_existing_folder_is_replaced_only_with_force_and_only_after_a_complete_copy() {
    let project = project();
    project.zfnet(&["run"]).ok();
    project.write("out/notes.txt", "keep me");
    let refused = project.zfnet(&["export", "b.table", "out"]);
    assert_eq!(refused.code, Some(2), "{refused:?}");
    assert!(
        refused.stderr.contains("only with --force"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        fs::read_to_string(project.path("out/notes.txt")).unwrap(),
        "keep me"
    );

    project.zfnet(&["export", "--force", "b.table", "out"]).ok();
    let key = state_key(&project, "b");
    let cached = project.path(&format!(".zfnet/cache/runs/{key}/outputs/table.parquet"));
    assert_eq!(
        fs::read(project.path("out")).unwrap(),
        fs::read(cached).unwrap()
    );
    // No temporary or set-aside folder is left beside it.
    let leftovers: Vec<String> = fs::read_dir(project.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("zfnet-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_new_or_empty_destination_needs_no_force() {
    let project = project();
    project.zfnet(&["run"]).ok();
    project
        .zfnet(&["export", "a.table", "reports/new/a.parquet"])
        .ok();
    fs::create_dir(project.path("empty")).unwrap();
    project.zfnet(&["export", "a.table", "empty"]).ok();
    assert!(project.path("empty").is_file());
    // A second export over its own earlier copy is a replacement: it needs --force too.
    let again = project.zfnet(&["export", "a.table", "reports/new/a.parquet"]);
    assert_eq!(again.code, Some(2), "{again:?}");
}

// ---- the cache is zfnet's own ----

#[test]
fn a_cache_folder_that_is_not_zfnets_is_refused_with_every_file_kept() {
    let project = project();
    project.write("mine/notes.txt", "mine");
    project.write("mine/tmp/draft.txt", "mine too");
    project.write("mine/runs/x/y.txt", "and this");
    let cache_dir = project.path("mine");
    for args in [
        vec!["run", "--cache-dir", cache_dir.to_str().unwrap()],
        vec!["gc", "--cache-dir", cache_dir.to_str().unwrap()],
        vec!["verify", "--cache-dir", cache_dir.to_str().unwrap()],
    ] {
        let outcome = project.zfnet(&args);
        assert_eq!(outcome.code, Some(2), "{args:?}: {outcome:?}");
        assert!(
            outcome.stderr.contains("is not a zfnet cache"),
            "{}",
            outcome.stderr
        );
    }
    let by_env = outcome_of(project.command(&["run"]).env("ZFNET_CACHE_DIR", &cache_dir));
    assert_eq!(by_env.code, Some(2), "{by_env:?}");
    for (file, text) in [
        ("mine/notes.txt", "mine"),
        ("mine/tmp/draft.txt", "mine too"),
        ("mine/runs/x/y.txt", "and this"),
    ] {
        assert_eq!(fs::read_to_string(project.path(file)).unwrap(), text);
    }
    assert!(
        !project.path("mine/state").exists(),
        "nothing was written there"
    );
}

#[test]
fn a_new_cache_is_tagged_and_marked_as_zfnets() {
    let project = project();
    project.zfnet(&["run"]).ok();
    let tag = fs::read_to_string(project.path(".zfnet/cache/CACHEDIR.TAG")).unwrap();
    assert!(
        tag.starts_with("Signature: 8a477f597d28d172789f06886806bc55"),
        "{tag}"
    );
    assert!(project.path(".zfnet/cache/zfnet-cache.json").is_file());
}

#[test]
fn gc_and_run_delete_only_names_zfnet_made_and_never_through_a_link() {
    let project = project();
    project.zfnet(&["run"]).ok();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("precious.txt"), "precious").unwrap();
    let cache = project.path(".zfnet/cache");
    let foreign_key = "f".repeat(64);
    std::os::unix::fs::symlink(outside.path(), cache.join("runs").join(&foreign_key)).unwrap();
    std::os::unix::fs::symlink(outside.path(), cache.join("resume").join(&foreign_key)).unwrap();
    std::os::unix::fs::symlink(outside.path(), cache.join("tmp").join("link")).unwrap();
    fs::write(cache.join("runs/notes.txt"), "not an entry").unwrap();
    fs::create_dir_all(cache.join("resume/mine")).unwrap();
    fs::write(cache.join("tmp/draft.txt"), "not a temp folder").unwrap();

    project.zfnet(&["run", "--force"]).ok();
    project.zfnet(&["gc"]).ok();

    assert_eq!(
        fs::read_to_string(outside.path().join("precious.txt")).unwrap(),
        "precious"
    );
    for kept in ["runs/notes.txt", "resume/mine", "tmp/draft.txt"] {
        assert!(cache.join(kept).exists(), "{kept} was deleted");
    }
    assert_eq!(
        project.status().iter().filter(|s| s.1 == "fresh").count(),
        2
    );
}

// ---- one key executes once; processes wait for each other ----

/// Two stages with the same kind, params and inputs share one cache key.
const TWINS: &str = r#"name: twins
stages:
  - name: one
    kind: test_step
    params: { text: same, sleep_ms: 100 }
  - name: two
    kind: test_step
    params: { text: same, sleep_ms: 100 }
"#;

#[test]
fn twins_under_two_jobs_and_force_execute_their_key_once() {
    let project = Project::new(TWINS);
    for attempt in 0..5 {
        let outcome = project.zfnet(&["run", "--jobs", "2", "--force"]);
        let stdout = outcome.ok();
        assert_eq!(
            Project::executed(stdout).len(),
            1,
            "attempt {attempt}: {stdout}"
        );
        assert!(stdout.contains("1 ran, 1 fresh, 0 failed"), "{stdout}");
    }
}

#[test]
fn a_second_run_says_whom_it_waits_for_and_nothing_runs_twice() {
    let project = project_with_sleep(1500);
    let first = project.spawn(&["run"]);
    project.wait_for("log.txt", "start a");
    let second = project.spawn(&["run"]);
    let (first, second) = (Project::finish(first), Project::finish(second));
    first.ok();
    second.ok();
    assert!(
        second.stderr.contains("waiting for `zfnet run` (pid "),
        "{}",
        second.stderr
    );
    assert!(
        second.stdout.contains("0 ran, 2 fresh"),
        "{}",
        second.stdout
    );
    let log = fs::read_to_string(project.path("log.txt")).unwrap();
    assert_eq!(stderr_line_count(&log, "start a"), 1, "{log}");
}

#[test]
fn gc_beside_a_run_waits_for_it_and_removes_nothing_in_use() {
    let project = project_with_sleep(1500);
    let run = project.spawn(&["run"]);
    project.wait_for("log.txt", "start a");
    let gc = project.zfnet(&["gc"]);
    gc.ok();
    assert!(
        gc.stderr.contains("waiting for `zfnet run`"),
        "{}",
        gc.stderr
    );
    Project::finish(run).ok();
    assert!(project.status().iter().all(|s| s.1 == "fresh"));
}

#[test]
fn an_export_during_a_forced_run_waits_and_copies_a_complete_checked_entry() {
    let project = project_with_sleep(1500);
    project.zfnet(&["run"]).ok();
    fs::remove_file(project.path("log.txt")).unwrap();
    let run = project.spawn(&["run", "--force", "a"]);
    project.wait_for("log.txt", "start a");
    let export = project.zfnet(&["export", "a.table", "exported.parquet"]);
    export.ok();
    assert!(
        export.stderr.contains("waiting for `zfnet run`"),
        "{}",
        export.stderr
    );
    Project::finish(run).ok();
    let key = state_key(&project, "a");
    let cached = project.path(&format!(".zfnet/cache/runs/{key}/outputs/table.parquet"));
    assert_eq!(
        fs::read(project.path("exported.parquet")).unwrap(),
        fs::read(cached).unwrap()
    );
}

// ---- limits checked at resolve time ----

#[test]
fn an_over_long_stage_name_is_refused_at_its_line_before_anything_runs() {
    let long = "s".repeat(300);
    let project = Project::new(&format!(
        "name: long\nstages:\n  - name: {long}\n    kind: test_step\n"
    ));
    let outcome = project.zfnet(&["run"]);
    assert_eq!(outcome.code, Some(2), "{outcome:?}");
    assert!(
        outcome.stderr.contains("pipeline.yaml:3:"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains("300 bytes long; at most 64"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn matrix_instances_with_long_names_run_and_their_downstream_sees_them() {
    let value_a = "a".repeat(150);
    let value_b = "b".repeat(150);
    let project = Project::new(&format!(
        "name: wide\nstages:\n  - name: swept\n    kind: test_step\n    matrix:\n      \
         text: [{value_a}, {value_b}]\n      log: [{value_a}x, {value_b}x]\n  - name: after\n    \
         kind: test_step\n    inputs: {{ upstream: [swept.table] }}\n"
    ));
    let first = project.zfnet(&["run"]);
    first.ok();
    assert!(first.stdout.contains("5 ran"), "{}", first.stdout);
    let second = project.zfnet(&["run"]);
    assert!(second.ok().contains("0 ran, 5 fresh"), "{}", second.stdout);
}

#[test]
fn a_huge_matrix_is_refused_at_once_with_its_size() {
    let values: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
    let list = values.join(", ");
    let project = Project::new(&format!(
        "name: huge\nstages:\n  - name: swept\n    kind: test_step\n    matrix:\n      rows: \
         [{list}]\n      sleep_ms: [{list}]\n"
    ));
    let started = std::time::Instant::now();
    let outcome = project.zfnet(&["dag"]);
    assert_eq!(outcome.code, Some(2), "{outcome:?}");
    assert!(
        outcome
            .stderr
            .contains("its matrix expands to 1000000 instances (1000 `rows` x 1000 `sleep_ms`)"),
        "{}",
        outcome.stderr
    );
    assert!(
        started.elapsed().as_secs() < 10,
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn list_params_are_checked_for_length_range_and_duplicates_all_at_once() {
    let project = Project::new(
        "name: lists\nstages:\n  - name: fm\n    kind: fashion_mnist\n    params: { classes: \
         [1, 1] }\n    inputs: { dir: data }\n  - name: fm2\n    kind: fashion_mnist\n    \
         params: { classes: [3, 12] }\n    inputs: { dir: data }\n",
    );
    fs::create_dir(project.path("data")).unwrap();
    let outcome = project.zfnet(&["dag"]);
    assert_eq!(outcome.code, Some(2), "{outcome:?}");
    assert!(
        outcome.stderr.contains("pipeline.yaml:5:"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains("1 is listed twice"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains("pipeline.yaml:9:"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome
            .stderr
            .contains("list value 12 is outside the allowed range 0..=9"),
        "{}",
        outcome.stderr
    );
}

// ---- hostile cache files ----

fn manifest_path(project: &Project, stage: &str) -> std::path::PathBuf {
    let key = state_key(project, stage);
    project.path(&format!(".zfnet/cache/runs/{key}/manifest.json"))
}

fn edit_manifest(project: &Project, stage: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = manifest_path(project, stage);
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    edit(&mut manifest);
    fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
}

#[test]
fn a_manifest_naming_a_file_outside_its_entry_is_unreadable_and_the_stage_reruns() {
    let project = project();
    project.zfnet(&["run"]).ok();
    let victim = project.path("victim.txt");
    fs::write(&victim, "victim").unwrap();
    edit_manifest(&project, "a", |manifest| {
        manifest["outputs"]["table"]["file_name"] = "../../../../victim.txt".into();
    });
    let status = project.status();
    assert_eq!(status[0].1, "stale", "{status:?}");
    assert!(status[0].2.contains("outside its entry"), "{status:?}");
    let outcome = project.zfnet(&["run"]);
    assert!(Project::executed(outcome.ok()).contains(&"a".to_owned()));
    assert_eq!(fs::read_to_string(&victim).unwrap(), "victim");
}

#[test]
fn a_manifest_without_a_declared_output_is_stale_not_fresh() {
    let project = project();
    project.zfnet(&["run"]).ok();
    edit_manifest(&project, "a", |manifest| {
        manifest["outputs"].as_object_mut().unwrap().remove("table");
    });
    let status = project.status();
    assert_eq!(status[0].1, "stale", "{status:?}");
    assert!(
        status[0].2.contains("does not record the output `table`"),
        "{status:?}"
    );
    let outcome = project.zfnet(&["run"]);
    assert_eq!(Project::executed(outcome.ok()), ["a"]);
}

/// Bit rot keeps a file's size, inode and times, so the stat memo keeps trusting it: here the
/// memo is brought up to date with an edited file's fingerprint, as if the disk had flipped the
/// byte. `status` cannot see it; `verify` reads every byte, evicts the entry, and the next
/// `run` rebuilds it.
#[test]
fn verify_rereads_every_byte_and_evicts_what_rotted() {
    let project = project();
    project.zfnet(&["run"]).ok();
    let key = state_key(&project, "a");
    let output = project.path(&format!(".zfnet/cache/runs/{key}/outputs/table.parquet"));
    let mut bytes = fs::read(&output).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    fs::write(&output, &bytes).unwrap();
    // The memo as it would be had it hashed the file before the rot: the new fingerprint,
    // the recorded hash.
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(manifest_path(&project, "a")).unwrap()).unwrap();
    let recorded_hash = manifest["outputs"]["table"]["hash"].clone();
    let memo_path = project.path(".zfnet/cache/hash-memo.json");
    let mut memo: serde_json::Value = fs::read(&memo_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_else(|| serde_json::json!({}));
    let canonical = fs::canonicalize(&output).unwrap();
    let metadata = fs::metadata(&output).unwrap();
    memo[canonical.to_str().unwrap()] = serde_json::json!({
        "size": metadata.len(),
        "inode": metadata.ino(),
        "mtime_ns": metadata.mtime() * 1_000_000_000 + metadata.mtime_nsec(),
        "ctime_ns": metadata.ctime() * 1_000_000_000 + metadata.ctime_nsec(),
        "hash": recorded_hash,
    });
    fs::write(&memo_path, serde_json::to_vec(&memo).unwrap()).unwrap();
    assert_eq!(
        project.status()[0].1,
        "fresh",
        "the memo trusts the rotted file"
    );

    let verify = project.zfnet(&["verify"]);
    let stdout = verify.ok();
    assert!(stdout.contains(&format!("evicted {key}")), "{stdout}");
    assert!(stdout.contains("1 entry intact"), "{stdout}");
    assert!(!Path::new(&output).exists());
    let rerun = project.zfnet(&["run"]);
    assert_eq!(Project::executed(rerun.ok()), ["a"]);
}

// ---- failures named for what they are ----

#[test]
fn running_out_of_memory_is_named_with_the_stage_not_called_a_bug() {
    let project = Project::new(
        "name: big\nstages:\n  - name: hungry\n    kind: test_step\n    params: { allocate_mb: \
         8192 }\n",
    );
    // 2 GB of address space: zfnet itself fits, the stage's 8 GB allocation cannot.
    let binary = tests::zfnet_binary();
    let outcome = outcome_of(
        std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("ulimit -v 2000000; exec {} run", binary.display()))
            .current_dir(project.dir.path())
            .env("ZFNET_ENABLE_TEST_STAGES", "1")
            .env_remove("ZFNET_CACHE_DIR"),
    );
    assert_ne!(outcome.code, Some(0), "{outcome:?}");
    assert!(
        outcome.stderr.contains(
            "zfnet: out of memory: an allocation of 8192 MB failed while running `hungry`"
        ),
        "{}",
        outcome.stderr
    );
    assert!(
        !outcome.stderr.contains("a bug in zfnet"),
        "{}",
        outcome.stderr
    );
}
