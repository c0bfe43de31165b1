//! Tenant secrets: the write-only API (`PUT`, list, `DELETE`), sealing under the platform
//! key ([`crypto`], [`keyfile`]), key rotation, the check that a deploy's secrets exist, the
//! source that opens a function's secrets when one of its instances starts, and the roll of
//! a new revision for each function using a secret that changed. Values are never logged,
//! never put in events, errors or responses.

mod crypto;
mod keyfile;

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use axum::Json;
use axum::extract::{Path, State};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http::StatusCode;
use kl_api::{KeyRotated, PutSecret, SecretList, SecretSet, SecretView};
use kl_core::{Action, SecretUse, check_secret};
use kl_runtime::{InstanceSecrets, SecretFile, SecretSource};
use kl_store::{SealedValue, SecretRecord, Store};

use crate::ServerError;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use crypto::{Key, Keyring, Place, Sealed};
use keyfile::KeySource;

/// The platform's secrets keys, and where they come from.
pub(crate) struct Vault {
    ring: ArcSwap<Keyring>,
    source: KeySource,
    /// One rotation at a time.
    rotating: tokio::sync::Mutex<()>,
}

impl Vault {
    /// Loads the keys from `KL_SECRETS_KEY` (`env`) or the key file, creating it at first start.
    pub(crate) fn open(env: Option<&str>, key_file: &std::path::Path) -> Result<Vault, ServerError> {
        let (ring, source) =
            keyfile::load(env, key_file).map_err(|e| ServerError::SecretsKey(e.to_string()))?;
        Ok(Vault {
            ring: ArcSwap::from_pointee(ring),
            source,
            rotating: tokio::sync::Mutex::new(()),
        })
    }

    fn seal(&self, place: Place<'_>, value: &str) -> SealedValue {
        let Sealed { key_id, blob } = self.ring.load().seal(place, value.as_bytes());
        SealedValue {
            key: place.key.to_owned(),
            key_id,
            sealed: blob,
        }
    }

    fn open_value(&self, place: Place<'_>, value: &SealedValue) -> Result<Vec<u8>, crypto::CryptoError> {
        self.ring.load().open(
            place,
            &Sealed {
                key_id: value.key_id.clone(),
                blob: value.sealed.clone(),
            },
        )
    }
}

/// The ids of the keys `KL_SECRETS_KEY` (`env`) or an existing key file holds, for a restore
/// to check before it writes anything.
pub(crate) fn key_ids(env: Option<&str>, key_file: &std::path::Path) -> Result<Vec<String>, String> {
    let (ring, _) = keyfile::load(env, key_file).map_err(|e| e.to_string())?;
    Ok(ring.keys().iter().map(|k| k.id().to_owned()).collect())
}

/// Re-encrypts every value not sealed under the current key, then drops the older keys from
/// the key file. Run at start (it finishes a rotation a crash interrupted, or one asked for
/// by putting a new key first in `KL_SECRETS_KEY`) and by a rotation. Returns how many
/// values were re-encrypted.
pub(crate) async fn reencrypt(store: &Store, vault: &Vault) -> Result<u64, ServerError> {
    let current = vault.ring.load().current().id().to_owned();
    let mut done = 0;
    for stored in store.values_not_under(&current).await? {
        let place = Place {
            tenant: &stored.tenant,
            secret: &stored.name,
            key: &stored.value.key,
        };
        let plain = vault.open_value(place, &stored.value).map_err(|e| {
            ServerError::SecretsKey(format!(
                "secret {:?} of tenant {:?}: {e}",
                stored.name, stored.tenant
            ))
        })?;
        let text = String::from_utf8(plain).map_err(|_| {
            ServerError::SecretsKey(format!(
                "secret {:?} of tenant {:?} is not UTF-8",
                stored.name, stored.tenant
            ))
        })?;
        let new = vault.seal(place, &text);
        if store
            .reseal(&stored.tenant, &stored.name, &stored.value, &new)
            .await?
        {
            done += 1;
        }
    }
    let ring = vault.ring.load_full();
    if ring.keys().len() > 1
        && let KeySource::File(path) = &vault.source
    {
        let only = Keyring::new(vec![ring.current().clone()]);
        keyfile::save(path, &only)
            .map_err(|e| ServerError::SecretsKey(format!("{}: {e}", path.display())))?;
        vault.ring.store(Arc::new(only));
    }
    if done > 0 {
        tracing::info!(values = done, key = %current, "secrets re-encrypted under the current key");
    }
    Ok(done)
}

