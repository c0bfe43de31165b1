//! Tenancy and access through the real `kl` binary and a real server: the tenant lifecycle,
//! declarative `kl apply`/`kl export`, tokens (shown once, revocable, expiring), the RBAC
//! matrix of every role on every route with its audit trail, and the functions quota under
//! concurrent deploys.

mod support;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use reqwest::Method;
use serde_json::{Value, json};
use support::{Reply, Server, examples, stdout, text, wait_for};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Whether some line of `output` reads `want` once runs of spaces are collapsed.
fn has_line(output: &str, want: &str) -> bool {
    output
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == want)
}

async fn tenant_spec(server: &Server, name: &str) -> Value {
    let reply = Reply::read(
        server
            .req(Method::GET, &format!("/v1/tenants/{name}"))
            .send()
            .await
            .expect("request sent"),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["spec"].clone()
}

fn hello() -> std::path::PathBuf {
    examples().join("python-hello")
}

#[tokio::test]
async fn tenant_lifecycle_through_the_cli() {
    let server = Server::start().await;

    let created = server
        .kl_ok(&["tenant", "create", "acme", "--functions", "5"])
        .await;
    assert_eq!(created, "tenant/acme created\n  quotas.functions: 5\n");
    let again = server.kl_fails(&["tenant", "create", "acme"]).await;
    assert!(again.contains("already exists"), "{again}");
    let bad = server.kl_fails(&["tenant", "create", "Not_A_Name"]).await;
    assert!(bad.contains("invalid"), "{bad}");

    let ls = server.kl_ok(&["tenant", "ls"]).await;
    let header = ls.lines().next().unwrap_or_default();
    for column in ["NAME", "FUNCTIONS", "CONCURRENT BUILDS", "CREATED"] {
        assert!(header.contains(column), "{ls}");
    }
    let acme_row = ls
        .lines()
        .find(|l| l.starts_with("acme "))
        .unwrap_or_else(|| panic!("{ls}"));
    assert!(acme_row.contains("0 / 5") && acme_row.contains("0 / 2"), "{ls}");
    assert!(ls.lines().any(|l| l.starts_with("default ")), "{ls}");
    let listed: Value = serde_json::from_str(&server.kl_ok(&["tenant", "ls", "-o", "json"]).await).unwrap();
    let names: Vec<&str> = listed["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme", "default"]);

    server
        .deploy(&hello(), &["--tenant", "acme", "--name", "hello"])
        .await;
    let describe = server.kl_ok(&["tenant", "describe", "acme"]).await;
    assert!(has_line(&describe, "Name: acme"), "{describe}");
    assert!(has_line(&describe, "functions 1 / 5"), "{describe}");
    assert!(
        describe
            .lines()
            .any(|l| l.starts_with("concurrent builds") && l.ends_with("/ 2")),
        "{describe}"
    );

    let updated = server
        .kl_ok(&["tenant", "update", "acme", "--functions", "1"])
        .await;
    assert_eq!(updated, "tenant/acme updated\n  quotas.functions: 5 → 1\n");
    let same = server
        .kl_ok(&["tenant", "update", "acme", "--functions", "1"])
        .await;
    assert_eq!(same, "tenant/acme unchanged\n");
    assert_eq!(tenant_spec(&server, "acme").await, spec_with_functions(1));
    let describe = server.kl_ok(&["tenant", "describe", "acme"]).await;
    assert!(has_line(&describe, "functions 1 / 1"), "{describe}");
    let nothing = server.kl_fails(&["tenant", "update", "acme"]).await;
    assert!(nothing.contains("nothing to change"), "{nothing}");

    let refused = server.kl(&["tenant", "rm", "acme"]).await;
    assert!(!refused.status.success(), "{}", text(&refused));
    let message = stderr(&refused);
    assert!(
        message.contains("still has 1 function") && message.contains("kl rm F --tenant acme"),
        "{message}"
    );
    server.kl_ok(&["tenant", "describe", "acme"]).await;

    server.kl_ok(&["rm", "hello", "--tenant", "acme"]).await;
    assert_eq!(
        server.kl_ok(&["tenant", "rm", "acme"]).await,
        "tenant/acme deleted\n"
    );
    let gone = server.kl_fails(&["tenant", "describe", "acme"]).await;
    assert!(gone.contains("NotFound"), "{gone}");
    let default = server.kl_fails(&["tenant", "rm", "default"]).await;
    assert!(default.contains("cannot be deleted"), "{default}");
}

