//! `unpack` against hostile uploads: every attack is refused with the right error, and
//! nothing ever appears outside the destination folder, whatever the archive holds.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kl_build::{ArchiveError, UnpackLimits, Unpacked, unpack};
use kl_testkit::archives::{
    Entry, hostile_cases, make_tar, make_tar_gz, make_zip, sample_tree, sample_tree_tar_gz,
};
use proptest::prelude::*;

/// The server's HTTP mapping: (status, code) for each refusal.
fn status_and_code(err: &ArchiveError) -> (u16, &'static str) {
    match err {
        ArchiveError::NotAnArchive => (400, "NotAnArchive"),
        ArchiveError::Corrupt(_) => (400, "ArchiveCorrupt"),
        ArchiveError::UnsafePath(_) => (400, "ArchiveUnsafePath"),
        ArchiveError::LinkEscapes { .. } => (400, "ArchiveLinkEscapes"),
        ArchiveError::HardLink(_) => (400, "ArchiveHardLink"),
        ArchiveError::SpecialFile { .. } => (400, "ArchiveSpecialFile"),
        ArchiveError::Conflict(_) => (400, "ArchiveConflict"),
        ArchiveError::TooManyEntries(_) => (413, "ArchiveTooManyEntries"),
        ArchiveError::TooLarge(_) => (413, "ArchiveTooLarge"),
        ArchiveError::Io(_) => (500, "Internal"),
    }
}

/// What lies below `root`, `skip`'s subtree left out: path → kind, mode and content.
/// Links are recorded, never followed.
fn snapshot(root: &Path, skip: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(path: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, String>) {
        if path == skip {
            return;
        }
        let meta = fs::symlink_metadata(path).expect("stat");
        let mode = meta.permissions().mode();
        let what = if meta.is_symlink() {
            format!("link -> {:?}", fs::read_link(path).expect("readlink"))
        } else if meta.is_dir() {
            let mut children: Vec<_> = fs::read_dir(path)
                .expect("readdir")
                .map(|e| e.expect("entry").path())
                .collect();
            children.sort();
            for child in &children {
                walk(child, skip, out);
            }
            format!("dir {mode:o}")
        } else {
            format!("file {mode:o} {:?}", fs::read(path).expect("read"))
        };
        out.insert(path.to_owned(), what);
    }
    let mut out = BTreeMap::new();
    walk(root, skip, &mut out);
    out
}

/// Every link below `dest` that resolves at all resolves inside `dest`.
fn links_stay_inside(dest: &Path) -> Result<(), String> {
    let root = fs::canonicalize(dest).expect("canonical dest");
    let mut stack = vec![dest.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("readdir") {
            let path = entry.expect("entry").path();
            let meta = fs::symlink_metadata(&path).expect("stat");
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_symlink()
                && let Ok(real) = fs::canonicalize(&path)
                && !real.starts_with(&root)
            {
                return Err(format!("{path:?} resolves to {real:?}, outside {root:?}"));
            }
        }
    }
    Ok(())
}

/// A scratch folder holding a watched `outside` folder (with a file in it) and `dest`.
struct Scratch {
    tmp: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::create_dir(tmp.path().join("outside")).expect("mkdir outside");
        fs::write(tmp.path().join("outside/keep.txt"), "keep\n").expect("write keep.txt");
        fs::write(tmp.path().join("sibling.txt"), "sibling\n").expect("write sibling.txt");
        Scratch { tmp }
    }

    fn outside(&self) -> PathBuf {
        self.tmp.path().join("outside")
    }

    fn dest(&self) -> PathBuf {
        self.tmp.path().join("dest")
    }

    /// Unpacks into a fresh, empty `dest` and checks that nothing else below the scratch
    /// folder changed and that no link in `dest` leads out of it.
    fn unpack(&self, archive: &[u8], limits: UnpackLimits) -> Result<Result<Unpacked, ArchiveError>, String> {
        let dest = self.dest();
        if dest.exists() {
            fs::remove_dir_all(&dest).expect("clear dest");
        }
        fs::create_dir(&dest).expect("mkdir dest");
        let before = snapshot(self.tmp.path(), &dest);
        let result = unpack(archive, &dest, limits);
        let after = snapshot(self.tmp.path(), &dest);
        if before != after {
            let changed: Vec<_> = before
                .keys()
                .chain(after.keys())
                .filter(|p| before.get(*p) != after.get(*p))
                .collect();
            return Err(format!(
                "paths outside dest changed: {changed:?} (result {result:?})"
            ));
        }
        links_stay_inside(&dest)?;
        Ok(result)
    }
}

