//! What the score reads of a prompt: counts from one byte pass and one lexicon pass over
//! the turns, newest first, up to [`SCAN_BYTES_MAX`] bytes, then the fixed feature vector
//! the fitted model weighs.
//!
//! Training (`core/examples/fit_router.rs`) and serving both call [`features`], so the
//! two can never compute a feature differently.

use super::lexicons::{pack, Lexicon, Lexicons, LEXICONS, LEXICON_COUNT, SHORT_WORD_LEN_MAX};
use super::{Prompt, Role};

/// Bytes of text scanned per request: the newest turn's last bytes first, then the turns
/// before it; the rest only counts toward the length. The end of a conversation is where
/// the question, its constraints and its answer options are; 2 KiB holds the whole of all
/// but 1.6 % of the labelled prompts (158 of 10,188; held-out APGR is the same as with
/// 3 KiB) and keeps the score within its budget (≤ 20 µs p99) however large the body: a
/// scan costs ~5–7 ns per byte on the development machine, about half of it the lexicon
/// automaton, whose 1.5 MiB table does not fit in cache (see `bench/benches/router.rs`).
pub const SCAN_BYTES_MAX: usize = 2 * 1024;

/// Raw counts over the prompt; [`Features::from_counts`] turns them into the model's
/// inputs and [`super::task`] reads them to name the task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Bytes of text in every turn, scanned or not.
    pub bytes_total: u64,
    /// Bytes of system turns.
    pub system_bytes: u64,
    /// Distinct messages with text (conversation depth).
    pub messages: u32,
    /// Tools the request offers.
    pub tools: u32,
    /// Bytes scanned (at most [`SCAN_BYTES_MAX`]).
    pub bytes_scanned: u32,
    /// Runs of ASCII letters.
    pub words: u32,
    /// Runs of digits (numbers; `12.5` and `1,000` are one).
    pub numbers: u32,
    /// `= + * / ^ < > %`.
    pub math_symbols: u32,
    /// `{ } [ ] ; _ \ # ( )` and backticks.
    pub code_symbols: u32,
    /// Lines that start with an answer option, `A.` to `H.` or `A)` to `H)`.
    pub options: u32,
    /// Answer options that are numbers or formulas (a digit, and at most two letters
    /// per digit).
    pub numeric_options: u32,
    /// Answer options with a comma: compound answers ("True, False", "Wrong, Not wrong").
    pub compound_options: u32,
    /// Whether the question is asked directly: the text before the first answer option,
    /// or the newest turn when it has none, ends with `?`.
    pub direct_question: bool,
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
pub const FEATURE_COUNT: usize = 14;

/// Feature names, in [`Features`] order (the fitting script prints them, and the
/// generated weights file names its rows with them).
///
/// Conversation depth, system prompt and tools are counted in [`Counts`] but are not
/// model inputs: the labelled data is single-turn, so no weight for them can be fitted.
/// Code, math words and the domain lexicons are counted for the task rule; as model
/// inputs they did not help on subjects held out (see `bench/RESULTS.md`).
pub const FEATURE_NAMES: [&str; FEATURE_COUNT] = [
    "log_bytes",
    "log_options",
    "numeric_option_share",
    "compound_option_share",
    "direct_question",
    "log_numbers",
    "negations",
    "caps_negations",
    "multi_statement",
    "first_person",
    "conceptual_science",
    "narrative_length",
    "numeric_options_x_numbers",
    "numeric_options_x_length",
];

