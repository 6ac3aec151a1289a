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
//! For trying features: `--l2-sweep` prints pooled and mean-of-folds APGR of the shipped
//! target for each fit parameter varied alone around `PARAMS`; `--drop a,b` / `--only a,b` hold the named features at zero
//! (or all others), so their weights fit to zero; `--subjects` prints each subject's
//! accuracy gain and mean held-out score.

use std::path::PathBuf;

use anyhow::Context as _;
use gatekeeper::router::score::features::FEATURE_NAMES;
use gatekeeper::router::score::fit::{
    apgr, cross_validate, cross_validate_with, fit, load, quantiles, random_apgr, sample, weights_source, Params,
    Target, DATA_PATH, FOLDS, PARAMS, SHIPPED_TARGET,
};

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().map_or(manifest.clone(), PathBuf::from);
    let mut data = root.join(DATA_PATH);
    let mut write = false;
    let mut sweep = false;
    let mut drop: Vec<String> = Vec::new();
    let mut only: Vec<String> = Vec::new();
    let mut subjects = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--data" => data = PathBuf::from(args.next().context("--data needs a path")?),
            "--write" => write = true,
            "--l2-sweep" => sweep = true,
            "--drop" => drop = args.next().context("--drop needs names")?.split(',').map(str::to_string).collect(),
            "--only" => only = args.next().context("--only needs names")?.split(',').map(str::to_string).collect(),
            "--subjects" => subjects = true,
            other => anyhow::bail!("unknown argument {other} (expected --data PATH, --write)"),
        }
    }
    let examples = load(&data)?;
    let mut rows: Vec<_> = examples.iter().map(|e| sample(&e.prompt)).collect();
    // Exploration: a dropped feature is held at 0, so its fitted weight is 0.
    for (i, name) in FEATURE_NAMES.iter().enumerate() {
        let name = name.to_string();
        if drop.contains(&name) || (!only.is_empty() && !only.contains(&name)) {
            for r in &mut rows {
                r.x[i] = 0.0;
            }
        }
    }
    let weak: Vec<bool> = examples.iter().map(|e| e.weak_correct).collect();
    let strong: Vec<bool> = examples.iter().map(|e| e.strong_correct).collect();
    let n = examples.len();
    let acc = |v: &[bool]| v.iter().filter(|&&c| c).count() as f64 / n.max(1) as f64;
    println!("{}: {n} prompts, weak accuracy {:.3}, strong {:.3}", data.display(), acc(&weak), acc(&strong));

    if sweep {
        // One parameter at a time around the shipped ones, shipped target.
        let mut grid: Vec<(String, Params)> = Vec::new();
        for l2 in [0.03, 0.1, 0.3, 1.0] {
            grid.push((format!("l2 {l2}"), Params { l2, ..PARAMS }));
        }
        for word_l2 in [3e-5, 1e-4, 3e-4, 1e-3, 1e3] {
            grid.push((format!("word_l2 {word_l2}"), Params { word_l2, ..PARAMS }));
        }
        for subject_power in [0.0, 0.25, 0.5, 0.75, 1.0] {
            grid.push((format!("subject_power {subject_power}"), Params { subject_power, ..PARAMS }));
        }
        for (name, params) in grid {
            let cv = cross_validate_with(&examples, &rows, SHIPPED_TARGET, params);
            println!("{name}: pooled {:.3} (log-odds {:.3}) mean {:.3}", cv.pooled, cv.pooled_logit, cv.mean);
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
    print!("| pooled held-out log-odds | {n} | | | |");
    for (_, cv) in &cvs {
        print!(" {:.3} |", cv.pooled_logit);
    }
    println!();

    if subjects {
        let cv = &cvs.iter().find(|(t, _)| *t == SHIPPED_TARGET).context("shipped target")?.1.scores;
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
    let model = fit(&examples.iter().collect::<Vec<_>>(), &rows.iter().collect::<Vec<_>>(), SHIPPED_TARGET);
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