#[test]
fn hostile_archives_are_refused_and_write_nothing_outside() {
    let scratch = Scratch::new();
    let mut failures = Vec::new();
    for case in hostile_cases(&scratch.outside()) {
        match scratch.unpack(&case.archive, UnpackLimits::default()) {
            Err(escaped) => failures.push(format!("{}: {escaped}", case.name)),
            Ok(Ok(done)) => failures.push(format!("{}: accepted ({done:?})", case.name)),
            Ok(Err(err)) if status_and_code(&err) != (case.status, case.code) => failures.push(format!(
                "{}: expected {} {}, got {:?} ({err})",
                case.name,
                case.status,
                case.code,
                status_and_code(&err)
            )),
            Ok(Err(_)) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn check_sample(dest: &Path) {
    let read = |rel: &str| fs::read_to_string(dest.join(rel)).expect(rel);
    let mode = |rel: &str| fs::metadata(dest.join(rel)).expect(rel).permissions().mode();
    assert_eq!(read("top.txt"), "top\n");
    assert_eq!(read("sub/file.txt"), "file\n");
    assert_eq!(read("sub/bin/run.sh"), "#!/bin/sh\necho hi\n");
    assert_eq!(read("deep/er/implicit.txt"), "parents created on the way\n");
    assert_eq!(
        mode("sub/bin/run.sh") & 0o111,
        0o111,
        "the executable bit is kept"
    );
    assert_eq!(mode("top.txt") & 0o111, 0, "plain files are not executable");
    assert_eq!(
        fs::read_link(dest.join("link")).unwrap(),
        Path::new("sub/file.txt")
    );
    assert_eq!(
        fs::read_link(dest.join("sub/up")).unwrap(),
        Path::new("../top.txt")
    );
    assert_eq!(read("link"), "file\n");
    assert_eq!(read("sub/up"), "top\n");
}

#[test]
fn sample_tree_unpacks_with_contents_modes_and_links() {
    let scratch = Scratch::new();
    let done = scratch
        .unpack(&sample_tree_tar_gz(), UnpackLimits::default())
        .unwrap()
        .expect("the sample tree is valid");
    let entries = sample_tree();
    let bytes: usize = entries
        .iter()
        .map(|e| match e {
            Entry::File { data, .. } => data.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(
        done,
        Unpacked {
            entries: entries.len(),
            bytes: bytes as u64
        }
    );
    check_sample(&scratch.dest());

    for archive in [make_tar(&entries), make_zip(&entries)] {
        scratch
            .unpack(&archive, UnpackLimits::default())
            .unwrap()
            .expect("valid");
        check_sample(&scratch.dest());
    }
}

#[test]
fn custom_limits_are_honoured() {
    let scratch = Scratch::new();
    let limits = UnpackLimits {
        max_entries: 3,
        max_bytes: 10,
    };
    let files = |sizes: &[usize]| -> Vec<Entry> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, n)| Entry::file(format!("f{i}"), vec![b'x'; *n]))
            .collect()
    };
    for build in [make_tar_gz, make_tar, make_zip] {
        let run = |entries: &[Entry]| scratch.unpack(&build(entries), limits).unwrap();
        assert_eq!(
            run(&files(&[3, 3, 4])).unwrap(),
            Unpacked {
                entries: 3,
                bytes: 10
            }
        );
        assert!(matches!(
            run(&files(&[1, 1, 1, 1])),
            Err(ArchiveError::TooManyEntries(3))
        ));
        assert!(matches!(run(&files(&[11])), Err(ArchiveError::TooLarge(10))));
        assert!(matches!(run(&files(&[6, 5])), Err(ArchiveError::TooLarge(10))));
    }
    // "No limit" must not overflow the byte accounting.
    let unlimited = UnpackLimits {
        max_entries: usize::MAX,
        max_bytes: u64::MAX,
    };
    scratch
        .unpack(&sample_tree_tar_gz(), unlimited)
        .unwrap()
        .expect("valid");
    check_sample(&scratch.dest());
}

#[derive(Debug, Clone, Copy)]
enum Format {
    TarGz,
    Tar,
    Zip,
}

/// A path of 1 to 3 parts from a small alphabet, `.` and `..` weighed against plain names by
/// `odd` (names that climb are refused at once, so they must stay rare for the unpacker to get
/// far). `@OUT` stands for the watched outside folder, filled in once the scratch folder exists.
fn path(prefix: impl Strategy<Value = &'static str>, odd: u32) -> impl Strategy<Value = String> {
    let part = prop_oneof![4 => Just("a"), 4 => Just("b"), odd => Just("."), odd => Just("..")];
    (
        prefix,
        prop::collection::vec(part, 1..=3),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(prefix, parts, slash)| {
            format!("{prefix}{}{}", parts.join("/"), if slash { "/" } else { "" })
        })
}

fn entry() -> impl Strategy<Value = Entry> {
    let name = || {
        path(
            prop_oneof![12 => Just(""), 1 => Just("./"), 1 => Just("@OUT/")],
            1,
        )
    };
    let target = path(
        prop_oneof![6 => Just(""), 2 => Just("../"), 1 => Just("@OUT/")],
        3,
    );
    prop_oneof![
        3 => (name(), any::<bool>()).prop_map(|(n, exe)| if exe { Entry::exe(n, "x") } else { Entry::file(n, "x") }),
        2 => name().prop_map(Entry::Dir),
        4 => (name(), target).prop_map(|(n, t)| Entry::symlink(n, t)),
    ]
}

fn fill_in(entry: Entry, outside: &str) -> Entry {
    let fill = |s: String| s.replace("@OUT", outside);
    match entry {
        Entry::File { name, data, mode } => Entry::File {
            name: fill(name),
            data,
            mode,
        },
        Entry::Dir(name) => Entry::Dir(fill(name)),
        Entry::Symlink { name, target } => Entry::Symlink {
            name: fill(name),
            target: fill(target),
        },
        other => other,
    }
}

/// Plain names only, mostly links whose targets mix names with `.` and `..`: the chained-link
/// escapes (`a -> .`, `b -> a/..`) are too rare among fully random entries.
fn link_chain() -> impl Strategy<Value = Vec<Entry>> {
    let name = prop::sample::select(&["a", "b", "a/a", "a/b", "b/a"][..]);
    let part = prop::sample::select(&["a", "b", ".", ".."][..]);
    let target = prop::collection::vec(part, 1..=4).prop_map(|parts| parts.join("/"));
    let entry = prop_oneof![
        4 => (name.clone(), target).prop_map(|(n, t)| Entry::symlink(n, t)),
        1 => name.clone().prop_map(Entry::dir),
        1 => name.prop_map(|n| Entry::file(n, "x")),
    ];
    prop::collection::vec(entry, 1..8)
}

/// Unpacks `entries` in `format` into a fresh scratch folder: success or refusal, nothing
/// outside `dest` may change, every link left in `dest` must stay inside it, and no refusal
/// may be the server's own I/O failure.
fn never_escapes(entries: Vec<Entry>, format: Format) -> Result<(), TestCaseError> {
    let scratch = Scratch::new();
    let outside = scratch.outside();
    let mut entries: Vec<Entry> = entries
        .into_iter()
        .map(|e| fill_in(e, outside.to_str().unwrap()))
        .collect();
    let archive = match format {
        Format::TarGz => make_tar_gz(&entries),
        Format::Tar => make_tar(&entries),
        Format::Zip => {
            // The zip writer refuses repeated names (and adds the slash to folders).
            let mut seen = HashSet::new();
            entries.retain(|e| {
                let name = e.name().to_owned();
                seen.insert(match e {
                    Entry::Dir(_) if !name.ends_with('/') => name + "/",
                    _ => name,
                })
            });
            make_zip(&entries)
        }
    };
    let result = scratch
        .unpack(&archive, UnpackLimits::default())
        .map_err(TestCaseError::fail)?;
    prop_assert!(
        !matches!(result, Err(ArchiveError::Io(_))),
        "server-side error for {entries:?}: {result:?}"
    );
    Ok(())
}

fn format() -> impl Strategy<Value = Format> {
    prop::sample::select(&[Format::TarGz, Format::Tar, Format::Zip][..])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_archives_never_escape(entries in prop::collection::vec(entry(), 0..10), format in format()) {
        never_escapes(entries, format)?;
    }
}

proptest! {
    // Cheap cases, and the dangerous chains are a small share of them.
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn random_link_chains_never_escape(entries in link_chain(), format in format()) {
        never_escapes(entries, format)?;
    }
}