#[tokio::test]
async fn apply_is_idempotent_and_export_round_trips() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tenant.yaml");
    let path = file.to_str().unwrap();
    let write = |yaml: &str| std::fs::write(&file, yaml).unwrap();

    write("{kind: Tenant, name: globex, spec: {quotas: {functions: 10}}}\n");
    let created = server.kl_ok(&["apply", "-f", path]).await;
    assert_eq!(created, "tenant/globex created\n  quotas.functions: 10\n");
    assert_eq!(tenant_spec(&server, "globex").await, spec_with_functions(10));
    assert_eq!(
        server.kl_ok(&["apply", "-f", path]).await,
        "tenant/globex unchanged\n"
    );

    write("kind: Tenant\nname: globex\nspec:\n  quotas:\n    functions: 12\n");
    assert_eq!(
        server.kl_ok(&["apply", "-f", path]).await,
        "tenant/globex configured\n  quotas.functions: 10 → 12\n"
    );
    assert_eq!(tenant_spec(&server, "globex").await["quotas"]["functions"], 12);

    let exported = server.kl_ok(&["export", "tenant", "globex"]).await;
    let doc: Value = serde_yaml::from_str(&exported).unwrap();
    assert_eq!(
        doc,
        json!({"kind": "Tenant", "name": "globex", "spec": spec_with_functions(12)})
    );
    let out = server.kl_stdin(&["apply", "-f", "-"], &exported).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stdout(&out), "tenant/globex unchanged\n");

    // A change made elsewhere: export captures it; the file, which leaves the field out,
    // brings back the default.
    server
        .kl_ok(&["tenant", "update", "globex", "--concurrent-builds", "4"])
        .await;
    let exported = server.kl_ok(&["export", "tenant", "globex"]).await;
    let out = server.kl_stdin(&["apply", "-f", "-"], &exported).await;
    assert_eq!(stdout(&out), "tenant/globex unchanged\n", "{}", text(&out));
    assert_eq!(
        server.kl_ok(&["apply", "-f", path]).await,
        "tenant/globex configured\n  quotas.concurrentBuilds: 4 → 2\n"
    );

    // Several documents; a typo is refused locally, before anything changes.
    write("kind: Tenant\nname: globex\nspec: {quotas: {functions: 12}}\n---\nkind: Tenant\nname: initech\n");
    let both = server.kl_ok(&["apply", "-f", path]).await;
    assert!(
        both.starts_with("tenant/globex unchanged\ntenant/initech created\n"),
        "{both}"
    );
    write(
        "kind: Tenant\nname: globex\nspec: {quotas: {functions: 1}}\n---\nkind: Tenant\nname: initech\nspec: {quota: {functions: 1}}\n",
    );
    let typo = server.kl_fails(&["apply", "-f", path]).await;
    assert!(
        typo.contains("unknown field `quota`") && typo.contains("initech"),
        "{typo}"
    );
    assert_eq!(tenant_spec(&server, "globex").await["quotas"]["functions"], 12);
    write("kind: Function\nname: hello\n");
    let kind = server.kl_fails(&["apply", "-f", path]).await;
    assert!(kind.contains("\"Function\" is not supported"), "{kind}");

    // `tenant create -f` takes the same document.
    let spec_file = dir.path().join("hooli.yaml");
    std::fs::write(
        &spec_file,
        "kind: Tenant\nname: hooli\nspec: {quotas: {concurrentBuilds: 1}}\n",
    )
    .unwrap();
    let out = server
        .kl_ok(&[
            "tenant",
            "create",
            "hooli",
            "-f",
            spec_file.to_str().unwrap(),
            "--functions",
            "3",
        ])
        .await;
    assert_eq!(
        out,
        "tenant/hooli created\n  quotas.concurrentBuilds: 1\n  quotas.functions: 3\n"
    );
}

