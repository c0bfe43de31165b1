//! Environments through the real `kl` binary and a real server: shares of the tenant's quotas
//! (refused past 100 %, enforced per environment), members acting on their tenant's
//! environments, and `kl promote` serving the exact artifact in another environment without
//! a build.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Reply, Server, fixture, stdout, text};

async fn describe(server: &Server, tenant: &str, function: &str) -> Value {
    serde_json::from_str(
        &server
            .kl_ok(&["describe", function, "--tenant", tenant, "-o", "json"])
            .await,
    )
    .unwrap()
}

#[tokio::test]
async fn environments_take_shares_of_the_quota_and_promote_keeps_the_artifact_without_a_build() {
    let server = Server::start_with(&["--isolation", "none"]).await;
    server
        .create_tenant(
            "acme",
            json!({"quotas": {"functions": 10, "cpu": "20", "memory": "40Gi"}, "priority": "medium"}),
        )
        .await;
    let made = server
        .kl_ok(&["env", "create", "dev", "--share", "20", "--tenant", "acme"])
        .await;
    assert!(made.contains("runs as tenant acme-dev"), "{made}");
    server
        .kl_ok(&[
            "env",
            "create",
            "prod",
            "--share",
            "50",
            "--priority",
            "low",
            "--tenant",
            "acme",
        ])
        .await;
    let over = server
        .kl_fails(&["env", "create", "staging", "--share", "31", "--tenant", "acme"])
        .await;
    assert!(
        over.contains("50% more") || over.contains("exceed 100%"),
        "{over}"
    );
    let zero = server
        .kl_fails(&["env", "create", "qa", "--share", "0", "--tenant", "acme"])
        .await;
    assert!(zero.contains("out of range"), "{zero}");
    let above = server
        .kl_fails(&[
            "env",
            "create",
            "qa",
            "--share",
            "5",
            "--priority",
            "high",
            "--tenant",
            "acme",
        ])
        .await;
    assert!(above.contains("high"), "{above}");
    let bad = server
        .kl_fails(&["env", "create", "Prod_1", "--share", "5", "--tenant", "acme"])
        .await;
    assert!(bad.contains("environment name \"Prod_1\" is invalid"), "{bad}");
    let ls = server.kl_ok(&["env", "ls", "--tenant", "acme"]).await;
    assert!(
        ls.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["dev", "20%", "medium", "acme-dev", "0"]),
        "{ls}"
    );
    assert!(
        ls.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["prod", "50%", "low", "acme-prod", "0"]),
        "{ls}"
    );
    let tenants = server.kl_ok(&["tenant", "ls"]).await;
    assert!(
        tenants.lines().any(|l| l.starts_with("acme-prod (acme/prod) ")),
        "environment tenants say whose they are: {tenants}"
    );

    // dev holds 20 % of 10 functions: two. A tenant developer deploys there.
    let developer = server
        .kl_ok(&["token", "create", "--role", "developer", "--tenant", "acme", "-q"])
        .await;
    let developer = developer.trim();
    let source = fixture("py-events");
    let source = source.to_str().unwrap();
    for name in ["one", "two"] {
        let out = server
            .kl_as(
                developer,
                &[
                    "deploy",
                    source,
                    "--name",
                    name,
                    "--tenant",
                    "acme",
                    "--env-name",
                    "dev",
                ],
            )
            .await;
        assert!(out.status.success(), "{}", text(&out));
    }
    let direct = server
        .kl_fails(&["deploy", source, "--name", "three", "--tenant", "acme"])
        .await;
    assert!(
        direct.contains("has environments: deploy to one of them"),
        "{direct}"
    );
    let third = server
        .kl_fails(&[
            "deploy",
            source,
            "--name",
            "three",
            "--tenant",
            "acme",
            "--env-name",
            "dev",
        ])
        .await;
    assert!(
        third.contains("tenant \"acme-dev\" is at its functions quota (2 of 2 in use"),
        "{third}"
    );
    let other = server
        .kl_ok(&[
            "token",
            "create",
            "--role",
            "developer",
            "--tenant",
            "default",
            "-q",
        ])
        .await;
    let outsider = server
        .kl_as(
            other.trim(),
            &[
                "deploy",
                source,
                "--name",
                "x",
                "--tenant",
                "acme",
                "--env-name",
                "dev",
            ],
        )
        .await;
    assert!(
        !outsider.status.success() && text(&outsider).contains("not found"),
        "{}",
        text(&outsider)
    );

    let promoted = server
        .kl_as(
            developer,
            &[
                "promote", "one", "--from", "dev", "--to", "prod", "--tenant", "acme",
            ],
        )
        .await;
    assert!(promoted.status.success(), "{}", text(&promoted));
    let (dev, prod) = (
        describe(&server, "acme-dev", "one").await,
        describe(&server, "acme-prod", "one").await,
    );
    let digest = &dev["revisions"][0]["digest"];
    assert!(digest.is_string(), "{dev}");
    assert_eq!(
        &prod["revisions"][0]["digest"], digest,
        "the same artifact: {prod}"
    );
    assert!(
        stdout(&promoted).contains(digest.as_str().unwrap()),
        "{}",
        stdout(&promoted)
    );
    assert_eq!(prod["spec"]["priority"], "low", "the target's own class: {prod}");
    assert_eq!(dev["spec"]["priority"], "medium", "{dev}");
    let builds = server.data_dir().join("builds");
    assert!(builds.join("acme-dev/one/1.log").exists());
    assert!(!builds.join("acme-prod").exists(), "nothing was built for prod");
    let reply = Reply::read(
        server
            .req(Method::POST, "/fn/acme-prod/one")
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        reply.status,
        200,
        "the promoted revision serves: {}",
        reply.text()
    );

    let missing = server
        .kl_fails(&[
            "promote", "two", "--from", "prod", "--to", "dev", "--tenant", "acme",
        ])
        .await;
    assert!(missing.contains("not found"), "{missing}");
    let in_use = server.kl_fails(&["env", "rm", "prod", "--tenant", "acme"]).await;
    assert!(in_use.contains("still has 1 function(s)"), "{in_use}");
    let env_rm = server.kl_fails(&["tenant", "rm", "acme-dev"]).await;
    assert!(
        env_rm.contains("is an environment of tenant \"acme\""),
        "{env_rm}"
    );
    let tenant_rm = server.kl_fails(&["tenant", "rm", "acme"]).await;
    assert!(
        tenant_rm.contains("still has environment(s) dev, prod"),
        "{tenant_rm}"
    );
    server.kl_ok(&["rm", "one", "--tenant", "acme-prod"]).await;
    assert_eq!(
        server.kl_ok(&["env", "rm", "prod", "--tenant", "acme"]).await,
        "deleted environment prod\n"
    );
    let ls = server.kl_ok(&["env", "ls", "--tenant", "acme"]).await;
    assert!(!ls.contains("prod"), "{ls}");
}