/// `PUT /v1/tenants/{t}/secrets/{name}`: creates or replaces a secret, then rolls a new
/// revision of each function that uses it.
pub(crate) async fn put(
    State(state): State<Arc<AppState>>,
    Path((tenant, name)): Path<(String, String)>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<SecretSet>, ApiError> {
    let principal = state
        .authorize(&caller, Action::ManageSecrets, Some(&tenant))
        .await?;
    state.require_tenant(&tenant).await?;
    // serde's messages may quote the offending input: say where, never what.
    let request: PutSecret = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "InvalidRequest",
            format!(
                "the request body must be {{\"data\": {{\"KEY\": \"value\", …}}}} with string values (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    let limits = state.config.secret_limits;
    check_secret(&name, &request.data, &limits)
        .map_err(|e| ApiError::bad_request("InvalidSecret", e.to_string()))?;
    let sealed: Vec<SealedValue> = request
        .data
        .iter()
        .map(|(key, value)| {
            let place = Place {
                tenant: &tenant,
                secret: &name,
                key,
            };
            state.vault.seal(place, value)
        })
        .collect();
    drop(request);
    let record = state
        .store
        .put_secret(&tenant, &name, &sealed, limits.max_per_tenant)
        .await?;
    tracing::info!(%tenant, secret = %name, version = record.version, token = %principal.token_id, "secret set");
    let (rolled, failed) = roll(&state, &tenant, &name).await?;
    Ok(Json(SecretSet {
        secret: view(record),
        rolled,
        failed,
    }))
}

/// `GET /v1/tenants/{t}/secrets`: names, keys and versions.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    caller: Caller,
) -> Result<Json<SecretList>, ApiError> {
    state
        .authorize(&caller, Action::ReadSecrets, Some(&tenant))
        .await?;
    state.require_tenant(&tenant).await?;
    let secrets = state
        .store
        .secrets(&tenant)
        .await?
        .into_iter()
        .map(view)
        .collect();
    Ok(Json(SecretList { secrets }))
}

/// `DELETE /v1/tenants/{t}/secrets/{name}`: refused (409) while a function uses it.
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    Path((tenant, name)): Path<(String, String)>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    let principal = state
        .authorize(&caller, Action::ManageSecrets, Some(&tenant))
        .await?;
    let users: Vec<String> = users(&state, &tenant, &name)
        .await?
        .into_iter()
        .map(|(function, _)| function)
        .collect();
    if !users.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "SecretInUse",
            format!(
                "secret {name:?} is used by function(s) {}; deploy them without it (or delete them) first",
                users.join(", ")
            ),
        ));
    }
    if !state.store.delete_secret(&tenant, &name).await? {
        return Err(ApiError::not_found(format!(
            "secret {name:?} not found in tenant {tenant:?}"
        )));
    }
    tracing::info!(%tenant, secret = %name, token = %principal.token_id, "secret deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/admin/rotate-secrets-key`: a new current key; every value re-encrypted under
/// it; the old key kept in the key file until that is done.
pub(crate) async fn rotate_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<KeyRotated>, ApiError> {
    let principal = state.authorize(&caller, Action::RotateSecretsKey, None).await?;
    let vault = &state.vault;
    let KeySource::File(path) = &vault.source else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "KeyFromEnvironment",
            "the secrets key comes from KL_SECRETS_KEY: put a new key first in it (KL_SECRETS_KEY=NEW,OLD) and restart the server; it re-encrypts every secret under NEW at start, after which OLD can go",
        ));
    };
    let _one = vault.rotating.lock().await;
    let old = vault.ring.load_full();
    let mut keys = vec![Key::generate()];
    keys.extend(old.keys().iter().cloned());
    let ring = Keyring::new(keys);
    keyfile::save(path, &ring)
        .map_err(|e| ApiError::internal(format!("cannot write {}: {e}", path.display())))?;
    let key_id = ring.current().id().to_owned();
    vault.ring.store(Arc::new(ring));
    let reencrypted = reencrypt(&state.store, vault).await.map_err(ApiError::internal)?;
    tracing::info!(key = %key_id, reencrypted, token = %principal.token_id, "secrets key rotated");
    Ok(Json(KeyRotated { key_id, reencrypted }))
}

fn view(record: SecretRecord) -> SecretView {
    SecretView {
        name: record.name,
        keys: record.keys,
        version: record.version,
        created_at: record.created_at,
        updated_at: record.updated_at,
    }
}

