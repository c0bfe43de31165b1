//! Safe unpacking of uploaded source archives (`.tar.gz`, `.tar`, `.zip`).
//!
//! Nothing is ever written outside `dest`: entry paths must be relative without `..`, every
//! parent folder is checked to be a real folder (never a link) before anything is created in
//! it, files are created with `create_new` (so no entry can overwrite another or write through a
//! link), links must resolve inside the tree, and hard links, devices and FIFOs are refused.
//! Entry count and unpacked bytes are bounded while reading, whatever the headers claim.

use std::fs::{self, OpenOptions};
use std::io::{self, Cursor, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;
use thiserror::Error;

/// Bounds on what one archive may unpack to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    pub max_entries: usize,
    pub max_bytes: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_entries: 10_000,
            max_bytes: 200 << 20,
        }
    }
}

/// Why an archive was refused. Every variant names the offending entry where there is one.
#[derive(Debug, Error)]
pub enum ArchiveError {
    /// The bytes are neither gzip, tar nor zip.
    #[error("the upload is not a .tar.gz, .tar or .zip archive")]
    NotAnArchive,
    /// The archive's structure is broken or truncated.
    #[error("the archive is corrupt: {0}")]
    Corrupt(String),
    /// An entry path is absolute or climbs out with `..`.
    #[error("archive entry {0:?} has an absolute or '..' path that leaves the function's folder")]
    UnsafePath(String),
    /// A symbolic link points outside the unpacked tree.
    #[error("archive entry {path:?} is a link to {target:?}, outside the function's folder")]
    LinkEscapes { path: String, target: String },
    /// Hard links are refused outright.
    #[error("archive entry {0:?} is a hard link; hard links are not allowed")]
    HardLink(String),
    /// Devices, FIFOs, sparse files and other special entries.
    #[error("archive entry {path:?} is a {kind}; only files, folders and symbolic links are allowed")]
    SpecialFile { path: String, kind: String },
    /// More entries than the limit.
    #[error("the archive has more than {0} entries")]
    TooManyEntries(usize),
    /// More unpacked bytes than the limit.
    #[error("the archive unpacks to more than {0} bytes")]
    TooLarge(u64),
    /// An entry repeats another, or would be created through a link or over a file.
    #[error("archive entry {0:?} repeats another entry or passes through a link")]
    Conflict(String),
    /// The server could not write the unpacked files.
    #[error("unpacking failed: {0}")]
    Io(#[from] io::Error),
}

/// What an unpacking wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    pub entries: usize,
    pub bytes: u64,
}

/// Unpacks `archive` into `dest`, an existing empty folder.
pub fn unpack(archive: &[u8], dest: &Path, limits: UnpackLimits) -> Result<Unpacked, ArchiveError> {
    let mut writer = TreeWriter {
        root: dest,
        limits,
        done: Unpacked { entries: 0, bytes: 0 },
    };
    if archive.starts_with(&[0x1f, 0x8b]) {
        unpack_tar(GzDecoder::new(archive), &mut writer)?;
    } else if archive.starts_with(b"PK\x03\x04") || archive.starts_with(b"PK\x05\x06") {
        unpack_zip(archive, &mut writer)?;
    } else if archive.len() >= 512 && &archive[257..262] == b"ustar" {
        unpack_tar(archive, &mut writer)?;
    } else {
        return Err(ArchiveError::NotAnArchive);
    }
    Ok(writer.done)
}

fn corrupt(e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Corrupt(e.to_string())
}

/// Raw tar bytes allowed per entry beyond file contents: header, padding, and the long-name
/// and pax records real tools add.
const TAR_OVERHEAD_PER_ENTRY: u64 = 4096;

fn unpack_tar(reader: impl Read, w: &mut TreeWriter<'_>) -> Result<(), ArchiveError> {
    // The `tar` crate reads long-name and pax records whole into memory before it hands out
    // the entry they describe, so the per-file count never sees them: cap the raw stream too.
    let overhead = (w.limits.max_entries as u64)
        .saturating_add(1)
        .saturating_mul(TAR_OVERHEAD_PER_ENTRY);
    let mut capped = Capped {
        inner: reader,
        left: w.limits.max_bytes.saturating_add(overhead),
        hit: false,
    };
    let result = unpack_tar_entries(&mut capped, w);
    if capped.hit {
        return Err(ArchiveError::TooLarge(w.limits.max_bytes));
    }
    result
}

/// A reader that fails once `left` bytes are used up and more are still coming.
struct Capped<R> {
    inner: R,
    left: u64,
    hit: bool,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 && !buf.is_empty() {
            if self.inner.read(&mut [0])? == 0 {
                return Ok(0);
            }
            self.hit = true;
            return Err(io::Error::other("the archive stream exceeds the size limit"));
        }
        let room = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..room])?;
        self.left -= n as u64;
        Ok(n)
    }
}

fn unpack_tar_entries(reader: impl Read, w: &mut TreeWriter<'_>) -> Result<(), ArchiveError> {
    use tar::EntryType;
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let raw = entry.path().map_err(corrupt)?.to_string_lossy().into_owned();
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            continue;
        }
        w.count_entry()?;
        let Some(rel) = sanitize(&raw)? else { continue };
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                let executable = entry.header().mode().map_err(corrupt)? & 0o111 != 0;
                w.file(&rel, &raw, &mut entry, executable)?;
            }
            EntryType::Directory => w.dir(&rel, &raw)?,
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(corrupt)?
                    .ok_or_else(|| corrupt(format!("link {raw:?} has no target")))?;
                w.symlink(&rel, &raw, &target)?;
            }
            EntryType::Link => return Err(ArchiveError::HardLink(raw)),
            other => {
                let kind = match other {
                    EntryType::Char => "character device".to_owned(),
                    EntryType::Block => "block device".to_owned(),
                    EntryType::Fifo => "FIFO".to_owned(),
                    EntryType::GNUSparse => "sparse file".to_owned(),
                    other => format!("special entry ({other:?})"),
                };
                return Err(ArchiveError::SpecialFile { path: raw, kind });
            }
        }
    }
    Ok(())
}