/// The default tenant spec with another functions quota, as the server stores it.
fn spec_with_functions(n: u32) -> Value {
    serde_json::to_value(kl_core::TenantSpec {
        quotas: kl_core::Quotas {
            functions: n,
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap()
}

/// The secret printed by `kl token create` (table output) and the token's id.
fn created_token(out: &std::process::Output) -> (String, String) {
    let text = stdout(out);
    let secret = text
        .lines()
        .find(|l| l.starts_with("kl_"))
        .unwrap_or_else(|| panic!("no secret in {text}"))
        .to_owned();
    let id = text
        .split_whitespace()
        .find(|w| w.starts_with("tok-"))
        .unwrap_or_else(|| panic!("no id in {text}"))
        .to_owned();
    (secret, id)
}

fn is_secret(s: &str) -> bool {
    s.strip_prefix("kl_")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

async fn status_with(server: &Server, token: &str, path: &str) -> u16 {
    server
        .req_as(Some(token), Method::GET, path)
        .send()
        .await
        .expect("request sent")
        .status()
        .as_u16()
}

#[tokio::test]
async fn tokens_are_shown_once_scoped_revocable_and_expire() {
    let server = Server::start().await;
    server.kl_ok(&["tenant", "create", "acme"]).await;

    let out = server
        .kl(&[
            "token",
            "create",
            "--role",
            "developer",
            "--tenant",
            "acme",
            "--name",
            "ci",
        ])
        .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(stderr(&out).contains("shown once"), "{}", text(&out));
    let (dev_secret, dev_id) = created_token(&out);
    assert!(is_secret(&dev_secret), "{dev_secret}");
    let quiet = server
        .kl_ok(&["token", "create", "--role", "viewer", "--tenant", "acme", "-q"])
        .await;
    let viewer_secret = quiet.trim_end().to_owned();
    assert!(
        quiet.lines().count() == 1 && is_secret(&viewer_secret),
        "-q prints the secret alone: {quiet:?}"
    );

    // The secret works, within its tenant only.
    let out = server.kl_as(&dev_secret, &["tenant", "describe", "acme"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        status_with(&server, &dev_secret, "/v1/tenants/acme/functions").await,
        200
    );
    let out = server
        .kl_as(&dev_secret, &["tenant", "describe", "default"])
        .await;
    assert!(stderr(&out).contains("NotFound"), "{}", text(&out));
    let out = server
        .kl_as(&viewer_secret, &["token", "ls", "--tenant", "acme"])
        .await;
    assert!(stderr(&out).contains("Forbidden"), "{}", text(&out));

    // Listings never show secrets.
    let table = server.kl_ok(&["token", "ls"]).await;
    let listed = server
        .kl_ok(&["token", "ls", "--tenant", "acme", "-o", "json"])
        .await;
    for out in [&table, &listed] {
        assert!(
            !out.contains(&dev_secret) && !out.contains(&viewer_secret) && !out.contains("kl_"),
            "{out}"
        );
    }
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&dev_id) && l.contains(" ci ") && l.contains("developer")),
        "{table}"
    );
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let tokens = listed["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2, "{listed}");
    for t in tokens {
        for key in t.as_object().unwrap().keys() {
            assert!(
                ["id", "name", "role", "tenant", "createdAt", "expiresAt"].contains(&key.as_str()),
                "unexpected field {key} in {t}"
            );
        }
    }

    // Revocation takes effect at once, for that token only.
    assert_eq!(
        server.kl_ok(&["token", "revoke", &dev_id]).await,
        format!("revoked {dev_id}\n")
    );
    assert_eq!(status_with(&server, &dev_secret, "/v1/tenants/acme").await, 401);
    let out = server.kl_as(&dev_secret, &["ls", "--tenant", "acme"]).await;
    assert!(stderr(&out).contains("Unauthorized"), "{}", text(&out));
    assert_eq!(
        status_with(&server, &viewer_secret, "/v1/tenants/acme").await,
        200
    );
    assert!(!server.kl_ok(&["token", "ls"]).await.contains(&dev_id));
    let again = server.kl_fails(&["token", "revoke", &dev_id]).await;
    assert!(again.contains("not found"), "{again}");

    // Expiry.
    let out = server
        .kl_ok(&[
            "token",
            "create",
            "--role",
            "viewer",
            "--tenant",
            "acme",
            "--expires",
            "1s",
            "-o",
            "json",
        ])
        .await;
    let created: kl_api::TokenCreated = serde_json::from_str(&out).unwrap();
    let expires_at = SystemTime::from(created.token.expires_at.expect("an expiring token"));
    let early = status_with(&server, &created.secret, "/v1/tenants/acme").await;
    if SystemTime::now() < expires_at {
        assert_eq!(early, 200, "a token works until it expires");
    }
    wait_for(
        "the expired token to be refused",
        Duration::from_secs(30),
        || async { (status_with(&server, &created.secret, "/v1/tenants/acme").await == 401).then_some(()) },
    )
    .await;
    assert!(SystemTime::now() >= expires_at, "refused before its expiry");
    let table = server.kl_ok(&["token", "ls", "--tenant", "acme"]).await;
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&created.token.id) && l.ends_with("(expired)")),
        "{table}"
    );
    let bad = server
        .kl_fails(&[
            "token",
            "create",
            "--role",
            "viewer",
            "--tenant",
            "acme",
            "--expires",
            "soon",
        ])
        .await;
    assert!(bad.contains("duration"), "{bad}");
    let platform = server
        .kl_fails(&["token", "create", "--role", "operator", "--tenant", "acme"])
        .await;
    assert!(platform.contains("omit the tenant"), "{platform}");

    // The refusals are in the audit log, newest first.
    let audit: kl_api::AuditList =
        serde_json::from_str(&server.kl_ok(&["audit", "--limit", "50", "-o", "json"]).await).unwrap();
    let unauthenticated = audit
        .entries
        .iter()
        .filter(|e| e.outcome == "unauthenticated" && e.path == "/v1/tenants/acme")
        .count();
    assert!(
        unauthenticated >= 2,
        "the revoked and the expired token: {:?}",
        audit.entries
    );
    assert!(audit.entries.iter().any(|e| e.outcome == "forbidden"
        && e.role.as_deref() == Some("viewer")
        && e.action == "read tokens"));
    let table = server.kl_ok(&["audit", "--limit", "1"]).await;
    assert_eq!(table.lines().count(), 2, "a header and one entry: {table}");
    assert!(
        table.contains("unauthenticated") && table.contains("GET /v1/tenants/acme"),
        "{table}"
    );
}

