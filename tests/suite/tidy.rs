//! The map stays true: ARCHITECTURE.md's code map names every module of `src` down to two
//! levels (and the job kinds under `engine::jobs`), and nothing that is not there; every source
//! file opens with a doc comment saying what it is for.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

/// Modules whose children the map lists too, though they are deeper than two levels.
const LISTED_WITH_CHILDREN: &[&str] = &["engine::jobs"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// `src/engine/jobs/mod.rs` → `engine::jobs`; `src/main.rs` → `main`.
fn module_of(file: &Path) -> String {
    let relative = file.strip_prefix(root().join("src")).unwrap();
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" {
        parts.push(stem.to_owned());
    }
    parts.join("::")
}

/// The modules the map must name.
fn modules_in_src() -> BTreeSet<String> {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    files
        .iter()
        .map(|f| module_of(f))
        .filter(|m| {
            let depth = m.split("::").count();
            depth <= 2
                || LISTED_WITH_CHILDREN.iter().any(|parent| {
                    m.strip_prefix(parent).is_some_and(|rest| {
                        rest.starts_with("::") && depth == parent.split("::").count() + 1
                    })
                })
        })
        .collect()
}

/// The modules the code map's first column names (each in backticks).
fn modules_in_map() -> BTreeSet<String> {
    let text = fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let map = text
        .split("\n## Code map")
        .nth(1)
        .expect("ARCHITECTURE.md has a \"## Code map\" section")
        .split("\n## ")
        .next()
        .unwrap();
    let mut named = BTreeSet::new();
    for row in map.lines().filter(|l| l.starts_with("| `")) {
        let first_column = row.split('|').nth(1).unwrap();
        for (i, piece) in first_column.split('`').enumerate() {
            if i % 2 == 1 {
                named.insert(piece.to_owned());
            }
        }
    }
    named
}

#[test]
fn the_code_map_names_every_module_and_only_those() {
    let in_src = modules_in_src();
    let in_map = modules_in_map();
    let missing: Vec<_> = in_src.difference(&in_map).collect();
    let stale: Vec<_> = in_map.difference(&in_src).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "ARCHITECTURE.md's code map is out of date: modules not in it {missing:?}; names in it \
         that are no module {stale:?}"
    );
}

#[test]
fn every_source_file_says_what_it_is_for() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let silent: Vec<_> = files
        .iter()
        .filter(|f| {
            let text = fs::read_to_string(f).unwrap();
            !text.trim_start().starts_with("//!")
        })
        .map(|f| module_of(f))
        .collect();
    assert!(
        silent.is_empty(),
        "files without a `//!` doc comment: {silent:?}"
    );
}
