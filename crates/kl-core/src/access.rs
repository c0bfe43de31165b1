//! Who may do what (DESIGN §4): a pure decision from the caller's role and tenant, the action
//! and the target tenant. A tenant-scoped caller never learns that another tenant's objects
//! exist: acting on another tenant is `NotFound`, not `Forbidden`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A token's role. Platform roles span all tenants; the others belong to one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything, everywhere.
    Admin,
    /// Reads everything, changes nothing, sees no secrets.
    Operator,
    /// Manages its tenant's members and functions.
    TenantAdmin,
    /// Deploys, invokes and reads logs in its tenant.
    Developer,
    /// Reads its tenant.
    Viewer,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Operator,
        Role::TenantAdmin,
        Role::Developer,
        Role::Viewer,
    ];

    /// Whether the role spans every tenant (its tokens have no tenant).
    pub fn is_platform(self) -> bool {
        matches!(self, Role::Admin | Role::Operator)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::TenantAdmin => "tenant-admin",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            format!("unknown role {s:?}: use admin, operator, tenant-admin, developer or viewer")
        })
    }
}

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Create or delete tenants, change their quotas.
    ManageTenants,
    /// List every tenant, or every tenant's functions.
    ReadAllTenants,
    /// Read the platform's audit log.
    ReadAudit,
    /// Read one tenant's settings and usage.
    ReadTenant,
    /// Create and revoke a tenant's tokens.
    ManageTokens,
    /// List a tenant's tokens (metadata, never secrets).
    ReadTokens,
    /// Upload source, build revisions.
    Deploy,
    /// List and describe functions and revisions.
    ReadFunctions,
    /// Delete functions.
    DeleteFunction,
    /// Call a private function.
    Invoke,
    /// Read function and build logs.
    ReadLogs,
    /// Send events to a tenant's broker (and replay its dead letters): they invoke functions.
    PublishEvents,
    /// Create, replace and delete triggers.
    ManageTriggers,
    /// Read triggers, dead letters, async invocation results, and follow the event stream.
    ReadEvents,
    /// Create, replace and delete a tenant's secrets (values go in, never out).
    ManageSecrets,
    /// List a tenant's secrets: names, keys, versions, never values.
    ReadSecrets,
    /// Re-encrypt every secret under a new platform key.
    RotateSecretsKey,
    /// Copy the whole platform (every tenant's rows, token hashes, sealed secrets, sources
    /// and artifacts) to a backup location.
    Backup,
    /// Create and delete a tenant's environments (shares of its quotas).
    ManageEnvironments,
}

impl Action {
    /// Actions that change nothing.
    fn is_read(self) -> bool {
        matches!(
            self,
            Action::ReadAllTenants
                | Action::ReadAudit
                | Action::ReadTenant
                | Action::ReadTokens
                | Action::ReadFunctions
                | Action::ReadLogs
                | Action::ReadEvents
                | Action::ReadSecrets
        )
    }

    /// Actions on the platform as a whole rather than on one tenant.
    fn is_platform(self) -> bool {
        matches!(
            self,
            Action::ManageTenants
                | Action::ReadAllTenants
                | Action::ReadAudit
                | Action::RotateSecretsKey
                | Action::Backup
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::ManageTenants => "manage tenants",
            Action::ReadAllTenants => "read all tenants",
            Action::ReadAudit => "read the audit log",
            Action::ReadTenant => "read the tenant",
            Action::ManageTokens => "manage tokens",
            Action::ReadTokens => "read tokens",
            Action::Deploy => "deploy",
            Action::ReadFunctions => "read functions",
            Action::DeleteFunction => "delete functions",
            Action::Invoke => "invoke",
            Action::ReadLogs => "read logs",
            Action::PublishEvents => "publish events",
            Action::ManageTriggers => "manage triggers",
            Action::ReadEvents => "read events",
            Action::ManageSecrets => "manage secrets",
            Action::ReadSecrets => "read secrets",
            Action::RotateSecretsKey => "rotate the secrets key",
            Action::Backup => "take a backup",
            Action::ManageEnvironments => "manage environments",
        }
    }
}

/// The outcome of an authorization check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// The target is outside the caller's tenant: answer as if it did not exist.
    NotFound,
    /// The caller may see the target but not do this to it.
    Forbidden,
}

