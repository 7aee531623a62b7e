//! Imports point down: a module never names one of a higher layer (DESIGN.md "Layers").
//!
//! Reads every file under `src/`, finds each `crate::<module>` it names (in code and in doc
//! links alike) and fails, listing every offence, when that module's layer is not below the
//! file's own. Modules of one layer may not name each other either, so no cycle can form.

use std::path::{Path, PathBuf};

/// Each top-level module and its layer, bottom first (numbered as in `src/lib.rs`).
const LAYERS: &[(&str, u8)] = &[
    // The domain model: no I/O.
    ("model", 1),
    // Pure logic over the model, and the runtime parts that import nothing of keygate's.
    ("credential", 2),
    ("runtime", 2),
    ("telemetry", 2),
    ("throttle", 2),
    ("policy", 3),
    ("route", 3),
    // I/O clients: Redis, the hot cache over it, upstream connections.
    ("store", 4),
    ("upstream", 4),
    ("cache", 5),
    // Built from the parts below: the config, the errors the data plane answers, the metrics.
    ("config", 6),
    ("error", 6),
    ("metrics", 6),
    // The replica's shared state.
    ("replica", 7),
    // The data plane and the management side.
    ("admin", 8),
    ("proxy", 8),
    // Listeners, the CLI, the demo upstream.
    ("server", 9),
    ("cli", 9),
    ("demo", 9),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules `text` names as `crate::m` or `crate::{m, …}`.
fn named_modules(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        if text[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue; // `keygate_crate::`, not ours
        }
        let rest = &text[i + "crate::".len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group[..group.find('}').unwrap_or(group.len())]
                .split(',')
                .map(|p| p.trim().split("::").next().unwrap_or(""))
                .collect(),
            None => vec![rest],
        };
        for name in names {
            let end = name
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(name.len());
            if end > 0 {
                out.push(name[..end].to_owned());
            }
        }
    }
    out
}

#[test]
fn imports_point_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut offences = Vec::new();
    let mut checked = 0;
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative.components().next().unwrap().as_os_str();
        let top = top.to_str().unwrap().trim_end_matches(".rs");
        if top == "lib" || top == "main" {
            continue; // the crate root and the binary stand above every layer
        }
        let Some(own) = layer(top) else {
            offences.push(format!(
                "{}: module `{top}` has no layer in LAYERS",
                relative.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for named in named_modules(&text) {
            checked += 1;
            match layer(&named) {
                Some(l) if named == top || l < own => {}
                Some(l) => offences.push(format!(
                    "{}: `{top}` (layer {own}) names `crate::{named}` (layer {l})",
                    relative.display()
                )),
                None => offences.push(format!(
                    "{}: names `crate::{named}`, which has no layer in LAYERS",
                    relative.display()
                )),
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} references found: is the parser broken?"
    );
    assert!(
        offences.is_empty(),
        "imports that point up or sideways:\n{}",
        offences.join("\n")
    );
}

#[test]
fn the_parser_finds_plain_and_grouped_paths() {
    let text = "use crate::store::Store;\nuse crate::{cache::Cache, model};\n// [`x`](crate::proxy::handle)";
    assert_eq!(named_modules(text), ["store", "cache", "model", "proxy"]);
}
