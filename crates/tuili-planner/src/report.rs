//! A plan as one self-contained HTML page: the answers per chip, and charts drawn as
//! inline SVG (no script, no external file): latency against throughput per chip, the
//! Pareto front of tokens/s per user against tokens/s per chip, and the cost per
//! million tokens against the batch.

use std::fmt::Write;

use crate::plan::Plan;
use crate::sim::SimResult;

/// What the report shows of one chip.
#[derive(Debug, Clone)]
pub struct ChipReport {
    /// The plan at the asked batch.
    pub plan: Plan,
    /// Plans at batches 1, 2, 4, ... up to what fits.
    pub batches: Vec<Plan>,
    /// Simulated serving at increasing request rates.
    pub load: Vec<SimResult>,
}

/// The whole report.
#[derive(Debug, Clone)]
pub struct Report {
    /// The model, as named on the command line.
    pub model: String,
    /// What the simulated load was (a sentence).
    pub workload: String,
    /// One entry per chip.
    pub chips: Vec<ChipReport>,
}

/// One line of a chart: its name and its points.
struct Series<'a> {
    name: &'a str,
    points: Vec<(f64, f64)>,
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// Escapes text for HTML and SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Nice tick values covering `lo..hi` (about five).
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(f64::MIN_POSITIVE);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// A number for a tick label: short, no trailing zeros.
fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", short(v / 1e6))
    } else if a >= 1e4 {
        format!("{}k", short(v / 1e3))
    } else if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A line chart of `series` in SVG, axes from 0 (linear) with nice ticks.
fn chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let (w, h) = (560.0, 340.0);
    let (left, right, top, bottom) = (64.0, 150.0, 30.0, 46.0);
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let pts = || series.iter().flat_map(|s| s.points.iter().filter(finite));
    let x_max = pts().map(|p| p.0).fold(0.0, f64::max).max(1e-9) * 1.05;
    let y_max = pts().map(|p| p.1).fold(0.0, f64::max).max(1e-9) * 1.1;
    let px = |x: f64| left + x / x_max * (w - left - right);
    let py = |y: f64| h - bottom - y / y_max * (h - top - bottom);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img"><title>{t}</title>"#,
        t = esc(title)
    );
    let _ = write!(
        s,
        r#"<text x="{x}" y="18" font-size="14" font-weight="bold">{t}</text>"#,
        x = left,
        t = esc(title)
    );
    for t in ticks(0.0, x_max) {
        let x = px(t);
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{y1:.1}" stroke="#ddd"/><text x="{x:.1}" y="{ty:.1}" font-size="11" text-anchor="middle">{l}</text>"##,
            y0 = py(0.0),
            y1 = top,
            ty = py(0.0) + 15.0,
            l = short(t)
        );
    }
    for t in ticks(0.0, y_max) {
        let y = py(t);
        let _ = write!(
            s,
            r##"<line x1="{x0:.1}" y1="{y:.1}" x2="{x1:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{tx:.1}" y="{ty:.1}" font-size="11" text-anchor="end">{l}</text>"##,
            x0 = left,
            x1 = w - right,
            tx = left - 6.0,
            ty = y + 4.0,
            l = short(t)
        );
    }
    let _ = write!(
        s,
        r##"<line x1="{l}" y1="{b:.1}" x2="{r:.1}" y2="{b:.1}" stroke="#333"/><line x1="{l}" y1="{b:.1}" x2="{l}" y2="{t}" stroke="#333"/>"##,
        l = left,
        r = w - right,
        b = py(0.0),
        t = top
    );
    let _ = write!(
        s,
        r#"<text x="{x:.1}" y="{y:.1}" font-size="12" text-anchor="middle">{t}</text>"#,
        x = (left + w - right) / 2.0,
        y = h - 8.0,
        t = esc(x_label)
    );
    let _ = write!(
        s,
        r#"<text transform="translate(14,{y:.1}) rotate(-90)" font-size="12" text-anchor="middle">{t}</text>"#,
        y = (top + h - bottom) / 2.0,
        t = esc(y_label)
    );
    for (i, se) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = se
            .points
            .iter()
            .filter(finite)
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for p in &path {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = write!(s, r#"<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>"#);
        }
        let ly = top + 16.0 * i as f64 + 8.0;
        let _ = write!(
            s,
            r#"<rect x="{x:.1}" y="{y:.1}" width="12" height="3" fill="{color}"/><text x="{tx:.1}" y="{ty:.1}" font-size="11">{n}</text>"#,
            x = w - right + 10.0,
            y = ly - 4.0,
            tx = w - right + 26.0,
            ty = ly,
            n = esc(se.name)
        );
    }
    s.push_str("</svg>");
    s
}

