//! Word lists the score counts, matched in one Aho-Corasick pass built once per process.
//!
//! Each entry is a lower-case phrase; the automaton matches it case-insensitively. A
//! trailing `*` makes the entry a stem (no word boundary needed after it: `litigat*`
//! matches "litigation" and "litigated"); every other entry that begins or ends with a
//! letter or digit must sit between word boundaries, so "tort" does not match "distort".
//! Entries that are not words (code punctuation, fences) match anywhere.
//!
//! Words of at most [`SHORT_WORD_LEN_MAX`] letters ("i", "he", "not", "per") are not in
//! the automaton: they would match inside most words and cost a rejected match each.
//! The byte pass looks each short word up in [`Lexicons::short_word`] instead.

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

/// What a lexicon entry is evidence of. The discriminant indexes [`LEXICON_COUNT`]-long
/// count arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Lexicon {
    /// Law: courts, contracts, liability.
    Legal = 0,
    /// Medicine and biology.
    Medical,
    /// Finance and economics.
    Finance,
    /// College-level science and mathematics vocabulary.
    Science,
    /// Words of arithmetic word problems and of asking for a computation.
    MathWord,
    /// Words that ask for or signal multi-step reasoning.
    Reasoning,
    /// Negations; in capitals ("NOT", "EXCEPT") they are counted apart by the caller.
    Negation,
    /// Code keywords and punctuation, programming languages and tools.
    Code,
    /// A Markdown code fence.
    Fence,
    /// Several statements or scenarios to weigh against each other.
    MultiStatement,
    /// Asking for prose: essays, stories, emails.
    Writing,
    /// The writer speaking of themselves: personal situations and dilemmas.
    FirstPerson,
    /// People in a narrative: fact patterns, stories, vignettes.
    ThirdPerson,
}

/// Number of [`Lexicon`] variants.
pub const LEXICON_COUNT: usize = 13;

const LEGAL: &[&str] = &[
    "plaintiff*",
    "defendant*",
    "court*",
    "statut*",
    "contract*",
    "tort*",
    "negligen*",
    "liab*",
    "litigat*",
    "jury",
    "juror*",
    "verdict*",
    "testimony",
    "testif*",
    "hearsay",
    "admissib*",
    "inadmissib*",
    "evidence",
    "prosecut*",
    "felony",
    "misdemeanor",
    "indict*",
    "attorney*",
    "lawyer*",
    "counsel",
    "judge*",
    "judicial",
    "jurisdiction*",
    "constitution*",
    "amendment",
    "due process",
    "appeal*",
    "appellate",
    "lawsuit*",
    "sued",
    "sues",
    "damages",
    "breach*",
    "covenant*",
    "easement*",
    "deed",
    "deeds",
    "mortgage*",
    "lease*",
    "lessee",
    "lessor",
    "tenant*",
    "landlord*",
    "grantor",
    "grantee",
    "estate",
    "conveyance",
    "title to",
    "trespass*",
    "battery",
    "assault",
    "homicide",
    "murder*",
    "manslaughter",
    "larceny",
    "burglary",
    "robbery",
    "embezzle*",
    "fraud*",
    "conspiracy",
    "accomplice",
    "mens rea",
    "intent to",
    "legislat*",
    "ordinance",
    "regulation*",
    "compliance",
    "clause",
    "indemnif*",
    "warrant",
    "warranty",
    "search and seizure",
    "fourth amendment",
    "first amendment",
    "supreme court",
    "precedent",
    "injunction",
    "remedy",
    "remedies",
    "rescission",
    "restitution",
    "arbitrat*",
    "consideration",
    "offeree",
    "offeror",
    "promissory",
    "estoppel",
    "fiduciary",
    "trustee",
    "probate",
    "testator",
    "bequest",
    "devise",
    "heirs",
    "custody",
    "statute of limitations",
    "gdpr",
    "hipaa",
    "licensee",
    "licensor",
    "intellectual property",
    "copyright*",
    "patent*",
    "trademark*",
    "nda",
    "non-disclosure",
    "governing law",
    "hereby",
    "herein",
    "thereof",
    "whereas",
    "pursuant",
    "notwithstanding",
    "legal*",
    "illegal*",
    "unlawful*",
    "lawful*",
    "law",
    "laws",
];

