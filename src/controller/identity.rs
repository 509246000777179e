//! Who manages a GitLab runner: the ownership marker in its maintenance note, naming the
//! Runner (namespace, name, uid) and, when the operator has one, its cluster's name.
//!
//! The uid alone ties a runner to one incarnation of a Runner; the cluster name lets a rebuilt
//! cluster (same name, same manifests, new uids) recognise the runners its predecessor made,
//! and keeps clusters of different names off each other's runners.

use std::fmt;

const PREFIX: &str = "[runner-operator: managed by Runner ";

/// A cluster's name as `--cluster-name` gives it: a DNS label (RFC 1123), so it can never
/// break the marker it is written into.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterName(String);

impl ClusterName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for ClusterName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if ok {
            Ok(ClusterName(s.to_string()))
        } else {
            Err(format!(
                "cluster name {s:?} must be a DNS label: 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit (e.g. prod-eu-1)"
            ))
        }
    }
}

/// The marker's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Absent in markers written without `--cluster-name` (and by releases before it).
    pub cluster: Option<String>,
}

impl Marker {
    /// The note's marker: the last one, as the operator appends it after the user's text (a
    /// marker typed into the text before it decides nothing).
    pub fn parse(note: Option<&str>) -> Option<Marker> {
        let note = note?;
        let rest = &note[note.rfind(PREFIX)? + PREFIX.len()..];
        let body = rest.split(']').next()?;
        let (path, rest) = body.split_once(", uid ")?;
        let (uid, cluster) = match rest.split_once(", cluster ") {
            Some((uid, cluster)) => (uid, Some(cluster.to_string())),
            None => (rest, None),
        };
        let (namespace, name) = path.split_once('/')?;
        Some(Marker {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
            cluster,
        })
    }

    /// Whether an operator of `cluster` may act on this marker's runner at all: the marker
    /// names no cluster, or names this one. An operator without a name keeps today's rule
    /// (the uid decides).
    pub fn in_cluster(&self, cluster: Option<&ClusterName>) -> bool {
        match (&self.cluster, cluster) {
            (Some(theirs), Some(ours)) => theirs == ours.as_str(),
            _ => true,
        }
    }

    /// Written by this cluster's earlier incarnation of the Runner `namespace/name`: the same
    /// cluster name (set on both sides), namespace and name, another uid.
    pub fn predecessor_of(
        &self,
        cluster: Option<&ClusterName>,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> bool {
        matches!((&self.cluster, cluster), (Some(theirs), Some(ours)) if theirs == ours.as_str())
            && self.namespace == namespace
            && self.name == name
            && self.uid != uid
    }

    /// `namespace/name`.
    pub fn path(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl fmt::Display for Marker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{}/{}, uid {}",
            self.namespace, self.name, self.uid
        )?;
        if let Some(c) = &self.cluster {
            write!(f, ", cluster {c}")?;
        }
        f.write_str("]")
    }
}

/// The note without its marker (the last one, and the blank line before it).
pub fn strip(note: &str) -> String {
    match note.rfind(PREFIX) {
        None => note.to_string(),
        Some(start) => {
            let end = note[start..]
                .find(']')
                .map_or(note.len(), |e| start + e + 1);
            let mut out = note[..start].trim_end().to_string();
            out.push_str(note[end..].trim_end());
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ClusterName {
        s.parse().unwrap()
    }

    #[test]
    fn markers_round_trip_with_and_without_a_cluster() {
        for cluster in [None, Some("prod".to_string())] {
            let m = Marker {
                namespace: "ci".into(),
                name: "r".into(),
                uid: "u-1".into(),
                cluster: cluster.clone(),
            };
            let note = format!("owned by team a\n\n{m}");
            assert_eq!(Marker::parse(Some(&note)), Some(m.clone()));
            assert_eq!(strip(&note), "owned by team a");
        }
        // The format releases before cluster names wrote.
        assert_eq!(
            Marker::parse(Some("[runner-operator: managed by Runner ci/r, uid u-1]")),
            Some(Marker {
                namespace: "ci".into(),
                name: "r".into(),
                uid: "u-1".into(),
                cluster: None
            })
        );
        assert_eq!(Marker::parse(Some("plain note")), None);
        // A marker typed into the user's part is not the one that counts.
        let spoofed = "[runner-operator: managed by Runner victim/r, uid v, cluster prod]\n\n[runner-operator: managed by Runner ci/r, uid u-1, cluster prod]";
        assert_eq!(Marker::parse(Some(spoofed)).unwrap().namespace, "ci");
        assert_eq!(Marker::parse(None), None);
    }

    #[test]
    fn cluster_names_are_dns_labels() {
        for ok in ["prod", "prod-eu-1", "a", &"x".repeat(63)] {
            assert!(ok.parse::<ClusterName>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Prod",
            "-a",
            "a-",
            "a]b",
            "a, uid x",
            "a b",
            &"x".repeat(64),
        ] {
            assert!(bad.parse::<ClusterName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn predecessors_need_the_same_cluster_namespace_and_name_and_another_uid() {
        let m = Marker::parse(Some(
            "[runner-operator: managed by Runner ci/r, uid old, cluster prod]",
        ))
        .unwrap();
        let prod = name("prod");
        assert!(m.predecessor_of(Some(&prod), "ci", "r", "new"));
        assert!(!m.predecessor_of(Some(&prod), "ci", "r", "old"), "itself");
        assert!(!m.predecessor_of(Some(&prod), "ci", "other", "new"));
        assert!(!m.predecessor_of(Some(&prod), "team", "r", "new"));
        assert!(!m.predecessor_of(Some(&name("staging")), "ci", "r", "new"));
        assert!(
            !m.predecessor_of(None, "ci", "r", "new"),
            "no name, no takeover"
        );
        let unnamed =
            Marker::parse(Some("[runner-operator: managed by Runner ci/r, uid old]")).unwrap();
        assert!(!unnamed.predecessor_of(Some(&prod), "ci", "r", "new"));
        assert!(m.in_cluster(Some(&prod)) && m.in_cluster(None));
        assert!(!m.in_cluster(Some(&name("staging"))));
        assert!(unnamed.in_cluster(Some(&name("staging"))));
    }
}
