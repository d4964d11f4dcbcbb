//! The JSON Schemas of what `--json` prints, generated from these types: `docs/schema/` holds
//! them, `cargo xtask schema` writes them, and a test fails when a checked-in file is stale.
//!
//! They describe the serialized form (what a reader sees), in JSON Schema 2020-12, with the
//! types' doc comments as descriptions. Their `$id` and title carry [`SCHEMA_VERSION`].

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::Value;

use crate::api::{LoadStatus, MemberInfo, RegionInfo, ReportSummary, StoredReport};
use crate::SCHEMA_VERSION;

/// One schema file under the workspace root.
#[derive(Debug, Clone, Copy)]
pub struct SchemaFile {
    /// Relative to the workspace root.
    pub path: &'static str,
    /// The `$id`'s last part, like `load`.
    name: &'static str,
    /// What prints it, for the title.
    printed_by: &'static str,
    generate: fn() -> Value,
}

/// Every schema file, each with what prints it.
pub const FILES: [SchemaFile; 5] = [
    SchemaFile {
        path: "docs/schema/load.schema.json",
        name: "load",
        printed_by: "`vantage load --json`, `vantage demo --json` and `GET /api/loads/{id}`",
        generate: for_serialized::<LoadStatus>,
    },
    SchemaFile {
        path: "docs/schema/report.schema.json",
        name: "report",
        printed_by: "`vantage reports show --json` and `GET /api/reports/{id}`",
        generate: for_serialized::<StoredReport>,
    },
    SchemaFile {
        path: "docs/schema/report-list.schema.json",
        name: "report-list",
        printed_by: "`vantage reports list --json` and `GET /api/reports`",
        generate: for_serialized::<Vec<ReportSummary>>,
    },
    SchemaFile {
        path: "docs/schema/members.schema.json",
        name: "members",
        printed_by: "`vantage members --json` and `GET /api/members`",
        generate: for_serialized::<Vec<MemberInfo>>,
    },
    SchemaFile {
        path: "docs/schema/regions.schema.json",
        name: "regions",
        printed_by: "`vantage regions --json` and `GET /api/regions`",
        generate: for_serialized::<Vec<RegionInfo>>,
    },
];

impl SchemaFile {
    /// The schema as a JSON value, `$id` and title included.
    pub fn schema(&self) -> Value {
        let mut schema = (self.generate)();
        if let Some(root) = schema.as_object_mut() {
            root.insert(
                "$id".into(),
                format!("urn:vantage:schema:{SCHEMA_VERSION}:{}", self.name).into(),
            );
            root.insert(
                "title".into(),
                format!(
                    "Vantage {} (schema version {SCHEMA_VERSION}), as printed by {}",
                    self.name, self.printed_by
                )
                .into(),
            );
        }
        schema
    }

    /// The file's exact text: pretty JSON and a final newline.
    pub fn text(&self) -> String {
        let mut text = serde_json::to_string_pretty(&self.schema())
            .expect("a schema is a JSON value and serializes");
        text.push('\n');
        text
    }
}

/// The schema of `T` as serde writes it: a field serde skips when empty is not required.
fn for_serialized<T: JsonSchema>() -> Value {
    SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schemas_name_the_version_and_the_two_ttfbs() {
        let load = FILES[0].schema();
        assert_eq!(
            load["$id"],
            format!("urn:vantage:schema:{SCHEMA_VERSION}:load")
        );
        assert!(load["title"]
            .as_str()
            .unwrap()
            .contains(&format!("schema version {SCHEMA_VERSION}")));
        let defs = &load["$defs"];
        let wait = defs["NavTiming"]["properties"]["wait_ms"]["description"]
            .as_str()
            .unwrap();
        assert!(
            wait.contains("Not TTFB") && wait.contains("response_start_ms"),
            "{wait}"
        );
        let stats = defs["Summary"]["properties"]["stats"]["description"]
            .as_str()
            .unwrap();
        assert!(
            stats.contains("`ttfb_ms` (TTFB: navigation start to first"),
            "{stats}"
        );
        let omitted = &defs["Run"];
        assert!(
            !omitted["required"]
                .as_array()
                .unwrap()
                .contains(&"omitted".into()),
            "serde skips an empty `omitted`: {omitted}"
        );
    }
}
