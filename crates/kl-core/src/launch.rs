//! How to start an instance of a built revision: produced by the builder, executed by the
//! runtime, persisted with the artifact.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A process to run: the language shim (or compiled binary) and its environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    pub program: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Working directory: the function's code.
    pub cwd: PathBuf,
    /// Dependency layers the instance reads besides its code (the sandbox exposes them
    /// read-only). Recorded by the builder, never taken from user settings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<PathBuf>,
}

impl Launch {
    /// Moves every path under `from` to the same place under `to`: the program, arguments,
    /// environment values (`:`-separated lists too), working directory and layers. A restored
    /// artifact lives in another data dir, and its layers in another cache.
    pub fn relocate(&mut self, from: &Path, to: &Path) {
        let text = |s: &str| {
            s.split(':')
                .map(|part| {
                    relocated(Path::new(part), from, to)
                        .map_or_else(|| part.to_owned(), |p| p.display().to_string())
                })
                .collect::<Vec<_>>()
                .join(":")
        };
        self.program = text(&self.program);
        for arg in &mut self.args {
            *arg = text(arg);
        }
        for value in self.env.values_mut() {
            *value = text(value);
        }
        for path in std::iter::once(&mut self.cwd).chain(&mut self.layers) {
            if let Some(moved) = relocated(path, from, to) {
                *path = moved;
            }
        }
    }
}

/// `path` moved from under `from` to under `to`; `None` when it is not under `from`.
pub fn relocated(path: &Path, from: &Path, to: &Path) -> Option<PathBuf> {
    let rest = path.strip_prefix(from).ok()?;
    Some(if rest.as_os_str().is_empty() {
        to.to_path_buf()
    } else {
        to.join(rest)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(root: &str, layer: &str) -> Launch {
        Launch {
            program: "/usr/bin/python3".into(),
            args: vec!["-u".into(), format!("{root}/a/1/.kl/shim.pyc")],
            env: BTreeMap::from([
                ("KL_CODE_DIR".to_owned(), format!("{root}/a/1/code")),
                ("KL_DEPS_DIR".to_owned(), layer.to_owned()),
                ("PATH_LIST".to_owned(), format!("{layer}:/usr/lib:{root}/a/1/bin")),
                ("GREETING".to_owned(), "hello /srv/old".to_owned()),
            ]),
            cwd: format!("{root}/a/1/code").into(),
            layers: vec![layer.into()],
        }
    }

    #[test]
    fn relocating_moves_every_path_under_the_old_root_and_nothing_else() {
        let mut moved = launch("/srv/old", "/cache/python/k1");
        moved.relocate(Path::new("/srv/old"), Path::new("/data/new"));
        moved.relocate(
            Path::new("/cache/python/k1"),
            Path::new("/data/new/cache/python/k1"),
        );
        assert_eq!(moved, launch("/data/new", "/data/new/cache/python/k1"));
    }

    #[test]
    fn only_whole_path_components_match() {
        assert_eq!(
            relocated(Path::new("/srv/older/x"), Path::new("/srv/old"), Path::new("/n")),
            None
        );
        assert_eq!(
            relocated(Path::new("/srv/old/x"), Path::new("/srv/old"), Path::new("/n")),
            Some(PathBuf::from("/n/x"))
        );
        assert_eq!(
            relocated(Path::new("/srv/old"), Path::new("/srv/old"), Path::new("/n")),
            Some(PathBuf::from("/n"))
        );
        assert_eq!(
            relocated(Path::new("srv/old/x"), Path::new("/srv/old"), Path::new("/n")),
            None
        );
    }
}
