//! Reports for people and their tools: pure converters from the API's types to bytes, reached by
//! the CLI (`--har`, `--html`) and by `vantage serve` (`/api/loads/{id}/har`, `/reports/{id}`).
//! Nothing here reads a clock, the network or the store.

pub mod har;
pub mod html;
mod time;

pub use time::{civil_from_days, iso8601_utc};
