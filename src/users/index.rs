use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::resources::UserSpec;

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
    /// system → value → User: looked up by `&str` on the request path, no key to build.
    by_identifier: HashMap<String, HashMap<String, Arc<User>>>,
}

impl UserIndex {
    /// Adds or replaces a user. Returns the name of another user that already claimed one
    /// of its identifiers, if any (the first one keeps it).
    pub fn insert(&mut self, user: User) -> Option<String> {
        self.insert_shared(Arc::new(user))
    }

    /// [`UserIndex::insert`] for a User already shared.
    pub fn insert_shared(&mut self, user: Arc<User>) -> Option<String> {
        if let Some(old) = self.by_name.insert(user.name.clone(), user.clone()) {
            for id in &old.spec.identifier {
                if let Some(values) = self.by_identifier.get_mut(&id.system) {
                    if values.get(&id.value).is_some_and(|u| u.name == old.name) {
                        values.remove(&id.value);
                    }
                }
            }
        }
        let mut clash = None;
        for id in &user.spec.identifier {
            let values = self.by_identifier.entry(id.system.clone()).or_default();
            match values.get(&id.value) {
                Some(other) if other.name != user.name => clash = Some(other.name.clone()),
                _ => {
                    values.insert(id.value.clone(), user.clone());
                }
            }
        }
        clash
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<User>> {
        self.by_name.get(name)
    }

    pub fn by_identifier(&self, system: &str, value: &str) -> Option<&Arc<User>> {
        self.by_identifier.get(system)?.get(value)
    }

    /// Every User, in no particular order.
    pub fn users(&self) -> impl Iterator<Item = &Arc<User>> {
        self.by_name.values()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}
