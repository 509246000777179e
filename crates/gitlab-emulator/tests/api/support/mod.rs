//! Shared fixtures: a seeded emulator and a raw HTTP helper.

use gitlab_emulator::GitLabEmulator;
use serde_json::Value;

pub async fn emulator() -> GitLabEmulator {
    GitLabEmulator::start(&gitlab_emulator::fixtures::seed())
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
    let _ = rustls::crypto::ring::default_provider().install_default();
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

/// One request and what must come back: the status, and the JSON body when given. Returns the
/// answer for further checks.
pub async fn check(
    emu: &GitLabEmulator,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
    status: u16,
    want: Option<Value>,
) -> Raw {
    let r = raw(emu, method, path, token, body).await;
    assert_eq!(r.status, status, "{method} {path}: {}", r.text);
    if let Some(want) = want {
        assert_eq!(r.json(), want, "{method} {path}");
    }
    r
}