/// Whether feature `i` says nothing about a prompt whose `log_options` (feature 1) is
/// `log_options`: the answer-option features (and their products with the numbers and
/// the length) of a prompt without answer options. The model (and its fit) count such a
/// feature as the training mean — a standardized 0 — rather than as "zero options". Why: in the labelled data only GSM8K prompts lack
/// options, so "no options" would be learnt as "a GSM8K word problem", and every chat
/// prompt (none has options) would inherit that subject's high gain. With the features
/// absent, a prompt without options is scored on what it does have (length, numbers,
/// wording).
pub fn absent(i: usize, log_options: f64) -> bool {
    matches!(i, 1..=3 | 12 | 13) && log_options <= 0.0
}

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
        let log_bytes = ln1p(c.bytes_total);
        let log_numbers = ln1p(u64::from(c.numbers));
        let numeric_options = share(c.numeric_options, c.options);
        Features([
            log_bytes,
            ln1p(u64::from(c.options)),
            numeric_options,
            share(c.compound_options, c.options),
            f32::from(u8::from(c.direct_question)),
            log_numbers,
            lex(Lexicon::Negation),
            ln1p(u64::from(c.caps_negation)),
            lex(Lexicon::MultiStatement),
            lex(Lexicon::FirstPerson),
            // Science asked about in words, not computed: the answers are not numbers.
            lex(Lexicon::Science) * (1.0 - numeric_options),
            // A story of people (a fact pattern, a vignette), weighted by its length.
            lex(Lexicon::ThirdPerson) * log_bytes / 8.0,
            // Numeric answers to a question full of numbers (a computation to carry out,
            // where the large model's answers were as often graded wrong) read differently
            // from numeric answers to a short question, and a long stem with numeric
            // answers (a word problem) differently from a long one with worded answers:
            // one weight per feature cannot say "numeric answers matter more when …".
            numeric_options * log_numbers,
            numeric_options * log_bytes,
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
    for turn in prompt.turns {
        let len = turn.text.len() as u64;
        c.bytes_total = c.bytes_total.saturating_add(len);
        if last_message != Some(turn.message) {
            c.messages = c.messages.saturating_add(1);
            last_message = Some(turn.message);
        }
        if turn.role == Role::System {
            c.system_bytes = c.system_bytes.saturating_add(len);
        }
    }
    let mut budget = SCAN_BYTES_MAX;
    for turn in prompt.turns.iter().rev() {
        if budget == 0 {
            break;
        }
        let bytes = turn.text.as_bytes();
        let take = bytes.len().min(budget);
        // The turn's tail; a cut inside a UTF-8 sequence is harmless to a byte scan.
        let Some(part) = bytes.get(bytes.len().saturating_sub(take)..) else { break };
        budget = budget.saturating_sub(take);
        scan_bytes(part, &mut c);
        scan_lexicons(part, &mut c);
    }
    c
}

/// Byte classes of the byte pass.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Digit,
    Blank,
    Newline,
    Math,
    Code,
    Other,
}

const CLASSES: [Class; 256] = {
    let mut table = [Class::Other; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = match i as u8 {
            b'a'..=b'z' | b'A'..=b'Z' => Class::Letter,
            b'0'..=b'9' => Class::Digit,
            b' ' | b'\t' | b'\r' => Class::Blank,
            b'\n' => Class::Newline,
            b'=' | b'+' | b'*' | b'/' | b'^' | b'<' | b'>' | b'%' => Class::Math,
            b'{' | b'}' | b'[' | b']' | b';' | b'_' | b'\\' | b'#' | b'(' | b')' | b'`' => Class::Code,
            _ => Class::Other,
        };
        i += 1;
    }
    table
};

/// What the byte pass tracks of the answer option on the current line.
#[derive(Default)]
struct OptionLine {
    open: bool,
    letters: u32,
    digits: u32,
    commas: u32,
}

impl OptionLine {
    /// Counts the option into `c` and closes it.
    fn close(&mut self, c: &mut Counts) {
        if self.open {
            if self.digits > 0 && self.letters <= self.digits.saturating_mul(2).saturating_add(1) {
                c.numeric_options += 1;
            }
            if self.commas > 0 {
                c.compound_options += 1;
            }
        }
        *self = OptionLine::default();
    }
}

/// One pass over `bytes`: character classes, words, numbers, answer options.
fn scan_bytes(bytes: &[u8], c: &mut Counts) {
    let first_turn = c.bytes_scanned == 0;
    let options_before = c.options;
    let lexicons = &*LEXICONS;
    // The current word's length, its first letters packed, and whether it is in capitals.
    let (mut word_len, mut word_code, mut word_caps) = (0usize, 0u32, true);
    let mut in_number = false;
    // The two bytes before the current one; a turn starts as if after a newline.
    let (mut prev, mut prev2) = (b'\n', b'\n');
    // The last non-blank byte, and what it was when the current line began.
    let (mut last_mark, mut mark_before_line) = (0u8, 0u8);
    let mut option = OptionLine::default();
    for &b in bytes {
        let class = CLASSES[usize::from(b)];
        match class {
            Class::Letter => {
                c.words += u32::from(word_len == 0);
                if word_len < SHORT_WORD_LEN_MAX {
                    word_code = pack(word_code, b);
                }
                word_caps &= b.is_ascii_uppercase();
                word_len += 1;
                option.letters += 1;
            }
            Class::Digit => {
                c.numbers += u32::from(!in_number);
                option.digits += 1;
            }
            Class::Math => c.math_symbols += 1,
            Class::Code => c.code_symbols += 1,
            Class::Newline => {
                option.close(c);
                mark_before_line = last_mark;
            }
            Class::Blank | Class::Other => {}
        }
        // `A.` or `A)` at the start of a line opens an answer option.
        if (b == b'.' || b == b')') && prev2 == b'\n' && (b'A'..=b'H').contains(&prev) {
            if c.options == options_before && mark_before_line == b'?' {
                c.direct_question = true;
            }
            c.options += 1;
            option = OptionLine { open: true, ..OptionLine::default() };
        }
        option.commas += u32::from(b == b',');
        if class != Class::Letter && word_len > 0 {
            end_word(lexicons, word_len, word_code, word_caps, c);
            (word_len, word_code, word_caps) = (0, 0, true);
        }
        in_number = class == Class::Digit || (in_number && (b == b'.' || b == b','));
        if !matches!(class, Class::Blank | Class::Newline) {
            last_mark = b;
        }
        prev2 = prev;
        prev = b;
    }
    if word_len > 0 {
        end_word(lexicons, word_len, word_code, word_caps, c);
    }
    option.close(c);
    if first_turn && c.options == options_before && last_mark == b'?' {
        c.direct_question = true;
    }
    // `bytes` is at most SCAN_BYTES_MAX long, so this and every count above fit in u32.
    c.bytes_scanned += bytes.len() as u32;
}

