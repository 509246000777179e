//! Routing and parameter details.

use super::*;

fn label(m: Method, path: &str) -> String {
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    endpoint_label(&m, &segs)
}

#[test]
fn labels() {
    assert_eq!(label(Method::GET, "runners/12"), "GET /runners/:id");
    assert_eq!(
        label(Method::POST, "runners/12/reset_authentication_token"),
        "POST /runners/:id/reset_authentication_token"
    );
    assert_eq!(label(Method::GET, "runners/all"), "GET /runners/all");
    assert_eq!(
        label(Method::DELETE, "projects/a%2Fb/runners/7"),
        "DELETE /projects/:id/runners/:runner_id"
    );
    assert_eq!(
        label(Method::POST, "projects/5/runners/reset_registration_token"),
        "POST /projects/:id/runners/reset_registration_token"
    );
    assert_eq!(label(Method::GET, "groups/5"), "GET /groups/:id");
    assert_eq!(label(Method::POST, "user/runners"), "POST /user/runners");
}