/// Functions of `tenant` whose serving revision uses secret `name`, with that revision.
async fn users(state: &AppState, tenant: &str, name: &str) -> Result<Vec<(String, i64)>, ApiError> {
    let mut found = Vec::new();
    for function in state.store.functions(Some(tenant)).await? {
        let Some(number) = function.serving_revision else {
            continue;
        };
        let rev = state.store.revision(tenant, &function.name, number).await?;
        if rev.spec.is_some_and(|spec| spec.secrets.uses(name)) {
            found.push((function.name, number));
        }
    }
    Ok(found)
}

/// Rolls a new revision (a copy of the serving one: same artifact, no build) for each
/// function using secret `name`, so that its instances restart with the new values. Returns
/// the revisions now serving, and the functions whose new revision did not start.
async fn roll(
    state: &Arc<AppState>,
    tenant: &str,
    name: &str,
) -> Result<(Vec<String>, Vec<String>), ApiError> {
    let outcomes: Vec<Result<String, String>> = futures_util::stream::iter(users(state, tenant, name).await?)
        .map(|(function, serving)| roll_one(state, tenant, name, function, serving))
        .buffer_unordered(ROLL_CONCURRENCY)
        .try_collect()
        .await?;
    let (mut rolled, mut failed) = (Vec::new(), Vec::new());
    for outcome in outcomes {
        match outcome {
            Ok(revision) => rolled.push(revision),
            Err(failure) => failed.push(failure),
        }
    }
    rolled.sort();
    failed.sort();
    Ok((rolled, failed))
}

/// Functions rolled at once after a secret changes: each waits for its copy's readiness check.
const ROLL_CONCURRENCY: usize = 4;

/// Serves a copy of `function`'s serving revision; `Err` says why it did not start (the old
/// one keeps serving).
async fn roll_one(
    state: &Arc<AppState>,
    tenant: &str,
    name: &str,
    function: String,
    serving: i64,
) -> Result<Result<String, String>, ApiError> {
    let at = kl_store::RevisionAt {
        tenant,
        function: &function,
    };
    let copy = state.store.copy_revision(at, serving, at, None).await?;
    let linked = crate::deploy::link_artifact(
        state,
        (tenant, &function, serving),
        (tenant, &function, copy.number),
    )
    .await;
    let served = match linked {
        Ok(()) => crate::deploy::serve_revision(state, tenant, &function, Some(copy.number))
            .await
            .map(|changed| changed.serving)
            .map_err(|e| e.message),
        Err(e) => Err(e),
    };
    Ok(served.map_err(|error| {
        tracing::warn!(%tenant, %function, secret = %name, %error, "the rolled revision did not start; the old one keeps serving");
        format!("{function}: {error}")
    }))
}

/// Refuses (422) a function that uses a secret, or a key of one, the tenant does not have.
pub(crate) async fn check_uses(state: &AppState, tenant: &str, uses: &SecretUse) -> Result<(), ApiError> {
    let missing = |message: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "MissingSecret", message);
    let mut keys: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for name in uses.names() {
        match state.store.secret(tenant, name).await {
            Ok(record) => {
                keys.insert(name, record.keys);
            }
            Err(kl_store::StoreError::NotFound(_)) => {
                return Err(missing(format!(
                    "the function uses secret {name:?}, which tenant {tenant:?} does not have: create it first with `kl secret set {name} KEY=VALUE`"
                )));
            }
            Err(e) => return Err(e.into()),
        }
    }
    for (var, from) in &uses.env {
        if !keys
            .get(from.name.as_str())
            .is_some_and(|k| k.contains(&from.key))
        {
            return Err(missing(format!(
                "environment variable {var} takes {from}, but secret {:?} has no key {:?}",
                from.name, from.key
            )));
        }
    }
    Ok(())
}

/// The secrets one revision's instances receive, opened at each start.
pub(crate) struct RevisionSecrets {
    pub store: Store,
    pub vault: Arc<Vault>,
    pub tenant: String,
    pub uses: SecretUse,
}

impl RevisionSecrets {
    /// Every secret the revision uses, opened: name → key → value.
    pub(crate) async fn open(&self) -> Result<BTreeMap<String, BTreeMap<String, Vec<u8>>>, String> {
        let mut opened = BTreeMap::new();
        for name in self.uses.names() {
            let values = self
                .store
                .secret_values(&self.tenant, name)
                .await
                .map_err(|e| match e {
                    kl_store::StoreError::NotFound(_) => {
                        format!("secret {name:?} no longer exists; set it again or deploy without it")
                    }
                    other => other.to_string(),
                })?;
            let mut keys = BTreeMap::new();
            for value in values {
                let place = Place {
                    tenant: &self.tenant,
                    secret: name,
                    key: &value.key,
                };
                let plain = self
                    .vault
                    .open_value(place, &value)
                    .map_err(|e| format!("secret {name:?}, key {:?}: {e}", value.key))?;
                keys.insert(value.key, plain);
            }
            opened.insert(name.to_owned(), keys);
        }
        Ok(opened)
    }
}

