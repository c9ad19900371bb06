//! The README's architecture tree against the files on disk: every path it
//! names exists, and every source, script, test, bench, doc and CI file is
//! named, with a description.
#![allow(clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The paths the README's architecture block names, each with whether it
/// has a description.
fn tree() -> Vec<(String, bool)> {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).expect("README.md");
    let section = readme
        .split("## Architecture")
        .nth(1)
        .expect("an Architecture section");
    let block = section
        .split("```text\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a text block in the Architecture section");
    let mut dirs: Vec<String> = Vec::new();
    let mut entries = Vec::new();
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        let indent = line.len() - line.trim_start().len();
        assert_eq!(indent % 2, 0, "odd indentation: {line:?}");
        let depth = indent / 2;
        assert!(depth <= dirs.len(), "indented past its folder: {line:?}");
        dirs.truncate(depth);
        let mut words = line.trim().splitn(2, ' ');
        let name = words.next().unwrap_or_default();
        let described = words.next().is_some_and(|d| !d.trim().is_empty());
        let path = dirs
            .iter()
            .map(String::as_str)
            .chain([name])
            .collect::<String>();
        if name.ends_with('/') {
            dirs.push(name.to_owned());
        }
        entries.push((path, described));
    }
    entries
}

/// Every file below `dir` (relative to the crate root), recursively.
fn files(dir: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![PathBuf::from(ROOT).join(dir)];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                // npm's install folder (benches/bullmq) is never committed.
                if !path.ends_with("node_modules") {
                    stack.push(path);
                }
            } else if let Ok(relative) = path.strip_prefix(ROOT) {
                found.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    found
}

#[test]
fn the_readme_tree_names_every_file_and_nothing_else() {
    let tree = tree();
    let named: BTreeSet<&str> = tree.iter().map(|(p, _)| p.as_str()).collect();
    for (path, described) in &tree {
        assert!(
            Path::new(ROOT).join(path).exists(),
            "the README names {path}, which does not exist"
        );
        assert!(
            *described || path.ends_with('/'),
            "the README names {path} without saying what it is"
        );
    }
    for folder in ["src", "lua", "tests", "benches", "docs", ".ci"] {
        for file in files(folder) {
            assert!(
                named.contains(file.as_str()),
                "{file} is missing from the README's architecture tree"
            );
        }
    }
}

/// The library's layers, bottom up, as `src/lib.rs` declares them.
const LAYERS: [&[&str]; 7] = [
    &["error", "job_id", "priority", "time", "backoff"],
    &["protocol"],
    &["queue", "partition", "durability"],
    &["producer", "results", "schedule", "worker", "flow"],
    &["admin"],
    &["http", "notify"],
    &["testing"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

#[test]
fn imports_go_down_the_layers_by_their_own_paths() {
    let mut problems = Vec::new();
    for file in files("src") {
        let top = file
            .trim_start_matches("src/")
            .split(['/', '.'])
            .next()
            .unwrap_or_default()
            .to_owned();
        if top == "bin" || top == "lib" {
            continue;
        }
        let Some(own) = layer_of(&top) else {
            problems.push(format!("{file}: module {top} is in no layer"));
            continue;
        };
        let text = std::fs::read_to_string(Path::new(ROOT).join(&file)).expect("readable");
        for line in text.lines() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for (at, _) in code.match_indices("crate::") {
                let target: String = code[at + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                match layer_of(&target) {
                    None => problems.push(format!(
                        "{file}: `crate::{target}` goes through lib.rs's re-exports"
                    )),
                    Some(layer) if layer > own => {
                        problems.push(format!("{file}: imports {target}, a layer above {top}"));
                    }
                    Some(_) => {}
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