/// The report as one HTML page.
pub fn html(r: &Report) -> String {
    let mut s = String::new();
    let title = format!("tuili plan: {}", r.model);
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;\
         text-align:right}}th:first-child,td:first-child{{text-align:left}}\
         .charts{{display:flex;flex-wrap:wrap;gap:1em}}</style></head><body>\n<h1>{t}</h1>\n",
        t = esc(&title)
    );
    let _ = writeln!(
        s,
        "<p>Predicted by <code>tuili plan</code> from each chip's profile; the error band \
         says how far a prediction may be off (calibrated chips: the fit's error; others \
         wider). Simulated load: {}.</p>",
        esc(&r.workload)
    );
    s.push_str(
        "<table><tr><th>chip</th><th>calibration</th><th>error band</th><th>fits</th>\
         <th>max sequences</th><th>decode tok/s (1 seq)</th><th>decode tok/s (batch)</th>\
         <th>batch</th><th>TTFT 512 ms</th><th>J/token</th><th>USD / M tokens</th></tr>\n",
    );
    for c in &r.chips {
        let p = &c.plan;
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>±{:.0}%</td><td>{}</td><td>{}</td><td>{:.1}</td>\
             <td>{:.1}</td><td>{}</td><td>{:.1}</td><td>{:.3}</td><td>{:.3}</td></tr>",
            esc(&p.chip_title),
            esc(p.calibration.kind),
            100.0 * p.error_band,
            if p.fits { "yes" } else { "no" },
            p.max_sequences,
            p.decode_tokens_per_s,
            p.decode_tokens_per_s_batch,
            p.batch,
            p.ttft_ms,
            p.joules_per_token,
            p.usd_per_million_tokens
        );
    }
    s.push_str("</table>\n<div class=\"charts\">\n");
    let series = |f: &dyn Fn(&ChipReport) -> Vec<(f64, f64)>| -> Vec<(String, Vec<(f64, f64)>)> {
        r.chips
            .iter()
            .map(|c| (c.plan.chip.clone(), f(c)))
            .collect()
    };
    let draw = |t: &str, x: &str, y: &str, data: Vec<(String, Vec<(f64, f64)>)>| {
        let ss: Vec<Series> = data
            .iter()
            .map(|(n, p)| Series {
                name: n,
                points: p.clone(),
            })
            .collect();
        chart(t, x, y, &ss)
    };
    s.push_str(&draw(
        "Latency against throughput",
        "generated tokens/s per chip",
        "TTFT p99, ms",
        series(&|c| {
            c.load
                .iter()
                .map(|l| (l.output_tokens_per_s, l.ttft_ms[2]))
                .collect()
        }),
    ));
    s.push_str(&draw(
        "Time per output token under load",
        "generated tokens/s per chip",
        "TPOT p50, ms",
        series(&|c| {
            c.load
                .iter()
                .map(|l| (l.output_tokens_per_s, l.tpot_ms[0]))
                .collect()
        }),
    ));
    s.push_str(&draw(
        "Pareto front: per user against per chip",
        "tokens/s per chip",
        "tokens/s per user",
        series(&|c| {
            c.batches
                .iter()
                .map(|p| {
                    let per_chip = p.decode_tokens_per_s_batch / p.tp as f64;
                    (per_chip, p.decode_tokens_per_s_batch / p.batch as f64)
                })
                .collect()
        }),
    ));
    s.push_str(&draw(
        "Cost per million tokens",
        "sequences decoding together",
        "USD per million tokens",
        series(&|c| {
            c.batches
                .iter()
                .map(|p| (p.batch as f64, p.usd_per_million_tokens))
                .collect()
        }),
    ));
    s.push_str("</div>\n");
    for c in &r.chips {
        let _ = writeln!(
            s,
            "<h2>{}</h2><p>Coefficients: {} ({}).</p><table><tr><th>req/s</th>\
             <th>gen tok/s</th><th>TTFT p50 / p90 / p99 ms</th><th>TPOT p50 / p90 / p99 ms</th>\
             <th>preemptions</th><th>KV use mean / max</th></tr>",
            esc(&c.plan.chip_title),
            esc(c.plan.calibration.kind),
            esc(&c.plan.calibration.source)
        );
        for l in &c.load {
            let _ = writeln!(
                s,
                "<tr><td>{:.3}</td><td>{:.1}</td><td>{:.1} / {:.1} / {:.1}</td>\
                 <td>{:.2} / {:.2} / {:.2}</td><td>{}</td><td>{:.0}% / {:.0}%</td></tr>",
                l.rate,
                l.output_tokens_per_s,
                l.ttft_ms[0],
                l.ttft_ms[1],
                l.ttft_ms[2],
                l.tpot_ms[0],
                l.tpot_ms[1],
                l.tpot_ms[2],
                l.preemptions,
                100.0 * l.kv_use[0],
                100.0 * l.kv_use[1]
            );
        }
        s.push_str("</table>\n");
    }
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 10.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks(0.0, 0.7);
        assert_eq!(t.len(), 4, "{t:?}");
        assert!((t[3] - 0.6).abs() < 1e-12, "{t:?}");
        let t = ticks(0.0, 12345.0);
        assert_eq!(t.first(), Some(&0.0));
        assert!(t.len() >= 3 && t.len() <= 7, "{t:?}");
        assert_eq!(short(12000.0), "12k");
        assert_eq!(short(0.25), "0.25");
        assert_eq!(short(2.0), "2");
    }

    #[test]
    fn charts_escape_names_and_skip_non_finite_points() {
        let svg = chart(
            "a<b",
            "x",
            "y",
            &[Series {
                name: "c&d",
                points: vec![(1.0, 2.0), (f64::NAN, 1.0), (3.0, 4.0)],
            }],
        );
        assert!(svg.contains("a&lt;b") && svg.contains("c&amp;d"), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(!svg.contains("NaN"), "{svg}");
    }
}