impl std::fmt::Debug for RevisionSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevisionSecrets")
            .field("tenant", &self.tenant)
            .field("uses", &self.uses)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl SecretSource for RevisionSecrets {
    async fn fetch(&self) -> Result<InstanceSecrets, String> {
        let mut opened = self.open().await?;
        let mut secrets = InstanceSecrets::default();
        for (var, from) in &self.uses.env {
            let value = opened
                .get(from.name.as_str())
                .and_then(|keys| keys.get(&from.key))
                .ok_or_else(|| {
                    format!(
                        "secret {:?} has no key {:?} any more (for {var})",
                        from.name, from.key
                    )
                })?;
            let text =
                String::from_utf8(value.clone()).map_err(|_| format!("secret key {from} is not UTF-8"))?;
            secrets.env.push((var.clone(), text));
        }
        for name in &self.uses.files {
            for (key, contents) in opened.remove(name.as_str()).unwrap_or_default() {
                secrets.files.push(SecretFile {
                    secret: name.clone(),
                    key,
                    contents,
                });
            }
        }
        Ok(secrets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rotation by `KL_SECRETS_KEY=NEW,OLD`: at start every value moves under NEW, after
    /// which NEW alone opens everything.
    #[tokio::test]
    async fn values_move_under_the_new_key_and_the_old_one_can_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("kl.db")).await.unwrap();
        store.ensure_tenant("acme").await.unwrap();
        let key_file = dir.path().join("unused.key");
        let (old, new) = (Key::generate().to_base64(), Key::generate().to_base64());
        let before = Vault::open(Some(&old), &key_file).unwrap();
        let place = Place {
            tenant: "acme",
            secret: "db",
            key: "PASSWORD",
        };
        let sealed = before.seal(place, "hunter2");
        store.put_secret("acme", "db", &[sealed], 10).await.unwrap();
        assert_eq!(reencrypt(&store, &before).await.unwrap(), 0, "nothing to move");

        let both = Vault::open(Some(&format!("{new},{old}")), &key_file).unwrap();
        assert_eq!(reencrypt(&store, &both).await.unwrap(), 1);
        let after = Vault::open(Some(&new), &key_file).unwrap();
        let stored = store.secret_values("acme", "db").await.unwrap();
        assert_eq!(after.open_value(place, &stored[0]).unwrap(), b"hunter2");
        assert!(
            before.open_value(place, &stored[0]).is_err(),
            "the old key alone no longer opens it"
        );
        assert!(
            !key_file.exists(),
            "keys from the environment never touch the key file"
        );
    }

    /// A rotation through the key file keeps the old key until every value moved, then drops it.
    #[tokio::test]
    async fn a_key_file_rotation_ends_with_the_new_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("kl.db")).await.unwrap();
        store.ensure_tenant("acme").await.unwrap();
        let key_file = dir.path().join("secrets.key");
        let vault = Vault::open(None, &key_file).unwrap();
        let place = Place {
            tenant: "acme",
            secret: "db",
            key: "K",
        };
        store
            .put_secret("acme", "db", &[vault.seal(place, "v")], 10)
            .await
            .unwrap();
        let old = vault.ring.load().current().clone();
        let rotated = Keyring::new(vec![Key::generate(), old]);
        keyfile::save(&key_file, &rotated).unwrap();
        // As after a crash between writing the key file and re-encrypting: the next start finishes.
        let restarted = Vault::open(None, &key_file).unwrap();
        assert_eq!(restarted.ring.load().keys().len(), 2);
        assert_eq!(reencrypt(&store, &restarted).await.unwrap(), 1);
        let reopened = Vault::open(None, &key_file).unwrap();
        assert_eq!(reopened.ring.load().keys().len(), 1, "the old key left the file");
        assert_eq!(reopened.ring.load().current().id(), rotated.current().id());
        let stored = store.secret_values("acme", "db").await.unwrap();
        assert_eq!(reopened.open_value(place, &stored[0]).unwrap(), b"v");
    }
}
