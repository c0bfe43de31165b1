//! Test archives, including ones no well-behaved tool would write.
//!
//! Entry names and link targets go into the tar header byte for byte: the `tar` crate's own
//! setters refuse `..` and absolute paths, which are exactly what hostile cases need.

use std::io::{self, Cursor, Read, Write};
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;
use tar::{Builder, EntryType, Header};
use zip::ZipWriter;
use zip::write::SimpleFileOptions;

/// One archive entry; names and targets are kept verbatim, however hostile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File { name: String, data: Vec<u8>, mode: u32 },
    Dir(String),
    Symlink { name: String, target: String },
    HardLink { name: String, target: String },
    CharDevice(String),
    BlockDevice(String),
    Fifo(String),
}

impl Entry {
    /// A regular file, mode 0o644.
    pub fn file(name: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        Entry::File {
            name: name.into(),
            data: data.into(),
            mode: 0o644,
        }
    }

    /// An executable file, mode 0o755.
    pub fn exe(name: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        Entry::File {
            name: name.into(),
            data: data.into(),
            mode: 0o755,
        }
    }

    pub fn dir(name: impl Into<String>) -> Self {
        Entry::Dir(name.into())
    }

    pub fn symlink(name: impl Into<String>, target: impl Into<String>) -> Self {
        Entry::Symlink {
            name: name.into(),
            target: target.into(),
        }
    }

    pub fn hard_link(name: impl Into<String>, target: impl Into<String>) -> Self {
        Entry::HardLink {
            name: name.into(),
            target: target.into(),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Entry::File { name, .. }
            | Entry::Dir(name)
            | Entry::Symlink { name, .. }
            | Entry::HardLink { name, .. }
            | Entry::CharDevice(name)
            | Entry::BlockDevice(name)
            | Entry::Fifo(name) => name,
        }
    }
}

/// A ustar header whose `name` and `linkname` fields hold exactly the given bytes.
fn raw_header(name: &str, link: &str, kind: EntryType, mode: u32, size: u64) -> Header {
    fn put(field: &mut [u8; 100], value: &str) {
        assert!(
            value.len() <= field.len(),
            "{value:?} does not fit a 100-byte tar field"
        );
        field[..value.len()].copy_from_slice(value.as_bytes());
    }
    let mut header = Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(1_700_000_000);
    put(&mut header.as_old_mut().name, name);
    put(&mut header.as_old_mut().linkname, link);
    header.set_cksum();
    header
}

fn write_tar<W: Write>(out: W, entries: &[Entry]) -> io::Result<W> {
    let mut tar = Builder::new(out);
    for entry in entries {
        let (kind, mode, link, data): (_, _, &str, &[u8]) = match entry {
            Entry::File { data, mode, .. } => (EntryType::Regular, *mode, "", data),
            Entry::Dir(_) => (EntryType::Directory, 0o755, "", &[]),
            Entry::Symlink { target, .. } => (EntryType::Symlink, 0o777, target, &[]),
            Entry::HardLink { target, .. } => (EntryType::Link, 0o644, target, &[]),
            Entry::CharDevice(_) => (EntryType::Char, 0o644, "", &[]),
            Entry::BlockDevice(_) => (EntryType::Block, 0o644, "", &[]),
            Entry::Fifo(_) => (EntryType::Fifo, 0o644, "", &[]),
        };
        let header = raw_header(entry.name(), link, kind, mode, data.len() as u64);
        tar.append(&header, data)?;
    }
    tar.into_inner()
}

/// A plain (uncompressed) ustar archive.
pub fn make_tar(entries: &[Entry]) -> Vec<u8> {
    write_tar(Vec::new(), entries).expect("writing a tar in memory")
}

/// A gzip-compressed tar archive.
pub fn make_tar_gz(entries: &[Entry]) -> Vec<u8> {
    let gz = GzEncoder::new(Vec::new(), Compression::default());
    write_tar(gz, entries)
        .and_then(GzEncoder::finish)
        .expect("writing a tar.gz in memory")
}

/// A zip archive. Zip has no hard links, devices or FIFOs, so those entries panic; names
/// must be unique (the `zip` writer refuses duplicates).
pub fn make_zip(entries: &[Entry]) -> Vec<u8> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default();
    for entry in entries {
        let written = match entry {
            Entry::File { name, data, mode } => zip
                .start_file(name.as_str(), options.unix_permissions(*mode))
                .and_then(|()| Ok(zip.write_all(data)?)),
            Entry::Dir(name) => zip.add_directory(name.as_str(), options),
            Entry::Symlink { name, target } => zip.add_symlink(name.as_str(), target.as_str(), options),
            other => panic!("a zip archive cannot hold {other:?}"),
        };
        written.expect("writing a zip in memory");
    }
    zip.finish().expect("writing a zip in memory").into_inner()
}

