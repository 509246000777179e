//! Seeds for tests: users of each role, tokens of each scope, expired and revoked tokens.

use crate::{Role, Seed, SeedNamespace, SeedToken, SeedUser};

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

/// A seed with every role the Runners API tells apart. root: admin. alice: Owner of group grp (so Maintainer+ on its projects). bob: Developer on
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