fn unpack_zip(bytes: &[u8], w: &mut TreeWriter<'_>) -> Result<(), ArchiveError> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(corrupt)?;
    if zip.len() > w.limits.max_entries {
        return Err(ArchiveError::TooManyEntries(w.limits.max_entries));
    }
    for i in 0..zip.len() {
        let mut file = zip.by_index(i).map_err(corrupt)?;
        let raw = file.name().to_owned();
        w.count_entry()?;
        if file.encrypted() {
            return Err(ArchiveError::SpecialFile {
                path: raw,
                kind: "encrypted file".into(),
            });
        }
        let Some(rel) = sanitize(&raw)? else { continue };
        let mode = file.unix_mode().unwrap_or(0);
        if file.is_symlink() {
            let mut target = String::new();
            (&mut file)
                .take(4096)
                .read_to_string(&mut target)
                .map_err(corrupt)?;
            w.symlink(&rel, &raw, Path::new(&target))?;
        } else if file.is_dir() {
            w.dir(&rel, &raw)?;
        } else if mode & 0o170000 == 0 || mode & 0o170000 == 0o100000 {
            w.file(&rel, &raw, &mut file, mode & 0o111 != 0)?;
        } else {
            return Err(ArchiveError::SpecialFile {
                path: raw,
                kind: format!("special entry (mode {mode:o})"),
            });
        }
    }
    Ok(())
}

/// Turns an entry name into a relative path of plain components; `None` for the root itself.
fn sanitize(raw: &str) -> Result<Option<PathBuf>, ArchiveError> {
    if raw.contains('\0') {
        return Err(corrupt(format!("entry name {raw:?} contains a NUL byte")));
    }
    let mut out = PathBuf::new();
    for part in Path::new(raw).components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(ArchiveError::UnsafePath(raw.to_owned()));
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Writes entries below `root`, enforcing the limits and the no-escape rules.
struct TreeWriter<'a> {
    root: &'a Path,
    limits: UnpackLimits,
    done: Unpacked,
}

impl TreeWriter<'_> {
    fn count_entry(&mut self) -> Result<(), ArchiveError> {
        self.done.entries += 1;
        if self.done.entries > self.limits.max_entries {
            return Err(ArchiveError::TooManyEntries(self.limits.max_entries));
        }
        Ok(())
    }

    /// Makes sure every parent of `rel` is a real folder below the root, creating missing ones.
    fn parents(&self, rel: &Path, raw: &str) -> Result<PathBuf, ArchiveError> {
        let mut path = self.root.to_path_buf();
        if let Some(parent) = rel.parent() {
            for part in parent.components() {
                path.push(part);
                match fs::symlink_metadata(&path) {
                    Ok(meta) if meta.is_dir() => {}
                    Ok(_) => return Err(ArchiveError::Conflict(raw.to_owned())),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&path)?,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(path.join(rel.file_name().expect("sanitized paths end in a name")))
    }

    fn file(
        &mut self,
        rel: &Path,
        raw: &str,
        data: &mut impl Read,
        executable: bool,
    ) -> Result<(), ArchiveError> {
        let path = self.parents(rel, raw)?;
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if executable { 0o755 } else { 0o644 })
            .open(&path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => ArchiveError::Conflict(raw.to_owned()),
                _ => e.into(),
            })?;
        let room = self.limits.max_bytes - self.done.bytes;
        let written = io::copy(&mut data.take(room.saturating_add(1)), &mut out).map_err(corrupt)?;
        if written > room {
            return Err(ArchiveError::TooLarge(self.limits.max_bytes));
        }
        self.done.bytes += written;
        Ok(())
    }

    fn dir(&mut self, rel: &Path, raw: &str) -> Result<(), ArchiveError> {
        let path = self.parents(rel, raw)?;
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(ArchiveError::Conflict(raw.to_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(fs::create_dir(&path)?),
            Err(e) => Err(e.into()),
        }
    }

    fn symlink(&mut self, rel: &Path, raw: &str, target: &Path) -> Result<(), ArchiveError> {
        let escapes = || ArchiveError::LinkEscapes {
            path: raw.to_owned(),
            target: target.display().to_string(),
        };
        if target.as_os_str().is_empty() || target.as_os_str().as_encoded_bytes().contains(&0) {
            return Err(corrupt(format!(
                "link {raw:?} has an empty or NUL-holding target"
            )));
        }
        // `..` may only lead the target: after a name it could climb out of a folder that is
        // itself a link. With that rule and parents that are real folders (checked below),
        // counting levels tells where the link really points.
        let mut depth = rel.components().count() - 1;
        let mut descended = false;
        for part in target.components() {
            match part {
                Component::Normal(_) => {
                    depth += 1;
                    descended = true;
                }
                Component::CurDir => {}
                Component::ParentDir if depth > 0 && !descended => depth -= 1,
                _ => return Err(escapes()),
            }
        }
        let path = self.parents(rel, raw)?;
        std::os::unix::fs::symlink(target, &path).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => ArchiveError::Conflict(raw.to_owned()),
            _ => e.into(),
        })
    }
}
