//! Test-only helpers shared by the workspace's integration tests.
//!
//! Dev-dependency only: nothing here is meant for production code. [`archives`] builds the
//! hostile uploads (path escapes, link tricks, special files, bombs, broken bytes) that the
//! archive unpacker and the upload endpoint must refuse, together with the status and error
//! code the server answers with, so both layers test against the same list. [`postgres`] gives
//! each test a fresh PostgreSQL database of its own; [`s3`] (feature `s3`) runs a real S3
//! protocol server on loopback for the object-store tests. [`unique`] names what tests create
//! (databases, tenants, queues) so that parallel tests and test processes never meet.

pub mod archives;
pub mod postgres;
#[cfg(feature = "s3")]
pub mod s3;

/// The URL of a real server a test variant needs, from `var`. Unset: `None`, having printed a
/// SKIPPED line naming `what` and an `example` value; in CI (`CI` set) that panics instead,
/// since `.ci/run` starts every such server and CI must run every variant.
pub fn service_url(var: &str, what: &str, example: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{var} is unset in CI: {what} must run there (.ci/run starts the server and exports it)")
        }
        _ => {
            // Straight to stderr: libtest captures `eprintln!` of passing tests.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED {what}: set {var}={example} to run it");
            None
        }
    }
}

/// `prefix` followed by a suffix no other call, test thread or test process gets: the process
/// id and the clock's nanoseconds as 8 lowercase hex digits each, then a per-process counter in
/// decimal. The suffix is only lowercase hex and digits (17 to 26 characters), so the name is
/// whatever `prefix` makes it: with `kl_test_`, a PostgreSQL identifier that needs no quoting;
/// with a lowercase letter first, a DNS label that fits a kl tenant or function name.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}{:08x}{nanos:08x}{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
