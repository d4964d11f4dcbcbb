//! Progress of a load while it runs, from its event stream: one spinner line per region on a
//! terminal, plain `[sin] …` lines otherwise (logs and CI keep every step), nothing for `--json`.

use std::collections::BTreeMap;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use vantage_proto::api::{LoadEvent, LoadState};
use vantage_proto::RunView;

use super::error::failure_kind_name;
use super::table::fmt_ms;

/// Where a load's progress goes.
pub trait Progress {
    fn event(&mut self, ev: &LoadEvent);
    /// The stream ended (after `done`, or broken off).
    fn finish(&mut self);
}

/// What one event says, for the region it concerns (`None` for the load as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub region: Option<String>,
    pub text: String,
    /// The region (or the load) will get no more events.
    pub last: bool,
}

/// Words for an event; `runs` is the number of runs asked for, to say `run 1/3`.
pub fn describe(ev: &LoadEvent, runs: u32) -> Step {
    let step = |region: &str, text: String, last: bool| Step {
        region: Some(region.to_owned()),
        text,
        last,
    };
    match ev {
        LoadEvent::Queued { id } => Step {
            region: None,
            text: format!("load {id} queued"),
            last: false,
        },
        LoadEvent::Dispatched {
            region,
            agent,
            attempt,
        } => step(
            region,
            format!("dispatched to {agent} (attempt {attempt})"),
            false,
        ),
        LoadEvent::RunStarted {
            region,
            agent,
            index,
            view,
        } => step(
            region,
            format!("run {index}/{runs}{} on {agent}", view_suffix(*view)),
            false,
        ),
        LoadEvent::RunFinished {
            region,
            agent,
            index,
            view,
            load_ms,
        } => {
            let load = load_ms
                .map(|l| format!("load {}", fmt_ms(l)))
                .unwrap_or_else(|| "no load event".into());
            step(
                region,
                format!(
                    "run {index}/{runs}{} on {agent} finished: {load}",
                    view_suffix(*view)
                ),
                false,
            )
        }
        LoadEvent::Retried {
            region,
            failed_agent,
            reason,
        } => step(
            region,
            format!("{failed_agent} failed ({reason}); retrying"),
            false,
        ),
        LoadEvent::TargetDone { region, report_id } => {
            step(region, format!("done (report {report_id})"), true)
        }
        LoadEvent::TargetFailed { region, failure } => step(
            region,
            format!(
                "failed ({}): {}",
                failure_kind_name(failure.kind),
                failure.message
            ),
            true,
        ),
        LoadEvent::Done { state, failure } => Step {
            region: None,
            text: match (state, failure) {
                (_, Some(f)) => format!(
                    "load {} ({}): {}",
                    state.as_str(),
                    failure_kind_name(f.kind),
                    f.message
                ),
                (LoadState::Done, None) => "load done".into(),
                (s, None) => format!("load {}", s.as_str()),
            },
            last: true,
        },
    }
}

fn view_suffix(view: RunView) -> &'static str {
    match view {
        RunView::Cold => " (cold)",
        RunView::Warm => " (warm)",
    }
}

/// `--json`: the stream is followed but nothing is shown.
#[derive(Debug)]
pub struct Silent;

impl Progress for Silent {
    fn event(&mut self, _: &LoadEvent) {}
    fn finish(&mut self) {}
}

/// `[sin] dispatched to sin-1 (attempt 1)` on stderr.
#[derive(Debug)]
pub struct Lines {
    pub runs: u32,
}

impl Progress for Lines {
    fn event(&mut self, ev: &LoadEvent) {
        let s = describe(ev, self.runs);
        match s.region {
            Some(r) => eprintln!("[{r}] {}", s.text),
            None => eprintln!("{}", s.text),
        }
    }
    fn finish(&mut self) {}
}

/// A spinner per region under one header line, on stderr.
#[derive(Debug)]
pub struct Bars {
    runs: u32,
    multi: MultiProgress,
    header: ProgressBar,
    regions: BTreeMap<String, ProgressBar>,
}

impl Bars {
    pub fn new(runs: u32) -> Bars {
        let multi = MultiProgress::new();
        let header = multi.add(ProgressBar::new_spinner());
        header.set_style(
            ProgressStyle::with_template("{spinner} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        header.set_message("submitting");
        header.enable_steady_tick(Duration::from_millis(120));
        Bars {
            runs,
            multi,
            header,
            regions: BTreeMap::new(),
        }
    }

    /// The spinner of a region, made when the region first shows up (with `all` or `nearest`
    /// the regions are not known before the events say).
    fn bar(&mut self, region: &str) -> &ProgressBar {
        let multi = &self.multi;
        self.regions.entry(region.to_owned()).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(spinner_style());
            bar.set_prefix(format!("[{region}]"));
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        })
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

impl Progress for Bars {
    fn event(&mut self, ev: &LoadEvent) {
        let s = describe(ev, self.runs);
        let bar = match &s.region {
            Some(r) => self.bar(r).clone(),
            None => self.header.clone(),
        };
        if s.last {
            bar.finish_with_message(s.text);
        } else {
            bar.set_message(s.text);
        }
    }

    fn finish(&mut self) {
        for bar in self.regions.values().chain([&self.header]) {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_proto::api::{Failure, FailureKind};

    #[test]
    fn events_in_words() {
        let d = describe(
            &LoadEvent::Dispatched {
                region: "sin".into(),
                agent: "sin-1".into(),
                attempt: 1,
            },
            3,
        );
        assert_eq!(d.region.as_deref(), Some("sin"));
        assert_eq!(d.text, "dispatched to sin-1 (attempt 1)");
        let d = describe(
            &LoadEvent::RunStarted {
                region: "sin".into(),
                agent: "sin-1".into(),
                index: 1,
                view: RunView::Cold,
            },
            3,
        );
        assert_eq!(d.text, "run 1/3 (cold) on sin-1");
        let d = describe(
            &LoadEvent::TargetFailed {
                region: "ams".into(),
                failure: Failure {
                    kind: FailureKind::NoAgent,
                    message: "no healthy agent in ams".into(),
                },
            },
            1,
        );
        assert!(d.last);
        assert_eq!(d.text, "failed (no_agent): no healthy agent in ams");
    }
}
