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
//! What "harder" means here: the model predicts how much accuracy sending the request to
//! a large model instead of a small one gains (fitted on which prompts Mixtral-8x7B and
//! GPT-4 answered correctly), and [`Score::complexity`] is that prediction's percentile
//! among the labelled prompts, so a threshold `t` sends about `1 − t` of such traffic to
//! the large model.
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn user(text: &str) -> Score {
        let turns = [Turn { role: Role::User, message: 0, text }];
        score(&Prompt { turns: &turns, tools: 0 })
    }

    #[test]
    fn task_names_round_trip() {
        for task in Task::ALL {
            assert_eq!(task.as_str().parse::<Task>(), Ok(task));
        }
        assert_eq!("poetry".parse::<Task>(), Err(UnknownTask));
    }

    #[test]
    fn a_multi_step_problem_scores_above_a_sum() {
        let easy = user("What is 2+2?");
        let hard = user(
            "A farmer has 3 fields. The first yields 120 kg of wheat per acre over 14 acres, the second \
             yields 20% less per acre over twice the area, and the third yields 95 kg per acre over 9 acres. \
             He keeps a quarter of the total for seed and sells the rest at $0.40 per kg, paying a 7% fee. \
             If he then spends half of what he earns on a tractor, how much money does he have left? \
             Prove that your answer is the only one consistent with the numbers.",
        );
        assert!(hard.complexity > easy.complexity, "{} vs {}", hard.complexity, easy.complexity);
        assert_eq!(easy.task, Task::Math);
    }

    #[test]
    fn a_two_scenario_judgement_scores_above_a_fact_recall() {
        let recall = user("Nearsightedness results from\nA. too much curvature of the cornea\nB. too little curvature of the cornea\nC. a short eye\nD. a long iris\nAnswer:");
        let judgement = user(
            "For which of these two scenarios does the main character (who uses I/me/my) do something clearly \
             wrong? Scenario 1 | I told my friend her haircut looked great. Scenario 2 | I kept the wallet I \
             found.\nA. Wrong, Wrong\nB. Wrong, Not wrong\nC. Not wrong, Wrong\nD. Not wrong, Not wrong\nAnswer:",
        );
        assert!(judgement.complexity > recall.complexity, "{} vs {}", judgement.complexity, recall.complexity);
    }

    #[test]
    fn empty_and_huge_prompts_score() {
        let empty = score(&Prompt::default());
        assert!((0.0..=1.0).contains(&empty.complexity));
        assert_eq!(empty.task, Task::Chat);
        let huge = "Ünïcödé ∑ legal plaintiff 12 + 3 = ? ```code``` ".repeat(100_000);
        let s = user(&huge);
        assert!((0.0..=1.0).contains(&s.complexity));
    }

    proptest! {
        #[test]
        fn complexity_is_in_range_for_any_text(text in any::<String>(), turns in 1usize..4, tools in 0u32..64) {
            let parts: Vec<Turn<'_>> = (0..turns)
                .map(|i| Turn {
                    role: [Role::System, Role::User, Role::Assistant, Role::Tool][i % 4],
                    message: i as u32,
                    text: &text,
                })
                .collect();
            let s = score(&Prompt { turns: &parts, tools });
            prop_assert!(s.complexity.is_finite());
            prop_assert!((0.0..=1.0).contains(&s.complexity));
        }

        #[test]
        fn complexity_is_in_range_for_prompt_like_text(
            words in proptest::collection::vec("[A-Da-z0-9?.,|$=+\n ()]{0,12}|NOT|EXCEPT|I|my|Statement 1|\nA\\. ", 0..400),
        ) {
            let text = words.join(" ");
            let s = user(&text);
            prop_assert!(s.complexity.is_finite());
            prop_assert!((0.0..=1.0).contains(&s.complexity));
        }
    }
}
