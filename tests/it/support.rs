//! Shared fixtures: a seeded emulator and a raw HTTP helper.

use runner_operator::emulator::{GitLabEmulator, Role, Seed, SeedNamespace, SeedToken, SeedUser};
use serde_json::Value;

pub fn ns(path: &str, members: &[(&str, Role)]) -> SeedNamespace {
    SeedNamespace {
        path: path.into(),
        members: members.iter().map(|(u, r)| (u.to_string(), *r)).collect(),
        ..Default::default()
    }
}

fn token(token: &str, user: &str, scopes: &[&str]) -> SeedToken {
    SeedToken {
        token: token.into(),
        user: user.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// root: admin. alice: Owner of group grp (so Maintainer+ on its projects). bob: Developer on
/// grp/app. carol: Maintainer of other/proj only. dave: Maintainer of grp (not Owner).
pub fn seed() -> Seed {
    let user = |n: &str, admin| SeedUser {
        username: n.into(),
        admin,
    };
    let mut expired = token("glpat-expired", "alice", &["api"]);
    expired.expired = true;
    let mut revoked = token("glpat-revoked", "alice", &["api"]);
    revoked.revoked = true;
    Seed {
        users: vec![
            user("root", true),
            user("alice", false),
            user("bob", false),
            user("carol", false),
            user("dave", false),
        ],
        tokens: vec![
            token("glpat-root", "root", &["api"]),
            token("glpat-alice", "alice", &["api"]),
            token("glpat-alice-read", "alice", &["read_api"]),
            token("glpat-alice-manage", "alice", &["manage_runner"]),
            token("glpat-alice-create", "alice", &["create_runner"]),
            token("glpat-bob", "bob", &["api"]),
            token("glpat-carol", "carol", &["api"]),
            token("glpat-dave", "dave", &["api"]),
            expired,
            revoked,
        ],
        groups: vec![
            ns("grp", &[("alice", Role::Owner), ("dave", Role::Maintainer)]),
            ns("grp/sub", &[]),
            ns("other", &[]),
        ],
        projects: vec![
            ns("grp/app", &[("bob", Role::Developer)]),
            ns("grp/lib", &[]),
            ns("grp/sub/deep", &[]),
            ns("other/proj", &[("carol", Role::Maintainer)]),
        ],
        settings: None,
    }
}

pub async fn emulator() -> GitLabEmulator {
    GitLabEmulator::start(&seed())
        .await
        .expect("emulator starts")
}

/// A response as the tests look at it.
pub struct Raw {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Raw {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

pub async fn raw(
    emu: &GitLabEmulator,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Raw {
    runner_operator::tls::install_crypto_provider();
    let client = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client.request(method, format!("{}{}", emu.url(), path));
    if let Some(t) = token {
        req = req.header("PRIVATE-TOKEN", t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    Raw {
        status,
        headers,
        text,
    }
}

/// Creates a runner through the API and returns (id, token).
pub async fn create(emu: &GitLabEmulator, token: &str, body: Value) -> (i64, String) {
    let r = raw(emu, "POST", "/api/v4/user/runners", Some(token), Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let v = r.json();
    (
        v["id"].as_i64().expect("id"),
        v["token"].as_str().expect("token").to_string(),
    )
}
