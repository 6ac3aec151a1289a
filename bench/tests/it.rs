//! gatekeeper-bench tests: the report renders byte-identically from a fixed JSON input,
//! the alternation order and the ratio math, and a short real `gk-bench compare` run.
//!
//! `UPDATE_GOLDEN=1 cargo test -p gatekeeper-bench` rewrites the golden files.

mod golden {
    use std::path::PathBuf;

    use gatekeeper_bench::report::{render_markdown, render_throughput_svg, CompareReport};

    fn data(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
    }

    fn check(rendered: &str, golden: &str) {
        let path = data(golden);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, rendered).expect("write golden");
            return;
        }
        let want = std::fs::read_to_string(&path).expect("golden file (UPDATE_GOLDEN=1 creates it)");
        assert!(
            rendered == want,
            "{} differs from the rendering; UPDATE_GOLDEN=1 to accept:\n{rendered}",
            path.display()
        );
    }

    fn fixture() -> CompareReport {
        let text = std::fs::read_to_string(data("report.json")).expect("fixture");
        serde_json::from_str(&text).expect("fixture parses as a CompareReport")
    }

    #[test]
    fn markdown_matches_golden() {
        check(&render_markdown(&fixture()), "golden-report.md");
    }

    #[test]
    fn throughput_svg_matches_golden() {
        check(&render_throughput_svg(&fixture()).expect("fixture has throughput rows"), "golden-throughput.svg");
    }

    #[test]
    fn report_json_round_trips() {
        let r = fixture();
        let again: CompareReport = serde_json::from_str(&serde_json::to_string(&r).expect("serialize")).expect("parse");
        assert_eq!(r, again);
    }
}

mod plan {
    use gatekeeper_bench::plan::{alternate, Slot};

    #[test]
    fn rounds_alternate_over_all_targets() {
        let order: Vec<(usize, usize)> = alternate(3, 2).iter().map(|s| (s.round, s.target)).collect();
        assert_eq!(order, [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]);
    }

    #[test]
    fn every_target_runs_once_per_round_and_never_twice_in_a_row() {
        let slots = alternate(4, 5);
        assert_eq!(slots.len(), 20);
        for round in 0..5 {
            let mut targets: Vec<usize> = slots.iter().filter(|s| s.round == round).map(|s| s.target).collect();
            targets.sort_unstable();
            assert_eq!(targets, [0, 1, 2, 3]);
        }
        assert!(slots.windows(2).all(|w| w[0].target != w[1].target));
    }

    #[test]
    fn empty_plans() {
        assert_eq!(alternate(0, 3), Vec::<Slot>::new());
        assert_eq!(alternate(3, 0), Vec::<Slot>::new());
        assert_eq!(alternate(1, 2), [Slot { round: 0, target: 0 }, Slot { round: 1, target: 0 }]);
    }
}

mod math {
    use std::collections::BTreeMap;

    use gatekeeper_bench::compare::{
        auto_rates, parse_duration, parse_rates, scenario_models, utc_from_unix, RateChoice,
    };
    use gatekeeper_bench::load::{Percentiles, RunNumbers};
    use gatekeeper_bench::report::{summarize_latency, summarize_throughput, thousands, Phase, Run};
    use gatekeeper_bench::stats::{paired_difference, paired_ratio, ratio, round_significant, spread};

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn spread_is_median_min_max() {
        let s = spread(&[3.0, 1.0, 2.0]).expect("values");
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = spread(&[4.0, 1.0, 2.0, 3.0]).expect("values");
        assert!(close(s.median, 2.5));
        assert!(spread(&[]).is_none());
        assert_eq!(spread(&[f64::NAN, 5.0]).map(|s| s.n), Some(1), "non-finite values are dropped");
    }

