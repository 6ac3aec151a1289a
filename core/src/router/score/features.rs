//! What the score reads of a prompt: counts from one byte pass and one lexicon pass over
//! the turns, newest first, up to [`SCAN_BYTES_MAX`] bytes, then the fixed feature vector
//! the fitted model weighs.
//!
//! Training (`core/examples/fit_router.rs`) and serving both call [`features`], so the
//! two can never compute a feature differently.

use super::lexicons::{Lexicon, LEXICONS, LEXICON_COUNT};
use super::{Prompt, Role};

/// Bytes of text scanned per request, newest turn first; the rest only counts toward
/// the lengths. 16 KiB is a 4,000-token prompt: enough to see what a request is about,
/// and it keeps the score's cost flat under a 4 MiB body. Densities are taken over the
/// scanned bytes, so a truncated prompt keeps representative features.
pub const SCAN_BYTES_MAX: usize = 16 * 1024;

/// Raw counts over the prompt; [`Features::from_counts`] turns them into the model's
/// inputs and [`super::task`] reads them to name the task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Bytes of text in every turn, scanned or not.
    pub bytes_total: u64,
    /// Bytes of the last user turn.
    pub last_user_bytes: u64,
    /// Bytes of system turns.
    pub system_bytes: u64,
    /// Distinct messages with text.
    pub messages: u32,
    /// User turns.
    pub user_turns: u32,
    /// Tools the request offers.
    pub tools: u32,
    /// Bytes scanned (at most [`SCAN_BYTES_MAX`]).
    pub bytes_scanned: u32,
    /// Runs of ASCII letters.
    pub words: u32,
    /// Words of 9 letters or more.
    pub long_words: u32,
    /// ASCII letters.
    pub letters: u32,
    /// Upper-case ASCII letters.
    pub upper: u32,
    /// ASCII digits.
    pub digits: u32,
    /// Runs of digits (numbers).
    pub numbers: u32,
    /// `= + * / ^ < > %`.
    pub math_symbols: u32,
    /// `{ } [ ] ; _ \ # ( )` and backticks.
    pub code_symbols: u32,
    /// `?`.
    pub questions: u32,
    /// Sentence ends: `.`, `!` or `?` followed by white space.
    pub sentences: u32,
    /// Lines that start with an answer option, `A.` to `H.` or `A)` to `H)`.
    pub options: u32,
    /// Bytes of 0x80 and above (non-ASCII text).
    pub non_ascii: u32,
    /// Lexicon hits, indexed by [`Lexicon`].
    pub lexicon: [u32; LEXICON_COUNT],
    /// Negations written in capitals ("NOT", "EXCEPT", "LEAST").
    pub caps_negation: u32,
}

impl Counts {
    /// Hits of one lexicon.
    pub fn hits(&self, lexicon: Lexicon) -> u32 {
        self.lexicon.get(lexicon as usize).copied().unwrap_or(0)
    }
}

/// Number of features.
pub const FEATURE_COUNT: usize = 29;

/// Feature names, in [`Features`] order (the fitting script prints them, and the
/// generated weights file names its columns with them).
pub const FEATURE_NAMES: [&str; FEATURE_COUNT] = [
    "log_bytes",
    "log_last_user_bytes",
    "log_words",
    "long_word_share",
    "mean_word_len",
    "digit_share",
    "log_numbers",
    "math_symbol_share",
    "code_symbol_share",
    "upper_share",
    "log_questions",
    "log_options",
    "mean_sentence_words",
    "legal",
    "medical",
    "finance",
    "science",
    "math_words",
    "reasoning",
    "constraints",
    "negations",
    "caps_negations",
    "code",
    "multi_statement",
    "qualifiers",
    "writing",
    "log_messages",
    "log_system_bytes",
    "log_tools",
];

/// The model's inputs, in [`FEATURE_NAMES`] order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Features(pub [f32; FEATURE_COUNT]);

