//! GitLab out of reach or changed under us: network errors name their cause, deleted projects
//! make the Runner not ready with the fix.

use std::time::Duration;

use serde_json::json;

use crate::cluster::Backend;
use crate::operator::Env;

use super::*;

/// A connection that cannot reach GitLab says why, in its Ready condition: nothing listening,
/// or a certificate signed by a CA the operator does not trust (naming the issuer and the
/// field that fixes it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn network_errors_name_their_cause() {
    let env = Env::start(Backend::Local).await;
    // An HTTPS server whose certificate comes from a private CA (openssl, as a GitLab behind a
    // corporate CA would look).
    let dir = std::env::temp_dir().join(format!("runner-operator-tls-{}", fastrand::u32(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let sh = |cmd: &str| {
        let ok = std::process::Command::new("bash")
            .arg("-c")
            .arg(cmd)
            .current_dir(&dir)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(ok, "{cmd}");
    };
    sh(
        "openssl ecparam -name prime256v1 -genkey -noout -out ca.key && openssl req -x509 -new -key ca.key -subj '/O=Corp/CN=Corp Internal CA' -days 30 -out ca.crt",
    );
    sh(
        "openssl ecparam -name prime256v1 -genkey -noout -out tls.key && openssl req -new -key tls.key -subj /CN=127.0.0.1 -out tls.csr && printf 'subjectAltName=IP:127.0.0.1\\n' > ext && openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -extfile ext -out tls.crt",
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept", &port.to_string()])
        .args(["-cert", "tls.crt", "-key", "tls.key"])
        .current_dir(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // bound, then dropped: nothing listens there
    let conns: kube::Api<runner_operator::crd::GitLabConnection> =
        kube::Api::namespaced(env.client.clone(), "ci");
    for (name, url) in [
        ("untrusted", format!("https://127.0.0.1:{port}")),
        ("nobody", format!("http://127.0.0.1:{closed}")),
    ] {
        let c = json!({"apiVersion": "gitlab.runner-operator.dev/v1alpha1", "kind": "GitLabConnection",
            "metadata": {"name": name, "namespace": "ci"},
            "spec": {"url": url, "allowInsecureHTTP": true, "tokenSecretRef": {"name": "gitlab-api-token"}}});
        conns
            .create(
                &kube::api::PostParams::default(),
                &serde_json::from_value(c).unwrap(),
            )
            .await
            .unwrap();
    }
    let message = |name: &'static str| {
        let conns = conns.clone();
        async move {
            let c = conns.get(name).await.ok()?;
            c.status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready" && c.status == "False")
                .map(|c| c.message)
        }
    };
    let m = env
        .wait("untrusted explained", || message("untrusted"))
        .await;
    assert!(
        m.contains("not signed by a CA the operator trusts")
            && m.contains("issued by \"Corp Internal CA\"")
            && m.contains("caBundleSecretRef"),
        "{m}"
    );
    let m = env.wait("refused explained", || message("nobody")).await;
    assert!(
        m.contains(&format!(
            "connection refused: nothing listens at 127.0.0.1:{closed}"
        )),
        "{m}"
    );
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Projects deleted in GitLab under a project runner: the Runner is not Ready, names the
/// project and the fix, and stops sending the assignment that cannot succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn deleted_projects_make_the_runner_not_ready_with_the_fix() {
    for (deleted, fix) in [
        (
            vec!["platform/api"],
            "recreate this Runner with spec.project",
        ),
        (vec!["platform/web"], "remove it from spec.assignedProjects"),
        (
            vec!["platform/api", "platform/web"],
            "recreate this Runner with spec.project",
        ),
    ] {
        let env = Env::start(Backend::Local).await;
        let mut spec = base();
        spec["assignedProjects"] = json!(["platform/web"]);
        env.apply("homeless", spec).await;
        env.ready("homeless").await;
        for p in &deleted {
            assert!(env.gitlab.delete_project(p));
        }
        let msg = env.condition("homeless", "Ready", "InvalidSpec").await;
        assert!(msg.contains(fix), "{deleted:?}: {msg}");
        // Once the paths no longer resolve, no assignment is attempted any more: a few more
        // passes (resync 2 s) add no POST /projects/:id/runners.
        let assigns = || env.gitlab.request_count("POST /projects/:id/runners");
        let lookups = || env.gitlab.request_count("GET /projects/:id");
        let (a0, l0) = (assigns(), lookups());
        env.wait_for("two more passes", Duration::from_secs(30), || async {
            (lookups() >= l0 + 2).then_some(())
        })
        .await;
        assert_eq!(assigns(), a0, "{deleted:?}: no failing assignment repeated");
        let st = env.status("homeless").await.unwrap();
        assert!(
            st.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "False"),
            "{deleted:?}: never Ready while GitLab disagrees"
        );
    }
}
