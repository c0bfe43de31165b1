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