fn ln1p(x: u64) -> f32 {
    (x as f32).ln_1p()
}

fn share(part: u32, whole: u32) -> f32 {
    if whole == 0 {
        0.0
    } else {
        part as f32 / whole as f32
    }
}

impl Features {
    /// The feature vector of `c`. Counts enter as `ln(1 + n)` (a prompt twice as long
    /// is not twice as hard), shares as fractions.
    pub fn from_counts(c: &Counts) -> Features {
        let lex = |l: Lexicon| ln1p(u64::from(c.hits(l)));
        let fences = u64::from(c.hits(Lexicon::Fence));
        let code = u64::from(c.hits(Lexicon::Code)).saturating_add(fences.saturating_mul(4));
        Features([
            ln1p(c.bytes_total),
            ln1p(c.last_user_bytes),
            ln1p(u64::from(c.words)),
            share(c.long_words, c.words),
            share(c.letters, c.words).min(20.0),
            share(c.digits, c.bytes_scanned),
            ln1p(u64::from(c.numbers)),
            share(c.math_symbols, c.bytes_scanned),
            share(c.code_symbols, c.bytes_scanned),
            share(c.upper, c.letters),
            ln1p(u64::from(c.questions)),
            ln1p(u64::from(c.options)),
            share(c.words, c.sentences.max(1)).min(100.0),
            lex(Lexicon::Legal),
            lex(Lexicon::Medical),
            lex(Lexicon::Finance),
            lex(Lexicon::Science),
            lex(Lexicon::MathWord),
            lex(Lexicon::Reasoning),
            lex(Lexicon::Constraint),
            lex(Lexicon::Negation),
            ln1p(u64::from(c.caps_negation)),
            ln1p(code),
            lex(Lexicon::MultiStatement),
            lex(Lexicon::Qualifier),
            lex(Lexicon::Writing),
            ln1p(u64::from(c.messages)),
            ln1p(c.system_bytes),
            ln1p(u64::from(c.tools)),
        ])
    }
}

/// The features of `prompt`.
pub fn features(prompt: &Prompt<'_>) -> Features {
    Features::from_counts(&counts(prompt))
}

/// Counts over `prompt`: lengths over every turn, the rest over the newest
/// [`SCAN_BYTES_MAX`] bytes.
pub fn counts(prompt: &Prompt<'_>) -> Counts {
    let mut c = Counts { tools: prompt.tools, ..Counts::default() };
    let mut last_message = None;
    let mut last_user = None;
    for (i, turn) in prompt.turns.iter().enumerate() {
        let len = turn.text.len() as u64;
        c.bytes_total = c.bytes_total.saturating_add(len);
        if last_message != Some(turn.message) {
            c.messages = c.messages.saturating_add(1);
            last_message = Some(turn.message);
        }
        match turn.role {
            Role::System => c.system_bytes = c.system_bytes.saturating_add(len),
            Role::User => {
                c.user_turns = c.user_turns.saturating_add(1);
                last_user = Some(i);
            }
            Role::Assistant | Role::Tool => {}
        }
    }
    if let Some(last_user) = last_user {
        let message = prompt.turns.get(last_user).map(|t| t.message);
        c.last_user_bytes = prompt
            .turns
            .iter()
            .filter(|t| t.role == Role::User && Some(t.message) == message)
            .map(|t| t.text.len() as u64)
            .fold(0, u64::saturating_add);
    }
    let mut budget = SCAN_BYTES_MAX;
    for turn in prompt.turns.iter().rev() {
        if budget == 0 {
            break;
        }
        let bytes = turn.text.as_bytes();
        let take = bytes.len().min(budget);
        let Some(part) = bytes.get(..take) else { break };
        budget -= take;
        scan_bytes(part, &mut c);
        scan_lexicons(part, &mut c);
    }
    c
}

/// Byte classes of the byte pass.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Lower,
    Upper,
    Digit,
    Space,
    Newline,
    Math,
    Code,
    Question,
    Stop,
    NonAscii,
    Other,
}

