//! The task of a request, by a fixed rule over the score's counts (not fitted: the
//! routing data has no task labels). First match wins:
//!
//! 1. **code**: a code fence, or ≥ 2 code words (languages, keywords, tools), or one
//!    with ≥ 3 code symbols (`{}[];_\#()` and backticks);
//! 2. **math**: ≥ 3 math symbols, or one with ≥ 2 numbers ("17 * 23"), or ≥ 2 words
//!    of a computation ("how much", "per", "probability of"), or ≥ 2 college-math or
//!    science words with a number or math symbol;
//! 3. **writing**: ≥ 1 writing hit (write a…, essay, poem, email, draft, rewrite) that
//!    outnumbers the legal hits;
//! 4. **legal**: ≥ 1 legal hit and more legal hits than medical or finance ones;
//! 5. **reasoning**: ≥ 2 reasoning words, or one in a prompt of ≥ 25 words, or several
//!    statements to weigh;
//! 6. **chat**: everything else.

use super::features::Counts;
use super::lexicons::Lexicon;
use super::Task;

/// The task `c` describes.
pub fn detect(c: &Counts) -> Task {
    let hits = |l: Lexicon| c.hits(l);
    let code = hits(Lexicon::Code);
    if hits(Lexicon::Fence) > 0 || code >= 2 || (code >= 1 && c.code_symbols >= 3) {
        return Task::Code;
    }
    let mathy = c.numbers > 0 || c.math_symbols > 0;
    if c.math_symbols >= 3
        || (c.math_symbols >= 1 && c.numbers >= 2)
        || hits(Lexicon::MathWord) >= 2
        || (hits(Lexicon::Science) >= 2 && mathy)
    {
        return Task::Math;
    }
    let legal = hits(Lexicon::Legal);
    let writing = hits(Lexicon::Writing);
    if writing >= 1 && writing > legal {
        return Task::Writing;
    }
    if legal >= 1 && legal > hits(Lexicon::Medical) && legal > hits(Lexicon::Finance) {
        return Task::Legal;
    }
    let reasoning = hits(Lexicon::Reasoning);
    if reasoning >= 2 || (reasoning >= 1 && c.words >= 25) || hits(Lexicon::MultiStatement) >= 2 {
        return Task::Reasoning;
    }
    Task::Chat
}

#[cfg(test)]
mod tests {
    use super::super::{score, Prompt, Role, Turn};
    use super::*;

    #[derive(serde::Deserialize)]
    struct Labelled {
        task: String,
        prompt: String,
    }

    #[test]
    fn the_labelled_prompts_get_their_task() {
        let table = include_str!("../../../data/routing/tasks.jsonl");
        let mut wrong = Vec::new();
        let mut seen = 0;
        for line in table.lines().filter(|l| !l.trim().is_empty()) {
            let row: Labelled = serde_json::from_str(line).unwrap();
            let expected: Task = row.task.parse().unwrap();
            let turns = [Turn { role: Role::User, message: 0, text: &row.prompt }];
            let got = score(&Prompt { turns: &turns, tools: 0 }).task;
            if got != expected {
                wrong.push(format!("{} (got {}): {}", expected.as_str(), got.as_str(), row.prompt));
            }
            seen += 1;
        }
        assert!(seen >= 40, "{seen} labelled prompts");
        assert!(wrong.is_empty(), "{} of {seen} wrong:\n{}", wrong.len(), wrong.join("\n"));
    }

    #[test]
    fn every_task_is_in_the_table() {
        let table = include_str!("../../../data/routing/tasks.jsonl");
        for task in Task::ALL {
            assert!(table.contains(&format!("\"task\": \"{}\"", task.as_str())), "{}", task.as_str());
        }
    }

    #[test]
    fn empty_prompt_is_chat() {
        assert_eq!(detect(&Counts::default()), Task::Chat);
    }
}
