//! `zfnet kinds` documents every stage kind, including its peak memory as a function of its
//! inputs and params (issue #16: "every stage documents its peak memory").

use tests::Project;

#[test]
fn every_kind_states_its_peak_memory_and_what_bounds_it() {
    let project = Project::new("name: p\nstages: []\n");
    let out = project.zfnet(&["kinds"]);
    let text = out.ok();
    assert!(text.starts_with("Peak memory symbols:"), "{text}");
    let kinds: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with(' ') && l.contains(" (v"))
        .collect();
    let memories: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("  peak memory: "))
        .collect();
    assert!(kinds.len() >= 22, "{text}");
    assert_eq!(
        kinds.len(),
        memories.len(),
        "one statement per kind:\n{text}"
    );
    for memory in memories {
        assert!(memory.len() > 60, "too short to say anything: `{memory}`");
        assert!(
            memory.contains("bytes") || memory.contains("MB") || memory.contains("KB"),
            "a statement gives sizes: `{memory}`"
        );
    }
}