const CLASSES: [Class; 256] = {
    let mut table = [Class::Other; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = match b {
            b'a'..=b'z' => Class::Lower,
            b'A'..=b'Z' => Class::Upper,
            b'0'..=b'9' => Class::Digit,
            b' ' | b'\t' | b'\r' => Class::Space,
            b'\n' => Class::Newline,
            b'=' | b'+' | b'*' | b'/' | b'^' | b'<' | b'>' | b'%' => Class::Math,
            b'{' | b'}' | b'[' | b']' | b';' | b'_' | b'\\' | b'#' | b'(' | b')' | b'`' => Class::Code,
            b'?' => Class::Question,
            b'.' | b'!' => Class::Stop,
            0x80..=0xff => Class::NonAscii,
            _ => Class::Other,
        };
        i += 1;
    }
    table
};

/// One pass over `bytes`: character classes, words, numbers, sentences, option lines.
fn scan_bytes(bytes: &[u8], c: &mut Counts) {
    let mut word_len = 0u32;
    let mut in_number = false;
    // The two bytes before the current one; a turn starts as if after a newline.
    let mut prev = b'\n';
    let mut prev2 = b'\n';
    let mut after_stop = false;
    for &b in bytes {
        let class = CLASSES[b as usize];
        let letter = matches!(class, Class::Lower | Class::Upper);
        if letter {
            if word_len == 0 {
                c.words += 1;
            }
            word_len += 1;
            c.letters += 1;
            if class == Class::Upper {
                c.upper += 1;
            }
        } else if word_len > 0 {
            if word_len >= 9 {
                c.long_words += 1;
            }
            word_len = 0;
        }
        match class {
            Class::Digit => {
                c.digits += 1;
                if !in_number {
                    c.numbers += 1;
                }
            }
            Class::Math => c.math_symbols += 1,
            Class::Code => {
                if (b == b')') && (b'A'..=b'H').contains(&prev) && prev2 == b'\n' {
                    c.options += 1;
                }
                c.code_symbols += 1;
            }
            Class::Question => c.questions += 1,
            Class::Stop => {
                if b == b'.' && (b'A'..=b'H').contains(&prev) && prev2 == b'\n' {
                    c.options += 1;
                }
            }
            Class::Space | Class::Newline => {
                if after_stop {
                    c.sentences += 1;
                }
            }
            Class::NonAscii => c.non_ascii += 1,
            Class::Lower | Class::Upper | Class::Other => {}
        }
        in_number = class == Class::Digit || (in_number && (b == b'.' || b == b','));
        after_stop = matches!(class, Class::Stop | Class::Question);
        prev2 = prev;
        prev = b;
    }
    if word_len >= 9 {
        c.long_words += 1;
    }
    if after_stop {
        c.sentences += 1;
    }
    // `bytes` is at most SCAN_BYTES_MAX long, so this and every count above fit in u32.
    c.bytes_scanned += bytes.len() as u32;
}

