//! `--plot FILE.svg` and `gk-load plot`: a self-contained SVG of latency by percentile,
//! with the usual log-scale x axis (0%, 90%, 99%, 99.9%, ...). Output depends only on
//! the input points, so it is byte-for-byte reproducible (tested against a golden file).

use std::fmt::Write as _;

use super::stats::Point;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
/// Decades of the x axis: 0% .. 99.999%.
const DECADES: u32 = 5;
/// Most series one plot holds (colors run out after that).
pub const SERIES_MAX: usize = 8;
const COLORS: [&str; SERIES_MAX] =
    ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];

/// One line of the plot.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Spectrum points (percentile, µs).
    pub points: Vec<Point>,
}

/// x position in decades: 0 at 0%, 1 at 90%, 2 at 99%, ... ; `None` beyond the axis.
fn decades(p: f64) -> Option<f64> {
    if !(0.0..100.0).contains(&p) {
        return None;
    }
    let x = (1.0 / (1.0 - p / 100.0)).log10();
    (x <= f64::from(DECADES) + 1e-9).then_some(x)
}

/// A round axis maximum >= v (1, 2, 5 × 10^n), in ms.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|&m| m >= v).unwrap_or(10.0 * mag)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Renders the series as an SVG document.
pub fn render_svg(title: &str, series: &[Series]) -> String {
    let series = &series[..series.len().min(SERIES_MAX)];
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let y_max_ms = nice_max(
        series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|pt| decades(pt.p).is_some())
            .map(|pt| pt.us as f64 / 1000.0)
            .fold(0.0, f64::max),
    );
    let sx = |d: f64| LEFT + d / f64::from(DECADES) * plot_w;
    let sy = |ms: f64| TOP + plot_h - ms / y_max_ms * plot_h;
    let mut s = String::new();
    // Writes into a String cannot fail.
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(s, "<rect width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"white\"/>");
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>",
        WIDTH / 2.0,
        escape(title)
    );
    // Grid and x labels: one per decade.
    let labels = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"];
    for (i, label) in labels.iter().enumerate() {
        let x = sx(i as f64);
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{TOP:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>",
            TOP + plot_h
        );
        let _ =
            writeln!(s, "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>", TOP + plot_h + 18.0);
    }
    // y grid: five steps.
    for i in 0..=5 {
        let v = y_max_ms * f64::from(i) / 5.0;
        let y = sy(v);
        let _ = writeln!(
            s,
            "<line x1=\"{LEFT:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>",
            LEFT + plot_w
        );
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 6.0,
            y + 4.0,
            trim_num(v)
        );
    }
    let _ = writeln!(
        s,
        "<rect x=\"{LEFT:.1}\" y=\"{TOP:.1}\" width=\"{plot_w:.1}\" height=\"{plot_h:.1}\" fill=\"none\" stroke=\"#333\"/>"
    );
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">percentile</text>",
        LEFT + plot_w / 2.0,
        HEIGHT - 8.0
    );
    let _ = writeln!(
        s,
        "<text x=\"16\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {:.1})\">latency (ms)</text>",
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    for (i, ser) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<String> = ser
            .points
            .iter()
            .filter_map(|pt| decades(pt.p).map(|d| (d, pt.us as f64 / 1000.0)))
            .map(|(d, ms)| format!("{:.1},{:.1}", sx(d), sy(ms)))
            .collect();
        let _ =
            writeln!(s, "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>", pts.join(" "));
        let ly = TOP + 16.0 + 18.0 * i as f64;
        let lx = LEFT + 12.0;
        let _ = writeln!(
            s,
            "<line x1=\"{lx:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-width=\"2\"/>",
            ly - 4.0,
            lx + 20.0,
            ly - 4.0
        );
        let _ = writeln!(s, "<text x=\"{:.1}\" y=\"{ly:.1}\">{}</text>", lx + 26.0, escape(&ser.label));
    }
    s.push_str("</svg>\n");
    s
}

/// Formats an axis value without trailing zeros: 0, 0.2, 10, 1.25.
fn trim_num(v: f64) -> String {
    let t = format!("{v:.3}");
    let t = t.trim_end_matches('0').trim_end_matches('.');
    t.to_string()
}

/// Reads the latency spectrum (`latency_us.percentiles`) out of a `--json` report.
pub fn series_from_json(label: &str, json: &str) -> Result<Series, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let pts = v.get("latency_us").and_then(|l| l.get("percentiles")).ok_or("no latency_us.percentiles")?;
    let points: Vec<Point> = serde_json::from_value(pts.clone()).map_err(|e| format!("latency_us.percentiles: {e}"))?;
    Ok(Series { label: label.to_string(), points })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_positions_and_nice_max() {
        assert_eq!(decades(0.0), Some(0.0));
        assert!((decades(99.0).unwrap_or(0.0) - 2.0).abs() < 1e-9);
        assert_eq!(decades(100.0), None);
        assert_eq!(decades(99.9999), None);
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.2), 5.0);
        assert_eq!(nice_max(10.0), 10.0);
        assert_eq!(nice_max(0.13), 0.2);
        assert_eq!(trim_num(0.2), "0.2");
        assert_eq!(trim_num(10.0), "10");
        assert_eq!(escape("<a&b>"), "&lt;a&amp;b&gt;");
    }
}
