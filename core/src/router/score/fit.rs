//! Fitting and evaluating the score's model on labelled prompts: logistic regression,
//! subject-held-out cross-validation and APGR. Offline only (the fitting example and the
//! tests); nothing here runs on the request path.
//!
//! APGR follows the RouteLLM paper: sort prompts by score, send the top `c` share to
//! the strong model and the rest to the weak one; PGR(c) = (acc(c) − acc_weak) /
//! (acc_strong − acc_weak). `c` runs over 0, 1 %, …, 100 % (`k = round(c·n)` prompts
//! routed, ties broken by prompt order), and APGR is the trapezoidal area under PGR(c),
//! so random routing scores 0.50 in expectation.

// Dense matrix and per-feature arithmetic reads clearer with indices than with zipped
// iterators; every index is below a constant array length.
#![allow(clippy::needless_range_loop)]

use std::path::Path;

use serde::Deserialize;

use super::features::{features, FEATURE_COUNT};
use super::{Prompt, Role, Turn};

/// One labelled prompt of `routing-dev.jsonl`.
#[derive(Debug, Clone, Deserialize)]
pub struct Example {
    /// `mmlu` or `gsm8k`.
    pub source: String,
    /// MMLU subject, or `math_word_problem` for GSM8K.
    pub subject: String,
    /// The prompt as the models saw it (one user message).
    pub prompt: String,
    /// Whether the weak model answered it correctly.
    pub weak_correct: bool,
    /// Whether the strong model answered it correctly.
    pub strong_correct: bool,
}

/// Why the labelled data could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A line is not a labelled prompt.
    #[error("{path}:{line}: {source}")]
    Json {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// The error.
        source: serde_json::Error,
    },
}

/// Reads a JSON-lines file of [`Example`]s (blank lines skipped).
pub fn load(path: &Path) -> Result<Vec<Example>, FitError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| FitError::Io { path: path.display().to_string(), source })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let example = serde_json::from_str(line).map_err(|source| FitError::Json {
            path: path.display().to_string(),
            line: i + 1,
            source,
        })?;
        out.push(example);
    }
    Ok(out)
}

/// A feature row, in `f64` for fitting.
pub type Row = [f64; FEATURE_COUNT];

/// The features of a single-user-message prompt, as [`super::score`] computes them.
pub fn row(prompt: &str) -> Row {
    let turns = [Turn { role: Role::User, message: 0, text: prompt }];
    features(&Prompt { turns: &turns, tools: 0 }).0.map(f64::from)
}

/// What the model is fitted to predict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// 1 when the weak model fails.
    WeakFails,
    /// 1 when the weak model fails and the strong one succeeds.
    StrongHelps,
    /// (strong − weak + 1) / 2: 1 when only the strong model succeeds, 0 when only the
    /// weak one does, ½ when both or neither do. Its expectation ranks prompts by how
    /// much accuracy sending them to the strong model gains, which is what APGR rewards.
    Gain,
}

impl Target {
    /// Every target, in a fixed order.
    pub const ALL: [Target; 3] = [Target::WeakFails, Target::StrongHelps, Target::Gain];

    /// The target's name in reports and the generated file.
    pub fn name(self) -> &'static str {
        match self {
            Target::WeakFails => "weak_fails",
            Target::StrongHelps => "strong_helps",
            Target::Gain => "gain",
        }
    }

    /// The label of `e`.
    pub fn label(self, e: &Example) -> f64 {
        let (weak, strong) = (f64::from(u8::from(e.weak_correct)), f64::from(u8::from(e.strong_correct)));
        match self {
            Target::WeakFails => 1.0 - weak,
            Target::StrongHelps => (1.0 - weak) * strong,
            Target::Gain => (strong - weak + 1.0) / 2.0,
        }
    }
}

/// A logistic regression on standardized features.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// Per-feature mean of the training rows.
    pub mean: Row,
    /// Per-feature standard deviation of the training rows (1 where it is 0).
    pub scale: Row,
    /// Weight of each standardized feature.
    pub coef: Row,
    /// Intercept.
    pub bias: f64,
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

impl Model {
    /// The model's log-odds for `x`.
    pub fn logit(&self, x: &Row) -> f64 {
        let mut z = self.bias;
        for i in 0..FEATURE_COUNT {
            if !super::features::absent(i, x[1]) {
                z += self.coef[i] * (x[i] - self.mean[i]) / self.scale[i];
            }
        }
        z
    }

