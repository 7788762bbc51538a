//! A hand-written SVG scatter chart: panels side by side, log axes, one labelled point per
//! format, colours by family with a legend.

use std::fmt::Write as _;

/// One labelled point.
#[derive(Clone, Debug)]
pub struct Point {
    pub label: String,
    pub x: f64,
    pub y: f64,
    /// Index into the legend.
    pub series: usize,
}

/// One scatter plot.
#[derive(Clone, Debug)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub points: Vec<Point>,
}

const PANEL_W: f64 = 560.0;
const PANEL_H: f64 = 460.0;
const MARGIN_L: f64 = 70.0;
const MARGIN_R: f64 = 20.0;
const MARGIN_T: f64 = 40.0;
const MARGIN_B: f64 = 55.0;
const FONT: f64 = 11.0;
/// Colour-blind-safe (Okabe-Ito) colours, one per legend entry.
const COLORS: [&str; 6] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#999999", "#D55E00",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A log axis over the data's range, padded a little, with readable ticks.
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Axis {
    fn log(values: impl Iterator<Item = f64>, steps: &[f64]) -> Axis {
        let v: Vec<f64> = values.filter(|v| v.is_finite() && *v > 0.0).collect();
        let (mut lo, mut hi) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        if v.is_empty() {
            (lo, hi) = (1.0, 10.0);
        }
        if hi / lo < 2.0 {
            (lo, hi) = (lo / 1.5, hi * 1.5);
        }
        let pad = (hi / lo).powf(0.06);
        let (lo, hi) = (lo / pad, hi * pad);
        let mut ticks = Vec::new();
        let mut decade = 10f64.powi(lo.log10().floor() as i32);
        while decade <= hi {
            for s in steps {
                let t = s * decade;
                if t >= lo && t <= hi {
                    ticks.push(t);
                }
            }
            decade *= 10.0;
        }
        Axis { lo, hi, ticks }
    }

    /// Position in 0..1.
    fn frac(&self, v: f64) -> f64 {
        (v.max(self.lo * 1e-3).ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln())
    }
}

