//! The house rules, checked on the source tree (as rust-analyzer's tidy test does): every `.rs`
//! file opens with a `//!` paragraph saying what it owns; ARCHITECTURE.md's code map names every
//! source file; and no module of `src/` imports a module that imports it back, so that the
//! layers read in one direction (`config` and `telemetry` are leaves). These tests read files;
//! they never run the service.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[test]
fn every_rust_file_opens_with_a_doc_paragraph() {
    let undocumented: Vec<String> = rust_files(&["src", "tests", "benches"])
        .into_iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            !text
                .lines()
                .find(|line| !line.trim().is_empty())
                .is_some_and(|line| line.starts_with("//!"))
        })
        .map(|path| relative(&path))
        .collect();
    assert!(
        undocumented.is_empty(),
        "these files do not open with a //! paragraph saying what they own: {undocumented:?}"
    );
}

#[test]
fn the_architecture_code_map_names_every_source_file() {
    let architecture = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let missing: Vec<String> = rust_files(&["src", "benches"])
        .into_iter()
        .map(|path| relative(&path))
        .filter(|path| !architecture.contains(path.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's code map does not name: {missing:?}"
    );
}

#[test]
fn no_module_of_src_imports_one_that_imports_it_back() {
    let graph = module_graph();
    let mut cycles = Vec::new();
    for (module, imports) in &graph {
        for imported in imports {
            if let Some(path) = path_between(&graph, imported, module) {
                cycles.push(format!("{module} -> {}", path.join(" -> ")));
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "import cycles between modules of src/ (each module should sit above those it uses):\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_import_reader_sees_groups_paths_and_nested_modules() {
    let text = "use crate::config::{Secret, Settings};\n\
                use crate::{ingest, journal::MAX_RECORD_BYTES};\n\
                let lang = crate::report::Lang::Fr;\n\
                use super::day; // not the crate's\n";
    assert_eq!(
        imported_modules(text),
        BTreeSet::from(["config", "ingest", "journal", "report"].map(str::to_owned))
    );
}

/// For each top-level module of `src/` (a file `src/x.rs` or a directory `src/x/`), the other
/// top-level modules its non-test files import through `crate::`.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in rust_files(&["src"]) {
        let relative = path.strip_prefix(root().join("src")).unwrap();
        let is_test = relative
            .components()
            .any(|part| part.as_os_str() == "tests" || part.as_os_str() == "tests.rs");
        let module = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if is_test || module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // An inline test module comes last: what follows it is test code.
        let code = text
            .split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or_default();
        let imports = graph.entry(module.clone()).or_default();
        imports.extend(
            imported_modules(code)
                .into_iter()
                .filter(|imported| *imported != module),
        );
    }
    graph
}

/// The top-level modules named after `crate::` in `code`, in plain paths and in `{...}` groups.
fn imported_modules(code: &str) -> BTreeSet<String> {
    let mut modules = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The top-level names of the group: the first segment of each item at depth 0.
            let mut depth = 0;
            let mut item_start = true;
            let mut name = String::new();
            for character in group.chars() {
                match character {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        if !name.is_empty() {
                            modules.insert(std::mem::take(&mut name));
                        }
                        item_start = true;
                    }
                    c if item_start && (c.is_alphanumeric() || c == '_') => name.push(c),
                    _ if item_start && !name.is_empty() => {
                        modules.insert(std::mem::take(&mut name));
                        item_start = false;
                    }
                    _ => {}
                }
            }
            if !name.is_empty() {
                modules.insert(name);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                modules.insert(name);
            }
        }
    }
    modules
}

/// A path of imports from `from` to `to`, if there is one.
fn path_between(
    graph: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    to: &str,
) -> Option<Vec<String>> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![vec![from.to_owned()]];
    while let Some(path) = stack.pop() {
        let last = path.last().unwrap();
        if last == to {
            return Some(path);
        }
        if !seen.insert(last.clone()) {
            continue;
        }
        for next in graph.get(last).into_iter().flatten() {
            let mut longer = path.clone();
            longer.push(next.clone());
            stack.push(longer);
        }
    }
    None
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Every `.rs` file under the `directories` of the project, sorted.
fn rust_files(directories: &[&str]) -> Vec<PathBuf> {
    fn walk(directory: &Path, files: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(directory).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    for directory in directories {
        walk(&root().join(directory), &mut files);
    }
    files.sort();
    files
}