// ---------------------------------------------------------------------------------------
// The RBAC matrix.

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Who {
    Anonymous,
    Admin,
    Operator,
    TenantAdmin,
    Developer,
    Viewer,
}

const EVERYONE: [Who; 6] = [
    Who::Anonymous,
    Who::Admin,
    Who::Operator,
    Who::TenantAdmin,
    Who::Developer,
    Who::Viewer,
];
/// The tenant roles; their tokens belong to `acme`.
const TENANT_ROLES: [Who; 3] = [Who::TenantAdmin, Who::Developer, Who::Viewer];

/// The tenant a request is about, seen from the tenant roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Own,
    Other,
    /// A platform-wide route.
    Platform,
}

impl Target {
    fn tenant(self) -> &'static str {
        match self {
            Target::Own => "acme",
            Target::Other => "globex",
            Target::Platform => "",
        }
    }
}

/// What a route needs (DESIGN §4).
#[derive(Debug, Clone, Copy)]
struct Need {
    /// Changes nothing: platform operators may do it.
    read: bool,
    /// The tenant roles that may do it in their own tenant.
    tenant_roles: &'static [Who],
}

/// Reading a tenant's settings, functions and logs: every member.
const MEMBERS_READ: Need = Need {
    read: true,
    tenant_roles: &TENANT_ROLES,
};
/// Deploying, deleting and invoking functions: tenant admins and developers.
const DEVELOPERS_WRITE: Need = Need {
    read: false,
    tenant_roles: &[Who::TenantAdmin, Who::Developer],
};
/// Listing a tenant's tokens (its members).
const MEMBER_ADMINS_READ: Need = Need {
    read: true,
    tenant_roles: &[Who::TenantAdmin],
};
/// Creating and revoking a tenant's tokens.
const MEMBER_ADMINS_WRITE: Need = Need {
    read: false,
    tenant_roles: &[Who::TenantAdmin],
};
const PLATFORM_READ: Need = Need {
    read: true,
    tenant_roles: &[],
};
const PLATFORM_WRITE: Need = Need {
    read: false,
    tenant_roles: &[],
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allow,
    Unauthenticated,
    Forbidden,
    NotFound,
}

/// The rules, stated independently of the server's code: no token → 401; a platform admin
/// does everything; an operator reads everything and changes nothing (403); a tenant role
/// never learns that another tenant's objects exist (404, never 403) and in its own tenant
/// does what its role allows (else 403).
fn rule(who: Who, need: Need, target: Target) -> Verdict {
    match who {
        Who::Anonymous => Verdict::Unauthenticated,
        Who::Admin => Verdict::Allow,
        Who::Operator if need.read => Verdict::Allow,
        Who::Operator => Verdict::Forbidden,
        _ if target == Target::Other => Verdict::NotFound,
        _ if need.tenant_roles.contains(&who) => Verdict::Allow,
        _ => Verdict::Forbidden,
    }
}