fn tick_label(t: f64) -> String {
    if !(0.001..1000.0).contains(&t) {
        format!("{t:.0e}")
    } else {
        let s = format!("{t:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Label boxes already placed, to keep labels from overlapping each other.
type Boxes = Vec<(f64, f64, f64, f64)>;

fn overlaps(b: (f64, f64, f64, f64), placed: &Boxes) -> bool {
    placed
        .iter()
        .any(|p| b.0 < p.2 && p.0 < b.2 && b.1 < p.3 && p.1 < b.3)
}

fn panel(out: &mut String, p: &Panel, ox: f64) {
    let (w, h) = (PANEL_W - MARGIN_L - MARGIN_R, PANEL_H - MARGIN_T - MARGIN_B);
    let (x0, y0) = (ox + MARGIN_L, MARGIN_T);
    let xa = Axis::log(
        p.points.iter().map(|q| q.x),
        &[1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0],
    );
    let ya = Axis::log(p.points.iter().map(|q| q.y), &[1.0, 2.0, 5.0]);
    let px = |v: f64| x0 + xa.frac(v) * w;
    let py = |v: f64| y0 + h - ya.frac(v) * h;
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="24" font-size="14" font-weight="bold" text-anchor="middle">{}</text>"#,
        x0 + w / 2.0,
        esc(&p.title)
    );
    let _ = writeln!(
        out,
        r##"<rect x="{x0:.1}" y="{y0:.1}" width="{w:.1}" height="{h:.1}" fill="#ffffff" stroke="#333333"/>"##
    );
    for &t in &xa.ticks {
        let x = px(t);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{:.1}" stroke="#e5e5e5"/><text x="{x:.1}" y="{:.1}" font-size="{FONT}" text-anchor="middle">{}</text>"##,
            y0 + h,
            y0 + h + 15.0,
            tick_label(t)
        );
    }
    for &t in &ya.ticks {
        let y = py(t);
        let _ = writeln!(
            out,
            r##"<line x1="{x0:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" font-size="{FONT}" text-anchor="end">{}</text>"##,
            x0 + w,
            x0 - 5.0,
            y + 4.0,
            tick_label(t)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
        x0 + w / 2.0,
        y0 + h + 38.0,
        esc(&p.x_label)
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate({:.1},{:.1}) rotate(-90)" font-size="12" text-anchor="middle">{}</text>"#,
        ox + 18.0,
        y0 + h / 2.0,
        esc(&p.y_label)
    );
    // Points first, then labels placed greedily around them, away from points and labels.
    let mut placed: Boxes = Vec::new();
    // A value of exactly 0 (a format that reproduces the data) has no place on a log axis: it
    // sits on the bottom edge as a hollow point.
    let mut pts: Vec<(f64, f64, &Point)> = p
        .points
        .iter()
        .filter(|q| q.x > 0.0 && q.y >= 0.0 && q.x.is_finite() && q.y.is_finite())
        .map(|q| (px(q.x), if q.y > 0.0 { py(q.y) } else { y0 + h }, q))
        .collect();
    for &(x, y, q) in &pts {
        let color = COLORS[q.series % COLORS.len()];
        let (fill, stroke) = if q.y > 0.0 {
            (color, "#222222")
        } else {
            ("none", color)
        };
        let _ = writeln!(
            out,
            r##"<circle class="point" data-label="{}" cx="{x:.1}" cy="{y:.1}" r="4" fill="{fill}" stroke="{stroke}" stroke-width="1.2"/>"##,
            esc(&q.label),
        );
        placed.push((x - 4.0, y - 4.0, x + 4.0, y + 4.0));
    }
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (x, y, q) in pts {
        let text = if q.y > 0.0 {
            q.label.clone()
        } else {
            format!("{} (0)", q.label)
        };
        let tw = text.len() as f64 * FONT * 0.62;
        let th = FONT;
        let mut chosen = None;
        'search: for r in [1.0, 1.8, 2.6, 3.4] {
            for (dx, dy) in [
                (6.0, 4.0),
                (-6.0 - tw, 4.0),
                (6.0, -8.0),
                (6.0, 14.0),
                (-6.0 - tw, -8.0),
                (-6.0 - tw, 14.0),
                (-tw / 2.0, -10.0),
                (-tw / 2.0, 18.0),
            ] {
                let (lx, ly) = (x + dx * r, y + dy * r);
                let b = (lx, ly - th + 2.0, lx + tw, ly + 2.0);
                let inside = b.0 >= x0 && b.2 <= x0 + w && b.1 >= y0 && b.3 <= y0 + h;
                if inside && !overlaps(b, &placed) {
                    chosen = Some((lx, ly, b, r > 1.0));
                    break 'search;
                }
            }
        }
        let (lx, ly, b, far) = chosen.unwrap_or_else(|| {
            let b = (x + 6.0, y - th + 6.0, x + 6.0 + tw, y + 6.0);
            (x + 6.0, y + 4.0, b, false)
        });
        if far {
            // A thin leader line ties a displaced label to its point.
            let (cx, cy) = ((b.0 + b.2) / 2.0, (b.1 + b.3) / 2.0);
            let _ = writeln!(
                out,
                r##"<line x1="{x:.1}" y1="{y:.1}" x2="{cx:.1}" y2="{cy:.1}" stroke="#888888" stroke-width="0.5"/>"##
            );
        }
        placed.push(b);
        let _ = writeln!(
            out,
            r#"<text class="label" x="{lx:.1}" y="{ly:.1}" font-size="{FONT}">{}</text>"#,
            esc(&text)
        );
    }
}

/// The whole SVG document: `panels` side by side, a `title` above, a `note` below.
pub fn render(title: &str, note: &str, panels: &[Panel], legend: &[&str]) -> String {
    let width = PANEL_W * panels.len().max(1) as f64;
    let height = PANEL_H + 50.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">"#
    );
    let _ = writeln!(out, "<title>{}</title>", esc(title));
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="#fafafa"/>"##
    );
    let _ = writeln!(out, r#"<g transform="translate(0,20)">"#);
    for (i, p) in panels.iter().enumerate() {
        panel(&mut out, p, i as f64 * PANEL_W);
    }
    let _ = writeln!(out, "</g>");
    let _ = writeln!(
        out,
        r##"<text x="12" y="18" font-size="13" fill="#333333">{}</text>"##,
        esc(title)
    );
    let _ = writeln!(
        out,
        r##"<text x="12" y="{:.0}" font-size="11" fill="#555555">{}</text>"##,
        height - 10.0,
        esc(note)
    );
    // Legend: the families present, in one row at the top right.
    let mut used: Vec<usize> = panels
        .iter()
        .flat_map(|p| p.points.iter().map(|q| q.series))
        .collect();
    used.sort_unstable();
    used.dedup();
    let names: Vec<&str> = used
        .iter()
        .map(|&s| legend.get(s).copied().unwrap_or("other"))
        .collect();
    let total: f64 = names
        .iter()
        .map(|n| 24.0 + n.len() as f64 * FONT * 0.62)
        .sum();
    let mut lx = width - 12.0 - total;
    for (&s, name) in used.iter().zip(&names) {
        let _ = writeln!(
            out,
            r##"<circle cx="{:.1}" cy="14" r="4" fill="{}" stroke="#222222" stroke-width="0.6"/><text x="{:.1}" y="18" font-size="{FONT}">{}</text>"##,
            lx + 4.0,
            COLORS[s % COLORS.len()],
            lx + 12.0,
            esc(name)
        );
        lx += 24.0 + name.len() as f64 * FONT * 0.62;
    }
    out.push_str("</svg>\n");
    out
}
