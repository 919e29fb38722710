//! Users that `portcullis serve --create-users` creates: the Keycloak tutorial's
//! configuration, and the files it writes to `--users-dir`.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use super::portcullis::Portcullis;
use super::stub_idp::StubIdp;

/// `portcullis serve --create-users` on `config`, keeping Users in `users_dir`; with
/// debug logging, so that a test of what is never logged covers every log line.
pub async fn serve_creating_users(config: &Path, users_dir: &Path) -> Portcullis {
    Portcullis::builder()
        .config(config)
        .create_users(users_dir)
        .env("RUST_LOG", "debug")
        .start()
        .await
}

/// The User name portcullis derives for a Keycloak subject (docs/users.md, "Naming").
pub fn keycloak_user_name(sub: &str) -> String {
    format!("keycloak-{sub}")
}

/// The User manifests in a users directory, by file name. Every file counts (hidden temp
/// files too, so that a leftover shows), and every file must be YAML: a corrupt file
/// fails the test with its text.
pub fn user_files(dir: &Path) -> BTreeMap<String, Value> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("dir entry").path();
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let value: Value = serde_yaml::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not YAML ({e}):\n{text}", path.display()));
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                value,
            )
        })
        .collect()
}

/// The tutorial's three resources in `dir`, pointed at the stub realm, plus `extra`
/// appended to the AccessPolicy (more fields, or more documents after a `---`). The
/// TokenIntrospector is the tutorial's: `jwt.iss` and the realm's `jwks_uri`.
pub fn write_tutorial_config(dir: &Path, idp: &StubIdp, extra: &str) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("write {name}: {e}"))
    };
    write(
        "identity-provider.yaml",
        format!(
            "id: keycloak\nscopes:\n  - profile\n  - openid\nsystem: keycloak\n\
             userinfo_endpoint: {}\nuserinfo-source: userinfo-endpoint\n\
             resourceType: IdentityProvider\ntitle: Keycloak\nactive: true\n",
            idp.userinfo_url()
        ),
    );
    let introspector = json!({
        "resourceType": "TokenIntrospector",
        "id": "keycloak-jwt-introspector",
        "type": "jwt",
        "jwt": {"iss": idp.issuer},
        "jwks_uri": idp.certs_url(),
        "identity_provider": {"reference": "IdentityProvider/keycloak"},
    });
    write(
        "token-introspector.yaml",
        serde_yaml::to_string(&introspector).expect("YAML"),
    );
    write(
        "access-policy.yaml",
        format!(
            "resourceType: AccessPolicy\nid: keycloak-users-policy\nengine: matcho\n\
             matcho:\n  jwt:\n    iss: {}\n{extra}",
            idp.issuer
        ),
    );
}
