//! The object store: uploads, sources, build contexts and archives, in the data dir (the
//! default) or in an S3 bucket (`kl server --store s3://BUCKET[/PREFIX]`), so that servers
//! on different machines can share them.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;

/// Where objects are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Objects {
    /// `objects/` in the data dir.
    #[default]
    Local,
    /// An S3 bucket, every key under `prefix` (empty: the bucket's root). Credentials,
    /// endpoint and region come from the standard `AWS_*` environment.
    S3 { bucket: String, prefix: String },
}

/// A `--store` value that is not a store URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectsUrlError {
    /// Anything but `s3://…` (a path, another cloud's scheme).
    #[error("--store takes s3://BUCKET[/PREFIX]; {0:?} is not an s3:// URL")]
    Scheme(String),
    /// A bucket name S3 would refuse (so it cannot exist).
    #[error(
        "{0:?} is not an S3 bucket name: 3 to 63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit"
    )]
    Bucket(String),
    /// A prefix that would make keys with empty or relative segments.
    #[error("the store prefix {0:?} has an empty, `.` or `..` segment")]
    Prefix(String),
}

impl Objects {
    /// Parses `s3://BUCKET[/PREFIX]` (a trailing `/` is ignored).
    pub fn parse(url: &str) -> Result<Objects, ObjectsUrlError> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| ObjectsUrlError::Scheme(url.to_owned()))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if !valid_bucket(bucket) {
            return Err(ObjectsUrlError::Bucket(bucket.to_owned()));
        }
        if !prefix.is_empty() && prefix.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
            return Err(ObjectsUrlError::Prefix(prefix.to_owned()));
        }
        Ok(Objects::S3 {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }
}

impl fmt::Display for Objects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Objects::Local => f.write_str("local"),
            Objects::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Objects::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// S3's bucket naming rules (the general-purpose subset: no dots next to each other).
fn valid_bucket(name: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && edge(name.chars().next())
        && edge(name.chars().last())
        && !name.contains("..")
}

/// Why the object store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    /// The data dir's `objects/` folder cannot be created (permissions, read-only disk).
    #[error("cannot create the object store's folder {path}: {source}")]
    LocalDir { path: String, source: std::io::Error },
    /// The store's settings are invalid (e.g. a malformed `AWS_ENDPOINT`).
    #[error("cannot open the object store: {0}")]
    Open(#[from] object_store::Error),
    /// The endpoint answers, but has no such bucket.
    #[error("the S3 bucket {bucket:?} does not exist (check --store and AWS_ENDPOINT)")]
    NoBucket { bucket: String },
    /// The endpoint refuses the credentials or their rights on the bucket.
    #[error(
        "access to the S3 bucket {bucket:?} is denied (check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or the role, and AWS_REGION): {reason}"
    )]
    Denied { bucket: String, reason: String },
    /// No usable answer: nothing listens, TLS fails, the endpoint errs or is too slow.
    #[error(
        "the S3 bucket {bucket:?} is unreachable (check AWS_ENDPOINT, AWS_REGION and the credentials; AWS_ALLOW_HTTP=true for http://): {reason}"
    )]
    Unreachable { bucket: String, reason: String },
}

/// How long the start-up check may take before the bucket counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// Opens the configured store: `local_dir` for [`Objects::Local`], the bucket (configured
/// from the `AWS_*` environment) for [`Objects::S3`].
pub async fn open(objects: &Objects, local_dir: &Path) -> Result<Arc<dyn ObjectStore>, ObjectsError> {
    match objects {
        Objects::Local => {
            std::fs::create_dir_all(local_dir).map_err(|source| ObjectsError::LocalDir {
                path: local_dir.display().to_string(),
                source,
            })?;
            Ok(Arc::new(LocalFileSystem::new_with_prefix(local_dir)?))
        }
        Objects::S3 { bucket, prefix } => open_s3(AmazonS3Builder::from_env(), bucket, prefix).await,
    }
}

