//! A routing decision as the gateway reports it: the mode, the request's score, every
//! candidate considered with its expected price and quality, and why the winner won.
//! Response headers, the audit record, `BH_EVENTS`, metrics and `gatekeeper route
//! explain` all read this one value.

use std::fmt::Write as _;

use super::filter::Requirement;
use super::mode::RouteMode;
use super::score::Task;
use super::table::RouteTable;

/// What became of one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The router's choice (tried first).
    Chosen,
    /// Passed the filters; tried, in order, if the choice fails.
    Failover,
    /// Removed by a hard filter.
    Filtered(Requirement),
}

impl Verdict {
    /// Compact form for audit records: `chosen`, `failover`, `filtered:tools`.
    pub fn code(self) -> std::borrow::Cow<'static, str> {
        match self {
            Verdict::Chosen => "chosen".into(),
            Verdict::Failover => "failover".into(),
            Verdict::Filtered(r) => format!("filtered:{}", r.as_str()).into(),
        }
    }

    /// Appends [`Verdict::code`] to `out` without building it (every audit record
    /// writes one per candidate).
    pub fn push_code(self, out: &mut String) {
        match self {
            Verdict::Chosen => out.push_str("chosen"),
            Verdict::Failover => out.push_str("failover"),
            Verdict::Filtered(r) => {
                out.push_str("filtered:");
                out.push_str(r.as_str());
            }
        }
    }

    /// Short form for listings.
    pub fn describe(self) -> String {
        match self {
            Verdict::Chosen => "chosen".into(),
            Verdict::Failover => "failover".into(),
            Verdict::Filtered(r) => format!("filtered: lacks {}", r.as_str()),
        }
    }
}

/// One deployment the router considered.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Its [`super::Deployment::id`].
    pub deployment: usize,
    /// Expected price of this request on it, USD.
    pub price_usd: f64,
    /// Expected quality on this request ([`super::cost::expected_quality`]).
    pub expected_quality: f32,
    /// What became of it.
    pub verdict: Verdict,
}

/// Why the winner won.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reason {
    /// Cost mode: the cheapest whose expected quality meets the threshold.
    #[default]
    Cheapest,
    /// Cost mode: none meets the threshold; the best expected quality.
    NoneMetThreshold,
    /// Capability mode: declares the task's capability, best quality among those that do.
    StrongAtTask,
    /// Capability mode: no candidate declares the task's capability; best quality.
    BestQuality,
    /// Latency mode: lowest predicted latency.
    Fastest,
}

impl Reason {
    /// The code used in audit records and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Cheapest => "cheapest_meeting_threshold",
            Reason::NoneMetThreshold => "best_expected_quality_below_threshold",
            Reason::StrongAtTask => "strong_at_task",
            Reason::BestQuality => "best_quality",
            Reason::Fastest => "fastest",
        }
    }
}

/// One routing decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The mode it ran in.
    pub mode: RouteMode,
    /// The request's complexity score, 0–1.
    pub complexity: f32,
    /// The request's task.
    pub task: Task,
    /// The expected quality cost mode required.
    pub threshold: f32,
    /// Whether the request named the auto alias (the router chose the model).
    pub auto: bool,
    /// Every candidate considered: those that passed the filters in try order, then
    /// those filtered out.
    pub candidates: Vec<Candidate>,
    /// Why the first candidate won.
    pub reason: Reason,
}

impl Default for Decision {
    fn default() -> Self {
        Decision {
            mode: RouteMode::Cost,
            complexity: 0.0,
            task: Task::Chat,
            threshold: 0.0,
            auto: false,
            candidates: Vec::new(),
            reason: Reason::Cheapest,
        }
    }
}

impl Decision {
    /// `X-Gatekeeper-Route`: `mode=cost; complexity=0.12; task=math`.
    pub fn header_value(&self) -> String {
        format!("mode={}; complexity={:.2}; task={}", self.mode.as_str(), self.complexity, self.task.as_str())
    }

    /// The winner's deployment id.
    pub fn chosen(&self) -> Option<usize> {
        self.candidates.first().filter(|c| c.verdict == Verdict::Chosen).map(|c| c.deployment)
    }

    /// Why the winner won, in words.
    pub fn why(&self) -> String {
        let passed = self.candidates.iter().filter(|c| !matches!(c.verdict, Verdict::Filtered(_))).count();
        match self.reason {
            Reason::Cheapest => {
                format!("cheapest of {passed} passing candidates with expected quality >= {:.2}", self.threshold)
            }
            Reason::NoneMetThreshold => format!(
                "no candidate reaches expected quality {:.2}; best expected quality of {passed}",
                self.threshold
            ),
            Reason::StrongAtTask => format!(
                "declares `{}` and has the best quality of those that do ({passed} passing)",
                self.task.as_str()
            ),
            Reason::BestQuality => match super::caps::Capability::for_task(self.task) {
                Some(c) => format!("no candidate declares `{}`; best quality of {passed}", c.as_str()),
                None => format!("best quality of {passed} for `{}`", self.task.as_str()),
            },
            Reason::Fastest => format!("lowest predicted latency of {passed}"),
        }
    }

    /// A table of the candidates: model, provider index, price, expected quality,
    /// verdict (the CLI's `route explain`).
    pub fn explain(&self, table: &RouteTable, providers: &[&str]) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "mode={} complexity={:.2} task={} threshold={:.2}",
            self.mode.as_str(),
            self.complexity,
            self.task.as_str(),
            self.threshold
        );
        let _ = writeln!(out, "{:<24} {:<14} {:>14} {:>9}  verdict", "model", "provider", "price_usd", "exp_qual");
        for c in &self.candidates {
            let Some(d) = table.deployment(c.deployment) else { continue };
            let provider = providers.get(d.provider).copied().unwrap_or("?");
            let _ = writeln!(
                out,
                "{:<24} {:<14} {:>14.8} {:>9.3}  {}",
                d.name,
                provider,
                c.price_usd,
                c.expected_quality,
                c.verdict.describe()
            );
        }
        let _ = writeln!(out, "why: {}", self.why());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The audit record's candidate strings did not change: the code pushed is the
    /// code built, for every verdict.
    #[test]
    fn pushed_codes_are_the_built_ones() {
        let all = [Requirement::Context, Requirement::Tools, Requirement::Vision, Requirement::JsonMode];
        for v in [Verdict::Chosen, Verdict::Failover].into_iter().chain(all.map(Verdict::Filtered)) {
            let mut out = String::from("m@p:");
            v.push_code(&mut out);
            assert_eq!(out, format!("m@p:{}", v.code()));
        }
    }
}