    /// The model's probability for `x`.
    pub fn predict(&self, x: &Row) -> f64 {
        sigmoid(self.logit(x))
    }
}

/// Number of steps of the percentile table: the shipped complexity is the share of the
/// labelled prompts whose log-odds are lower, read from [`QUANTILES`] + 1 values.
pub const QUANTILES: usize = 100;

/// The log-odds of `rows` at 0, 1, …, 100 %, ascending.
pub fn quantiles(model: &Model, rows: &[Row]) -> Vec<f64> {
    let mut z: Vec<f64> = rows.iter().map(|r| model.logit(r)).collect();
    z.sort_by(f64::total_cmp);
    let last = z.len().saturating_sub(1);
    (0..=QUANTILES).map(|q| z.get((q * last + QUANTILES / 2) / QUANTILES).copied().unwrap_or(0.0)).collect()
}

/// L2 penalty on the standardized weights (not the intercept), per training row.
pub const L2_PER_ROW: f64 = 0.3;

/// Newton's method iterations at most; it converges in under 10 on this data.
pub const NEWTON_ITERATIONS_MAX: usize = 50;

/// Fits a logistic regression of `y` (in [0, 1]) on `x` by Newton's method with an L2
/// penalty of `l2_per_row · n`, every row alike. Deterministic: fixed order, no
/// randomness.
pub fn fit_with(x: &[Row], y: &[f64], l2_per_row: f64) -> Model {
    let w: Vec<f64> = vec![1.0; y.len()];
    fit_weighted(x, y, &w, l2_per_row)
}

/// How much a subject's size weighs in the fit: a prompt counts (prompts of its subject in
/// the training rows)^−`SUBJECT_POWER`, rescaled to a mean of 1 — between every prompt
/// alike (0) and every subject alike (1). Why: the few largest subjects (law 1,534 prompts,
/// GSM8K 1,319, moral scenarios 895) otherwise decide the weights, and a held-out subject
/// is more like "another subject" than like law. Held out it moved pooled APGR 0.638 →
/// 0.643 and the mean of folds 0.629 → 0.632; chat prompts stay where they were
/// ("What is 2+2?" 0.10).
pub const SUBJECT_POWER: f64 = 0.5;

/// Per-row fitting weights for rows of `subjects`: see [`SUBJECT_POWER`].
pub fn subject_weights(subjects: &[&str], power: f64) -> Vec<f64> {
    let mut size: std::collections::HashMap<&str, f64> = std::collections::HashMap::new();
    for s in subjects {
        *size.entry(s).or_default() += 1.0;
    }
    let w: Vec<f64> = subjects.iter().map(|s| size.get(s).copied().unwrap_or(1.0).powf(-power)).collect();
    let total: f64 = w.iter().sum();
    let scale = if total > 0.0 { w.len() as f64 / total } else { 1.0 };
    w.iter().map(|x| x * scale).collect()
}

/// The shipped fit of `x` (rows of `subjects`) to `y`: weighted by [`SUBJECT_POWER`], L2
/// [`L2_PER_ROW`].
pub fn fit_subjects(x: &[Row], y: &[f64], subjects: &[&str]) -> Model {
    fit_weighted(x, y, &subject_weights(subjects, SUBJECT_POWER), L2_PER_ROW)
}

