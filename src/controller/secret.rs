//! The token Secret: what it holds, and whether the one we find is still ours and intact.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::{Resource, ResourceExt};
use secrecy::{ExposeSecret, SecretString};

use super::plan::SecretState;
use crate::crd::{Runner, SecretFormat};
use crate::gitlab::RunnerId;

pub const TOKEN_KEY: &str = "runner-token";
pub const REGISTRATION_TOKEN_KEY: &str = "runner-registration-token";
pub const RUNNER_ID_KEY: &str = "runner-id";
pub const URL_KEY: &str = "gitlab-url";
pub const EXPIRES_KEY: &str = "token-expires-at";
/// Changes with every token: issue time and hash, never the token.
pub const ANN_TOKEN_GENERATION: &str = "gitlab.runner-operator.dev/token-generation";
pub const ANN_TOKEN_HASH: &str = "gitlab.runner-operator.dev/token-hash";
pub const LABEL_RUNNER: &str = "gitlab.runner-operator.dev/runner";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "runner-operator";

/// First 16 bytes of SHA-256, hex: identifies a token without revealing it.
pub fn token_hash(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What goes into the Secret.
pub struct TokenData<'a> {
    pub token: &'a SecretString,
    pub runner_id: RunnerId,
    pub url: &'a str,
    pub issued_at: &'a str,
    pub expires_at: Option<&'a str>,
}

/// The Secret for a Runner, owned by it (garbage-collected with it).
pub fn build(runner: &Runner, data: &TokenData) -> Secret {
    let spec = runner.spec.token_secret.clone().unwrap_or_default();
    let hash = token_hash(data.token.expose_secret());
    let mut secret = skeleton(runner);
    let annotations = secret.metadata.annotations.get_or_insert_default();
    annotations.insert(ANN_TOKEN_HASH.into(), hash.clone());
    annotations.insert(
        ANN_TOKEN_GENERATION.into(),
        format!("{}/{hash}", data.issued_at),
    );
    let mut map = BTreeMap::new();
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    map.insert(TOKEN_KEY.into(), bytes(data.token.expose_secret()));
    if spec.format.unwrap_or_default() == SecretFormat::GitLabRunnerChart {
        map.insert(REGISTRATION_TOKEN_KEY.into(), bytes(""));
    }
    map.insert(RUNNER_ID_KEY.into(), bytes(&data.runner_id.to_string()));
    map.insert(URL_KEY.into(), bytes(data.url));
    if let Some(e) = data.expires_at {
        map.insert(EXPIRES_KEY.into(), bytes(e));
    }
    secret.data = Some(map);
    secret
}

/// The token Secret without data: name, owner, the labels and annotations the spec asks for
/// and the operator's own labels.
fn skeleton(runner: &Runner) -> Secret {
    let spec = runner.spec.token_secret.clone().unwrap_or_default();
    let mut labels = spec.labels;
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    labels.insert(LABEL_RUNNER.into(), runner.name_any());
    let mut secret = Secret {
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    secret.metadata.name = Some(runner.token_secret_name());
    secret.metadata.namespace = runner.namespace();
    secret.metadata.labels = Some(labels);
    secret.metadata.annotations = Some(spec.annotations);
    secret.metadata.owner_references = runner.controller_owner_ref(&()).map(|o| vec![o]);
    secret
}

/// The token-generation annotation of a Secret written ahead of a create starts with this,
/// followed by when the create started (the token write replaces it).
pub const CREATION_STARTED: &str = "creation-started/";

/// The write-ahead record of a create: the Secret, owned by the Runner, with no token yet and
/// the time the create started. Creating it (never overwriting) proves in one request that the
/// name is free and that the API server admits the Secret, before GitLab issues a token; a
/// crash after GitLab's answer finds the runner from it. The token write replaces the token
/// and the creation-started annotation (both fields it sets).
pub fn build_pending(runner: &Runner, started: &str) -> Secret {
    let mut secret = skeleton(runner);
    secret.metadata.annotations.get_or_insert_default().insert(
        ANN_TOKEN_GENERATION.into(),
        format!("{CREATION_STARTED}{started}"),
    );
    secret.data = Some(BTreeMap::from([(TOKEN_KEY.into(), ByteString(Vec::new()))]));
    secret
}

/// When the create a write-ahead Secret records started (None: it holds a token, or is not one).
pub fn creation_started(secret: &Secret) -> Option<String> {
    let empty = secret
        .data
        .as_ref()
        .and_then(|d| d.get(TOKEN_KEY))
        .is_none_or(|t| t.0.is_empty());
    secret
        .annotations()
        .get(ANN_TOKEN_GENERATION)
        .and_then(|g| g.strip_prefix(CREATION_STARTED))
        .filter(|_| empty)
        .map(str::to_string)
}

/// Is this Secret ours and does it hold the token we issued (`expected_hash` from status)?
/// Ours with no token yet, written ahead of a create, counts as missing.
pub fn observe(
    secret: Option<&Secret>,
    runner: &Runner,
    expected_hash: Option<&str>,
) -> SecretState {
    let Some(secret) = secret else {
        return SecretState::Missing;
    };
    let ours = secret
        .owner_references()
        .iter()
        .any(|o| Some(&o.uid) == runner.meta().uid.as_ref() && o.controller == Some(true));
    if !ours {
        return SecretState::Foreign;
    }
    if creation_started(secret).is_some() {
        return SecretState::Missing;
    }
    let token = secret
        .data
        .as_ref()
        .and_then(|d| d.get(TOKEN_KEY))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned());
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return SecretState::Tampered;
    };
    let actual = token_hash(&token);
    let annotated = secret.annotations().get(ANN_TOKEN_HASH).map(String::as_str);
    match expected_hash {
        Some(expected) if expected == actual => SecretState::Valid,
        None if annotated == Some(actual.as_str()) => SecretState::Valid,
        _ => SecretState::Tampered,
    }
}