const MEDICAL: &[&str] = &[
    "patient*",
    "diagnos*",
    "symptom*",
    "syndrome*",
    "disease*",
    "disorder*",
    "clinical*",
    "physician*",
    "treatment*",
    "therap*",
    "dose",
    "dosage",
    "mg",
    "medication*",
    "drug*",
    "infection*",
    "bacteri*",
    "vir*",
    "immun*",
    "antibod*",
    "vaccin*",
    "tumor*",
    "tumour*",
    "cancer*",
    "carcinom*",
    "chronic",
    "acute",
    "lesion*",
    "biopsy",
    "serum",
    "plasma",
    "blood pressure",
    "mm hg",
    "heart rate",
    "cardiac",
    "cardio*",
    "pulmonary",
    "renal",
    "hepat*",
    "neuro*",
    "artery",
    "arteries",
    "vein*",
    "enzyme*",
    "protein*",
    "gene",
    "genes",
    "genetic*",
    "chromosom*",
    "mutation*",
    "dna",
    "rna",
    "cell",
    "cells",
    "tissue*",
    "hormone*",
    "insulin",
    "glucose",
    "metabol*",
    "anatom*",
    "physiolog*",
    "pathogen*",
    "examination shows",
    "laboratory studies",
    "most likely diagnosis",
    "year-old",
    "pregnan*",
    "nutrient*",
    "vitamin*",
    "surgery",
    "surgical",
    "prognosis",
    "epidemiolog*",
];

const FINANCE: &[&str] = &[
    "interest rate*",
    "inflation",
    "gdp",
    "monetary",
    "fiscal",
    "tax*",
    "revenue*",
    "profit*",
    "dividend*",
    "stock*",
    "bond*",
    "equity",
    "asset*",
    "liabilities",
    "balance sheet",
    "cash flow*",
    "depreciat*",
    "amortiz*",
    "invest*",
    "portfolio*",
    "market*",
    "price*",
    "demand",
    "supply",
    "elasticit*",
    "marginal",
    "opportunity cost",
    "unemployment",
    "recession",
    "exchange rate*",
    "tariff*",
    "deficit*",
    "surplus*",
    "federal reserve",
    "central bank",
    "loan*",
    "credit*",
    "debt*",
    "accounting",
    "audit*",
    "financial*",
    "economic*",
    "econom*",
    "shareholder*",
    "stakeholder*",
    "capital",
    "wage*",
    "payroll",
    "budget*",
    "net income",
    "earnings",
    "valuation",
    "npv",
    "roi",
    "yield*",
];

const SCIENCE: &[&str] = &[
    "theorem*",
    "lemma",
    "corollary",
    "proof",
    "prove",
    "derivative*",
    "integral*",
    "differential",
    "eigen*",
    "matri*",
    "vector*",
    "polynomial*",
    "logarithm*",
    "exponential",
    "coefficient*",
    "asymptot*",
    "converge*",
    "diverge*",
    "infinite",
    "infinitely",
    "isomorph*",
    "homomorph*",
    "subgroup*",
    "abelian",
    "ring",
    "field extension",
    "permutation*",
    "combinator*",
    "probabilit*",
    "variance",
    "standard deviation",
    "hypothesis",
    "regression",
    "gradient*",
    "entropy",
    "quantum",
    "momentum",
    "velocity",
    "acceleration",
    "kinetic",
    "potential energy",
    "voltage",
    "current",
    "resistance",
    "resistor*",
    "capacitor*",
    "inductor*",
    "magnetic",
    "electric field",
    "wavelength",
    "frequency",
    "photon*",
    "electron*",
    "proton*",
    "neutron*",
    "nucle*",
    "molecul*",
    "molar",
    "moles",
    "equilibrium",
    "oxidation",
    "reduction",
    "reaction*",
    "catalyst*",
    "compound*",
    "isotope*",
    "thermodynam*",
    "algorithm*",
    "complexity",
    "asymptotic",
    "recursion",
    "recursive",
    "turing",
    "np-complete",
    "big-o",
    "neural network*",
    "classifier*",
    "overfitting",
    "kernel*",
    "bayes*",
    "markov",
    "stochastic",
];

const MATH_WORD: &[&str] = &[
    "how many",
    "how much",
    "how long",
    "how far",
    "how old",
    "total",
    "altogether",
    "each",
    "per",
    "percent*",
    "%",
    "twice",
    "half",
    "thrice",
    "times as",
    "remaining",
    "left over",
    "average",
    "sum",
    "product of",
    "difference between",
    "ratio",
    "fraction*",
    "calculate",
    "compute",
    "solve",
    "equation*",
    "find the value",
    "what is the value",
    "evaluate",
    "simplify",
    "dollars",
    "$",
    "cents",
    "miles",
    "hours",
    "minutes",
    "km",
    "kg",
    "pounds",
    "feet",
    "inches",
    "prove that",
    "square root",
    "irrational",
    "prime number*",
    "divisible",
    "probability of",
    "odds of",
    "dice",
    "expected value",
    "sqrt",
    "x^",
    "=",
    "+",
    "\\frac",
    "\\sqrt",
    "\\int",
    "\\sum",
];

