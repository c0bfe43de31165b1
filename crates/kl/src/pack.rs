//! Packing a function directory into a `.tar.gz`, honouring `.klignore` (gitignore syntax).

use std::path::Path;

use anyhow::{Context, Result, bail};
use flate2::Compression;
use flate2::write::GzEncoder;

/// Folders never uploaded.
const ALWAYS_IGNORED: [&str; 2] = [".git", ".kl"];

/// Packs `dir` into a gzip-compressed tar; paths are relative to `dir`, links stay links.
pub fn pack_dir(dir: &Path) -> Result<Vec<u8>> {
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    tar.follow_symlinks(false);
    let walk = ignore::WalkBuilder::new(dir)
        .standard_filters(false)
        .add_custom_ignore_filename(".klignore")
        .filter_entry(|e| !ALWAYS_IGNORED.iter().any(|n| e.file_name() == *n))
        .sort_by_file_name(|a, b| a.cmp(b))
        .build();
    let mut files = 0;
    for entry in walk {
        let entry = entry.context("cannot read the function directory")?;
        let rel = entry.path().strip_prefix(dir).expect("walk stays below its root");
        if rel.as_os_str().is_empty() {
            continue;
        }
        tar.append_path_with_name(entry.path(), rel)
            .with_context(|| format!("cannot pack {}", entry.path().display()))?;
        files += 1;
    }
    if files == 0 {
        bail!(
            "{} is empty (or everything in it is ignored by .klignore)",
            dir.display()
        );
    }
    Ok(tar.into_inner()?.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn names(archive: &[u8]) -> Vec<String> {
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
        let mut out: Vec<String> = tar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn honours_klignore_and_skips_vcs_folders() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in [
            "main.py",
            "secret.env",
            "data/keep.txt",
            "data/skip.log",
            ".git/HEAD",
            "build/out.bin",
        ] {
            std::fs::create_dir_all(d.join(f).parent().unwrap()).unwrap();
            std::fs::write(d.join(f), "x").unwrap();
        }
        std::fs::write(d.join(".klignore"), "*.env\n*.log\nbuild/\n").unwrap();
        let packed = pack_dir(d).unwrap();
        assert_eq!(names(&packed), [".klignore", "data", "data/keep.txt", "main.py"]);
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(packed.as_slice()));
        let mut main = tar
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.path().unwrap().ends_with("main.py"))
            .unwrap();
        let mut text = String::new();
        main.read_to_string(&mut text).unwrap();
        assert_eq!(text, "x");
    }

    #[test]
    fn an_empty_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(pack_dir(dir.path()).unwrap_err().to_string().contains("is empty"));
    }
}
