//! The checked-in JSON Schemas (`docs/schema/`) are what the types generate now: a change to a
//! type that `--json` prints fails here until `cargo xtask schema` writes the files again.

use std::path::Path;

use vantage_proto::schema::FILES;

#[test]
fn checked_in_schemas_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut stale = Vec::new();
    for file in FILES {
        let path = root.join(file.path);
        let on_disk = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        if on_disk != file.text() {
            stale.push(file.path);
        }
    }
    assert!(
        stale.is_empty(),
        "{stale:?} differ from what the types generate: run `cargo xtask schema` and commit them"
    );
}