/// [`fit_with`], row `i` weighted by `sw[i]` (in its loss and so its gradient and
/// curvature).
pub fn fit_weighted(x: &[Row], y: &[f64], sw: &[f64], l2_per_row: f64) -> Model {
    let n = x.len().min(y.len());
    let nf = n.max(1) as f64;
    let mut mean = [0.0; FEATURE_COUNT];
    let mut scale = [0.0; FEATURE_COUNT];
    for r in &x[..n] {
        for i in 0..FEATURE_COUNT {
            mean[i] += r[i] / nf;
        }
    }
    for r in &x[..n] {
        for i in 0..FEATURE_COUNT {
            scale[i] += (r[i] - mean[i]).powi(2) / nf;
        }
    }
    for s in &mut scale {
        *s = if *s > 1e-12 { s.sqrt() } else { 1.0 };
    }
    const D: usize = FEATURE_COUNT + 1;
    let lambda = l2_per_row * nf;
    // w[0] is the intercept.
    let mut w = [0.0f64; D];
    let z: Vec<[f64; D]> = x[..n]
        .iter()
        .map(|r| {
            let mut row = [1.0; D];
            for i in 0..FEATURE_COUNT {
                row[i + 1] = if super::features::absent(i, r[1]) { 0.0 } else { (r[i] - mean[i]) / scale[i] };
            }
            row
        })
        .collect();
    for _ in 0..NEWTON_ITERATIONS_MAX {
        let mut grad = [0.0f64; D];
        let mut hess = [[0.0f64; D]; D];
        for ((row, &t), &s) in z.iter().zip(&y[..n]).zip(sw) {
            let p = sigmoid(row.iter().zip(&w).map(|(a, b)| a * b).sum());
            let weight = s * p * (1.0 - p);
            for a in 0..D {
                grad[a] += s * (p - t) * row[a];
                for b in 0..=a {
                    hess[a][b] += weight * row[a] * row[b];
                }
            }
        }
        for a in 1..D {
            grad[a] += lambda * w[a];
            hess[a][a] += lambda;
        }
        for a in 0..D {
            for b in (a + 1)..D {
                hess[a][b] = hess[b][a];
            }
        }
        let Some(step) = solve_cholesky(&hess, &grad) else { break };
        let mut largest = 0.0f64;
        for a in 0..D {
            w[a] -= step[a];
            largest = largest.max(step[a].abs());
        }
        if largest < 1e-9 {
            break;
        }
    }
    let mut coef = [0.0; FEATURE_COUNT];
    coef.copy_from_slice(&w[1..]);
    Model { mean, scale, coef, bias: w[0] }
}

/// Solves `a · x = b` for a symmetric positive definite `a`; `None` when it is not.
fn solve_cholesky<const D: usize>(a: &[[f64; D]; D], b: &[f64; D]) -> Option<[f64; D]> {
    let mut l = [[0.0f64; D]; D];
    for i in 0..D {
        for j in 0..=i {
            let mut sum = a[i][j];
            for k in 0..j {
                sum -= l[i][k] * l[j][k];
            }
            if i == j {
                if sum <= 0.0 {
                    return None;
                }
                l[i][i] = sum.sqrt();
            } else {
                l[i][j] = sum / l[j][j];
            }
        }
    }
    let mut y = [0.0f64; D];
    for i in 0..D {
        let mut sum = b[i];
        for k in 0..i {
            sum -= l[i][k] * y[k];
        }
        y[i] = sum / l[i][i];
    }
    let mut x = [0.0f64; D];
    for i in (0..D).rev() {
        let mut sum = y[i];
        for k in (i + 1)..D {
            sum -= l[k][i] * x[k];
        }
        x[i] = sum / l[i][i];
    }
    Some(x)
}

/// Number of cross-validation folds.
pub const FOLDS: usize = 5;

/// The fold of a subject: FNV-1a of its name, modulo [`FOLDS`]. Every prompt of a
/// subject (GSM8K is the one subject `math_word_problem`) lands in the same fold, so a
/// held-out fold's subjects were never seen in training.
pub fn fold_of(subject: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in subject.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % FOLDS as u64) as usize
}

