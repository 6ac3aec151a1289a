//! The complexity score (0–1, higher = harder for a small model) and the task of a
//! request, from the request alone.
//!
//! [`features`] counts what the request holds (lengths, digits, math and code symbols,
//! answer options, lexicon hits via one Aho-Corasick pass, conversation shape) over at
//! most [`features::SCAN_BYTES_MAX`] bytes; [`model`] weighs them with a logistic
//! regression whose weights ([`weights`]) are fitted by `core/examples/fit_router.rs` on
//! `core/data/routing/routing-dev.jsonl` ([`fit`]); [`task`] names the task from the
//! same counts by a fixed rule.
//!
//! Refit: `cargo run --release -p gatekeeper --example fit_router -- --write`.

pub mod features;
pub mod fit;
pub mod lexicons;
pub mod model;
pub mod task;
pub mod weights;

/// Who wrote a turn of the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `system` (or `developer`).
    System,
    /// `user`.
    User,
    /// `assistant`.
    Assistant,
    /// `tool` (or `function`) results.
    Tool,
}

/// One text part of one message, in conversation order (a message with several text
/// parts gives several turns with the same role and `message` index).
#[derive(Debug, Clone, Copy)]
pub struct Turn<'a> {
    /// Who wrote it.
    pub role: Role,
    /// Index of its message in `messages`.
    pub message: u32,
    /// The text.
    pub text: &'a str,
}

/// What the score reads of a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Prompt<'a> {
    /// Every text part of every message, in order.
    pub turns: &'a [Turn<'a>],
    /// Number of tools the request offers.
    pub tools: u32,
}

/// The kind of work a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Task {
    /// Conversation, questions of fact.
    Chat,
    /// Writing, reading or fixing code.
    Code,
    /// Arithmetic, algebra, word problems.
    Math,
    /// Multi-step reasoning, analysis.
    Reasoning,
    /// Contracts, law, compliance.
    Legal,
    /// Prose: essays, stories, emails.
    Writing,
}

impl Task {
    /// Every task, in a fixed order.
    pub const ALL: [Task; 6] = [Task::Chat, Task::Code, Task::Math, Task::Reasoning, Task::Legal, Task::Writing];

    /// The name used in headers, config (`capabilities`) and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Chat => "chat",
            Task::Code => "code",
            Task::Math => "math",
            Task::Reasoning => "reasoning",
            Task::Legal => "legal",
            Task::Writing => "writing",
        }
    }
}

/// A request's score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// 0–1, higher = harder for a small model.
    pub complexity: f32,
    /// What the request asks for.
    pub task: Task,
}

impl std::str::FromStr for Task {
    type Err = UnknownTask;

    fn from_str(s: &str) -> Result<Task, UnknownTask> {
        Task::ALL.into_iter().find(|t| t.as_str() == s).ok_or(UnknownTask)
    }
}

/// A task name that is none of [`Task::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown task (expected one of chat, code, math, reasoning, legal, writing)")]
pub struct UnknownTask;

/// Scores `prompt`: one scan of at most [`features::SCAN_BYTES_MAX`] bytes, no
/// allocation.
pub fn score(prompt: &Prompt<'_>) -> Score {
    let counts = features::counts(prompt);
    let complexity = model::complexity(&features::Features::from_counts(&counts));
    Score { complexity, task: task::detect(&counts) }
}
