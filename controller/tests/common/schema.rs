//! Real output checked against the checked-in JSON Schemas (`docs/schema/`, written by
//! `cargo xtask schema`) with the `jsonschema` crate.

use super::root;

/// Validates `value` (what `what` printed or answered) against `docs/schema/<file>`; panics
/// naming every place that does not match.
pub fn validate(file: &str, what: &str, value: &serde_json::Value) {
    let path = root().join("docs/schema").join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let schema: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let validator = jsonschema::validator_for(&schema)
        .unwrap_or_else(|e| panic!("{} is not a valid JSON Schema: {e}", path.display()));
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("at `{}`: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not follow {file}:\n{}",
        errors.join("\n")
    );
}
