//! `mem --plot`: a hand-written SVG of memory against context.

use super::{ctx_label, Row, Table, Unit};
use std::fmt::Write as _;

/// A row's name and its points `(context, total, total with a full-length cache)`.
type Line = (String, Vec<(usize, f64, f64)>);

/// An SVG line plot of the table's first KV type: total memory against context (log
/// scale), one line per row, and dashed, the Q4_K_M row (or the first) with a
/// full-length (non-ring) cache.
pub fn plot_svg(table: &Table) -> String {
    const COLORS: [&str; 10] = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
        "#bcbd22", "#17becf",
    ];
    let (w, h, left, right, top, bottom) = (900.0, 560.0, 80.0, 230.0, 50.0, 60.0);
    let kv = table.kv_types.first().copied().unwrap_or_default();
    let max_ctx = table
        .rows
        .iter()
        .map(|r| r.shape.config.context_length)
        .max()
        .unwrap_or(1)
        .max(1024);
    let contexts: Vec<usize> = (10..=max_ctx.ilog2()).map(|p| 1usize << p).collect();
    let unit = Unit::for_bytes(table.largest_total());
    let lines: Vec<Line> = table
        .rows
        .iter()
        .map(|Row { name, shape, .. }| {
            let points = contexts
                .iter()
                .filter_map(|&c| table.plan(shape, c, kv).ok().flatten())
                .map(|p| {
                    (
                        p.options.ctx_len,
                        unit.value(p.total_bytes()),
                        unit.value(p.total_full_kv_bytes()),
                    )
                })
                .collect();
            (name.clone(), points)
        })
        .collect();
    // The dashed line: Q4_K_M (the most used file type) when tabulated, else the first row.
    let dashed = lines.iter().position(|l| l.0 == "Q4_K_M").unwrap_or(0);
    let y_max = lines
        .iter()
        .flat_map(|l| l.1.iter().map(|p| p.1))
        .chain(
            lines
                .get(dashed)
                .into_iter()
                .flat_map(|l| l.1.iter().map(|p| p.2)),
        )
        .fold(0.0f64, f64::max)
        .max(0.1);
    let y_step = nice_step(y_max / 6.0);
    let y_top = (y_max / y_step).ceil() * y_step;
    let (x0, x1) = ((1024f64).log2(), (max_ctx as f64).log2().max(11.0));
    let px = |ctx: usize| left + ((ctx as f64).log2() - x0) / (x1 - x0) * (w - left - right);
    let py = |g: f64| h - bottom - g.min(y_top) / y_top * (h - top - bottom);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="16">{} on {}: memory against context (KV cache {kv})</text>"#,
        (w - right + left) / 2.0,
        xml(&table.title),
        table.device
    );
    let mut g = 0.0;
    while g <= y_top + 1e-9 {
        let y = py(g);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            w - right,
            left - 6.0,
            y + 4.0,
            axis_label(g, y_step)
        );
        g += y_step;
    }
    for &c in &contexts {
        let x = px(c);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            h - bottom,
            h - bottom + 18.0,
            ctx_label(c)
        );
    }
    let _ = writeln!(
        s,
        r#"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black"/><line x1="{left}" y1="{top}" x2="{left}" y2="{:.1}" stroke="black"/>"#,
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">context length (tokens, log scale)</text>"#,
        (w - right + left) / 2.0,
        h - 15.0
    );
    let _ = writeln!(
        s,
        r#"<text x="20" y="{:.1}" text-anchor="middle" transform="rotate(-90 20 {:.1})">total memory ({})</text>"#,
        (h - bottom + top) / 2.0,
        (h - bottom + top) / 2.0,
        unit.name
    );
    let polyline = |points: &[(usize, f64)], color: &str, dash: &str| {
        let coords: Vec<String> = points
            .iter()
            .map(|&(c, g)| format!("{:.1},{:.1}", px(c), py(g)))
            .collect();
        format!(
            r#"<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{}"/>"#,
            coords.join(" ")
        )
    };
    for (i, (name, points)) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let totals: Vec<(usize, f64)> = points.iter().map(|p| (p.0, p.1)).collect();
        let _ = writeln!(s, "{}", polyline(&totals, color, ""));
        let ly = top + 20.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            w - right + 15.0,
            w - right + 40.0,
            w - right + 46.0,
            ly + 4.0,
            xml(name)
        );
    }
    if let Some((name, points)) = lines.get(dashed) {
        let color = COLORS[dashed % COLORS.len()];
        let full: Vec<(usize, f64)> = points.iter().map(|p| (p.0, p.2)).collect();
        let _ = writeln!(
            s,
            "{}",
            polyline(&full, color, r#" stroke-dasharray="6 4""#)
        );
        let ly = top + 20.0 * lines.len() as f64 + 10.0;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="2" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}">{} without rings</text>"#,
            w - right + 15.0,
            w - right + 40.0,
            color,
            w - right + 46.0,
            ly + 4.0,
            xml(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A round axis step (1, 2 or 5 times a power of ten) near `raw`.
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.max(1e-9).log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * magnitude)
}

/// An axis value with as many decimals as its step needs.
fn axis_label(value: f64, step: f64) -> String {
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    format!("{value:.decimals$}")
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
