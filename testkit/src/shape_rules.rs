//! The code's shape as rules, over the whole workspace: no non-test
//! function over 70 lines, no file over 900, and no cycle among the
//! modules of any crate. ARCHITECTURE.md ("Rules that check themselves")
//! says why each limit is what it is.

use std::path::{Path, PathBuf};

use crate::shape;

const FUNCTION_LINES_MAX: usize = 70;
const FILE_LINES_MAX: usize = 900;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn relative(p: &Path) -> String {
    p.strip_prefix(workspace())
        .unwrap_or(p)
        .display()
        .to_string()
}

#[test]
fn no_function_is_over_70_lines() {
    let mut over = Vec::new();
    for file in shape::rust_files(&workspace()) {
        if shape::is_test_file(&file) {
            continue;
        }
        let ast = shape::parse(&file).unwrap();
        for f in shape::function_lengths(&ast) {
            if f.lines > FUNCTION_LINES_MAX {
                over.push(format!(
                    "{}:{} {} is {} lines",
                    relative(&file),
                    f.line,
                    f.name,
                    f.lines
                ));
            }
        }
    }
    assert!(
        over.is_empty(),
        "{} functions are over {FUNCTION_LINES_MAX} lines; split them along what they do:\n{}",
        over.len(),
        over.join("\n")
    );
}

#[test]
fn no_file_is_over_900_lines() {
    let mut over = Vec::new();
    for file in shape::rust_files(&workspace()) {
        let lines = std::fs::read_to_string(&file).unwrap().lines().count();
        if lines > FILE_LINES_MAX {
            over.push(format!("{} is {lines} lines", relative(&file)));
        }
    }
    assert!(
        over.is_empty(),
        "{} files are over {FILE_LINES_MAX} lines; split them along their concepts:\n{}",
        over.len(),
        over.join("\n")
    );
}

#[test]
fn no_crate_has_a_module_cycle() {
    let mut cycles = Vec::new();
    let mut crates = 0;
    for file in shape::rust_files(&workspace()) {
        if file.file_name().is_some_and(|n| n == "lib.rs")
            && file.parent().is_some_and(|d| d.ends_with("src"))
        {
            crates += 1;
            let src = file.parent().unwrap();
            let graph = shape::module_graph(src).unwrap();
            for c in graph.cycles() {
                cycles.push(format!("{}: {c}", relative(src)));
            }
        }
    }
    assert!(
        crates >= 8,
        "found only {crates} library crates: is the workspace walk wrong?"
    );
    assert!(
        cycles.is_empty(),
        "module cycles (a module may use its siblings only one way):\n{}",
        cycles.join("\n")
    );
}
