use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::resources::{Identifier, UserSpec};

/// A User as policies see it (`user` in the request context).
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub name: String,
    pub spec: UserSpec,
}

impl User {
    pub fn is_active(&self) -> bool {
        !self.spec.inactive.unwrap_or(false)
    }

    /// `{id, data, identifier, email?}`: the shape of `user` in the request context.
    pub fn to_context(&self) -> Value {
        let mut v = json!({
            "id": self.name,
            "data": self.spec.data.clone().unwrap_or_else(|| json!({})),
            "identifier": self.spec.identifier,
        });
        if let Some(email) = &self.spec.email {
            v["email"] = json!(email);
        }
        v
    }
}

/// Users by name and by identifier `(system, value)`.
#[derive(Debug, Default, Clone)]
pub struct UserIndex {
    by_name: HashMap<String, Arc<User>>,
    by_identifier: HashMap<Identifier, Arc<User>>,
}

impl UserIndex {
    /// Adds or replaces a user. Returns the name of another user that already claimed one
    /// of its identifiers, if any (the first one keeps it).
    pub fn insert(&mut self, user: User) -> Option<String> {
        let user = Arc::new(user);
        if let Some(old) = self.by_name.insert(user.name.clone(), user.clone()) {
            for id in &old.spec.identifier {
                if self
                    .by_identifier
                    .get(id)
                    .is_some_and(|u| u.name == old.name)
                {
                    self.by_identifier.remove(id);
                }
            }
        }
        let mut clash = None;
        for id in &user.spec.identifier {
            match self.by_identifier.get(id) {
                Some(other) if other.name != user.name => clash = Some(other.name.clone()),
                _ => {
                    self.by_identifier.insert(id.clone(), user.clone());
                }
            }
        }
        clash
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<User>> {
        self.by_name.get(name)
    }

    pub fn by_identifier(&self, system: &str, value: &str) -> Option<&Arc<User>> {
        // Identifier lookups are rare next to name lookups: a key is built only here.
        self.by_identifier.get(&Identifier {
            system: system.to_string(),
            value: value.to_string(),
        })
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}