/// What a token Secret restored from a backup holds.
pub struct Restored {
    pub runner_id: RunnerId,
    pub token: SecretString,
    /// When the token was issued, from the Secret's token-generation annotation.
    pub issued_at: Option<String>,
    /// When it expires, as the Secret recorded it (GitLab's verify answer overrides it).
    pub expires_at: Option<String>,
}

/// A Secret labelled as this Runner's token Secret (by name) that no live object controls:
/// what a backup restore leaves (Velero drops the owner references, whose uids died with the
/// old cluster), or one still naming a Runner of this name with another uid. Anything else
/// (no labels, another owner) is someone else's Secret and stays `Foreign`.
pub fn restored(secret: &Secret, runner: &Runner) -> Option<Restored> {
    let labels = secret.labels();
    if labels.get(LABEL_MANAGED_BY).map(String::as_str) != Some(MANAGED_BY)
        || labels.get(LABEL_RUNNER) != Some(&runner.name_any())
    {
        return None;
    }
    let stale_owner = secret.owner_references().iter().all(|o| {
        o.controller != Some(true)
            || (o.kind == "Runner"
                && o.name == runner.name_any()
                && Some(&o.uid) != runner.meta().uid.as_ref())
    });
    if !stale_owner {
        return None;
    }
    let data = secret.data.as_ref()?;
    let token = data
        .get(TOKEN_KEY)
        .map(|b| String::from_utf8_lossy(&b.0).trim().to_string())
        .filter(|t| !t.is_empty())?;
    Some(Restored {
        runner_id: runner_id(secret)?,
        token: SecretString::from(token),
        issued_at: secret
            .annotations()
            .get(ANN_TOKEN_GENERATION)
            .and_then(|g| g.split('/').next())
            .map(str::to_string),
        expires_at: data
            .get(EXPIRES_KEY)
            .map(|b| String::from_utf8_lossy(&b.0).trim().to_string())
            .filter(|e| !e.is_empty()),
    })
}

