//! Fitting and evaluating the score's model on labelled prompts: logistic regression on
//! the counted features and a hashed bag of words, subject-held-out cross-validation and
//! APGR. Offline only (the fitting example and the
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

use super::features::{features, FEATURE_COUNT, WORD_BUCKETS};
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

/// A prompt's model inputs, as [`super::score`] computes them, in `f64` for fitting.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The counted features.
    pub x: Row,
    /// The word buckets present, ascending.
    pub words: Vec<u16>,
    /// The weight of each present bucket ([`super::features::WordBag::weight`]; 0 when
    /// the bag is absent).
    pub word_weight: f64,
}

/// The model inputs of a single-user-message prompt, as [`super::score`] computes them.
pub fn sample(prompt: &str) -> Sample {
    let turns = [Turn { role: Role::User, message: 0, text: prompt }];
    let f = features(&Prompt { turns: &turns, tools: 0 });
    // Bucket indices are below WORD_BUCKETS (1,024), so they fit in u16.
    let words = f.1.iter().filter_map(|b| u16::try_from(b).ok()).collect();
    Sample { x: f.0.map(f64::from), words, word_weight: f64::from(f.1.weight) }
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

/// A logistic regression on standardized features and word buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// Per-feature mean of the training rows.
    pub mean: Row,
    /// Per-feature standard deviation of the training rows (1 where it is 0).
    pub scale: Row,
    /// Weight of each standardized feature.
    pub coef: Row,
    /// Weight of each word bucket ([`WORD_BUCKETS`] of them).
    pub words: Vec<f64>,
    /// Per bucket, its mean `word_weight` over the training prompts whose bag is present:
    /// the bag enters centred, so an absent bag (0) counts as the training mean.
    pub word_means: Vec<f64>,
    /// Intercept.
    pub bias: f64,
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

impl Model {
    /// The model's log-odds for `s`.
    pub fn logit(&self, s: &Sample) -> f64 {
        let mut z = self.bias;
        for i in 0..FEATURE_COUNT {
            if !super::features::absent(i, s.x[1]) {
                z += self.coef[i] * (s.x[i] - self.mean[i]) / self.scale[i];
            }
        }
        if s.word_weight > 0.0 {
            let words: f64 = s.words.iter().map(|&b| self.words.get(usize::from(b)).copied().unwrap_or(0.0)).sum();
            z += words * s.word_weight - self.word_mean();
        }
        z
    }

    /// The bag's term for the training mean: Σ weightᵦ · meanᵦ, subtracted from every
    /// present bag.
    pub fn word_mean(&self) -> f64 {
        self.words.iter().zip(&self.word_means).map(|(w, m)| w * m).sum()
    }

    /// The model's probability for `s`.
    pub fn predict(&self, s: &Sample) -> f64 {
        sigmoid(self.logit(s))
    }
}

/// Number of steps of the percentile table: the shipped complexity is the share of the
/// labelled prompts whose log-odds are lower, read from [`QUANTILES`] + 1 values.
pub const QUANTILES: usize = 100;

/// The log-odds of `samples` at 0, 1, …, 100 %, ascending.
pub fn quantiles(model: &Model, samples: &[Sample]) -> Vec<f64> {
    let mut z: Vec<f64> = samples.iter().map(|s| model.logit(s)).collect();
    z.sort_by(f64::total_cmp);
    let last = z.len().saturating_sub(1);
    (0..=QUANTILES).map(|q| z.get((q * last + QUANTILES / 2) / QUANTILES).copied().unwrap_or(0.0)).collect()
}

/// The penalties and weighting of a fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// L2 penalty on the standardized feature weights (not the intercept), per training
    /// row.
    pub l2: f64,
    /// L2 penalty on the word bucket weights, per training row.
    pub word_l2: f64,
    /// A prompt's weight in the fit is (prompts of its subject)^−`subject_power`,
    /// rescaled to a mean of 1: 0 weighs every prompt alike, 1 every subject alike.
    pub subject_power: f64,
}

