//! Finding the source root and the language of an unpacked source tree.

use std::fs;
use std::path::{Path, PathBuf};

use kl_core::Runtime;

use crate::BuildError;

/// Marker files that name a language outright.
const MARKERS: [(&str, Runtime); 4] = [
    ("go.mod", Runtime::Go),
    ("package.json", Runtime::Node),
    ("requirements.txt", Runtime::Python),
    ("pyproject.toml", Runtime::Python),
];

/// The folder holding the function: the unpacked tree itself, or its only entry when an
/// archive wraps everything in one top-level folder (`tar czf f.tgz myfn/`).
pub fn source_root(unpacked: &Path) -> Result<PathBuf, BuildError> {
    let entries: Vec<_> = fs::read_dir(unpacked)?.collect::<Result<_, _>>()?;
    match entries.as_slice() {
        [] => Err(BuildError::EmptySource),
        [only] if only.file_type()?.is_dir() && !only.file_name().to_string_lossy().starts_with('.') => {
            Ok(only.path())
        }
        _ => Ok(unpacked.to_path_buf()),
    }
}

/// Detects the runtime from marker files, then from file extensions at the top level.
pub fn detect_runtime(root: &Path) -> Result<Runtime, BuildError> {
    let mut found: Vec<Runtime> = MARKERS
        .iter()
        .filter(|(file, _)| root.join(file).is_file())
        .map(|(_, rt)| *rt)
        .collect();
    if found.is_empty() {
        for entry in fs::read_dir(root)? {
            let name = entry?.file_name();
            let ext = Path::new(&name).extension().and_then(|e| e.to_str());
            match ext {
                Some("py") => found.push(Runtime::Python),
                Some("js" | "mjs" | "cjs") => found.push(Runtime::Node),
                Some("go") => found.push(Runtime::Go),
                _ => {}
            }
        }
    }
    found.sort_by_key(|rt| rt.as_str());
    found.dedup();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(BuildError::UnknownLanguage),
        many => Err(BuildError::AmbiguousLanguage(
            many.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", "),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let path = dir.path().join(f);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, "").unwrap();
        }
        dir
    }

    #[test]
    fn markers_decide() {
        for (files, want) in [
            (&["requirements.txt", "main.py"][..], Runtime::Python),
            (&["package.json", "index.js", "helper.py"][..], Runtime::Node),
            (&["go.mod", "handle.go", "tool.py"][..], Runtime::Go),
            (&["pyproject.toml"][..], Runtime::Python),
        ] {
            assert_eq!(detect_runtime(tree(files).path()).unwrap(), want, "{files:?}");
        }
    }

    #[test]
    fn extensions_decide_without_markers() {
        assert_eq!(
            detect_runtime(tree(&["main.py"]).path()).unwrap(),
            Runtime::Python
        );
        assert_eq!(
            detect_runtime(tree(&["index.mjs"]).path()).unwrap(),
            Runtime::Node
        );
        assert_eq!(detect_runtime(tree(&["a.go"]).path()).unwrap(), Runtime::Go);
    }

    #[test]
    fn unknown_and_ambiguous_are_errors() {
        assert!(matches!(
            detect_runtime(tree(&["README.md"]).path()),
            Err(BuildError::UnknownLanguage)
        ));
        let both = tree(&["requirements.txt", "package.json"]);
        let err = detect_runtime(both.path()).unwrap_err();
        assert!(
            matches!(err, BuildError::AmbiguousLanguage(ref s) if s == "node, python"),
            "{err}"
        );
    }

    #[test]
    fn a_single_wrapping_folder_is_the_root() {
        let t = tree(&["myfn/main.py", "myfn/requirements.txt"]);
        assert_eq!(source_root(t.path()).unwrap(), t.path().join("myfn"));
        let flat = tree(&["main.py", "lib/util.py"]);
        assert_eq!(source_root(flat.path()).unwrap(), flat.path());
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(source_root(empty.path()), Err(BuildError::EmptySource)));
    }
}