const REASONING: &[&str] = &[
    "why",
    "explain*",
    "because",
    "therefore",
    "thus",
    "hence",
    "implies",
    "imply",
    "implication*",
    "infer*",
    "deduc*",
    "conclu*",
    "assum*",
    "suppose",
    "if and only if",
    "step by step",
    "step-by-step",
    "reason*",
    "justify",
    "argument*",
    "premise*",
    "valid",
    "invalid",
    "fallac*",
    "contradict*",
    "consequen*",
    "analy*",
    "evaluate the",
    "compare",
    "contrast",
    "trade-off*",
    "tradeoff*",
    "pros and cons",
    "which of the following",
    "best describes",
    "best explains",
    "most likely",
    "least likely",
    "strongest",
    "weakest",
    "would most",
    "would best",
    "critique",
    "whether",
    "hypothetical*",
    "counterexample",
    "think through",
    "puzzle",
    "riddle",
    "logic*",
];

const NEGATION: &[&str] =
    &["not", "no", "none", "neither", "nor", "cannot", "never", "except", "least", "incorrect", "false"];

const CODE: &[&str] = &[
    "def ",
    "fn ",
    "func ",
    "function*",
    "return",
    "import ",
    "#include",
    "class ",
    "struct ",
    "impl ",
    "public ",
    "private ",
    "static ",
    "void ",
    "const ",
    "let ",
    "var ",
    "=>",
    "->",
    "::",
    "();",
    "){",
    ") {",
    "};",
    "!=",
    "==",
    "&&",
    "||",
    "++",
    "+=",
    "println",
    "printf",
    "console.log",
    "self.",
    "this.",
    "std::",
    "null",
    "none)",
    "true)",
    "false)",
    "elif ",
    "lambda",
    "async ",
    "await ",
    "select ",
    "from ",
    "where ",
    "join ",
    "python",
    "javascript",
    "typescript",
    "java",
    "rust",
    "golang",
    "c++",
    "sql",
    "html",
    "css",
    "bash",
    "regex*",
    "compile*",
    "debug*",
    "stack trace",
    "traceback",
    "exception",
    "segfault",
    "refactor*",
    "unit test*",
    "api",
    "endpoint*",
    "json",
    "query",
    "queries",
    "django",
    "flask",
    "node.js",
    "npm",
    "yaml",
    "docker*",
    "kubernetes",
    "git ",
    "bug",
    "bugs",
    "code",
    "coding",
    "program*",
    "script*",
    "variable*",
    "array*",
    "string*",
    "integer*",
    "boolean",
    "pointer*",
    "loop*",
    "runtime",
    "syntax",
];

const MULTI_STATEMENT: &[&str] = &[
    "statement 1",
    "statement 2",
    "scenario 1",
    "scenario 2",
    "i and ii",
    "ii and iii",
    "i, ii",
    "i only",
    "ii only",
    "iii only",
    "all of the above",
    "none of the above",
    "both",
    "true, true",
    "false, false",
    "true, false",
    "false, true",
];

const WRITING: &[&str] = &[
    "write a",
    "write an",
    "write me",
    "write the",
    "draft",
    "compose",
    "essay*",
    "story",
    "stories",
    "poem*",
    "poetry",
    "haiku",
    "limerick",
    "song",
    "lyrics",
    "email*",
    "e-mail",
    "letter",
    "cover letter",
    "blog",
    "article",
    "paragraph*",
    "rewrite",
    "rephrase",
    "paraphrase",
    "proofread",
    "tone",
    "narrative",
    "fiction",
    "character*",
    "plot",
    "slogan",
    "tagline",
    "speech",
    "toast",
    "summar*",
    "tweet",
    "post",
];

// "i" also counts "i'm", "i've": the byte pass sees the letters before the apostrophe as a word.
const FIRST_PERSON: &[&str] = &["i", "me", "my", "mine", "myself"];

const THIRD_PERSON: &[&str] = &[
    "he",
    "she",
    "his",
    "her",
    "him",
    "hers",
    "himself",
    "herself",
    "man",
    "woman",
    "boy",
    "girl",
    "husband",
    "wife",
    "son",
    "daughter",
    "friend",
    "neighbor",
    "neighbour",
];

/// The entries of every lexicon, in one table: `(phrase, lexicon)`.
fn phrases() -> impl Iterator<Item = (&'static str, Lexicon)> {
    let lists: [(&'static [&'static str], Lexicon); LEXICON_COUNT] = [
        (LEGAL, Lexicon::Legal),
        (MEDICAL, Lexicon::Medical),
        (FINANCE, Lexicon::Finance),
        (SCIENCE, Lexicon::Science),
        (MATH_WORD, Lexicon::MathWord),
        (REASONING, Lexicon::Reasoning),
        (NEGATION, Lexicon::Negation),
        (CODE, Lexicon::Code),
        (&["```"], Lexicon::Fence),
        (MULTI_STATEMENT, Lexicon::MultiStatement),
        (WRITING, Lexicon::Writing),
        (FIRST_PERSON, Lexicon::FirstPerson),
        (THIRD_PERSON, Lexicon::ThirdPerson),
    ];
    lists.into_iter().flat_map(|(list, lexicon)| list.iter().map(move |&p| (p, lexicon)))
}

