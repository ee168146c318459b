//! Overlays (`--overlay FILE`): the same graph with other data paths and params — what
//! `make paper-mini` runs the paper's pipeline with — and nothing else.

use tests::Project;

const BASE: &str = r#"name: base
stages:
  - name: a
    kind: test_step
    params: { text: alpha }
    inputs: { file: data/words.txt }
  - name: b
    kind: test_step
    params: { text: beta }
    inputs: { upstream: [a.table] }
  - name: sweep
    kind: test_step
    inputs: { upstream: [a.table] }
    matrix: { rows: [1, 2] }
"#;

fn project() -> Project {
    let project = Project::new("");
    project.write("pipelines/base.yaml", BASE);
    project.write("pipelines/data/words.txt", "hello");
    project.write("mini/words.txt", "a miniature");
    project
}

#[test]
fn an_overlay_changes_data_paths_and_params_and_renames_the_pipeline_but_keeps_the_graph() {
    let project = project();
    project.write(
        "overlays/mini.yaml",
        "overlays: base.yaml\nname: base-mini\nstages:\n  a: { inputs: { file: ../mini/words.txt } }\n  b: { params: { text: gamma, rows: 5 } }\n",
    );
    let dag = project.zfnet(&[
        "-f",
        "pipelines/base.yaml",
        "--overlay",
        "overlays/mini.yaml",
        "dag",
    ]);
    let text = dag.ok();
    assert!(text.starts_with("pipeline `base-mini`: 4 stages"), "{text}");
    // The data path is the overlay's, resolved against the overlay's folder.
    assert!(
        text.contains(&format!(
            "file <- {}",
            project.path("overlays/../mini/words.txt").display()
        )),
        "{text}"
    );
    assert!(!text.contains("pipelines/data/words.txt"), "{text}");
    assert!(text.contains("gamma"), "{text}");
    assert!(text.contains("rows = 5"), "{text}");

    let run = project.zfnet(&[
        "-f",
        "pipelines/base.yaml",
        "--overlay",
        "overlays/mini.yaml",
        "run",
    ]);
    run.ok();
    // The base pipeline keeps its own state: nothing of it ran.
    let base = project.zfnet(&["-f", "pipelines/base.yaml", "status", "--json"]);
    assert!(!base.ok().contains("\"fresh\""), "{}", base.stdout);
    let mini = project.zfnet(&[
        "-f",
        "pipelines/base.yaml",
        "--overlay",
        "overlays/mini.yaml",
        "status",
        "--json",
    ]);
    assert!(!mini.ok().contains("\"missing\""), "{}", mini.stdout);
}

#[test]
fn an_overlay_that_would_change_the_graph_is_refused_with_every_problem_at_its_line() {
    let project = project();
    project.write(
        "overlays/bad.yaml",
        "overlays: other.yaml\nstages:\n  nowhere: { params: { text: x } }\n  a: { params: { txet: x }, inputs: { file: ../nowhere.txt } }\n  b: { inputs: { upstream: a.table } }\n  sweep: { params: { rows: 5 } }\n  a2: {}\n",
    );
    let outcome = project.zfnet(&[
        "-f",
        "pipelines/base.yaml",
        "--overlay",
        "overlays/bad.yaml",
        "dag",
    ]);
    assert_eq!(outcome.code, Some(2), "{}", outcome.stderr);
    let file = project.path("overlays/bad.yaml");
    let at = |line: u32| format!("{}:{line}: ", file.display());
    for (line, text) in [
        (1, "this overlay is for `other.yaml`, not"),
        (
            3,
            "there is no stage `nowhere` in base.yaml; an overlay cannot add stages",
        ),
        (4, "kind `test_step` has no param `txet`"),
        (
            4,
            "nowhere.txt` does not exist; write the data there or point the overlay at it",
        ),
        (5, "which an overlay cannot change (only dataset paths)"),
        (6, "`rows` is swept by its matrix"),
        (7, "there is no stage `a2`"),
    ] {
        assert!(
            outcome
                .stderr
                .lines()
                .any(|problem| problem.contains(&at(line)) && problem.contains(text)),
            "line {line}, `{text}`:\n{}",
            outcome.stderr
        );
    }
}

/// An overlay may say where stages run: its `executor:` section replaces the base file's
/// whole (a cluster's partitions kept beside the shared pipeline), and its mistakes are
/// reported at the overlay's lines.
#[test]
fn an_overlay_sets_where_stages_run_and_its_mistakes_are_its_own() {
    let project = project();
    project.write(
        "overlays/cluster.yaml",
        "overlays: base.yaml\nexecutor:\n  slurm:\n    defaults: { partition: cpu, cpus: 2 }\n    stages:\n      b: { partition: gpu, time: \"2:00:00\" }\n",
    );
    let dry = project.zfnet(&[
        "-f",
        "pipelines/base.yaml",
        "--overlay",
        "overlays/cluster.yaml",
        "run",
        "--dry-run",
        "--executor",
        "slurm",
    ]);
    let text = dry.ok();
    assert!(text.contains("partition cpu"), "{text}");
    assert!(text.contains("partition gpu"), "{text}");
    assert!(text.contains("time limit 2:00:00"), "{text}");

    project.write(
        "overlays/wrong.yaml",
        "overlays: base.yaml\nexecutor:\n  slurm:\n    stages:\n      bb: { cpus: 2 }\n",
    );
    let wrong = project.zfnet(&[
        "-f",
        "pipelines/base.yaml",
        "--overlay",
        "overlays/wrong.yaml",
        "dag",
    ]);
    assert_eq!(wrong.code, Some(2), "{}", wrong.stderr);
    assert!(
        wrong.stderr.contains("overlays/wrong.yaml:5:"),
        "reported at the overlay's line: {}",
        wrong.stderr
    );
    assert!(
        wrong.stderr.contains("did you mean `b`"),
        "{}",
        wrong.stderr
    );
}
