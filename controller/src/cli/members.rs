//! `vantage members`, `vantage rtt` and `vantage regions`: the cluster as the controller sees it,
//! worded like `serf members` and `serf rtt`.

use vantage_proto::api::{MemberInfo, RegionInfo, RttAnswer};

use super::client::Client;
use super::error::CliError;
use super::table::{members_table, regions_table};

/// Flags of `vantage members`.
#[derive(Debug, Clone, clap::Args)]
pub struct MembersArgs {
    /// Only members with this tag, `KEY=VALUE` (repeat for several; all must match).
    #[arg(long = "tag", value_parser = super::args::parse_tag)]
    pub tags: Vec<String>,
    /// Print the members as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn members(client: &Client, args: &MembersArgs) -> Result<(), CliError> {
    let query: Vec<(&str, String)> = args.tags.iter().map(|t| ("tag", t.clone())).collect();
    let rows: Vec<MemberInfo> = client.get_json("/api/members", &query).await?;
    if args.json {
        return print_json(&rows);
    }
    print!("{}", members_table(&rows));
    Ok(())
}

/// `Estimated sin-1 <-> ams-1 rtt: 162.418 ms`.
pub async fn rtt(client: &Client, a: &str, b: Option<&str>) -> Result<(), CliError> {
    let mut query = vec![("a", a.to_owned())];
    if let Some(b) = b {
        query.push(("b", b.to_owned()));
    }
    let ans: RttAnswer = client.get_json("/api/rtt", &query).await?;
    println!("{}", rtt_line(&ans));
    Ok(())
}

pub fn rtt_line(ans: &RttAnswer) -> String {
    format!(
        "Estimated {} <-> {} rtt: {:.3} ms",
        ans.a_member, ans.b_member, ans.rtt_ms
    )
}

pub async fn regions(client: &Client, json: bool) -> Result<(), CliError> {
    let rows: Vec<RegionInfo> = client.get_json("/api/regions", &[]).await?;
    if json {
        return print_json(&rows);
    }
    print!("{}", regions_table(&rows));
    Ok(())
}

pub fn print_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::Server(format!("cannot print JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_is_worded_like_serf() {
        let ans = RttAnswer {
            a: "sin".into(),
            b: "ams".into(),
            a_member: "sin-1".into(),
            b_member: "ams-1".into(),
            rtt_ms: 162.4181,
        };
        assert_eq!(rtt_line(&ans), "Estimated sin-1 <-> ams-1 rtt: 162.418 ms");
    }
}