/// The shipped fit's parameters. `l2` is the penalty the features had before the bag
/// (their stage is unchanged); `word_l2` is where held-out APGR is flat (0.3× lower
/// loses 0.005 pooled, 3× higher gains 0.001 pooled and loses 0.003 mean of folds; the
/// bag's values are `1 / buckets present`, about 0.03). `subject_power` 0.5 keeps the
/// largest subjects (law: 1,534 prompts, GSM8K: 1,319) from deciding what the words mean;
/// 0 held out higher (pooled +0.002, mean +0.005) but moved the intercept up, which
/// scored "What is 2+2?" 0.30 instead of 0.27 (see `fit_router --l2-sweep` and
/// `bench/RESULTS.md`).
pub const PARAMS: Params = Params { l2: 0.3, word_l2: 0.0001, subject_power: 0.5 };

/// Newton's method iterations at most (a bound; the fit stops when no weight moves by
/// 1e-9).
pub const NEWTON_ITERATIONS_MAX: usize = 50;

/// Conjugate-gradient iterations per Newton step at most.
pub const CG_ITERATIONS_MAX: usize = 500;

/// Per-prompt fitting weights for `examples`: (prompts of the subject)^−`power`, with a
/// mean of 1.
pub fn subject_weights(examples: &[&Example], power: f64) -> Vec<f64> {
    let mut size: std::collections::HashMap<&str, f64> = std::collections::HashMap::new();
    for e in examples {
        *size.entry(e.subject.as_str()).or_default() += 1.0;
    }
    let mut w: Vec<f64> =
        examples.iter().map(|e| size.get(e.subject.as_str()).copied().unwrap_or(1.0).powf(-power)).collect();
    let total: f64 = w.iter().sum();
    let scale = if total > 0.0 { w.len() as f64 / total } else { 1.0 };
    for x in &mut w {
        *x *= scale;
    }
    w
}

/// Fits the shipped model: [`fit_with`] with [`PARAMS`].
pub fn fit(examples: &[&Example], samples: &[&Sample], target: Target) -> Model {
    fit_with(examples, samples, target, PARAMS)
}

/// [`fit`] with other parameters, in two stages: the features first (unweighted, every
/// bag absent), then the word buckets and the intercept with the features' weights held
/// (prompts weighted by their subject's size). Why not jointly: a joint fit held out a
/// little higher (0.650 pooled) but let the bag take over what prompt length says, which
/// left short chat prompts — all of them outside this data — scored by the features'
/// intercept alone, around the median ("What is 2+2?" 0.42). Fitted in stages, the
/// features keep the weights they had without the bag.
pub fn fit_with(examples: &[&Example], samples: &[&Sample], target: Target, params: Params) -> Model {
    let y: Vec<f64> = examples.iter().map(|e| target.label(e)).collect();
    let features = fit_stage(samples, &y, &vec![1.0; y.len()], params, Stage::Features);
    let weights = subject_weights(examples, params.subject_power);
    fit_stage(samples, &y, &weights, params, Stage::Words(&features))
}

/// Fits a weighted logistic regression of `y` (in [0, 1]) on `samples` by Newton's method,
/// each step solved by conjugate gradients preconditioned with the Hessian's diagonal
/// (the word buckets make a dense solve too slow for the tests). Deterministic: fixed
/// order, no randomness.
pub fn fit_weighted(samples: &[&Sample], y: &[f64], weights: &[f64], params: Params) -> Model {
    fit_stage(samples, y, weights, params, Stage::Joint)
}

/// Which coefficients a fit frees.
#[derive(Clone, Copy)]
enum Stage<'a> {
    /// All of them.
    Joint,
    /// Intercept and features; every bag counts as absent.
    Features,
    /// Intercept and word buckets, the features' weights held at the model's.
    Words(&'a Model),
}

