//! Every kernel launch in src/backend/ passes as many arguments as its kernel in
//! src/kernels.cu takes, names a kernel that exists, and every kernel is loaded. cuLaunchKernel
//! checks none of this: a missing argument is garbage read on the GPU, which no session here
//! could see (no GPU) — so it is checked on the sources.

use std::collections::BTreeMap;

const KERNELS: &str = include_str!("../src/kernels.cu");
/// The backend's sources, every module of it.
const BACKEND: &str = concat!(
    include_str!("../src/backend/mod.rs"),
    include_str!("../src/backend/cudnn.rs"),
    include_str!("../src/backend/cublas.rs"),
    include_str!("../src/backend/ops.rs"),
    include_str!("../src/backend/nvrtc.rs"),
);

/// Splits `text` at commas outside parentheses, brackets and braces.
fn top_level_items(text: &str) -> Vec<String> {
    let (mut items, mut current, mut depth) = (Vec::new(), String::new(), 0i32);
    for c in text.chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(current.trim().to_owned());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        items.push(current.trim().to_owned());
    }
    items
}

/// The text between the parenthesis at `open` and its match.
fn parenthesised(text: &str, open: usize) -> &str {
    let mut depth = 0;
    for (i, c) in text[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &text[open + 1..open + i];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced parentheses after byte {open}");
}

/// kernel name -> parameter count, from kernels.cu.
fn kernel_parameters() -> BTreeMap<String, usize> {
    let marker = "extern \"C\" __global__ void ";
    KERNELS
        .match_indices(marker)
        .map(|(at, _)| {
            let rest = &KERNELS[at + marker.len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let open = at + marker.len() + name.len();
            let count = top_level_items(parenthesised(KERNELS, open)).len();
            (name, count)
        })
        .collect()
}

/// (kernel name, argument count) of every `launch!` in the backend's modules.
fn launches() -> Vec<(String, usize)> {
    let marker = "launch!(";
    BACKEND
        .match_indices(marker)
        .filter(|(at, _)| !BACKEND[..*at].ends_with("macro_rules! "))
        .map(|(at, _)| {
            let items = top_level_items(parenthesised(BACKEND, at + marker.len() - 1));
            // self, "name", config, arguments...
            assert!(items.len() >= 3, "launch! with too few items: {items:?}");
            (items[1].trim_matches('"').to_owned(), items.len() - 3)
        })
        .collect()
}

#[test]
fn every_launch_passes_each_argument_its_kernel_takes() {
    let kernels = kernel_parameters();
    assert!(kernels.len() >= 20, "kernels found: {kernels:?}");
    let launches = launches();
    assert!(launches.len() >= 20, "launches found: {launches:?}");
    for (name, arguments) in &launches {
        let parameters = kernels
            .get(name)
            .unwrap_or_else(|| panic!("the backend launches `{name}`, which kernels.cu lacks"));
        assert_eq!(
            arguments, parameters,
            "`{name}`: the backend passes {arguments} arguments, kernels.cu takes {parameters}"
        );
    }
}

#[test]
fn every_kernel_is_loaded_and_launched() {
    let start = BACKEND
        .find("const KERNEL_NAMES")
        .expect("KERNEL_NAMES in backend/mod.rs");
    let list = &BACKEND[start..BACKEND[start..].find("];").map(|end| start + end).unwrap()];
    let loaded: Vec<&str> = list.split('"').skip(1).step_by(2).collect();
    let launched: Vec<String> = launches().into_iter().map(|(name, _)| name).collect();
    for name in kernel_parameters().keys() {
        assert!(
            loaded.contains(&name.as_str()),
            "kernel `{name}` is not in KERNEL_NAMES"
        );
        assert!(launched.contains(name), "kernel `{name}` is never launched");
    }
    for name in loaded {
        assert!(
            kernel_parameters().contains_key(name),
            "KERNEL_NAMES lists `{name}`, which kernels.cu lacks"
        );
    }
}

/// Every count the backend hands to the device goes through `int` (checked against the
/// kernels' 32-bit indexing, `limits::kernel_int`): an `as i32` or `as u32` would wrap a
/// count past 2^31 silently, and the kernel would read and write out of bounds. The only casts
/// left are of grid sizes that `int` has already checked.
#[test]
fn no_count_reaches_the_device_by_an_unchecked_cast() {
    let casts: Vec<&str> = BACKEND
        .lines()
        .filter(|line| {
            line.contains(" as i32") || line.contains(" as u32") || line.contains(" as i64")
        })
        .map(str::trim)
        .collect();
    assert_eq!(
        casts,
        vec![
            "let blocks = (int(len, \"a kernel's element count\") as u32)",
            "grid_dim: (int(items, what).max(1) as u32, 1, 1),",
        ],
        "unchecked casts in src/backend/"
    );
}