    #[test]
    fn ratio_needs_a_positive_baseline() {
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
        assert_eq!(ratio(3.0, 0.0), None);
        assert_eq!(ratio(3.0, -1.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
    }

    #[test]
    fn ratios_pair_rounds_not_medians() {
        // The machine halves its speed in round 1: per-round ratios stay 0.5, while the
        // ratio of medians would mix a fast round with a slow one.
        let direct = [(0, 100.0), (1, 50.0), (2, 100.0)];
        let proxy = [(0, 50.0), (1, 25.0), (2, 50.0)];
        let r = paired_ratio(&proxy, &direct).expect("pairs");
        assert!(close(r.median, 0.5) && close(r.min, 0.5) && close(r.max, 0.5));
        // A round missing on one side is left out rather than paired with another round.
        let r = paired_ratio(&[(0, 50.0), (2, 60.0)], &[(0, 100.0), (1, 100.0)]).expect("pairs");
        assert_eq!(r.n, 1);
        assert!(close(r.median, 0.5));
        let d = paired_difference(&[(0, 1.5), (1, 2.5)], &[(0, 1.0), (1, 1.0)]).expect("pairs");
        assert!(close(d.median, 1.0) && close(d.min, 0.5) && close(d.max, 1.5));
        assert!(paired_ratio(&[(0, 1.0)], &[(1, 1.0)]).is_none());
    }

    fn run(phase: Phase, rate: Option<f64>, round: usize, target: &str, ok_per_s: f64, p50: f64, p99: f64) -> Run {
        let pct = Percentiles { p50_ms: p50, p99_ms: p99, p999_ms: p99 * 2.0, max_ms: p99 * 3.0 };
        Run {
            phase,
            rate,
            round,
            target: target.into(),
            numbers: RunNumbers {
                sent: 1000,
                ok: 990,
                failed: 10,
                errors: BTreeMap::from([("http_5xx".to_string(), 10)]),
                elapsed_s: 1.0,
                ok_per_s,
                latency: pct,
                ttfb: None,
                generator_cpu_us_per_request: Some(6.0),
                target_cpu_us_per_request: None,
            },
            raw: String::new(),
        }
    }

    #[test]
    fn throughput_rows_carry_per_round_ratios_to_direct_and_nginx() {
        let t = Phase::Throughput;
        let runs = vec![
            run(t, None, 0, "direct", 1000.0, 0.1, 1.0),
            run(t, None, 0, "nginx", 500.0, 0.2, 2.0),
            run(t, None, 0, "gatekeeper", 600.0, 0.2, 2.0),
            run(t, None, 1, "direct", 800.0, 0.1, 1.0),
            run(t, None, 1, "nginx", 400.0, 0.2, 2.0),
            run(t, None, 1, "gatekeeper", 400.0, 0.2, 2.0),
        ];
        let names = ["direct", "nginx", "gatekeeper", "litellm"].map(String::from);
        let rows = summarize_throughput(&names, &runs);
        assert_eq!(rows.len(), 3, "a target without runs has no row");
        let gk = &rows[2];
        assert_eq!(gk.target, "gatekeeper");
        assert!(close(gk.ok_per_s.median, 500.0));
        let vs_direct = gk.vs_direct.expect("ratio");
        assert!(close(vs_direct.min, 0.5) && close(vs_direct.max, 0.6) && close(vs_direct.median, 0.55));
        let vs_nginx = gk.vs_nginx.expect("ratio");
        assert!(close(vs_nginx.min, 1.0) && close(vs_nginx.max, 1.2));
        assert_eq!((gk.sent, gk.failed), (2000, 20));
        assert!(close(rows[0].vs_direct.expect("self").median, 1.0));
    }

    #[test]
    fn latency_rows_add_over_direct_at_the_same_rate_only() {
        let l = Phase::Latency;
        let runs = vec![
            run(l, Some(100.0), 0, "direct", 100.0, 1.0, 2.0),
            run(l, Some(100.0), 0, "gatekeeper", 100.0, 1.25, 3.0),
            run(l, Some(200.0), 0, "direct", 200.0, 9.0, 9.0),
            run(l, Some(200.0), 0, "gatekeeper", 200.0, 9.0, 9.0),
        ];
        let names = ["direct", "gatekeeper"].map(String::from);
        let rows = summarize_latency(&names, &runs, 100.0);
        let gk = &rows[1];
        assert!(close(gk.added_p50_ms.expect("added").median, 0.25));
        assert!(close(gk.added_p99_ms.expect("added").median, 1.0));
        assert!(close(gk.p50_vs_direct.expect("ratio").median, 1.25));
        assert!(close(gk.p99_vs_direct.expect("ratio").median, 1.5));
        assert!(gk.ttfb_p50_ms.is_none());
    }

    #[test]
    fn auto_rates_are_half_the_slowest_and_a_quarter_of_nginx() {
        let maxes = [("direct", 90_000.0), ("nginx", 43_467.0), ("gatekeeper", 47_000.0), ("litellm", 75.0)]
            .map(|(n, v)| (n.to_string(), v));
        assert_eq!(auto_rates(&maxes), [38.0, 11_000.0]);
        let same = [("direct", 2000.0), ("nginx", 1000.0)].map(|(n, v)| (n.to_string(), v));
        assert_eq!(auto_rates(&same), [250.0, 500.0]);
        let only_direct = [("direct", 1000.0)].map(|(n, v)| (n.to_string(), v));
        assert_eq!(auto_rates(&only_direct), [250.0, 500.0]);
        assert_eq!(round_significant(4873.0, 2), 4900.0);
        assert_eq!(round_significant(0.01234, 2), 0.012);
    }

    #[test]
    fn flags_parse() {
        assert_eq!(parse_duration("10s"), Ok(std::time::Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(std::time::Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(std::time::Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(std::time::Duration::from_secs(3)));
        assert!(parse_duration("0s").is_err() && parse_duration("5h").is_err() && parse_duration("x").is_err());
        assert_eq!(parse_rates("auto"), Ok(RateChoice::Auto));
        assert_eq!(parse_rates("none"), Ok(RateChoice::None));
        assert_eq!(parse_rates("100, 2000"), Ok(RateChoice::Fixed(vec![100.0, 2000.0])));
        assert!(parse_rates("0").is_err() && parse_rates("fast").is_err());
    }

    #[test]
    fn scenario_models_are_read_in_order_without_duplicates() {
        let yaml = "requests:\n  - { model: a, prompt: x }\n  - { model: b, prompt: y }\n  - { model: a }\n";
        assert_eq!(scenario_models(yaml), Ok(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(scenario_models("- { model: m }"), Ok(vec!["m".to_string()]));
        assert!(scenario_models("requests:\n  - { prompt: x }\n").unwrap_err().contains("requests[0].model"));
    }

    #[test]
    fn formats() {
        assert_eq!(utc_from_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_from_unix(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc_from_unix(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(thousands(1_234_567.8), "1,234,568");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(-1500.0), "-1,500");
    }

    #[test]
    fn listening_lines() {
        use gatekeeper_bench::procs::listening_addr;
        assert_eq!(listening_addr("listening on 127.0.0.1:4000"), "127.0.0.1:4000".parse().ok());
        assert_eq!(listening_addr("gatekeeper listening on 127.0.0.1:9 (http)"), "127.0.0.1:9".parse().ok());
        assert_eq!(listening_addr("listening on nowhere"), None);
    }
}

mod smoke {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use gatekeeper_bench::report::CompareReport;

    /// `gatekeeper` and `gk-load` from `GK_BENCH_BIN_DIR`, else next to this test's
    /// `gk-bench` (where `cargo test --workspace` builds them).
    fn bin_dir() -> PathBuf {
        let dir = std::env::var_os("GK_BENCH_BIN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_BIN_EXE_gk-bench")).parent().expect("bin dir").to_path_buf());
        for b in ["gatekeeper", "gk-load"] {
            assert!(
                dir.join(b).is_file(),
                "{} missing: run `cargo build -p gatekeeper -p gatekeeper-loadtest` (or `cargo test --workspace`) first, \
                 or set GK_BENCH_BIN_DIR",
                dir.join(b).display()
            );
        }
        dir
    }

    #[test]
    fn compare_direct_and_gatekeeper_writes_a_report_folder() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let out = tmp.path().join("report");
        let status = Command::new(env!("CARGO_BIN_EXE_gk-bench"))
            .args(["compare", "--targets", "direct,gatekeeper", "--rounds", "1", "--duration", "1s"])
            .args(["--connections", "8", "--rate", "200", "--title", "smoke"])
            .arg("--bin-dir")
            .arg(bin_dir())
            .arg("--out")
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("gk-bench runs");
        assert!(status.success(), "gk-bench compare failed: {status}");

        let json = std::fs::read_to_string(out.join("report.json")).expect("report.json");
        let r: CompareReport = serde_json::from_str(&json).expect("report.json parses");
        let names: Vec<&str> = r.targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["direct", "gatekeeper"]);
        assert!(r.targets.iter().all(|t| t.skipped.is_none()), "{:?}", r.targets);
        assert_eq!(r.runs.len(), 4, "one throughput and one latency run per target");
        assert_eq!(r.throughput.len(), 2);
        assert_eq!(r.latency.len(), 1);
        assert!(r.runs.iter().all(|run| run.numbers.ok > 0), "every run got answers: {:?}", r.runs);
        for run in &r.runs {
            assert!(out.join(&run.raw).is_file(), "{} kept", run.raw);
        }

        let md = std::fs::read_to_string(out.join("report.md")).expect("report.md");
        assert!(md.starts_with("# smoke\n") && md.contains("| gatekeeper |"), "{md}");
        for svg in ["throughput.svg", "latency-200.svg"] {
            let text = std::fs::read_to_string(out.join(svg)).unwrap_or_else(|e| panic!("{svg}: {e}"));
            assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"), "{svg} is an SVG");
        }
    }
}
