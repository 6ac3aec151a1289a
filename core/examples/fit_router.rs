//! Fits the router's complexity score and reports its APGR under subject-held-out
//! cross-validation.
//!
//! ```sh
//! cargo run --release -p gatekeeper --example fit_router -- [--data core/data/routing/routing-dev.jsonl] [--write]
//! ```
//!
//! Prints the data set's accuracies, APGR per held-out fold for random routing, prompt
//! length alone and each fitting target, pooled and in-sample figures; with `--write`,
//! regenerates `core/src/router/score/weights.rs` from a fit on every prompt with the
//! shipped target. Deterministic: fixed folds (subject hash), no random state.
//!
//! For trying features: `--l2-sweep` prints pooled and mean-of-folds APGR per target for
//! a range of L2 penalties; `--drop a,b` / `--only a,b` hold the named features at zero
//! (or all others), so their weights fit to zero; `--subjects` prints each subject's
//! accuracy gain and mean held-out score; `--dump PATH` writes each prompt's subject,
//! labels, features and raw counts as JSON lines (the input of `bench/apgr/variants.py`,
//! which tries models this script does not have) and exits.

use std::path::PathBuf;

use anyhow::Context as _;
use gatekeeper::router::score::features::FEATURE_NAMES;
use gatekeeper::router::score::fit::{
    apgr, cross_validate, cross_validate_scores, cross_validate_with, fit_subjects, load, quantiles, random_apgr, row,
    weights_source, Target, DATA_PATH, FOLDS, SHIPPED_TARGET,
};