/// A small .tar.gz whose first entry is a `kind` record of `size` zero bytes (then one small
/// file). The zeros are streamed through the encoder, so building it never holds them.
fn zeros_tar_gz(kind: EntryType, size: u64) -> Vec<u8> {
    let mut tar = Builder::new(GzEncoder::new(Vec::new(), Compression::best()));
    let zeros = raw_header("zeros.bin", "", kind, 0o644, size);
    let after = raw_header("after.txt", "", EntryType::Regular, 0o644, 0);
    tar.append(&zeros, io::repeat(0).take(size))
        .and_then(|()| tar.append(&after, io::empty()))
        .and_then(|()| tar.into_inner())
        .and_then(GzEncoder::finish)
        .expect("writing a tar.gz in memory")
}

/// A .tar.gz holding one zero-filled file of `size` bytes.
pub fn tar_gz_bomb(size: u64) -> Vec<u8> {
    zeros_tar_gz(EntryType::Regular, size)
}

/// A small zip holding one deflated zero-filled file of `size` bytes, streamed like
/// [`tar_gz_bomb`].
pub fn zip_bomb(size: u64) -> Vec<u8> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_level(Some(9));
    zip.start_file("zeros.bin", options)
        .and_then(|()| Ok(io::copy(&mut io::repeat(0).take(size), &mut zip)?))
        .and_then(|_| zip.finish())
        .expect("writing a zip bomb in memory")
        .into_inner()
}

/// An archive the unpacker must refuse, with the HTTP status and error code the server
/// answers with.
#[derive(Debug, Clone)]
pub struct HostileCase {
    pub name: &'static str,
    pub archive: Vec<u8>,
    pub status: u16,
    pub code: &'static str,
}

const NOT_AN_ARCHIVE: (u16, &str) = (400, "NotAnArchive");
const CORRUPT: (u16, &str) = (400, "ArchiveCorrupt");
const UNSAFE_PATH: (u16, &str) = (400, "ArchiveUnsafePath");
const LINK_ESCAPES: (u16, &str) = (400, "ArchiveLinkEscapes");
const HARD_LINK: (u16, &str) = (400, "ArchiveHardLink");
const SPECIAL_FILE: (u16, &str) = (400, "ArchiveSpecialFile");
const CONFLICT: (u16, &str) = (400, "ArchiveConflict");
const TOO_MANY_ENTRIES: (u16, &str) = (413, "ArchiveTooManyEntries");
const TOO_LARGE: (u16, &str) = (413, "ArchiveTooLarge");

