//! `gk-bench`: side-by-side load comparisons of Gatekeeper against direct, nginx,
//! LiteLLM and Portkey. See `bench/README.md`.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use gatekeeper_bench::compare::{self, CompareArgs};
use gatekeeper_bench::report::{self, CompareReport};

#[derive(Parser, Debug)]
#[command(name = "gk-bench", version, about = "Gatekeeper side-by-side benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start direct/nginx/Gatekeeper/LiteLLM/Portkey against one mock provider, drive each
    /// with `gk-load run` in alternating rounds, and write a report folder.
    Compare(Box<CompareArgs>),
    /// Re-render report.md and throughput.svg from a report.json (e.g. after editing notes).
    Render {
        /// The report.json.
        report: PathBuf,
        /// Folder to write into (default: the report's folder).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Compare(args) => {
            let command = shell_words(std::env::args());
            let out = compare::run(&args, &command)?;
            let md = std::fs::read_to_string(out.join("report.md"))?;
            println!("{md}");
            eprintln!("gk-bench: report in {}", out.display());
        }
        Cmd::Render { report: path, out } => {
            let text = std::fs::read_to_string(&path)?;
            let r: CompareReport =
                serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let dir = out.or_else(|| path.parent().map(PathBuf::from)).unwrap_or_else(|| PathBuf::from("."));
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("report.md"), report::render_markdown(&r))?;
            if let Some(svg) = report::render_throughput_svg(&r) {
                std::fs::write(dir.join(report::THROUGHPUT_SVG), svg)?;
            }
            eprintln!("gk-bench: rendered into {}", dir.display());
        }
    }
    Ok(())
}

/// The command line, quoted for a POSIX shell, with the program shown as `gk-bench`.
fn shell_words(args: impl Iterator<Item = String>) -> String {
    let mut words = vec!["gk-bench".to_string()];
    for a in args.skip(1) {
        let plain = !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
        words.push(if plain { a } else { format!("'{}'", a.replace('\'', "'\\''")) });
    }
    words.join(" ")
}