/// One automaton pattern: which lexicon it counts for and whether its ends need word
/// boundaries.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// The lexicon it counts for.
    pub lexicon: Lexicon,
    /// Whether the byte before the match must not be a letter or digit.
    pub boundary_before: bool,
    /// Whether the byte after the match must not be a letter or digit.
    pub boundary_after: bool,
}

/// Longest word (in ASCII letters) looked up by the byte pass rather than matched by the
/// automaton.
pub const SHORT_WORD_LEN_MAX: usize = 3;

/// A short word's letters, lower-cased, packed into an integer (first letter highest).
/// Words of more than [`SHORT_WORD_LEN_MAX`] letters are never looked up.
pub const fn pack(code: u32, letter: u8) -> u32 {
    (code << 8) | (letter.to_ascii_lowercase() as u32)
}

/// The automaton over every lexicon and, by pattern id, what each pattern counts for.
pub struct Lexicons {
    /// Leftmost-longest, ASCII case-insensitive, so "statute of limitations" wins over
    /// "statut*" and each byte counts for at most one entry.
    pub automaton: AhoCorasick,
    /// Indexed by `PatternID`.
    pub entries: Vec<Entry>,
    /// Short words by [`pack`]ed code, sorted.
    short: Vec<(u32, Lexicon)>,
}

impl Lexicons {
    /// The lexicon of the short word whose letters [`pack`] into `code`.
    pub fn short_word(&self, code: u32) -> Option<Lexicon> {
        self.short.binary_search_by_key(&code, |&(c, _)| c).ok().and_then(|i| self.short.get(i)).map(|&(_, l)| l)
    }
}

/// Built on first use; a phrase listed twice keeps its first lexicon.
pub static LEXICONS: LazyLock<Lexicons> = LazyLock::new(build);

fn build() -> Lexicons {
    let mut patterns: Vec<&'static str> = Vec::new();
    let mut entries = Vec::new();
    let mut short: Vec<(u32, Lexicon)> = Vec::new();
    for (phrase, lexicon) in phrases() {
        let (text, stem) = match phrase.strip_suffix('*') {
            Some(text) => (text, true),
            None => (phrase, false),
        };
        if !stem && text.len() <= SHORT_WORD_LEN_MAX && text.bytes().all(|b| b.is_ascii_alphabetic()) {
            let code = text.bytes().fold(0, pack);
            if !short.iter().any(|&(c, _)| c == code) {
                short.push((code, lexicon));
            }
            continue;
        }
        if patterns.contains(&text) {
            continue;
        }
        let word_start = text.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
        let word_end = text.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
        patterns.push(text);
        entries.push(Entry { lexicon, boundary_before: word_start, boundary_after: word_end && !stem });
    }
    // The pattern set is a compile-time constant, so building cannot fail on input; the
    // only error is exceeding the automaton's size limits, which the tests would catch.
    let automaton = AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .ascii_case_insensitive(true)
        .kind(Some(AhoCorasickKind::DFA))
        .build(&patterns)
        .expect("the lexicons are a valid pattern set");
    short.sort_by_key(|&(code, _)| code);
    Lexicons { automaton, entries, short }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_lower_case_and_non_empty() {
        for (phrase, _) in phrases() {
            assert!(!phrase.trim_end_matches('*').is_empty());
            assert_eq!(phrase, phrase.to_ascii_lowercase(), "{phrase}");
        }
    }

    #[test]
    fn builds_with_one_entry_per_pattern() {
        let lex = &*LEXICONS;
        assert_eq!(lex.automaton.patterns_len(), lex.entries.len());
    }

    #[test]
    fn short_words_are_looked_up_not_matched() {
        let lex = &*LEXICONS;
        let code = |w: &str| w.bytes().fold(0, pack);
        assert_eq!(lex.short_word(code("I")), Some(Lexicon::FirstPerson));
        assert_eq!(lex.short_word(code("not")), Some(Lexicon::Negation));
        assert_eq!(lex.short_word(code("Per")), Some(Lexicon::MathWord));
        assert_eq!(lex.short_word(code("the")), None);
        // "his" is short; "himself" goes to the automaton.
        assert!(lex.automaton.find(b"himself").is_some());
        assert!(lex.automaton.find(b"his").is_none());
    }
}
