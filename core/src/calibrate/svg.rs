//! The calibration plot: one bar per grid point for its maximum throughput (left
//! axis) and a dot for its p99 at the latency load (right axis); the recommended point's
//! bar is highlighted.

use std::fmt::Write as _;

use super::grid::Calibration;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 380.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 70.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 90.0;

/// The SVG document.
pub fn render_svg(c: &Calibration) -> String {
    let n = c.points.len().max(1) as f64;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let max_rps = c.points.iter().map(|m| m.max_rps).fold(1.0, f64::max) * 1.1;
    let max_p99_ms = c.points.iter().map(|m| m.p99_us as f64 / 1000.0).fold(0.1, f64::max) * 1.1;
    let slot = plot_w / n;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = write!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">gatekeeper tune --calibrate: max throughput (bars) and p99 at {:.2}× of it (dots), {:.0} s per run</text>"#,
        WIDTH / 2.0,
        c.latency_load,
        c.duration_s
    );
    // Axes and their scales: five ticks each.
    let (x0, y0) = (LEFT, TOP + plot_h);
    let _ = write!(s, r##"<line x1="{x0}" y1="{TOP}" x2="{x0}" y2="{y0}" stroke="#333"/>"##);
    let _ = write!(s, r##"<line x1="{}" y1="{TOP}" x2="{}" y2="{y0}" stroke="#333"/>"##, x0 + plot_w, x0 + plot_w);
    let _ = write!(s, r##"<line x1="{x0}" y1="{y0}" x2="{}" y2="{y0}" stroke="#333"/>"##, x0 + plot_w);
    for i in 0..=5 {
        let f = f64::from(i) / 5.0;
        let y = y0 - f * plot_h;
        let _ = write!(s, r#"<text x="{}" y="{:.1}" text-anchor="end">{:.0}</text>"#, x0 - 6.0, y + 4.0, f * max_rps);
        let _ = write!(s, r#"<text x="{}" y="{:.1}">{:.2}</text>"#, x0 + plot_w + 6.0, y + 4.0, f * max_p99_ms);
    }
    let _ = write!(
        s,
        r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">max req/s</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    let rx = WIDTH - 14.0;
    let _ = write!(
        s,
        r#"<text x="{rx}" y="{:.1}" transform="rotate(90 {rx} {:.1})" text-anchor="middle">p99 ms at the latency load</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    for (i, m) in c.points.iter().enumerate() {
        let cx = x0 + slot * (i as f64 + 0.5);
        let bar_h = m.max_rps / max_rps * plot_h;
        let fill = if i == c.best { "#2a7d2a" } else { "#7a9cc6" };
        let _ = write!(
            s,
            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{fill}"><title>{}: {:.0} req/s</title></rect>"#,
            cx - slot * 0.3,
            y0 - bar_h,
            slot * 0.6,
            bar_h,
            escape(&m.point.name),
            m.max_rps
        );
        let p99_ms = m.p99_us as f64 / 1000.0;
        let cy = y0 - p99_ms / max_p99_ms * plot_h;
        let _ = write!(
            s,
            r##"<circle cx="{cx:.1}" cy="{cy:.1}" r="5" fill="#c0392b"><title>{}: p99 {p99_ms:.3} ms</title></circle>"##,
            escape(&m.point.name)
        );
        let label = if i == c.best { format!("{} (best)", m.point.name) } else { m.point.name.clone() };
        let _ = write!(
            s,
            r#"<text x="{cx:.1}" y="{:.1}" text-anchor="end" transform="rotate(-30 {cx:.1} {:.1})">{}</text>"#,
            y0 + 16.0,
            y0 + 16.0,
            escape(&label)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::super::grid::{Calibration, Measured, Point};
    use super::*;

    #[test]
    fn every_point_is_drawn_and_names_are_escaped() {
        let point = |name: &str| Point {
            name: name.into(),
            cpus: vec![0],
            bridge_cpu: None,
            bridge_nice: None,
            uring_entries: 4096,
            audit_batch_wait_ms: 50,
        };
        let m = |name: &str, rps: f64, p99: u64| Measured {
            point: point(name),
            max_rps: rps,
            latency_rps: rps / 2.0,
            p50_us: p99 / 2,
            p99_us: p99,
            ok_ratio: 1.0,
        };
        let c = Calibration {
            duration_s: 1.0,
            connections: 8,
            latency_load: 0.5,
            points: vec![m("advised", 1000.0, 800), m("a<b", 500.0, 1600)],
            best: 0,
        };
        let svg = render_svg(&c);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<rect x=").count(), 2, "one bar per point");
        assert_eq!(svg.matches("<circle").count(), 2, "one dot per point");
        assert!(svg.contains("advised (best)"));
        assert!(svg.contains("a&lt;b") && !svg.contains("a<b"));
    }
}