/// Every attack the unpacker must refuse under the default limits (10,000 entries,
/// 200 MiB). Cases with absolute paths or links aim inside `outside`, an absolute folder the
/// caller watches to prove nothing appeared there.
pub fn hostile_cases(outside: &Path) -> Vec<HostileCase> {
    assert!(outside.is_absolute(), "{outside:?} must be absolute");
    let root = outside.to_str().expect("a UTF-8 path");
    let out = |rel: &str| format!("{root}/{rel}");
    let case = |name, archive, (status, code)| HostileCase {
        name,
        archive,
        status,
        code,
    };
    let file = |name: &str| Entry::file(name, "pwned\n");
    // Pseudo-random bytes, so that half of the compressed stream is half of the file.
    let noise: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut truncated = make_tar_gz(&[Entry::file("noise.bin", noise)]);
    truncated.truncate(truncated.len() / 2);
    let many: Vec<Entry> = (0..10_001).map(|i| Entry::file(format!("f{i}"), "")).collect();

    vec![
        case("parent path", make_tar_gz(&[file("../escape.txt")]), UNSAFE_PATH),
        case(
            "nested parent path",
            make_tar_gz(&[file("a/../../escape.txt")]),
            UNSAFE_PATH,
        ),
        case(
            "plain tar parent path",
            make_tar(&[file("../escape.txt")]),
            UNSAFE_PATH,
        ),
        case(
            "absolute path",
            make_tar_gz(&[file(&out("abs.txt"))]),
            UNSAFE_PATH,
        ),
        case(
            "absolute symlink",
            make_tar_gz(&[Entry::symlink("abs", out("target.txt"))]),
            LINK_ESCAPES,
        ),
        case(
            "symlink up",
            make_tar_gz(&[Entry::symlink("up", "../..")]),
            LINK_ESCAPES,
        ),
        // `z` looks like `.` lexically, but `a/l` is the root, so `z` is two levels above it.
        case(
            "chained link escape",
            make_tar_gz(&[
                Entry::dir("a/"),
                Entry::symlink("a/l", ".."),
                Entry::symlink("z", "a/l/../.."),
            ]),
            LINK_ESCAPES,
        ),
        case(
            "write through a link outside",
            make_tar_gz(&[Entry::symlink("d", root), file("d/x.txt")]),
            LINK_ESCAPES,
        ),
        // The link itself is fine; writing below it is not, whatever it points at.
        case(
            "write through an in-tree link",
            make_tar_gz(&[Entry::dir("sub/"), Entry::symlink("d", "sub"), file("d/x.txt")]),
            CONFLICT,
        ),
        case(
            "folder over a link",
            make_tar_gz(&[Entry::symlink("d", "sub"), Entry::dir("d/")]),
            CONFLICT,
        ),
        case(
            "hard link",
            make_tar(&[file("f.txt"), Entry::hard_link("h", "f.txt")]),
            HARD_LINK,
        ),
        case(
            "hard link outside",
            make_tar_gz(&[Entry::hard_link("h", out("victim.txt"))]),
            HARD_LINK,
        ),
        case(
            "char device",
            make_tar(&[Entry::CharDevice("null".into())]),
            SPECIAL_FILE,
        ),
        case(
            "block device",
            make_tar_gz(&[Entry::BlockDevice("sda".into())]),
            SPECIAL_FILE,
        ),
        case("fifo", make_tar_gz(&[Entry::Fifo("pipe".into())]), SPECIAL_FILE),
        case(
            "duplicate file",
            make_tar_gz(&[file("x.txt"), file("./x.txt")]),
            CONFLICT,
        ),
        case(
            "file over a folder",
            make_tar_gz(&[Entry::dir("x/"), file("x")]),
            CONFLICT,
        ),
        case("10,001 entries", make_tar_gz(&many), TOO_MANY_ENTRIES),
        case("gzip bomb", tar_gz_bomb((200 << 20) + 1), TOO_LARGE),
        // The `tar` crate reads long-name and pax records whole into memory before handing
        // out the entry they describe, out of sight of the per-file count. 512 MiB is far
        // beyond the byte limit plus any allowance for headers.
        case(
            "long-name bomb",
            zeros_tar_gz(EntryType::GNULongName, 512 << 20),
            TOO_LARGE,
        ),
        case(
            "pax header bomb",
            zeros_tar_gz(EntryType::XHeader, 512 << 20),
            TOO_LARGE,
        ),
        case("zip parent path", make_zip(&[file("../escape.txt")]), UNSAFE_PATH),
        case(
            "zip absolute path",
            make_zip(&[file(&out("abs.txt"))]),
            UNSAFE_PATH,
        ),
        case(
            "zip symlink escape",
            make_zip(&[Entry::symlink("l", "../../etc"), file("l/x.txt")]),
            LINK_ESCAPES,
        ),
        case(
            "zip write through a link outside",
            make_zip(&[Entry::symlink("d", root), file("d/x.txt")]),
            LINK_ESCAPES,
        ),
        case(
            "zip link without target",
            make_zip(&[Entry::symlink("l", "")]),
            CORRUPT,
        ),
        case("zip NUL in a name", make_zip(&[file("a\0b")]), CORRUPT),
        case(
            "zip NUL in a link target",
            make_zip(&[Entry::symlink("l", "a\0b")]),
            CORRUPT,
        ),
        case("zip bomb", zip_bomb((200 << 20) + 1), TOO_LARGE),
        case("truncated tar.gz", truncated, CORRUPT),
        case(
            "corrupt zip",
            b"PK\x03\x04 this is not really a zip file".to_vec(),
            CORRUPT,
        ),
        case(
            "plain text",
            b"hello, this is not an archive\n".to_vec(),
            NOT_AN_ARCHIVE,
        ),
        case("empty upload", Vec::new(), NOT_AN_ARCHIVE),
    ]
}

/// A valid tree with nested folders, an executable and in-tree links; must unpack as is.
pub fn sample_tree() -> Vec<Entry> {
    vec![
        Entry::dir("./"),
        Entry::file("top.txt", "top\n"),
        Entry::dir("sub/"),
        Entry::file("sub/file.txt", "file\n"),
        Entry::dir("sub/bin/"),
        Entry::exe("sub/bin/run.sh", "#!/bin/sh\necho hi\n"),
        Entry::file("deep/er/implicit.txt", "parents created on the way\n"),
        Entry::symlink("link", "sub/file.txt"),
        Entry::symlink("sub/up", "../top.txt"),
    ]
}

/// [`sample_tree`] as a .tar.gz.
pub fn sample_tree_tar_gz() -> Vec<u8> {
    make_tar_gz(&sample_tree())
}