/// Decides whether a caller with `role` (bound to `own_tenant` unless a platform role) may
/// perform `action` on `target` (the tenant acted on; `None` for platform-wide actions).
pub fn authorize(role: Role, own_tenant: Option<&str>, action: Action, target: Option<&str>) -> Decision {
    match role {
        Role::Admin => return Decision::Allow,
        Role::Operator => {
            return if action.is_read() {
                Decision::Allow
            } else {
                Decision::Forbidden
            };
        }
        Role::TenantAdmin | Role::Developer | Role::Viewer => {}
    }
    // Another tenant is invisible whatever the action, platform-wide ones included.
    if target.is_some_and(|t| Some(t) != own_tenant) {
        return Decision::NotFound;
    }
    if action.is_platform() {
        return Decision::Forbidden;
    }
    if own_tenant.is_none() || target != own_tenant {
        return Decision::NotFound;
    }
    let members = matches!(
        action,
        Action::ManageTokens | Action::ReadTokens | Action::ManageEnvironments
    );
    let allowed = match role {
        Role::TenantAdmin => true,
        Role::Developer => !members,
        Role::Viewer => action.is_read() && !members,
        Role::Admin | Role::Operator => unreachable!("platform roles decided above"),
    };
    if allowed {
        Decision::Allow
    } else {
        Decision::Forbidden
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT_ACTIONS: [Action; 12] = [
        Action::ReadTenant,
        Action::ManageTokens,
        Action::Deploy,
        Action::ReadFunctions,
        Action::DeleteFunction,
        Action::Invoke,
        Action::ReadLogs,
        Action::PublishEvents,
        Action::ManageTriggers,
        Action::ReadEvents,
        Action::ManageSecrets,
        Action::ReadSecrets,
    ];

    #[test]
    fn the_role_matrix_on_the_own_tenant() {
        use Decision::{Allow as A, Forbidden as F};
        // Columns follow TENANT_ACTIONS.
        let expected = [
            (Role::Admin, [A, A, A, A, A, A, A, A, A, A, A, A]),
            (Role::Operator, [A, F, F, A, F, F, A, F, F, A, F, A]),
            (Role::TenantAdmin, [A, A, A, A, A, A, A, A, A, A, A, A]),
            (Role::Developer, [A, F, A, A, A, A, A, A, A, A, A, A]),
            (Role::Viewer, [A, F, F, A, F, F, A, F, F, A, F, A]),
        ];
        for (role, row) in expected {
            let own = (!role.is_platform()).then_some("acme");
            for (action, want) in TENANT_ACTIONS.iter().zip(row) {
                assert_eq!(
                    authorize(role, own, *action, Some("acme")),
                    want,
                    "{role} {action:?}"
                );
            }
        }
    }

    #[test]
    fn other_tenants_are_invisible_to_tenant_roles() {
        for role in [Role::TenantAdmin, Role::Developer, Role::Viewer] {
            for action in TENANT_ACTIONS
                .into_iter()
                .chain([Action::ManageTenants, Action::ReadTokens])
            {
                assert_eq!(
                    authorize(role, Some("acme"), action, Some("globex")),
                    Decision::NotFound,
                    "{role} {action:?}"
                );
            }
        }
    }

    #[test]
    fn platform_actions_belong_to_platform_roles() {
        for action in [
            Action::ManageTenants,
            Action::ReadAllTenants,
            Action::ReadAudit,
            Action::RotateSecretsKey,
            Action::Backup,
        ] {
            assert_eq!(authorize(Role::Admin, None, action, None), Decision::Allow);
            for role in [Role::TenantAdmin, Role::Developer, Role::Viewer] {
                assert_eq!(authorize(role, Some("acme"), action, None), Decision::Forbidden);
            }
        }
        assert_eq!(
            authorize(Role::Operator, None, Action::ReadAudit, None),
            Decision::Allow
        );
        assert_eq!(
            authorize(Role::Operator, None, Action::ManageTenants, None),
            Decision::Forbidden
        );
    }

    #[test]
    fn listing_a_tenants_tokens_is_a_read_for_operators_and_tenant_admins_only() {
        let read = |role: Role| {
            let own = (!role.is_platform()).then_some("acme");
            authorize(role, own, Action::ReadTokens, Some("acme"))
        };
        assert_eq!(read(Role::Admin), Decision::Allow);
        assert_eq!(read(Role::Operator), Decision::Allow);
        assert_eq!(read(Role::TenantAdmin), Decision::Allow);
        assert_eq!(read(Role::Developer), Decision::Forbidden);
        assert_eq!(read(Role::Viewer), Decision::Forbidden);
    }

    #[test]
    fn only_tenant_admins_manage_environments() {
        let manage = |role: Role| {
            let own = (!role.is_platform()).then_some("acme");
            authorize(role, own, Action::ManageEnvironments, Some("acme"))
        };
        assert_eq!(manage(Role::Admin), Decision::Allow);
        assert_eq!(manage(Role::TenantAdmin), Decision::Allow);
        for role in [Role::Operator, Role::Developer, Role::Viewer] {
            assert_eq!(manage(role), Decision::Forbidden, "{role}");
        }
    }

    #[test]
    fn roles_round_trip_through_their_names() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().is_err());
    }
}