/// Opens `bucket` with `builder`'s settings, keys under `prefix`, and checks that the bucket
/// answers, so a wrong endpoint, bucket or credential fails at start and not at the first
/// deploy. The check lists the prefix: unlike a HEAD of a missing key, a listing tells a
/// missing bucket apart.
pub async fn open_s3(
    builder: AmazonS3Builder,
    bucket: &str,
    prefix: &str,
) -> Result<Arc<dyn ObjectStore>, ObjectsError> {
    let builder = builder.with_bucket_name(bucket);
    // The check fails fast; the store itself keeps the default retries.
    let probe = builder
        .clone()
        .with_retry(object_store::RetryConfig {
            max_retries: 1,
            retry_timeout: PROBE_TIMEOUT,
            ..Default::default()
        })
        .build()?;
    let probe = scoped(probe, prefix);
    match tokio::time::timeout(PROBE_TIMEOUT, probe.list_with_delimiter(None)).await {
        Ok(Ok(_)) => Ok(scoped(builder.build()?, prefix)),
        Ok(Err(e)) => Err(probe_failure(bucket, &e)),
        Err(_) => Err(ObjectsError::Unreachable {
            bucket: bucket.to_owned(),
            reason: format!("no answer within {PROBE_TIMEOUT:?}"),
        }),
    }
}

/// What a failed start-up listing means. object_store reports list failures as `Generic`
/// errors carrying the S3 response, so the S3 error code (or the HTTP status) is read from
/// the message when the error kind does not say.
fn probe_failure(bucket: &str, e: &object_store::Error) -> ObjectsError {
    let bucket = bucket.to_owned();
    let reason = e.to_string();
    let says = |signals: &[&str]| signals.iter().any(|s| reason.contains(s));
    match e {
        object_store::Error::NotFound { .. } => ObjectsError::NoBucket { bucket },
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
            ObjectsError::Denied { bucket, reason }
        }
        _ if says(&["<Code>NoSuchBucket</Code>", "404 Not Found"]) => ObjectsError::NoBucket { bucket },
        _ if says(&[
            "<Code>AccessDenied</Code>",
            "<Code>SignatureDoesNotMatch</Code>",
            "<Code>InvalidAccessKeyId</Code>",
            "403 Forbidden",
            "401 Unauthorized",
        ]) =>
        {
            ObjectsError::Denied { bucket, reason }
        }
        _ => ObjectsError::Unreachable { bucket, reason },
    }
}

fn scoped(store: impl ObjectStore, prefix: &str) -> Arc<dyn ObjectStore> {
    if prefix.is_empty() {
        Arc::new(store)
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    }
}

/// The keys the server stores objects under; one tenant's objects share a prefix.
pub mod keys {
    /// A deployed revision's source archive, by content digest.
    pub fn source(tenant: &str, function: &str, digest: &str) -> String {
        format!("sources/{tenant}/{function}/{digest}.archive")
    }

    /// A tenant's upload for command events (`kl events upload`).
    pub fn upload(tenant: &str, name: &str) -> String {
        format!("uploads/{tenant}/{name}")
    }

    /// Everything a tenant uploaded; listing it counts against the storage quota.
    pub fn uploads(tenant: &str) -> String {
        format!("uploads/{tenant}")
    }