/// A request body.
#[derive(Debug, Clone, Copy)]
enum Body {
    Empty,
    /// JSON, after `{t}` (the target tenant) and `{new}` (a fresh name) are filled in.
    Json(&'static str),
    Bytes(&'static str),
    /// A structured-mode CloudEvent, filled in as `Json` is.
    Event(&'static str),
    /// JSON sent with `Prefer: respond-async`.
    Async(&'static str),
}

/// One route of the server's router (crates/kl-server/src/lib.rs).
#[derive(Debug, Clone, Copy)]
struct Route {
    what: &'static str,
    method: &'static str,
    /// With `{t}` for the target tenant and `{victim}` for a token to revoke.
    path: &'static str,
    need: Need,
    /// The answer when allowed.
    ok: u16,
    body: Body,
}

const fn r(
    what: &'static str,
    method: &'static str,
    path: &'static str,
    need: Need,
    ok: u16,
    body: Body,
) -> Route {
    Route {
        what,
        method,
        path,
        need,
        ok,
        body,
    }
}

/// The spec that `acme` and `globex` are created with.
const SPEC: &str = r#"{"quotas": {"functions": 10, "concurrentBuilds": 4}}"#;

/// A CloudEvent no trigger matches.
const EVENT: &str = r#"{"specversion": "1.0", "id": "{new}", "source": "/matrix", "type": "matrix.ping"}"#;
/// A trigger spec for `hello` that matches nothing the matrix sends.
const TRIGGER: &str = r#"{"function": "hello", "filters": [{"exact": {"type": "matrix.never"}}]}"#;

/// Every route that acts on one tenant; `{f}` is `/v1/tenants/{t}/functions/hello`. Allowed
/// changes are harmless by construction: the update writes the same spec, a tenant that has
/// functions cannot be deleted (409), the function `ghost` does not exist (404), the upload is
/// not an archive (400), `hello` has no older revision to roll back to (409), the trigger
/// `matrix` is replaced by itself, events match no trigger.
#[rustfmt::skip]
const TENANT_ROUTES: [Route; 36] = [
    r("describe tenant",  "GET",    "/v1/tenants/{t}",                 MEMBERS_READ,        200, Body::Empty),
    r("update tenant",    "PUT",    "/v1/tenants/{t}",                 PLATFORM_WRITE,      200, Body::Json(SPEC)),
    r("delete tenant",    "DELETE", "/v1/tenants/{t}",                 PLATFORM_WRITE,      409, Body::Empty),
    r("list functions",   "GET",    "/v1/tenants/{t}/functions",       MEMBERS_READ,        200, Body::Empty),
    r("describe function","GET",    "{f}",                             MEMBERS_READ,        200, Body::Empty),
    r("delete function",  "DELETE", "/v1/tenants/{t}/functions/ghost", DEVELOPERS_WRITE,    404, Body::Empty),
    r("upload source",    "PUT",    "{f}/source",                      DEVELOPERS_WRITE,    400, Body::Bytes("not an archive")),
    r("revision",         "GET",    "{f}/revisions/1",                 MEMBERS_READ,        200, Body::Empty),
    r("build log",        "GET",    "{f}/revisions/1/log",             MEMBERS_READ,        200, Body::Empty),
    r("dockerfile",       "GET",    "{f}/revisions/1/dockerfile",      MEMBERS_READ,        200, Body::Empty),
    r("function log",     "GET",    "{f}/logs",                        MEMBERS_READ,        200, Body::Empty),
    r("invoke private",   "POST",   "/fn/{t}/hello",                   DEVELOPERS_WRITE,    200, Body::Json(r#"{"name": "matrix"}"#)),
    r("list its tokens",  "GET",    "/v1/tokens?tenant={t}",           MEMBER_ADMINS_READ,  200, Body::Empty),
    r("create its token", "POST",   "/v1/tokens",                      MEMBER_ADMINS_WRITE, 201, Body::Json(r#"{"name": "m", "role": "viewer", "tenant": "{t}"}"#)),
    r("revoke its token", "DELETE", "/v1/tokens/{victim}",             MEMBER_ADMINS_WRITE, 204, Body::Empty),
    r("invoke async",     "POST",   "/fn/{t}/hello",                   DEVELOPERS_WRITE,    202, Body::Async(r#"{"name": "matrix"}"#)),
    r("rollback",         "POST",   "{f}/rollback",                    DEVELOPERS_WRITE,    409, Body::Empty),
    r("publish events",   "POST",   "/v1/tenants/{t}/events",          DEVELOPERS_WRITE,    202, Body::Event(EVENT)),
    r("follow events",    "GET",    "/v1/tenants/{t}/events/stream",   MEMBERS_READ,        200, Body::Empty),
    r("list triggers",    "GET",    "/v1/tenants/{t}/triggers",        MEMBERS_READ,        200, Body::Empty),
    r("create trigger",   "POST",   "/v1/tenants/{t}/triggers",        DEVELOPERS_WRITE,    201, Body::Json(r#"{"name": "{new}", "spec": {"function": "hello"}}"#)),
    r("describe trigger", "GET",    "/v1/tenants/{t}/triggers/matrix", MEMBERS_READ,        200, Body::Empty),
    r("replace trigger",  "PUT",    "/v1/tenants/{t}/triggers/matrix", DEVELOPERS_WRITE,    200, Body::Json(TRIGGER)),
    r("delete trigger",   "DELETE", "/v1/tenants/{t}/triggers/ghost",  DEVELOPERS_WRITE,    404, Body::Empty),
    r("dead letters",     "GET",    "/v1/tenants/{t}/dlq",             MEMBERS_READ,        200, Body::Empty),
    r("dead letter",      "GET",    "/v1/tenants/{t}/dlq/ghost",       MEMBERS_READ,        404, Body::Empty),
    r("replay",           "POST",   "/v1/tenants/{t}/dlq/ghost/replay", DEVELOPERS_WRITE,   404, Body::Empty),
    r("invocation",       "GET",    "/v1/tenants/{t}/invocations/ghost", MEMBERS_READ,      404, Body::Empty),
    r("upload for a command", "PUT", "/v1/tenants/{t}/uploads/m.tgz", DEVELOPERS_WRITE,    201, Body::Bytes("archive")),
    r("list secrets",     "GET",    "/v1/tenants/{t}/secrets",         MEMBERS_READ,        200, Body::Empty),
    r("set secret",       "PUT",    "/v1/tenants/{t}/secrets/matrix",  DEVELOPERS_WRITE,    200, Body::Json(r#"{"data": {"K": "v"}}"#)),
    r("delete secret",    "DELETE", "/v1/tenants/{t}/secrets/ghost",   DEVELOPERS_WRITE,    404, Body::Empty),
    r("environments",     "GET",    "/v1/tenants/{t}/environments",    MEMBERS_READ,        200, Body::Empty),
    r("create environment", "POST", "/v1/tenants/{t}/environments",    MEMBER_ADMINS_WRITE, 400, Body::Json(r#"{"name": "e", "share": 0}"#)),
    r("delete environment", "DELETE", "/v1/tenants/{t}/environments/ghost", MEMBER_ADMINS_WRITE, 404, Body::Empty),
    r("promote",          "POST",   "{f}/promote",                     DEVELOPERS_WRITE,    404, Body::Json(r#"{"from": "a", "to": "b"}"#)),
];

/// Every platform-wide route.
#[rustfmt::skip]
const PLATFORM_ROUTES: [Route; 10] = [
    // Tenant roles see their own tenant only (checked in `check_body`).
    r("list tenants",     "GET",    "/v1/tenants",                     MEMBERS_READ,        200, Body::Empty),
    r("create tenant",    "POST",   "/v1/tenants",                     PLATFORM_WRITE,      201, Body::Json(r#"{"name": "{new}"}"#)),
    r("list functions",   "GET",    "/v1/functions",                   PLATFORM_READ,       200, Body::Empty),
    r("list tokens",      "GET",    "/v1/tokens",                      PLATFORM_READ,       200, Body::Empty),
    r("create token",     "POST",   "/v1/tokens",                      PLATFORM_WRITE,      201, Body::Json(r#"{"name": "m", "role": "operator"}"#)),
    r("revoke unknown",   "DELETE", "/v1/tokens/tok-000000000000",     PLATFORM_WRITE,      404, Body::Empty),
    r("audit log",        "GET",    "/v1/audit",                       PLATFORM_READ,       200, Body::Empty),
    r("metrics",          "GET",    "/metrics",                        PLATFORM_READ,       200, Body::Empty),
    r("rotate secrets key", "POST", "/v1/admin/rotate-secrets-key",    PLATFORM_WRITE,      200, Body::Empty),
    // Into the caller's own tenant (default for platform tokens).
    r("publish own events", "POST", "/v1/events",                      DEVELOPERS_WRITE,    202, Body::Event(EVENT)),
];

/// Creates a token as the admin; returns its id and secret.
async fn make_token(server: &Server, body: Value) -> (String, String) {
    let reply = Reply::read(
        server
            .req(Method::POST, "/v1/tokens")
            .json(&body)
            .send()
            .await
            .expect("request sent"),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let created = reply.json();
    (
        created["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    )
}

/// A denied request, as the audit log must record it.
#[derive(Debug, Clone, PartialEq)]
struct Denial {
    method: String,
    path: String,
    token_id: Option<String>,
    outcome: String,
}

async fn get_json(server: &Server, path: &str) -> Value {
    let reply = Reply::read(server.req(Method::GET, path).send().await.expect("request sent")).await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    reply.json()
}

#[tokio::test]
async fn every_role_on_every_route_gets_exactly_the_expected_answer() {
    let server = Server::start().await;
    let spec: Value = serde_json::from_str(SPEC).unwrap();
    for tenant in ["acme", "globex"] {
        let reply = Reply::read(
            server
                .req(Method::POST, "/v1/tenants")
                .json(&json!({"name": tenant, "spec": spec}))
                .send()
                .await
                .expect("request sent"),
        )
        .await;
        assert_eq!(reply.status, 201, "{}", reply.text());
    }
    let source = hello();
    tokio::join!(
        server.deploy(&source, &["--tenant", "acme", "--name", "hello"]),
        server.deploy(&source, &["--tenant", "globex", "--name", "hello"]),
    );
    for tenant in ["acme", "globex"] {
        let trigger = format!(r#"{{"name": "matrix", "spec": {TRIGGER}}}"#);
        let reply = Reply::read(
            server
                .req(Method::POST, &format!("/v1/tenants/{tenant}/triggers"))
                .json(&serde_json::from_str::<Value>(&trigger).unwrap())
                .send()
                .await
                .expect("request sent"),
        )
        .await;
        assert_eq!(reply.status, 201, "{}", reply.text());
    }

    // (token id, secret) of each role.
    let mut tokens: HashMap<Who, (String, String)> = HashMap::new();
    let bootstrap = get_json(&server, "/v1/tokens").await["tokens"][0].clone();
    assert_eq!(bootstrap["role"], "admin");
    tokens.insert(
        Who::Admin,
        (bootstrap["id"].as_str().unwrap().to_owned(), server.token()),
    );
    tokens.insert(
        Who::Operator,
        make_token(&server, json!({"name": "ops", "role": "operator"})).await,
    );
    for (who, role) in [
        (Who::TenantAdmin, "tenant-admin"),
        (Who::Developer, "developer"),
        (Who::Viewer, "viewer"),
    ] {
        let body = json!({"name": role, "role": role, "tenant": "acme"});
        tokens.insert(who, make_token(&server, body).await);
    }
    assert_eq!(
        get_json(&server, "/v1/audit").await["entries"],
        json!([]),
        "no denial before the matrix"
    );

    let mut plan: Vec<(Route, Target)> = Vec::new();
    for route in TENANT_ROUTES {
        plan.push((route, Target::Own));
        plan.push((route, Target::Other));
    }
    plan.extend(PLATFORM_ROUTES.map(|route| (route, Target::Platform)));

    let mut failures = Vec::new();
    let mut denials = Vec::new();
    let mut rows = 0;
    for who in EVERYONE {
        let token = tokens.get(&who);
        for (route, target) in &plan {
            rows += 1;
            let victim = if route.path.contains("{victim}") {
                let body = json!({"name": "victim", "role": "viewer", "tenant": target.tenant()});
                make_token(&server, body).await.0
            } else {
                String::new()
            };
            let fill = |s: &str| {
                s.replace("{f}", "/v1/tenants/{t}/functions/hello")
                    .replace("{t}", target.tenant())
                    .replace("{victim}", &victim)
                    .replace("{new}", &format!("made-{rows}"))
            };
            let path = fill(route.path);
            let method = Method::from_bytes(route.method.as_bytes()).unwrap();
            let request = server.req_as(token.map(|t| t.1.as_str()), method, &path);
            let request = match route.body {
                Body::Empty => request,
                Body::Json(template) => {
                    request.json(&serde_json::from_str::<Value>(&fill(template)).unwrap())
                }
                Body::Bytes(bytes) => request.body(bytes),
                Body::Event(template) => request
                    .header("content-type", "application/cloudevents+json")
                    .body(fill(template)),
                Body::Async(template) => request
                    .header("prefer", "respond-async")
                    .json(&serde_json::from_str::<Value>(&fill(template)).unwrap()),
            };
            let response = request.send().await.expect("request sent");
            // A followed stream never ends: its head is the answer.
            let reply = if route.what == "follow events" && response.status() == 200 {
                Reply {
                    status: 200,
                    headers: response.headers().clone(),
                    body: b"{}".to_vec(),
                }
            } else {
                Reply::read(response).await
            };
            let verdict = rule(who, route.need, *target);
            let (want, outcome) = match verdict {
                Verdict::Allow => (route.ok, None),
                Verdict::Unauthenticated => (401, Some("unauthenticated")),
                Verdict::Forbidden => (403, Some("forbidden")),
                Verdict::NotFound => (404, Some("not-found")),
            };
            let cell = format!("{who:?} {} {path} ({}, {target:?})", route.method, route.what);
            if reply.status != want {
                failures.push(format!(
                    "{cell}: got {}, want {want}: {}",
                    reply.status,
                    reply.text()
                ));
            } else if let Some(problem) = check_body(who, route.what, *target, verdict, &reply) {
                failures.push(format!("{cell}: {problem}"));
            }
            if let Some(outcome) = outcome {
                denials.push(Denial {
                    method: route.method.to_owned(),
                    path: path.split('?').next().unwrap().to_owned(),
                    token_id: token.map(|t| t.0.clone()),
                    outcome: outcome.to_owned(),
                });
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {rows} cells differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        rows,
        6 * (36 * 2 + 10),
        "every caller × every route × own/other tenant"
    );

    // Every denial is in the audit log, and nothing else is.
    let audit: kl_api::AuditList =
        serde_json::from_value(get_json(&server, "/v1/audit?limit=10000").await).unwrap();
    assert_eq!(
        audit.entries.len(),
        denials.len(),
        "one audit entry per denied request"
    );
    let mut unmatched = denials.clone();
    for e in &audit.entries {
        let seen = Denial {
            method: e.method.clone(),
            path: e.path.clone(),
            token_id: e.token_id.clone(),
            outcome: e.outcome.clone(),
        };
        let Some(i) = unmatched.iter().position(|d| *d == seen) else {
            panic!("an audit entry for no denied request: {e:?}");
        };
        unmatched.remove(i);
    }
    assert!(
        unmatched.is_empty(),
        "denials missing from the audit log: {unmatched:?}"
    );
    let sample = audit
        .entries
        .iter()
        .find(|e| {
            e.role.as_deref() == Some("developer") && e.method == "GET" && e.path == "/v1/tenants/globex"
        })
        .expect("the developer's look at another tenant is audited");
    assert_eq!(
        sample.token_id.as_deref(),
        Some(tokens[&Who::Developer].0.as_str())
    );
    assert_eq!(sample.caller_tenant.as_deref(), Some("acme"));
    assert_eq!(sample.target_tenant.as_deref(), Some("globex"));
    assert_eq!(sample.action, "read the tenant");
    assert_eq!(sample.outcome, "not-found");
    let anonymous = audit
        .entries
        .iter()
        .find(|e| e.path == "/fn/acme/hello" && e.token_id.is_none())
        .expect("an anonymous call of a private function is audited");
    assert_eq!(
        (
            anonymous.role.as_deref(),
            anonymous.action.as_str(),
            anonymous.outcome.as_str()
        ),
        (None, "invoke", "unauthenticated")
    );
    assert!(
        audit.entries.windows(2).all(|w| w[0].at >= w[1].at),
        "newest first"
    );
}

/// Checks the body of an answer, beyond its status: the error code of a denial, and what
/// some allowed reads return.
fn check_body(who: Who, route: &str, target: Target, verdict: Verdict, reply: &Reply) -> Option<String> {
    let want = match verdict {
        Verdict::Allow => None,
        Verdict::Unauthenticated => Some("Unauthorized"),
        Verdict::Forbidden => Some("Forbidden"),
        Verdict::NotFound => Some("NotFound"),
    };
    if let Some(want) = want {
        let code = reply.code();
        return (code != want).then(|| format!("error code {code}, want {want}"));
    }
    let body = || reply.json();
    let tenant = target.tenant();
    match route {
        "list tenants" => {
            let body = body();
            let names: Vec<&str> = body["tenants"]
                .as_array()?
                .iter()
                .filter_map(|t| t["name"].as_str())
                .collect();
            let ok = if TENANT_ROLES.contains(&who) {
                names == ["acme"]
            } else {
                names.contains(&"acme") && names.contains(&"globex")
            };
            (!ok).then(|| format!("listed {names:?}"))
        }
        "list functions" if target != Target::Platform => {
            let body = body();
            let functions = body["functions"].as_array()?;
            (functions.len() != 1 || functions[0]["tenant"] != tenant).then(|| format!("listed {body}"))
        }
        "describe function" => {
            let body = body();
            (body["tenant"] != tenant || body["name"] != "hello").then(|| format!("described {body}"))
        }
        "invoke private" => {
            let body = body();
            (body["message"] != "Hello, matrix!").then(|| format!("invoked: {body}"))
        }
        "invoke async" => {
            let body = body();
            (body["status"] != "queued" || !body["invocationId"].is_string())
                .then(|| format!("queued: {body}"))
        }
        "publish events" | "publish own events" => {
            let body = body();
            (body != json!({"accepted": 1, "duplicates": 0})).then(|| format!("published: {body}"))
        }
        "follow events" => {
            let ct = reply.header("content-type");
            (ct != "application/x-ndjson").then(|| format!("followed as {ct}"))
        }
        "metrics" => {
            let text = reply.text();
            let series = r#"kl_instances{tenant="acme",function="hello",revision="hello-00001"} 1"#;
            (!text.contains(series)).then(|| format!("no {series} in\n{text}"))
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn concurrent_deploys_never_overshoot_the_functions_quota() {
    let server = Server::start().await;
    // Build slots are plentiful so that the functions quota is the one under test.
    server
        .kl_ok(&[
            "tenant",
            "create",
            "race",
            "--functions",
            "3",
            "--concurrent-builds",
            "8",
        ])
        .await;
    let source = hello();
    let source = source.to_str().unwrap();
    let mut children = Vec::new();
    for i in 0..8 {
        let name = format!("f{i}");
        let child = server
            .kl_command(&["deploy", source, "--tenant", "race", "--name", &name, "--no-wait"])
            .spawn()
            .expect("kl runs");
        children.push((name, child));
    }
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for (name, child) in children {
        let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
            .await
            .expect("deploy finished in time")
            .expect("kl ran");
        if out.status.success() {
            accepted.push(name);
        } else {
            refused.push((name, stderr(&out)));
        }
    }
    assert_eq!(accepted.len(), 3, "accepted {accepted:?}, refused {refused:?}");
    assert_eq!(refused.len(), 5);
    for (name, message) in &refused {
        assert!(
            message.contains("tenant \"race\" is at its functions quota (3 of 3 in use, 1 more requested)")
                && message.contains("QuotaExceeded"),
            "{name}: {message}"
        );
    }
    let describe = server.kl_ok(&["tenant", "describe", "race"]).await;
    assert!(has_line(&describe, "functions 3 / 3"), "{describe}");
    let listed: Value =
        serde_json::from_str(&server.kl_ok(&["ls", "--tenant", "race", "-o", "json"]).await).unwrap();
    let mut names: Vec<String> = listed["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    accepted.sort();
    assert_eq!(names, accepted);
    // The admitted deploys build and serve.
    for name in &accepted {
        let path = format!("/v1/tenants/race/functions/{name}/revisions/1");
        let state = wait_for(
            &format!("{name} to finish building"),
            Duration::from_secs(300),
            || {
                let request = server.req(Method::GET, &path);
                async move {
                    let rev: Value = request.send().await.ok()?.json().await.ok()?;
                    let state = rev["state"].as_str()?.to_owned();
                    (state != "building").then_some(state)
                }
            },
        )
        .await;
        assert_eq!(state, "ready", "{name}");
    }
    let again = server
        .kl(&[
            "deploy",
            source,
            "--tenant",
            "race",
            "--name",
            "f-late",
            "--no-wait",
        ])
        .await;
    assert!(
        stderr(&again).contains("(3 of 3 in use, 1 more requested)"),
        "{}",
        text(&again)
    );
}
