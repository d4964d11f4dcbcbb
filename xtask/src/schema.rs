//! `cargo xtask schema`: writes the JSON Schemas of `--json` (`vantage_proto::schema::FILES`)
//! into `docs/schema/`. `crates/proto/tests/schema_files.rs` fails while a file is stale.

use std::path::Path;

/// Writes each schema file whose text differs; says which changed.
pub fn write_all(root: &Path) -> Result<(), String> {
    for file in vantage_proto::schema::FILES {
        let path = root.join(file.path);
        let text = file.text();
        if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
            println!("xtask: {} is current", file.path);
            continue;
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("xtask: wrote {}", file.path);
    }
    Ok(())
}