    /// A revision's container build context (source, shim, Dockerfile), for Kaniko.
    pub fn context(tenant: &str, function: &str, number: i64) -> String {
        format!("contexts/{tenant}/{function}/{number}.tar.gz")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn store_urls_name_a_bucket_and_an_optional_prefix() {
        let s3 = |bucket: &str, prefix: &str| Objects::S3 {
            bucket: bucket.into(),
            prefix: prefix.into(),
        };
        for (url, want) in [
            ("s3://kl-objects", s3("kl-objects", "")),
            ("s3://kl-objects/", s3("kl-objects", "")),
            ("s3://kl.objects-1/prd", s3("kl.objects-1", "prd")),
            ("s3://abc/a/b/c/", s3("abc", "a/b/c")),
        ] {
            assert_eq!(Objects::parse(url), Ok(want), "{url}");
        }
        for (url, want) in [
            ("/var/lib/kl", ObjectsUrlError::Scheme("/var/lib/kl".into())),
            ("S3://bucket", ObjectsUrlError::Scheme("S3://bucket".into())),
            ("gs://bucket", ObjectsUrlError::Scheme("gs://bucket".into())),
            ("s3://", ObjectsUrlError::Bucket("".into())),
            ("s3://ab", ObjectsUrlError::Bucket("ab".into())),
            ("s3://My-Bucket", ObjectsUrlError::Bucket("My-Bucket".into())),
            ("s3://-bucket", ObjectsUrlError::Bucket("-bucket".into())),
            ("s3://bu..cket", ObjectsUrlError::Bucket("bu..cket".into())),
            (
                "s3://user:pw@bucket",
                ObjectsUrlError::Bucket("user:pw@bucket".into()),
            ),
            ("s3://bucket//x", ObjectsUrlError::Prefix("/x".into())),
            ("s3://bucket/a/../b", ObjectsUrlError::Prefix("a/../b".into())),
            ("s3://bucket/./b", ObjectsUrlError::Prefix("./b".into())),
        ] {
            assert_eq!(Objects::parse(url), Err(want), "{url}");
        }
    }

    #[test]
    fn failed_listings_name_the_cause() {
        let generic = |text: &str| object_store::Error::Generic {
            store: "S3",
            source: text.into(),
        };
        let cause = |e: object_store::Error| match probe_failure("b", &e) {
            ObjectsError::NoBucket { .. } => "missing",
            ObjectsError::Denied { .. } => "denied",
            ObjectsError::Unreachable { .. } => "unreachable",
            other => panic!("{other}"),
        };
        let s3 = |status: &str, code: &str| {
            generic(&format!(
                "Error performing list request: Server returned non-2xx status code: {status}: <Error><Code>{code}</Code></Error>"
            ))
        };
        assert_eq!(cause(s3("404 Not Found", "NoSuchBucket")), "missing");
        assert_eq!(cause(s3("403 Forbidden", "SignatureDoesNotMatch")), "denied");
        assert_eq!(cause(s3("403 Forbidden", "AccessDenied")), "denied");
        assert_eq!(cause(s3("400 Bad Request", "InvalidAccessKeyId")), "denied");
        assert_eq!(
            cause(s3("500 Internal Server Error", "InternalError")),
            "unreachable"
        );
        assert_eq!(
            cause(generic("error sending request: connection refused")),
            "unreachable"
        );
        let denied = object_store::Error::PermissionDenied {
            path: "x".into(),
            source: "no".into(),
        };
        assert_eq!(cause(denied), "denied");
    }

    #[test]
    fn keys_of_one_tenant_share_its_prefix() {
        assert_eq!(keys::upload("acme", "app.tar.gz"), "uploads/acme/app.tar.gz");
        assert!(keys::upload("acme", "x").starts_with(&format!("{}/", keys::uploads("acme"))));
        assert_eq!(
            keys::source("acme", "hello", "ab12"),
            "sources/acme/hello/ab12.archive"
        );
        assert_eq!(keys::context("acme", "hello", 3), "contexts/acme/hello/3.tar.gz");
    }

    proptest! {
        #[test]
        fn valid_urls_print_back_as_themselves(
            bucket in "[a-z0-9][a-z0-9-]{1,40}[a-z0-9]",
            prefix in proptest::collection::vec("[a-zA-Z0-9_=-][a-zA-Z0-9._=-]{0,12}", 0..4),
        ) {
            let url = if prefix.is_empty() {
                format!("s3://{bucket}")
            } else {
                format!("s3://{bucket}/{}", prefix.join("/"))
            };
            prop_assert_eq!(Objects::parse(&url).unwrap().to_string(), url);
        }

        #[test]
        fn any_text_parses_or_is_refused_without_panicking(url in "s3://\\PC{0,80}") {
            if let Ok(objects) = Objects::parse(&url) {
                prop_assert_eq!(Objects::parse(&objects.to_string()), Ok(objects));
            }
        }
    }
}
