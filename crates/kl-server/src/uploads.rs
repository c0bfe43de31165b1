//! `PUT /v1/tenants/{t}/uploads/{name}`: puts a source archive in the platform's object store
//! under `uploads/{t}/{name}`, the first step of the seed workflow ("upload the code to object
//! storage, send `command.build.start`"). Uploads count against the tenant's storage quota.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use futures_util::TryStreamExt;
use http::StatusCode;
use kl_api::Uploaded;
use kl_core::{Action, Quota, admit};
use object_store::ObjectStoreExt;

use crate::auth::Caller;
use crate::deploy::read_limited;
use crate::error::ApiError;
use crate::state::AppState;

/// Longest upload name.
const MAX_NAME: usize = 128;

/// A file name: letters, digits, `.`, `_` and `-`, not starting with a dot.
fn check_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "InvalidName",
            format!(
                "upload name {name:?} is invalid: use 1 to {MAX_NAME} letters, digits, '.', '_' and '-', not starting with '.'"
            ),
        ))
    }
}

/// Bytes the tenant keeps under `uploads/`.
async fn uploaded_bytes(state: &AppState, tenant: &str) -> Result<u64, ApiError> {
    let prefix = crate::objects::keys::uploads(tenant);
    let sizes: Vec<u64> = state
        .objects
        .list(Some(&prefix.as_str().into()))
        .map_ok(|meta| meta.size)
        .try_collect()
        .await?;
    Ok(sizes.into_iter().sum())
}

/// Stores (or replaces) an upload; answers 201 with the key to name in a command.
pub(crate) async fn put_upload(
    State(state): State<Arc<AppState>>,
    Path((tenant, name)): Path<(String, String)>,
    caller: Caller,
    body: Body,
) -> Result<(StatusCode, Json<Uploaded>), ApiError> {
    let principal = state.authorize(&caller, Action::Deploy, Some(&tenant)).await?;
    check_name(&name)?;
    let (spec, _) = state.tenant_limits(&tenant).await?;
    let archive = read_limited(body, state.config.max_upload_bytes).await?;
    let key = crate::objects::keys::upload(&tenant, &name);
    let replaced = match state.objects.head(&key.as_str().into()).await {
        Ok(meta) => meta.size,
        Err(_) => 0,
    };
    let used = state.store.stored_bytes(&tenant).await? + uploaded_bytes(&state, &tenant).await? - replaced;
    let bytes = archive.len() as u64;
    admit(&tenant, Quota::Storage, used, bytes, spec.quotas.storage.0)?;
    state.objects.put(&key.as_str().into(), archive.into()).await?;
    tracing::info!(%tenant, %key, bytes, token = %principal.token_id, "source uploaded");
    Ok((StatusCode::CREATED, Json(Uploaded { key, bytes })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_names_are_plain_file_names() {
        for ok in ["hello.tar.gz", "v1_2-3.zip", "a"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "../x", "a b", "é.zip", &"x".repeat(129)] {
            assert_eq!(check_name(bad).unwrap_err().code, "InvalidName", "{bad}");
        }
    }
}
