//! Test-only helpers shared by the workspace's integration tests.
//!
//! Dev-dependency only: nothing here is meant for production code. [`archives`] builds the
//! hostile uploads (path escapes, link tricks, special files, bombs, broken bytes) that the
//! archive unpacker and the upload endpoint must refuse, together with the status and error
//! code the server answers with, so both layers test against the same list. [`postgres`] gives
//! each test a fresh PostgreSQL database of its own; [`s3`] (feature `s3`) runs a real S3
//! protocol server on loopback for the object-store tests.

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