/// APGR of `scores` (higher = send to the strong model first); `None` when the two
/// models are equally accurate on these prompts (PGR is undefined).
pub fn apgr(scores: &[f64], weak: &[bool], strong: &[bool]) -> Option<f64> {
    let n = scores.len().min(weak.len()).min(strong.len());
    if n == 0 {
        return None;
    }
    let correct = |v: &[bool]| v[..n].iter().filter(|&&c| c).count() as f64;
    let (acc_weak, acc_strong) = (correct(weak) / n as f64, correct(strong) / n as f64);
    if (acc_strong - acc_weak).abs() < 1e-12 {
        return None;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    // gain[k]: correct answers gained by sending the top k to the strong model.
    let mut gain = Vec::with_capacity(n + 1);
    gain.push(0.0f64);
    let mut sum = 0.0;
    for &i in &order {
        sum += f64::from(u8::from(strong[i])) - f64::from(u8::from(weak[i]));
        gain.push(sum);
    }
    const STEPS: usize = 100;
    let pgr = |step: usize| {
        let k = ((step as f64 / STEPS as f64) * n as f64).round() as usize;
        (gain[k.min(n)] / n as f64) / (acc_strong - acc_weak)
    };
    let mut area = 0.0;
    for step in 0..STEPS {
        area += (pgr(step) + pgr(step + 1)) / 2.0 / STEPS as f64;
    }
    Some(area)
}

/// Mean APGR of random routing over `rounds` fixed-seed shuffles (expected 0.50).
pub fn random_apgr(weak: &[bool], strong: &[bool], rounds: u64) -> Option<f64> {
    let mut total = 0.0;
    for round in 0..rounds {
        // SplitMix64 per prompt: a fixed, platform-independent permutation per round.
        let scores: Vec<f64> = (0..weak.len() as u64)
            .map(|i| {
                let mut z = (round << 32 | i).wrapping_add(0x9e37_79b9_7f4a_7c15);
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                (z ^ (z >> 31)) as f64
            })
            .collect();
        total += apgr(&scores, weak, strong)?;
    }
    Some(total / rounds.max(1) as f64)
}

/// One held-out fold's result.
#[derive(Debug, Clone)]
pub struct FoldResult {
    /// Fold number.
    pub fold: usize,
    /// Its subjects, sorted.
    pub subjects: Vec<String>,
    /// Its prompts.
    pub prompts: usize,
    /// APGR of the model fitted on the other folds, scored on this one.
    pub apgr: Option<f64>,
}

/// Subject-held-out cross-validation of `target`.
#[derive(Debug, Clone)]
pub struct CrossValidation {
    /// Per fold.
    pub folds: Vec<FoldResult>,
    /// Mean of the folds' APGR.
    pub mean: f64,
    /// APGR of every prompt's held-out score, pooled.
    pub pooled: f64,
}

/// Every prompt's score from the model fitted without its fold.
pub fn cross_validate_scores(examples: &[Example], rows: &[Row], target: Target) -> Vec<f64> {
    let fold: Vec<usize> = examples.iter().map(|e| fold_of(&e.subject)).collect();
    let mut held_out = vec![0.0; examples.len()];
    for k in 0..FOLDS {
        let train: Vec<usize> = (0..examples.len()).filter(|&i| fold[i] != k).collect();
        let x: Vec<Row> = train.iter().map(|&i| rows[i]).collect();
        let y: Vec<f64> = train.iter().map(|&i| target.label(&examples[i])).collect();
        let subjects: Vec<&str> = train.iter().map(|&i| examples[i].subject.as_str()).collect();
        let model = fit_subjects(&x, &y, &subjects);
        for i in (0..examples.len()).filter(|&i| fold[i] == k) {
            held_out[i] = model.predict(&rows[i]);
        }
    }
    held_out
}

/// Fits on all folds but one and scores the one, for each fold.
pub fn cross_validate(examples: &[Example], rows: &[Row], target: Target) -> CrossValidation {
    cross_validate_with(examples, rows, target, L2_PER_ROW)
}

/// [`cross_validate`] with another L2 penalty per row.
pub fn cross_validate_with(examples: &[Example], rows: &[Row], target: Target, l2_per_row: f64) -> CrossValidation {
    let fold: Vec<usize> = examples.iter().map(|e| fold_of(&e.subject)).collect();
    let weak: Vec<bool> = examples.iter().map(|e| e.weak_correct).collect();
    let strong: Vec<bool> = examples.iter().map(|e| e.strong_correct).collect();
    let mut held_out = vec![0.0; examples.len()];
    let mut folds = Vec::new();
    for k in 0..FOLDS {
        let train: Vec<usize> = (0..examples.len()).filter(|&i| fold[i] != k).collect();
        let test: Vec<usize> = (0..examples.len()).filter(|&i| fold[i] == k).collect();
        let x: Vec<Row> = train.iter().map(|&i| rows[i]).collect();
        let y: Vec<f64> = train.iter().map(|&i| target.label(&examples[i])).collect();
        let subjects: Vec<&str> = train.iter().map(|&i| examples[i].subject.as_str()).collect();
        let model = fit_weighted(&x, &y, &subject_weights(&subjects, SUBJECT_POWER), l2_per_row);
        let scores: Vec<f64> = test.iter().map(|&i| model.predict(&rows[i])).collect();
        for (&i, &s) in test.iter().zip(&scores) {
            held_out[i] = s;
        }
        let pick = |v: &[bool]| test.iter().map(|&i| v[i]).collect::<Vec<_>>();
        let mut subjects: Vec<String> = test.iter().map(|&i| examples[i].subject.clone()).collect();
        subjects.sort();
        subjects.dedup();
        folds.push(FoldResult {
            fold: k,
            subjects,
            prompts: test.len(),
            apgr: apgr(&scores, &pick(&weak), &pick(&strong)),
        });
    }
    let defined: Vec<f64> = folds.iter().filter_map(|f| f.apgr).collect();
    let mean = defined.iter().sum::<f64>() / defined.len().max(1) as f64;
    let pooled = apgr(&held_out, &weak, &strong).unwrap_or(0.0);
    CrossValidation { folds, mean, pooled }
}

/// The target the shipped weights are fitted to.
pub const SHIPPED_TARGET: Target = Target::Gain;

/// The data file, relative to the repository root.
pub const DATA_PATH: &str = "core/data/routing/routing-dev.jsonl";

/// The source of `core/src/router/score/weights.rs` for `model`.
pub fn weights_source(
    model: &Model,
    quantiles: &[f64],
    target: Target,
    prompts: usize,
    cv: &CrossValidation,
) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "//! GENERATED by `cargo run --release -p gatekeeper --example fit_router -- --write`;");
    let _ = writeln!(s, "//! do not edit (a unit test refits and compares).");
    let _ = writeln!(s, "//!");
    let _ = writeln!(s, "//! Logistic regression fitted on `{DATA_PATH}` ({prompts} prompts), target");
    let _ =
        writeln!(s, "//! `{}`, L2 {L2_PER_ROW} per row on standardized features, prompts weighted by", target.name());
    let _ = writeln!(s, "//! (prompts of their subject)^-{SUBJECT_POWER}.");
    let _ = writeln!(
        s,
        "//! Subject-held-out APGR ({FOLDS} folds): pooled {:.3}, mean of folds {:.3}.",
        cv.pooled, cv.mean
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "use super::features::FEATURE_COUNT;");
    let _ = writeln!(s);
    let _ = writeln!(s, "/// Per feature, in `FEATURE_NAMES` order: training mean, standard deviation, weight.");
    // rustfmt::skip keeps the file exactly as generated, so `cargo fmt --check` passes.
    let _ = writeln!(s, "#[rustfmt::skip]");
    let _ = writeln!(s, "pub const WEIGHTS: [[f32; 3]; FEATURE_COUNT] = [");
    for (i, name) in super::features::FEATURE_NAMES.iter().enumerate() {
        let _ = writeln!(s, "    // {name}");
        let _ =
            writeln!(s, "    [{:e}, {:e}, {:e}],", model.mean[i] as f32, model.scale[i] as f32, model.coef[i] as f32);
    }
    let _ = writeln!(s, "];");
    let _ = writeln!(s);
    let _ = writeln!(s, "/// Intercept.");
    let _ = writeln!(s, "pub const BIAS: f32 = {:e};", model.bias as f32);
    let _ = writeln!(s);
    let _ = writeln!(s, "/// Log-odds of the training prompts at 0, 1, …, 100 %, ascending.");
    let _ = writeln!(s, "#[rustfmt::skip]");
    let _ = writeln!(s, "pub const LOGIT_PERCENTILES: [f32; {}] = [", QUANTILES + 1);
    for chunk in quantiles.chunks(6) {
        let line: Vec<String> = chunk.iter().map(|q| format!("{:e}", *q as f32)).collect();
        let _ = writeln!(s, "    {},", line.join(", "));
    }
    let _ = writeln!(s, "];");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apgr_of_perfect_and_reversed_routing() {
        // Two prompts only the strong model gets right, two both get right.
        let weak = [false, false, true, true];
        let strong = [true, true, true, true];
        let perfect = apgr(&[1.0, 1.0, 0.0, 0.0], &weak, &strong).unwrap();
        let reversed = apgr(&[0.0, 0.0, 1.0, 1.0], &weak, &strong).unwrap();
        assert!(perfect > 0.7 && reversed < 0.3, "{perfect} {reversed}");
        assert!(apgr(&[0.0; 4], &[true; 4], &[true; 4]).is_none());
    }

    #[test]
    fn random_routing_is_about_half() {
        let weak: Vec<bool> = (0..2000).map(|i| i % 3 == 0).collect();
        let strong: Vec<bool> = (0..2000).map(|i| i % 5 != 0).collect();
        let r = random_apgr(&weak, &strong, 20).unwrap();
        assert!((r - 0.5).abs() < 0.03, "{r}");
    }

    #[test]
    fn logistic_fit_recovers_a_separating_direction() {
        let x: Vec<Row> = (0..400)
            .map(|i| {
                let mut r = [0.0; FEATURE_COUNT];
                r[0] = (i % 20) as f64;
                r[1] = ((i * 7) % 13) as f64;
                r
            })
            .collect();
        let y: Vec<f64> = x.iter().map(|r| f64::from(u8::from(r[0] >= 10.0))).collect();
        let m = fit_with(&x, &y, 0.001);
        assert!(m.coef[0] > 1.0, "{:?}", m.coef);
        assert!(m.coef[1].abs() < 0.5 * m.coef[0]);
        assert!(m.predict(&x[19]) > 0.8 && m.predict(&x[0]) < 0.2);
    }

    /// The labelled data and its feature rows, computed once for the tests below.
    static DATA: std::sync::LazyLock<(Vec<Example>, Vec<Row>)> = std::sync::LazyLock::new(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/routing/routing-dev.jsonl");
        let examples = load(&path).unwrap();
        let rows = examples.iter().map(|e| row(&e.prompt)).collect();
        (examples, rows)
    });

    #[test]
    fn shipped_weights_are_what_the_fit_produces() {
        let (examples, rows) = &*DATA;
        let labels: Vec<f64> = examples.iter().map(|e| SHIPPED_TARGET.label(e)).collect();
        let subjects: Vec<&str> = examples.iter().map(|e| e.subject.as_str()).collect();
        let model = fit_subjects(rows, &labels, &subjects);
        let close = |a: f64, b: f32| (a - f64::from(b)).abs() <= 1e-4 * a.abs().max(1e-2);
        for (i, [mean, scale, weight]) in super::super::weights::WEIGHTS.iter().enumerate() {
            let name = super::super::features::FEATURE_NAMES[i];
            assert!(close(model.mean[i], *mean), "{name} mean {} vs {mean}", model.mean[i]);
            assert!(close(model.scale[i], *scale), "{name} scale {} vs {scale}", model.scale[i]);
            assert!(close(model.coef[i], *weight), "{name} weight {} vs {weight}", model.coef[i]);
        }
        assert!(close(model.bias, super::super::weights::BIAS));
        let q = quantiles(&model, rows);
        for (a, b) in q.iter().zip(super::super::weights::LOGIT_PERCENTILES) {
            assert!(close(*a, b), "percentile {a} vs {b}");
        }
    }

    /// Held-out APGR stays where it was measured: pooled 0.652 (the goal is 0.65),
    /// mean of folds 0.643 — short of 0.65 for the reason bench/RESULTS.md gives (the
    /// answer-option features are absent for prompts without options, so the model cannot
    /// learn "no options ⇒ GSM8K", which would score every chat prompt as hard) — and well
    /// above prompt length alone (0.59 pooled).
    #[test]
    fn held_out_apgr_holds_its_measured_level() {
        let (examples, rows) = &*DATA;
        let cv = cross_validate(examples, rows, SHIPPED_TARGET);
        assert!(cv.mean >= 0.641, "mean of folds {}", cv.mean);
        assert!(cv.pooled >= 0.650, "pooled {}", cv.pooled);
        let weak: Vec<bool> = examples.iter().map(|e| e.weak_correct).collect();
        let strong: Vec<bool> = examples.iter().map(|e| e.strong_correct).collect();
        let length: Vec<f64> = examples.iter().map(|e| e.prompt.len() as f64).collect();
        let length = apgr(&length, &weak, &strong).unwrap();
        assert!(cv.pooled > length + 0.03, "pooled {} vs length {length}", cv.pooled);
    }

    #[test]
    fn folds_are_fixed_by_subject() {
        assert_eq!(fold_of("professional_law"), fold_of("professional_law"));
        assert!((0..FOLDS).contains(&fold_of("math_word_problem")));
    }
}
