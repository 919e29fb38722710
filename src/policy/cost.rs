//! What one evaluation of a policy may cost on a request, known before it runs.
//!
//! A policy's nodes fall in two parts when it compiles. Most sit at a fixed place of the
//! request context (`jwt.iss`, `uri`) and meet one value each: they are `fixed`. The others
//! meet every value under a place (a schema's `items`, a matcho `$every`, a regex scanning
//! a string, whatever a `$ref` brings): they are counted at that place, a *site*, and on a
//! request each costs the weight of what the context holds there
//! ([`crate::resources::json_weight`]). So a list of a thousand allowed e-mails costs a
//! thousand comparisons with one value, and a schema over `jwt.groups` costs nothing on a
//! token without groups.

use serde_json::Value;

use super::EvalContext;
use crate::resources::json_weight;

/// More sites than this are counted at the context's root: the lookups of a request stay
/// few whatever the policy.
const MAX_SITES: usize = 16;

/// The nodes of a policy by where in the request context they apply.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cost {
    fixed: u64,
    /// `(place, nodes)`: a path of object keys (or array indexes) from the context's root.
    sites: Vec<(Box<[Box<str>]>, u64)>,
}

impl Cost {
    pub(crate) fn fixed(nodes: u64) -> Cost {
        Cost {
            fixed: nodes,
            sites: Vec::new(),
        }
    }

    pub(crate) fn add_fixed(&mut self, nodes: u64) {
        self.fixed = self.fixed.saturating_add(nodes);
    }

    /// `nodes` that meet every value at `place`.
    pub(crate) fn add_site<S: AsRef<str>>(&mut self, place: &[S], nodes: u64) {
        let same = |p: &[Box<str>]| {
            p.len() == place.len() && p.iter().zip(place).all(|(a, b)| **a == *b.as_ref())
        };
        if let Some((_, n)) = self.sites.iter_mut().find(|(p, _)| same(p)) {
            *n = n.saturating_add(nodes);
            return;
        }
        if self.sites.len() == MAX_SITES {
            // A place that holds all the others: the root.
            let all = self
                .sites
                .drain(..)
                .map(|(_, n)| n)
                .fold(nodes, u64::saturating_add);
            self.sites.push((Box::new([]), all));
            return;
        }
        let place = place.iter().map(|s| s.as_ref().into()).collect();
        self.sites.push((place, nodes));
    }

    pub(crate) fn add(&mut self, other: Cost) {
        self.add_fixed(other.fixed);
        for (place, nodes) in other.sites {
            self.add_site(&place, nodes);
        }
    }

    /// Whether every node meets one value: the cost is the same on every request.
    pub fn is_fixed(&self) -> bool {
        self.sites.is_empty()
    }

    /// Every node, wherever it applies.
    pub fn nodes(&self) -> u64 {
        self.sites
            .iter()
            .fold(self.fixed, |sum, (_, n)| sum.saturating_add(*n))
    }

    /// The most visits on any request whose context weighs `weight`: every site as heavy as
    /// the whole context. Needs no look at the request.
    pub fn bound(&self, weight: u64) -> u64 {
        self.sites.iter().fold(self.fixed, |sum, (_, n)| {
            sum.saturating_add(n.saturating_mul(weight))
        })
    }

    /// The most visits on this request: each site weighed where it applies (`weight` is
    /// the whole context's, for a site at its root).
    pub fn visits(&self, ctx: &EvalContext, weight: u64) -> u64 {
        self.sites.iter().fold(self.fixed, |sum, (place, n)| {
            let at = match place.split_first() {
                None => weight,
                Some((first, rest)) => ctx
                    .get(first)
                    .and_then(|v| rest.iter().try_fold(v, |v, k| child(v, k)))
                    .map_or(0, |v| u64::from(json_weight(v))),
            };
            sum.saturating_add(n.saturating_mul(at))
        })
    }
}

fn child<'v>(v: &'v Value, key: &str) -> Option<&'v Value> {
    match v {
        Value::Object(map) => map.get(key),
        Value::Array(items) => items.get(key.parse::<usize>().ok()?),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_site_costs_what_the_request_holds_there() {
        let mut cost = Cost::fixed(3);
        cost.add_site(&["jwt", "groups"], 100);
        assert_eq!(cost.nodes(), 103);
        assert_eq!(cost.bound(50), 3 + 100 * 50);
        let with = json!({"jwt": {"groups": ["a", "b", "c"]}});
        assert_eq!(cost.visits(&EvalContext::new(&with), 50), 3 + 100 * 4);
        let without = json!({"jwt": {"sub": "x"}});
        assert_eq!(cost.visits(&EvalContext::new(&without), 50), 3);
        let at_index = {
            let mut c = Cost::default();
            c.add_site(&["jwt", "groups", "1"], 1);
            c
        };
        assert_eq!(at_index.visits(&EvalContext::new(&with), 50), 1);
    }

    #[test]
    fn many_sites_fold_into_the_root() {
        let mut cost = Cost::default();
        for i in 0..=MAX_SITES {
            cost.add_site(&[format!("k{i}")], 1);
        }
        assert_eq!(cost.sites.len(), 1);
        assert_eq!(cost.nodes(), MAX_SITES as u64 + 1);
        let ctx = json!({"k0": 1});
        assert_eq!(
            cost.visits(&EvalContext::new(&ctx), 7),
            7 * (MAX_SITES as u64 + 1)
        );
    }
}