fn fit_stage(samples: &[&Sample], y: &[f64], weights: &[f64], params: Params, stage: Stage<'_>) -> Model {
    let n = samples.len().min(y.len()).min(weights.len());
    let nf = n.max(1) as f64;
    let mut mean = [0.0; FEATURE_COUNT];
    let mut scale = [0.0; FEATURE_COUNT];
    for s in &samples[..n] {
        for i in 0..FEATURE_COUNT {
            mean[i] += s.x[i] / nf;
        }
    }
    for s in &samples[..n] {
        for i in 0..FEATURE_COUNT {
            scale[i] += (s.x[i] - mean[i]).powi(2) / nf;
        }
    }
    for s in &mut scale {
        *s = if *s > 1e-12 { s.sqrt() } else { 1.0 };
    }
    let word_weight: Vec<f64> =
        samples[..n].iter().map(|s| if matches!(stage, Stage::Features) { 0.0 } else { s.word_weight }).collect();
    let mut word_means = vec![0.0; WORD_BUCKETS];
    let present = word_weight.iter().filter(|&&w| w > 0.0).count().max(1) as f64;
    for (s, &ww) in samples[..n].iter().zip(&word_weight).filter(|(_, &ww)| ww > 0.0) {
        for &b in &s.words {
            if let Some(m) = word_means.get_mut(usize::from(b)) {
                *m += ww / present;
            }
        }
    }
    // Coordinates: 0 the intercept, 1..=FEATURE_COUNT the features, then the buckets.
    const WORDS_AT: usize = FEATURE_COUNT + 1;
    let d = WORDS_AT + WORD_BUCKETS;
    let dense: Vec<[f64; FEATURE_COUNT]> = samples[..n]
        .iter()
        .map(|s| {
            let mut row = [0.0; FEATURE_COUNT];
            for i in 0..FEATURE_COUNT {
                row[i] = if super::features::absent(i, s.x[1]) { 0.0 } else { (s.x[i] - mean[i]) / scale[i] };
            }
            row
        })
        .collect();
    let lambda: Vec<f64> = (0..d)
        .map(|a| match a {
            0 => 0.0,
            a if a < WORDS_AT => params.l2 * nf,
            _ => params.word_l2 * nf,
        })
        .collect();
    // A present bag's coordinates are its bucket weights minus `word_means`: dense, so
    // the centring is applied once per pass (`centre`) instead of per row.
    let centre_of = |v: &[f64]| v[WORDS_AT..].iter().zip(&word_means).map(|(a, b)| a * b).sum::<f64>();
    let dot = |v: &[f64], centre: f64, k: usize| {
        let mut z = v[0];
        for i in 0..FEATURE_COUNT {
            z += v[1 + i] * dense[k][i];
        }
        if word_weight[k] > 0.0 {
            z += samples[k].words.iter().map(|&b| v[WORDS_AT + usize::from(b)]).sum::<f64>() * word_weight[k] - centre;
        }
        z
    };
    // Adds c · row k to `out`; returns what the centring owes (c when the bag is present).
    let add = |out: &mut [f64], k: usize, c: f64| {
        out[0] += c;
        for i in 0..FEATURE_COUNT {
            out[1 + i] += c * dense[k][i];
        }
        if word_weight[k] <= 0.0 {
            return 0.0;
        }
        for &b in &samples[k].words {
            out[WORDS_AT + usize::from(b)] += c * word_weight[k];
        }
        c
    };
    let uncentre = |out: &mut [f64], owed: f64| {
        for (o, m) in out[WORDS_AT..].iter_mut().zip(&word_means) {
            *o -= owed * m;
        }
    };
    let mut w = vec![0.0f64; d];
    // Per coordinate, whether this stage fits it (a held one keeps its value in `w`).
    let free: Vec<f64> = (0..d)
        .map(|a| {
            let on = match stage {
                Stage::Joint => true,
                Stage::Features => a < WORDS_AT,
                Stage::Words(_) => a == 0 || a >= WORDS_AT,
            };
            f64::from(u8::from(on))
        })
        .collect();
    if let Stage::Words(m) = stage {
        w[1..WORDS_AT].copy_from_slice(&m.coef);
    }
    for _ in 0..NEWTON_ITERATIONS_MAX {
        let centre = centre_of(&w);
        let p: Vec<f64> = (0..n).map(|k| sigmoid(dot(&w, centre, k))).collect();
        let curvature: Vec<f64> = (0..n).map(|k| weights[k] * p[k] * (1.0 - p[k])).collect();
        let mut grad: Vec<f64> = (0..d).map(|a| lambda[a] * w[a]).collect();
        let mut diag: Vec<f64> = lambda.iter().map(|l| l + 1e-12).collect();
        let mut owed = 0.0;
        for k in 0..n {
            owed += add(&mut grad, k, weights[k] * (p[k] - y[k]));
            diag[0] += curvature[k];
            for i in 0..FEATURE_COUNT {
                diag[1 + i] += curvature[k] * dense[k][i] * dense[k][i];
            }
            for &b in &samples[k].words {
                diag[WORDS_AT + usize::from(b)] += curvature[k] * word_weight[k] * word_weight[k];
            }
        }
        uncentre(&mut grad, owed);
        // A held coordinate neither moves nor counts toward convergence; the
        // preconditioner below is 0 there, which keeps conjugate gradients off it.
        for (g, f) in grad.iter_mut().zip(&free) {
            *g *= f;
        }
        let hessian_times = |v: &[f64]| {
            let mut out: Vec<f64> = (0..d).map(|a| lambda[a] * v[a]).collect();
            let centre = centre_of(v);
            let mut owed = 0.0;
            for k in 0..n {
                owed += add(&mut out, k, curvature[k] * dot(v, centre, k));
            }
            uncentre(&mut out, owed);
            out
        };
        // Preconditioned conjugate gradients for H · step = grad.
        let mut step = vec![0.0f64; d];
        let mut r = grad.clone();
        let precondition =
            |r: &[f64]| r.iter().zip(&diag).zip(&free).map(|((r, m), f)| f * r / m).collect::<Vec<f64>>();
        let mut z = precondition(&r);
        let mut q = z.clone();
        let mut rz: f64 = r.iter().zip(&z).map(|(a, b)| a * b).sum();
        let tolerance = 1e-24 * grad.iter().map(|g| g * g).sum::<f64>();
        for _ in 0..CG_ITERATIONS_MAX {
            if r.iter().map(|x| x * x).sum::<f64>() <= tolerance {
                break;
            }
            let hq = hessian_times(&q);
            let qhq: f64 = q.iter().zip(&hq).map(|(a, b)| a * b).sum();
            if qhq <= 0.0 {
                break;
            }
            let alpha = rz / qhq;
            for a in 0..d {
                step[a] += alpha * q[a];
                r[a] -= alpha * hq[a] * free[a];
            }
            z = precondition(&r);
            let rz_next: f64 = r.iter().zip(&z).map(|(a, b)| a * b).sum();
            let beta = rz_next / rz;
            rz = rz_next;
            for a in 0..d {
                q[a] = z[a] + beta * q[a];
            }
        }
        let mut largest = 0.0f64;
        for a in 0..d {
            w[a] -= step[a];
            largest = largest.max(step[a].abs());
        }
        if largest < 1e-9 {
            break;
        }
    }
    let mut coef = [0.0; FEATURE_COUNT];
    coef.copy_from_slice(&w[1..WORDS_AT]);
    Model { mean, scale, coef, words: w[WORDS_AT..].to_vec(), word_means, bias: w[0] }
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
    /// APGR of every prompt's held-out complexity, pooled: each fold's log-odds put
    /// through the percentile table of its own training prompts, as the shipped model
    /// does with its table.
    pub pooled: f64,
    /// APGR of every prompt's held-out log-odds, pooled (each fold's model with its own
    /// intercept, no table).
    pub pooled_logit: f64,
    /// Every prompt's held-out complexity.
    pub scores: Vec<f64>,
}

