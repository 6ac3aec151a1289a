//! The complexity score (0–1, higher = harder for a small model) and the task of a
//! request, from the request alone.
//!
//! SKELETON: the types are the interface the router codes against; the body of
//! [`score`] is replaced by the fitted model (issue 12, item 2).

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

/// Scores `prompt`.
pub fn score(prompt: &Prompt<'_>) -> Score {
    // SKELETON: replaced by the fitted model.
    let chars: usize = prompt.turns.iter().map(|t| t.text.len()).sum();
    Score { complexity: (chars as f32 / 8000.0).min(1.0), task: Task::Chat }
}
