use std::collections::HashMap;
use std::sync::Arc;

use crate::policy::Policy;

/// An AccessPolicy compiled for evaluation.
#[derive(Debug)]
pub struct CompiledPolicy {
    pub name: String,
    /// Shared, so that a costly evaluation can run on the bounded pool, off the snapshot.
    pub policy: Arc<Policy>,
    /// `portcullis.dev/dry-run: "true"`: evaluated, counted and logged, but never allows.
    pub dry_run: bool,
}

/// AccessPolicies with the index that finds a request's candidates without a scan.
///
/// Candidates are the unlinked policies plus those linked to the request's user or client,
/// evaluated in name order, so the allowing policy does not depend on load order.
#[derive(Debug, Default)]
pub struct PolicySet {
    /// Sorted by name; indexes below point into it.
    policies: Vec<CompiledPolicy>,
    unlinked: Vec<usize>,
    by_user: HashMap<String, Vec<usize>>,
    /// Issuer → client id → policies: a client is only the client of its issuer's tokens.
    by_client: HashMap<String, HashMap<String, Vec<usize>>>,
}

/// Where a policy applies: `link` targets, or everyone.
#[derive(Debug, Default, Clone)]
pub struct Links {
    pub users: Vec<String>,
    /// `(issuer, client id)`.
    pub clients: Vec<(String, String)>,
}

impl Links {
    /// User links name Users of the policy's own namespace.
    pub fn in_namespace(mut self, namespace: Option<&str>) -> Self {
        if namespace.is_some() {
            for u in &mut self.users {
                *u = super::qualified(namespace, u);
            }
        }
        self
    }
}

/// The client of a request: the token's `client_id` (or `azp`) and the issuer that the
/// accepting TokenIntrospector trusts, which vouches for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client<'a> {
    pub issuer: &'a str,
    pub id: &'a str,
}

impl PolicySet {
    pub fn build(mut entries: Vec<(CompiledPolicy, Links)>) -> Self {
        entries.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        let mut set = PolicySet {
            policies: Vec::with_capacity(entries.len()),
            ..Default::default()
        };
        for (i, (policy, links)) in entries.into_iter().enumerate() {
            if links.users.is_empty() && links.clients.is_empty() {
                set.unlinked.push(i);
            }
            for u in links.users {
                set.by_user.entry(u).or_default().push(i);
            }
            for (issuer, id) in links.clients {
                set.by_client
                    .entry(issuer)
                    .or_default()
                    .entry(id)
                    .or_default()
                    .push(i);
            }
            set.policies.push(policy);
        }
        set.unlinked.shrink_to_fit();
        set
    }

    /// The candidate policies for a request, in evaluation (name) order.
    pub fn candidates(
        &self,
        user: Option<&str>,
        client: Option<Client<'_>>,
    ) -> Vec<&CompiledPolicy> {
        const NONE: &[usize] = &[];
        let linked_user = user
            .and_then(|u| self.by_user.get(u))
            .map_or(NONE, Vec::as_slice);
        let linked_client = client
            .and_then(|c| self.by_client.get(c.issuer)?.get(c.id))
            .map_or(NONE, Vec::as_slice);
        let mut indexes: Vec<usize> =
            Vec::with_capacity(self.unlinked.len() + linked_user.len() + linked_client.len());
        indexes.extend_from_slice(&self.unlinked);
        if !linked_user.is_empty() || !linked_client.is_empty() {
            indexes.extend_from_slice(linked_user);
            indexes.extend_from_slice(linked_client);
            indexes.sort_unstable();
            indexes.dedup();
        }
        indexes.into_iter().map(|i| &self.policies[i]).collect()
    }

    /// Every policy, in name order.
    pub fn iter(&self) -> impl Iterator<Item = &CompiledPolicy> {
        self.policies.iter()
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ISS: &str = "https://auth.example.com";

    fn policy(name: &str) -> CompiledPolicy {
        CompiledPolicy {
            name: name.into(),
            policy: Arc::new(crate::policy::compile(&json!({"engine": "allow"})).unwrap()),
            dry_run: false,
        }
    }

    #[test]
    fn candidates_are_unlinked_plus_linked_in_name_order() {
        let set = PolicySet::build(vec![
            (policy("c-open"), Links::default()),
            (
                policy("b-alice"),
                Links {
                    users: vec!["alice".into()],
                    clients: vec![],
                },
            ),
            (
                policy("a-app"),
                Links {
                    users: vec![],
                    clients: vec![(ISS.into(), "app".into())],
                },
            ),
            (
                policy("d-both"),
                Links {
                    users: vec!["alice".into()],
                    clients: vec![(ISS.into(), "app".into())],
                },
            ),
        ]);
        let names = |u, c| -> Vec<String> {
            set.candidates(u, c)
                .iter()
                .map(|p| p.name.clone())
                .collect()
        };
        assert_eq!(names(None, None), ["c-open"]);
        assert_eq!(names(Some("alice"), None), ["b-alice", "c-open", "d-both"]);
        let app = Client {
            issuer: ISS,
            id: "app",
        };
        assert_eq!(names(Some("bob"), Some(app)), ["a-app", "c-open", "d-both"]);
        assert_eq!(
            names(Some("alice"), Some(app)),
            ["a-app", "b-alice", "c-open", "d-both"]
        );
        // The same client id in a token of another issuer is another client.
        let impostor = Client {
            issuer: "https://other.example.com",
            id: "app",
        };
        assert_eq!(names(None, Some(impostor)), ["c-open"]);
    }
}