/// Fits on all folds but one and scores the one, for each fold, with [`PARAMS`].
pub fn cross_validate(examples: &[Example], samples: &[Sample], target: Target) -> CrossValidation {
    cross_validate_with(examples, samples, target, PARAMS)
}

/// [`cross_validate`] with other parameters.
pub fn cross_validate_with(
    examples: &[Example],
    samples: &[Sample],
    target: Target,
    params: Params,
) -> CrossValidation {
    let fold: Vec<usize> = examples.iter().map(|e| fold_of(&e.subject)).collect();
    let weak: Vec<bool> = examples.iter().map(|e| e.weak_correct).collect();
    let strong: Vec<bool> = examples.iter().map(|e| e.strong_correct).collect();
    let mut held_out = vec![0.0; examples.len()];
    let mut held_out_logit = vec![0.0; examples.len()];
    let mut folds = Vec::new();
    for k in 0..FOLDS {
        let train: Vec<usize> = (0..examples.len()).filter(|&i| fold[i] != k).collect();
        let test: Vec<usize> = (0..examples.len()).filter(|&i| fold[i] == k).collect();
        let train_examples: Vec<&Example> = train.iter().map(|&i| &examples[i]).collect();
        let train_samples: Vec<&Sample> = train.iter().map(|&i| &samples[i]).collect();
        let model = fit_with(&train_examples, &train_samples, target, params);
        let table: Vec<f32> = quantiles(&model, &train.iter().map(|&i| samples[i].clone()).collect::<Vec<_>>())
            .iter()
            .map(|&q| q as f32)
            .collect();
        let scores: Vec<f64> = test.iter().map(|&i| model.logit(&samples[i])).collect();
        for (&i, &z) in test.iter().zip(&scores) {
            held_out_logit[i] = z;
            held_out[i] = f64::from(super::model::percentile_in(&table, z as f32));
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
    let pooled_logit = apgr(&held_out_logit, &weak, &strong).unwrap_or(0.0);
    CrossValidation { folds, mean, pooled, pooled_logit, scores: held_out }
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
    let _ = writeln!(
        s,
        "//! `{}`, L2 {} per row on standardized features and {} on word buckets, prompts",
        target.name(),
        PARAMS.l2,
        PARAMS.word_l2
    );
    let _ = writeln!(s, "//! weighted by (prompts of their subject)^-{}.", PARAMS.subject_power);
    let _ = writeln!(
        s,
        "//! Subject-held-out APGR ({FOLDS} folds): pooled {:.3} (log-odds {:.3}), mean of folds {:.3}.",
        cv.pooled, cv.pooled_logit, cv.mean
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "use super::features::{{FEATURE_COUNT, WORD_BUCKETS}};");
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
    let _ = writeln!(s, "/// Weight of each word bucket, in log-odds per `1 / √words`.");
    let _ = writeln!(s, "#[rustfmt::skip]");
    let _ = writeln!(s, "pub const WORD_WEIGHTS: [f32; WORD_BUCKETS] = [");
    for chunk in model.words.chunks(6) {
        let line: Vec<String> = chunk.iter().map(|w| format!("{:e}", *w as f32)).collect();
        let _ = writeln!(s, "    {},", line.join(", "));
    }
    let _ = writeln!(s, "];");
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "/// The word term of the training mean (Σ weight · mean presence), subtracted from a present bag."
    );
    let _ = writeln!(s, "pub const WORD_MEAN: f32 = {:e};", model.word_mean() as f32);
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
        // Feature 0 separates; bucket 3 (in the upper half's every other row) and bucket 5
        // (everywhere) do not add to it.
        let x: Vec<Sample> = (0..400)
            .map(|i| {
                let mut r = [0.0; FEATURE_COUNT];
                r[0] = (i % 20) as f64;
                r[1] = ((i * 7) % 13) as f64;
                let words = if i % 2 == 0 { vec![3, 5] } else { vec![5] };
                Sample { x: r, words, word_weight: 0.5 }
            })
            .collect();
        let y: Vec<f64> = x.iter().map(|r| f64::from(u8::from(r.x[0] >= 10.0))).collect();
        let refs: Vec<&Sample> = x.iter().collect();
        let params = Params { l2: 0.001, word_l2: 0.001, subject_power: 0.0 };
        let m = fit_weighted(&refs, &y, &vec![1.0; x.len()], params);
        assert!(m.coef[0] > 1.0, "{:?}", m.coef);
        assert!(m.coef[1].abs() < 0.5 * m.coef[0]);
        assert!(m.words[3].abs() < 0.5 * m.coef[0], "{}", m.words[3]);
        assert!(m.predict(&x[19]) > 0.8 && m.predict(&x[0]) < 0.2);
    }

    #[test]
    fn logistic_fit_learns_a_word() {
        // Only the word decides.
        let x: Vec<Sample> = (0..400)
            .map(|i| Sample { x: [0.0; FEATURE_COUNT], words: vec![if i % 2 == 0 { 7 } else { 9 }], word_weight: 1.0 })
            .collect();
        let y: Vec<f64> = (0..400).map(|i| f64::from(u8::from(i % 2 == 0))).collect();
        let refs: Vec<&Sample> = x.iter().collect();
        let params = Params { l2: 0.001, word_l2: 0.001, subject_power: 0.0 };
        let m = fit_weighted(&refs, &y, &vec![1.0; x.len()], params);
        assert!(m.words[7] > 1.0 && m.words[9] < -1.0, "{} {}", m.words[7], m.words[9]);
        assert!(m.predict(&x[0]) > 0.8 && m.predict(&x[1]) < 0.2);
    }

    /// The labelled data and its feature rows, computed once for the tests below.
    static DATA: std::sync::LazyLock<(Vec<Example>, Vec<Sample>)> = std::sync::LazyLock::new(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/routing/routing-dev.jsonl");
        let examples = load(&path).unwrap();
        let samples = examples.iter().map(|e| sample(&e.prompt)).collect();
        (examples, samples)
    });

    #[test]
    fn shipped_weights_are_what_the_fit_produces() {
        let (examples, rows) = &*DATA;
        let model = fit(&examples.iter().collect::<Vec<_>>(), &rows.iter().collect::<Vec<_>>(), SHIPPED_TARGET);
        let close = |a: f64, b: f32| (a - f64::from(b)).abs() <= 1e-4 * a.abs().max(1e-2);
        for (i, [mean, scale, weight]) in super::super::weights::WEIGHTS.iter().enumerate() {
            let name = super::super::features::FEATURE_NAMES[i];
            assert!(close(model.mean[i], *mean), "{name} mean {} vs {mean}", model.mean[i]);
            assert!(close(model.scale[i], *scale), "{name} scale {} vs {scale}", model.scale[i]);
            assert!(close(model.coef[i], *weight), "{name} weight {} vs {weight}", model.coef[i]);
        }
        for (b, (w, shipped)) in model.words.iter().zip(super::super::weights::WORD_WEIGHTS).enumerate() {
            assert!(close(*w, shipped), "word bucket {b}: {w} vs {shipped}");
        }
        assert!(close(model.word_mean(), super::super::weights::WORD_MEAN));
        assert!(close(model.bias, super::super::weights::BIAS));
        let q = quantiles(&model, rows);
        for (a, b) in q.iter().zip(super::super::weights::LOGIT_PERCENTILES) {
            assert!(close(*a, b), "percentile {a} vs {b}");
        }
    }

    /// Held-out APGR stays where it was measured (mean of folds 0.642, pooled 0.645
    /// through the percentile tables, 0.640 as raw log-odds — short of the 0.65
    /// goal, for the reasons bench/RESULTS.md gives: the answer-option features are absent
    /// for prompts without options, and the fit that held out higher moved short chat
    /// prompts up), and well above prompt length alone (0.59 pooled).
    #[test]
    fn held_out_apgr_holds_its_measured_level() {
        let (examples, rows) = &*DATA;
        let cv = cross_validate(examples, rows, SHIPPED_TARGET);
        assert!(cv.mean >= 0.638, "mean of folds {}", cv.mean);
        assert!(cv.pooled >= 0.642, "pooled {}", cv.pooled);
        assert!(cv.pooled_logit >= 0.637, "pooled log-odds {}", cv.pooled_logit);
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
