//! Charts of the HTML report, rendered server-side to inline SVG with
//! plotters (text stays `<text>`: the page needs no font or script).

use anyhow::{anyhow, Result};
use plotters::prelude::*;

/// Width and height of every chart, in pixels.
const SIZE: (u32, u32) = (720, 300);

/// Colors of the series, in order.
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(44, 160, 44),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// One named series of a bar chart: a value per label.
pub struct Series {
    pub name: String,
    pub values: Vec<f64>,
}

impl Series {
    pub fn new(name: impl Into<String>, values: Vec<f64>) -> Series {
        Series {
            name: name.into(),
            values,
        }
    }
}

/// A stacked bar chart: one bar per label, the series stacked in order.
/// An empty chart says so instead of drawing axes.
pub fn bars(y_desc: &str, labels: &[String], series: &[Series]) -> Result<String> {
    let totals: Vec<f64> = (0..labels.len())
        .map(|i| series.iter().map(|s| s.values.get(i).copied().unwrap_or(0.0)).sum())
        .collect();
    let max = totals.iter().copied().fold(0.0, f64::max);
    if labels.is_empty() || max <= 0.0 {
        return Ok(r#"<p class="empty">no data</p>"#.into());
    }
    let mut svg = String::new();
    draw(&mut svg, y_desc, labels, series, max).map_err(|e| anyhow!("drawing a chart: {e}"))?;
    Ok(svg)
}

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn draw(svg: &mut String, y_desc: &str, labels: &[String], series: &[Series], max: f64) -> DrawResult {
    let root = SVGBackend::with_string(svg, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let n = labels.len();
    let rotate = n > 8 || labels.iter().any(|l| l.len() > 6);
    let mut chart = ChartBuilder::on(&root)
        .margin(8)
        .x_label_area_size(if rotate { 90 } else { 30 })
        .y_label_area_size(70)
        .build_cartesian_2d((0..n).into_segmented(), 0.0..max * 1.08)?;
    let label_style = ("sans-serif", 11).into_font();
    let x_style = if rotate {
        label_style.clone().transform(FontTransform::Rotate90)
    } else {
        label_style.clone()
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n.min(40))
        .x_label_style(x_style)
        .y_label_style(label_style)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .y_label_formatter(&|y| short(*y))
        .y_desc(y_desc)
        .draw()?;
    let mut base = vec![0.0; n];
    for (k, s) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let rects: Vec<Rectangle<(SegmentValue<usize>, f64)>> = (0..n)
            .filter(|i| s.values.get(*i).copied().unwrap_or(0.0) > 0.0)
            .map(|i| {
                let (lo, hi) = (base[i], base[i] + s.values[i]);
                base[i] = hi;
                let mut r = Rectangle::new(
                    [(SegmentValue::Exact(i), lo), (SegmentValue::Exact(i + 1), hi)],
                    color.filled(),
                );
                r.set_margin(0, 0, 2, 2);
                r
            })
            .collect();
        chart
            .draw_series(rects)?
            .label(s.name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    if series.len() > 1 {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 11))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// 1234567 -> "1.2M".
pub fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 10.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}
