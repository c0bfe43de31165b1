//! `kl.yaml`: optional function settings shipped with the source.

use std::path::Path;

use kl_core::FunctionSettings;

use crate::BuildError;

pub const MANIFEST_FILE: &str = "kl.yaml";

/// Reads `kl.yaml` from the source root; absent means no settings.
pub fn read_manifest(root: &Path) -> Result<FunctionSettings, BuildError> {
    let path = root.join(MANIFEST_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_manifest(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FunctionSettings::default()),
        Err(e) => Err(e.into()),
    }
}

/// Parses `kl.yaml` text; unknown fields are errors so typos don't pass silently.
pub fn parse_manifest(text: &str) -> Result<FunctionSettings, BuildError> {
    if text.trim().is_empty() {
        return Ok(FunctionSettings::default());
    }
    serde_yaml::from_str(text).map_err(|e| BuildError::Manifest(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kl_core::Runtime;

    #[test]
    fn parses_all_fields() {
        let s = parse_manifest(
            "name: hello\nruntime: python\nhandler: app.main\nmemory: 128Mi\ntimeout: 5s\nconcurrency: 2\nmaxScale: 3\npublic: true\nenv:\n  GREETING: hi\n",
        )
        .unwrap();
        assert_eq!(s.name.as_deref(), Some("hello"));
        assert_eq!(s.runtime, Some(Runtime::Python));
        assert_eq!(s.env["GREETING"], "hi");
        assert_eq!(s.max_scale, Some(3));
        assert_eq!(s.public, Some(true));
    }

    #[test]
    fn typos_and_bad_values_are_reported() {
        let err = parse_manifest("memroy: 1Gi\n").unwrap_err().to_string();
        assert!(err.contains("memroy"), "{err}");
        let err = parse_manifest("runtime: cobol\n").unwrap_err().to_string();
        assert!(err.contains("cobol"), "{err}");
        assert_eq!(parse_manifest("").unwrap(), FunctionSettings::default());
    }
}