/// Writes one JSON line per prompt — subject, labels, the model's features and the raw
/// counts — for exploring models outside this script (RESULTS.md says which were tried).
fn dump_rows(examples: &[gatekeeper::router::score::fit::Example], path: &std::path::Path) -> anyhow::Result<()> {
    use gatekeeper::router::score::features::counts;
    use gatekeeper::router::score::{Prompt, Role, Turn};
    use std::fmt::Write as _;
    let mut out = String::new();
    for e in examples {
        let turns = [Turn { role: Role::User, message: 0, text: &e.prompt }];
        let c = counts(&Prompt { turns: &turns, tools: 0 });
        let _ = writeln!(
            out,
            "{}",
            serde_json::json!({
                "subject": e.subject,
                "weak": e.weak_correct,
                "strong": e.strong_correct,
                "features": row(&e.prompt),
                "words": c.words,
                "numbers": c.numbers,
                "math_symbols": c.math_symbols,
                "code_symbols": c.code_symbols,
                "options": c.options,
                "numeric_options": c.numeric_options,
                "compound_options": c.compound_options,
                "lexicon": c.lexicon,
                "caps_negation": c.caps_negation,
            })
        );
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().map_or(manifest.clone(), PathBuf::from);
    let mut data = root.join(DATA_PATH);
    let mut write = false;
    let mut sweep = false;
    let mut drop: Vec<String> = Vec::new();
    let mut only: Vec<String> = Vec::new();
    let mut subjects = false;
    let mut dump: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--data" => data = PathBuf::from(args.next().context("--data needs a path")?),
            "--write" => write = true,
            "--l2-sweep" => sweep = true,
            "--drop" => drop = args.next().context("--drop needs names")?.split(',').map(str::to_string).collect(),
            "--only" => only = args.next().context("--only needs names")?.split(',').map(str::to_string).collect(),
            "--subjects" => subjects = true,
            "--dump" => dump = Some(PathBuf::from(args.next().context("--dump needs a path")?)),
            other => anyhow::bail!(
                "unknown argument {other} (expected --data PATH, --write, --l2-sweep, --drop, --only, --subjects, --dump PATH)"
            ),
        }
    }
    let examples = load(&data)?;
    if let Some(path) = dump {
        return dump_rows(&examples, &path);
    }
    let mut rows: Vec<_> = examples.iter().map(|e| row(&e.prompt)).collect();
    // Exploration: a dropped feature is held at 0, so its fitted weight is 0.
    for (i, name) in FEATURE_NAMES.iter().enumerate() {
        let name = name.to_string();
        if drop.contains(&name) || (!only.is_empty() && !only.contains(&name)) {
            for r in &mut rows {
                r[i] = 0.0;
            }
        }
    }
    let weak: Vec<bool> = examples.iter().map(|e| e.weak_correct).collect();
    let strong: Vec<bool> = examples.iter().map(|e| e.strong_correct).collect();
    let n = examples.len();
    let acc = |v: &[bool]| v.iter().filter(|&&c| c).count() as f64 / n.max(1) as f64;
    println!("{}: {n} prompts, weak accuracy {:.3}, strong {:.3}", data.display(), acc(&weak), acc(&strong));

    if sweep {
        for l2 in [0.01, 0.1, 0.3, 1.0, 3.0] {
            print!("l2 {l2}:");
            for t in Target::ALL {
                let cv = cross_validate_with(&examples, &rows, t, l2);
                print!("  {} pooled {:.3} mean {:.3}", t.name(), cv.pooled, cv.mean);
            }
            println!();
        }
        return Ok(());
    }
    let length: Vec<f64> = examples.iter().map(|e| e.prompt.len() as f64).collect();
    let cvs: Vec<_> = Target::ALL.iter().map(|&t| (t, cross_validate(&examples, &rows, t))).collect();

    println!();
    print!("| fold | prompts | subjects | random | length |");
    for (t, _) in &cvs {
        print!(" {} |", t.name());
    }
    println!();
    println!("|---|---|---|---|---|{}", "---|".repeat(cvs.len()));
    let fmt = |x: Option<f64>| x.map_or("n/a".to_string(), |x| format!("{x:.3}"));
    for k in 0..FOLDS {
        let idx: Vec<usize> = (0..n).filter(|&i| cvs[0].1.folds[k].subjects.contains(&examples[i].subject)).collect();
        let pick = |v: &[bool]| idx.iter().map(|&i| v[i]).collect::<Vec<_>>();
        let (w, s) = (pick(&weak), pick(&strong));
        let len: Vec<f64> = idx.iter().map(|&i| length[i]).collect();
        let fold = &cvs[0].1.folds[k];
        print!(
            "| {k} | {} | {} | {} | {} |",
            fold.prompts,
            fold.subjects.len(),
            fmt(random_apgr(&w, &s, 20)),
            fmt(apgr(&len, &w, &s))
        );
        for (_, cv) in &cvs {
            print!(" {} |", fmt(cv.folds[k].apgr));
        }
        println!();
    }
    print!("| mean of folds | | | | |");
    for (_, cv) in &cvs {
        print!(" {:.3} |", cv.mean);
    }
    println!();
    print!(
        "| pooled held-out | {n} | | {} | {} |",
        fmt(random_apgr(&weak, &strong, 20)),
        fmt(apgr(&length, &weak, &strong))
    );
    for (_, cv) in &cvs {
        print!(" {:.3} |", cv.pooled);
    }
    println!();

    if subjects {
        let cv = cross_validate_scores(&examples, &rows, SHIPPED_TARGET);
        let mut names: Vec<&str> = examples.iter().map(|e| e.subject.as_str()).collect();
        names.sort();
        names.dedup();
        println!("| subject | prompts | gain | held-out mean score |");
        for name in names {
            let idx: Vec<usize> = (0..n).filter(|&i| examples[i].subject == name).collect();
            let m = idx.len() as f64;
            let gain: f64 =
                idx.iter().map(|&i| f64::from(u8::from(strong[i])) - f64::from(u8::from(weak[i]))).sum::<f64>() / m;
            let score: f64 = idx.iter().map(|&i| cv[i]).sum::<f64>() / m;
            println!("| {name} | {} | {gain:+.3} | {score:.4} |", idx.len());
        }
    }
    let labels: Vec<f64> = examples.iter().map(|e| SHIPPED_TARGET.label(e)).collect();
    let subjects: Vec<&str> = examples.iter().map(|e| e.subject.as_str()).collect();
    let model = fit_subjects(&rows, &labels, &subjects);
    let in_sample: Vec<f64> = rows.iter().map(|r| model.predict(r)).collect();
    println!();
    println!("shipped target {}: in-sample APGR {}", SHIPPED_TARGET.name(), fmt(apgr(&in_sample, &weak, &strong)));
    for k in 0..FOLDS {
        println!("fold {k}: {}", cvs[0].1.folds[k].subjects.join(", "));
    }
    println!();
    println!("| feature | mean | scale | weight |");
    println!("|---|---|---|---|");
    for (i, name) in FEATURE_NAMES.iter().enumerate() {
        println!("| {name} | {:.3} | {:.3} | {:+.3} |", model.mean[i], model.scale[i], model.coef[i]);
    }
    if write {
        let cv = cvs.iter().find(|(t, _)| *t == SHIPPED_TARGET).map(|(_, cv)| cv.clone()).context("shipped target")?;
        let path = root.join("core/src/router/score/weights.rs");
        std::fs::write(&path, weights_source(&model, &quantiles(&model, &rows), SHIPPED_TARGET, n, &cv))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
