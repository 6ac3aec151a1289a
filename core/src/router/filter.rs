//! The hard filters every mode applies first: a deployment that cannot serve the
//! request (its context window is too small, or it lacks a feature the request uses)
//! is never chosen, whatever it costs or scores.

use super::caps::Capability;
use super::request::RouteRequest;
use super::table::Deployment;

/// One thing a request needs of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// A context window of at least the prompt estimate plus `max_tokens`.
    Context,
    /// `tools` (the request offers tools).
    Tools,
    /// `vision` (a message has image parts).
    Vision,
    /// `json_mode` (`response_format` asks for JSON).
    JsonMode,
}

impl Requirement {
    /// Short name, for verdicts.
    pub fn as_str(self) -> &'static str {
        match self {
            Requirement::Context => "context_window",
            Requirement::Tools => "tools",
            Requirement::Vision => "vision",
            Requirement::JsonMode => "json_mode",
        }
    }
}

/// The first requirement of `req` that `d` fails, if any. A deployment that declares
/// no capabilities (or no context window) is not checked on them: the config says
/// nothing either way.
pub fn check(d: &Deployment, req: &RouteRequest<'_>) -> Result<(), Requirement> {
    if d.context_window.is_some_and(|w| w < req.context_tokens()) {
        return Err(Requirement::Context);
    }
    let Some(caps) = d.capabilities else { return Ok(()) };
    for (needed, requirement, cap) in [
        (req.tools > 0, Requirement::Tools, Capability::Tools),
        (req.vision, Requirement::Vision, Capability::Vision),
        (req.json_mode, Requirement::JsonMode, Capability::JsonMode),
    ] {
        if needed && !caps.has(cap) {
            return Err(requirement);
        }
    }
    Ok(())
}

/// The 400 message when no candidate passes: which requirement no model meets, or,
/// when each is met by some model, that none meets them all.
pub fn unmet_message(req: &RouteRequest<'_>, candidates: &[&Deployment]) -> String {
    let needs_context = req.context_tokens();
    let mut unmet = Vec::new();
    if !candidates.iter().any(|d| d.context_window.is_none_or(|w| w >= needs_context)) {
        let largest = candidates.iter().filter_map(|d| d.context_window).max().unwrap_or(0);
        unmet.push(format!(
            "a context window of {needs_context} tokens (prompt estimate {} + max_tokens {}; the largest is {largest})",
            req.prompt_tokens,
            req.max_tokens.unwrap_or(0)
        ));
    }
    for (needed, cap, why) in [
        (req.tools > 0, Capability::Tools, "the request offers tools"),
        (req.vision, Capability::Vision, "a message has images"),
        (req.json_mode, Capability::JsonMode, "response_format asks for JSON"),
    ] {
        if needed && !candidates.iter().any(|d| d.capabilities.is_none_or(|c| c.has(cap))) {
            unmet.push(format!("`{}` ({why})", cap.as_str()));
        }
    }
    if unmet.is_empty() {
        // Each requirement is met by some model, none meets them all: say what each lacks.
        let lacks: Vec<String> = candidates
            .iter()
            .take(8)
            .filter_map(|d| check(d, req).err().map(|r| format!("{} lacks {}", d.name, r.as_str())))
            .collect();
        format!("no single model meets all of this request's requirements ({})", lacks.join("; "))
    } else {
        format!("no model meets the requirement: {}", unmet.join("; "))
    }
}