/// The runner id a Secret records (recovery when status lost it).
pub fn runner_id(secret: &Secret) -> Option<RunnerId> {
    secret
        .data
        .as_ref()?
        .get(RUNNER_ID_KEY)
        .and_then(|b| String::from_utf8_lossy(&b.0).parse().ok())
        .map(RunnerId)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn runner(format: Option<&str>) -> Runner {
        let mut spec = json!({"connectionRef": {"name": "g"}, "runnerType": "instance_type", "tokenSecret": {"labels": {"team": "a"}, "annotations": {"note": "x"}}});
        if let Some(f) = format {
            spec["tokenSecret"]["format"] = json!(f);
        }
        serde_json::from_value(json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "Runner", "metadata": {"name": "r", "namespace": "ci", "uid": "u-1"}, "spec": spec})).unwrap()
    }

    fn data(token: &SecretString) -> TokenData<'_> {
        TokenData {
            token,
            runner_id: RunnerId(5),
            url: "https://g",
            issued_at: "2026-01-01T00:00:00Z",
            expires_at: Some("2026-02-01T00:00:00Z"),
        }
    }

    #[test]
    fn chart_format_has_both_keys_and_never_the_token_in_metadata() {
        let token = SecretString::from("glrt-t1_secretvalue");
        let s = build(&runner(None), &data(&token));
        let d = s.data.as_ref().unwrap();
        assert_eq!(d[TOKEN_KEY].0, b"glrt-t1_secretvalue");
        assert_eq!(d[REGISTRATION_TOKEN_KEY].0, b"");
        assert_eq!(d[RUNNER_ID_KEY].0, b"5");
        assert_eq!(s.metadata.name.as_deref(), Some("r-runner-token"));
        assert_eq!(s.metadata.labels.as_ref().unwrap()["team"], "a");
        assert_eq!(s.metadata.annotations.as_ref().unwrap()["note"], "x");
        assert_eq!(s.metadata.owner_references.as_ref().unwrap()[0].uid, "u-1");
        let meta = serde_json::to_string(&s.metadata).unwrap();
        assert!(!meta.contains("secretvalue"));
        let op = build(&runner(Some("GitLabRunnerOperator")), &data(&token));
        assert!(!op.data.unwrap().contains_key(REGISTRATION_TOKEN_KEY));
    }

    #[test]
    fn observation() {
        let r = runner(None);
        let token = SecretString::from("glrt-t1_secretvalue");
        let s = build(&r, &data(&token));
        let h = token_hash("glrt-t1_secretvalue");
        assert_eq!(observe(None, &r, Some(&h)), SecretState::Missing);
        assert_eq!(observe(Some(&s), &r, Some(&h)), SecretState::Valid);
        assert_eq!(observe(Some(&s), &r, None), SecretState::Valid);
        assert_eq!(observe(Some(&s), &r, Some("other")), SecretState::Tampered);
        let mut edited = s.clone();
        edited
            .data
            .as_mut()
            .unwrap()
            .insert(TOKEN_KEY.into(), ByteString(b"typed by hand".to_vec()));
        assert_eq!(observe(Some(&edited), &r, Some(&h)), SecretState::Tampered);
        let mut foreign = s.clone();
        foreign.metadata.owner_references = None;
        assert_eq!(observe(Some(&foreign), &r, Some(&h)), SecretState::Foreign);
        assert_eq!(runner_id(&s), Some(RunnerId(5)));
        let pending = build_pending(&r, "2026-01-01T00:00:00Z");
        assert_eq!(observe(Some(&pending), &r, None), SecretState::Missing);
        assert_eq!(
            creation_started(&pending).as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
        assert_eq!(creation_started(&s), None, "holds a token: not pending");
        let mut taken = pending.clone();
        taken.metadata.owner_references = None;
        assert_eq!(observe(Some(&taken), &r, None), SecretState::Foreign);
    }

    #[test]
    fn restored_secrets_are_ours_by_label_and_without_a_live_owner() {
        let r = runner(None);
        let token = SecretString::from("glrt-t1_secretvalue");
        let s = build(&r, &data(&token));
        assert!(
            restored(&s, &r).is_none(),
            "owned by this Runner: not restored"
        );
        let mut velero = s.clone();
        velero.metadata.owner_references = None;
        let found = restored(&velero, &r).expect("restored");
        assert_eq!(found.runner_id, RunnerId(5));
        assert_eq!(found.token.expose_secret(), "glrt-t1_secretvalue");
        assert_eq!(found.issued_at.as_deref(), Some("2026-01-01T00:00:00Z"));
        let mut stale = s.clone();
        stale.metadata.owner_references.as_mut().unwrap()[0].uid = "old-uid".into();
        assert!(
            restored(&stale, &r).is_some(),
            "owner of the old incarnation"
        );
        let mut other_owner = stale.clone();
        other_owner.metadata.owner_references.as_mut().unwrap()[0].kind = "Deployment".into();
        assert!(restored(&other_owner, &r).is_none());
        let mut unlabelled = velero.clone();
        unlabelled.metadata.labels = None;
        assert!(restored(&unlabelled, &r).is_none(), "someone else's Secret");
        let mut other_runner = velero;
        other_runner
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(LABEL_RUNNER.into(), "other".into());
        assert!(restored(&other_runner, &r).is_none());
    }
}