/// Counts a word that ended: a short one is looked up in the lexicons.
fn end_word(lexicons: &Lexicons, len: usize, code: u32, caps: bool, c: &mut Counts) {
    if len > SHORT_WORD_LEN_MAX {
        return;
    }
    let Some(lexicon) = lexicons.short_word(code) else { return };
    if let Some(n) = c.lexicon.get_mut(lexicon as usize) {
        *n += 1;
    }
    if lexicon == Lexicon::Negation && caps && len >= 3 {
        c.caps_negation += 1;
    }
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
        if entry.lexicon == Lexicon::Negation {
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
    fn words_and_numbers() {
        let c = user("Compute 12.5 plus 7, approximately.");
        assert_eq!(c.words, 3);
        assert_eq!(c.numbers, 2);
        assert_eq!(user("1,000 and 2").numbers, 2);
    }

    #[test]
    fn option_lines() {
        let c = user("Which is prime?\nA. 4\nB. 6\nC) 7\nD. 9\nAnswer:");
        assert_eq!(c.options, 4);
        assert_eq!(c.numeric_options, 4);
        assert!(c.direct_question);
        let c = user("Pick one\nA. True, True\nB. 10 m/s\nC. the 3 cats");
        assert_eq!((c.options, c.numeric_options, c.compound_options), (3, 1, 1));
        assert!(!c.direct_question);
        assert_eq!(user("Plan A. Then B.").options, 0);
    }

    #[test]
    fn direct_questions() {
        assert!(user("How many eggs are left? ").direct_question);
        assert!(!user("The capital of France is").direct_question);
        // Only the newest turn counts when there are no options.
        let turns = [
            Turn { role: Role::User, message: 0, text: "Why?" },
            Turn { role: Role::Assistant, message: 1, text: "Because." },
        ];
        assert!(!counts(&Prompt { turns: &turns, tools: 0 }).direct_question);
    }

    #[test]
    fn math_and_code_symbols() {
        assert_eq!(user("x^2 + 3*x = 10").math_symbols, 4);
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
        assert_eq!(user("I think my cat likes me").hits(Lexicon::FirstPerson), 3);
        assert_eq!(user("In it is").hits(Lexicon::FirstPerson), 0);
    }

    #[test]
    fn capital_negations_count_apart() {
        let c = user("All of these are true EXCEPT one. Which is NOT prime? not this.");
        assert_eq!(c.caps_negation, 2);
        assert_eq!(c.hits(Lexicon::Negation), 3);
    }

    #[test]
    fn fences_and_domains() {
        let c = user("```rust\nlet x = 1;\n```");
        assert_eq!(c.hits(Lexicon::Fence), 2);
        assert!(user("The patient has a fever; most likely diagnosis?").hits(Lexicon::Medical) >= 2);
        assert!(user("Interest rates and inflation rose").hits(Lexicon::Finance) >= 2);
        assert_eq!(user("Statement 1 | x. Statement 2 | y.").hits(Lexicon::MultiStatement), 2);
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
        assert_eq!(c.system_bytes, 14);
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
        assert!(c.hits(Lexicon::Legal) < SCAN_BYTES_MAX as u32 / 6 + 1);
    }

    #[test]
    fn option_products_are_absent_without_options() {
        let f = Features::from_counts(&user("What is 2+2?"));
        assert!((1..=3).chain(12..=13).all(|i| absent(i, f64::from(f.0[1]))));
        assert!(!absent(0, f64::from(f.0[1])) && !absent(5, f64::from(f.0[1])));
        let f = Features::from_counts(&user("Which is prime?\nA. 4\nB. 6\nC. 7\nD. 9\nAnswer:"));
        assert!(!absent(12, f64::from(f.0[1])) && !absent(13, f64::from(f.0[1])));
        assert_eq!(f.0[12], f.0[2] * f.0[5]);
        assert_eq!(f.0[13], f.0[2] * f.0[0]);
        assert!(f.0[12] > 0.0);
    }

    #[test]
    fn features_are_finite_for_empty_and_odd_prompts() {
        for text in ["", "\n\n\n", "A.", "ü日本語", "?"] {
            let f = Features::from_counts(&user(text));
            assert!(f.0.iter().all(|x| x.is_finite()), "{text:?}: {f:?}");
        }
    }
}
