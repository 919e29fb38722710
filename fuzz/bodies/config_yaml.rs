//! Fuzz body `config_yaml`: the configuration loader on the text of one YAML file (any
//! number of documents, either form: Aidbox `resourceType` or Kubernetes `apiVersion`),
//! parsed and compiled into a snapshot as `validate` and the file source do.
//!
//! Input: the file's bytes (not UTF-8: nothing to do, as the file source cannot read it).
//! Properties: see `common::check_config`.

#[path = "common.rs"]
mod common;

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    common::check_config("fuzz.yaml", text);
}