/// One lexicon pass over `bytes`, checking word boundaries where the entry asks.
fn scan_lexicons(bytes: &[u8], c: &mut Counts) {
    let lex = &*LEXICONS;
    for m in lex.automaton.find_iter(bytes) {
        let Some(entry) = lex.entries.get(m.pattern().as_usize()) else { continue };
        let alnum = |i: Option<usize>| i.and_then(|i| bytes.get(i)).is_some_and(|b| b.is_ascii_alphanumeric());
        if entry.boundary_before && alnum(m.start().checked_sub(1)) {
            continue;
        }
        if entry.boundary_after && alnum(Some(m.end())) {
            continue;
        }
        if let Some(n) = c.lexicon.get_mut(entry.lexicon as usize) {
            *n += 1;
        }
        if entry.lexicon == Lexicon::Negation || entry.lexicon == Lexicon::Constraint {
            let text = bytes.get(m.range()).unwrap_or_default();
            if text.len() >= 3 && text.iter().all(|b| !b.is_ascii_lowercase()) {
                c.caps_negation += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Turn;
    use super::*;

    fn user(text: &str) -> Counts {
        let turns = [Turn { role: Role::User, message: 0, text }];
        counts(&Prompt { turns: &turns, tools: 0 })
    }

    #[test]
    fn words_numbers_and_long_words() {
        let c = user("Compute 12.5 plus 7, approximately.");
        assert_eq!(c.words, 3);
        assert_eq!(c.numbers, 2);
        assert_eq!(c.digits, 4);
        assert_eq!(c.long_words, 1);
        assert_eq!(c.sentences, 1);
    }

    #[test]
    fn option_lines() {
        let c = user("Which is prime?\nA. 4\nB. 6\nC) 7\nD. 9\nAnswer:");
        assert_eq!(c.options, 4);
        assert_eq!(c.questions, 1);
        assert_eq!(user("Plan A. Then B.").options, 0);
    }

    #[test]
    fn math_and_code_symbols() {
        let c = user("x^2 + 3*x = 10");
        assert_eq!(c.math_symbols, 4);
        let c = user("fn main() { println!(\"hi\"); }");
        assert!(c.code_symbols >= 5);
        assert!(c.hits(Lexicon::Code) >= 2);
    }

    #[test]
    fn lexicons_respect_word_boundaries() {
        assert_eq!(user("The tort claim").hits(Lexicon::Legal), 1);
        assert_eq!(user("They distort it").hits(Lexicon::Legal), 0);
        // A stem matches its longer forms.
        assert_eq!(user("Litigation and litigated").hits(Lexicon::Legal), 2);
        // Case-insensitive.
        assert_eq!(user("PLAINTIFF v. Defendant").hits(Lexicon::Legal), 2);
    }

    #[test]
    fn capital_negations_count_apart() {
        let c = user("All of these are true EXCEPT one. Which is NOT prime? not this.");
        assert_eq!(c.caps_negation, 2);
        assert!(c.hits(Lexicon::Negation) >= 2);
    }

    #[test]
    fn fences_and_domains() {
        let c = user("```rust\nlet x = 1;\n```");
        assert_eq!(c.hits(Lexicon::Fence), 2);
        assert!(user("The patient has a fever; most likely diagnosis?").hits(Lexicon::Medical) >= 2);
        assert!(user("Interest rates and inflation rose").hits(Lexicon::Finance) >= 2);
    }

    #[test]
    fn conversation_shape() {
        let turns = [
            Turn { role: Role::System, message: 0, text: "You are terse." },
            Turn { role: Role::User, message: 1, text: "Hi" },
            Turn { role: Role::Assistant, message: 2, text: "Hello" },
            Turn { role: Role::User, message: 3, text: "part one" },
            Turn { role: Role::User, message: 3, text: "part two" },
        ];
        let c = counts(&Prompt { turns: &turns, tools: 3 });
        assert_eq!(c.messages, 4);
        assert_eq!(c.user_turns, 3);
        assert_eq!(c.system_bytes, 14);
        assert_eq!(c.last_user_bytes, 16);
        assert_eq!(c.tools, 3);
        assert_eq!(c.bytes_total, 14 + 2 + 5 + 16);
    }

    #[test]
    fn scanning_stops_at_the_budget_newest_first() {
        let old = "legal ".repeat(SCAN_BYTES_MAX);
        let turns = [
            Turn { role: Role::User, message: 0, text: &old },
            Turn { role: Role::User, message: 1, text: "new question" },
        ];
        let c = counts(&Prompt { turns: &turns, tools: 0 });
        assert_eq!(c.bytes_scanned as usize, SCAN_BYTES_MAX);
        assert_eq!(c.bytes_total, old.len() as u64 + 12);
        assert!(c.words >= 2);
    }
}
