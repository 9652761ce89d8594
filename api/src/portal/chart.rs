//! The balance-over-time chart, drawn on the server as inline SVG: no script, no image
//! request, and a text description for screen readers.

use std::fmt::Write as _;

use domain::{Amount, Timestamp};

use super::pages::money;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 30.0;

/// An amount as a coordinate. Drawing is the one place a float is fine: a pixel's worth
/// of rounding changes nothing anyone reads, and every figure shown as text is exact.
fn as_f64(amount: Amount) -> f64 {
    amount.0.to_string().parse().unwrap_or(0.0)
}

fn date(time: Timestamp) -> String {
    time.to_rfc3339().chars().take(10).collect()
}

/// The last day a point at `time` closes: a balance at midnight is the previous day's close.
fn closing_day(time: Timestamp) -> String {
    date(Timestamp::from_micros(time.micros().saturating_sub(1)))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The chart of `points` (time, balance after it), in `currency`. `title_id` names the
/// heading that labels it.
pub fn balance_svg(points: &[(Timestamp, Amount)], currency: &str, title_id: &str) -> String {
    let Some(((first_time, first), (last_time, last))) = points.first().zip(points.last()) else {
        return "<p>No balance history for this period.</p>".to_owned();
    };
    let low = points.iter().map(|(_, a)| *a).min().unwrap_or(Amount::ZERO).min(Amount::ZERO);
    let high = points.iter().map(|(_, a)| *a).max().unwrap_or(Amount::ZERO).max(Amount::ZERO);
    let (low_f, high_f) = (as_f64(low), as_f64(high));
    let span = if high_f > low_f { high_f - low_f } else { 1.0 };
    let (t0, t1) = (first_time.micros() as f64, last_time.micros() as f64);
    let t_span = if t1 > t0 { t1 - t0 } else { 1.0 };
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |t: Timestamp| LEFT + (t.micros() as f64 - t0) / t_span * plot_w;
    let y = |a: f64| TOP + (high_f - a) / span * plot_h;
    let currency = escape(currency);
    let (first, last, low_text, high_text) = (money(*first), money(*last), money(low), money(high));
    let description = format!(
        "Balance from {first} {currency} on {} to {last} {currency} at the end of {}; lowest {low_text}, highest {high_text}.",
        date(*first_time),
        closing_day(*last_time)
    );
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-labelledby="{title_id} chart-desc"><desc id="chart-desc">{description}</desc>"##
    );
    // Axes and the zero line.
    let _ = write!(
        svg,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{b}" stroke="#8c959f"/><line x1="{LEFT}" y1="{zero:.1}" x2="{r}" y2="{zero:.1}" stroke="#8c959f" stroke-dasharray="4 3"/>"##,
        b = HEIGHT - BOTTOM,
        r = WIDTH - RIGHT,
        zero = y(0.0)
    );
    for (value, label) in [(high_f, &high_text), (low_f, &low_text)] {
        let _ = write!(
            svg,
            r##"<text x="{tx}" y="{ty:.1}" font-size="12" text-anchor="end" fill="#57606a">{label}</text>"##,
            tx = LEFT - 6.0,
            ty = y(value) + 4.0
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{LEFT}" y="{ty}" font-size="12" fill="#57606a">{}</text><text x="{rx}" y="{ty}" font-size="12" text-anchor="end" fill="#57606a">{}</text>"##,
        date(*first_time),
        closing_day(*last_time),
        ty = HEIGHT - 8.0,
        rx = WIDTH - RIGHT
    );
    let mut line = String::new();
    for (time, amount) in points {
        let _ = write!(line, "{:.1},{:.1} ", x(*time), y(as_f64(*amount)));
    }
    let _ = write!(svg, r##"<polyline fill="none" stroke="#0a5bc4" stroke-width="2" points="{}"/>"##, line.trim_end());
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amount(text: &str) -> Amount {
        Amount(text.parse().unwrap())
    }

    #[test]
    fn the_chart_describes_its_points_and_stays_in_its_box() {
        let day = 86_400;
        let points = [
            (Timestamp::from_seconds(0), amount("0")),
            (Timestamp::from_seconds(day), amount("100.50")),
            (Timestamp::from_seconds(2 * day), amount("-20")),
        ];
        let svg = balance_svg(&points, "EUR", "t");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains(
            "Balance from 0.00 EUR on 1970-01-01 to -20.00 EUR at the end of 1970-01-02; lowest -20.00, highest 100.50."
        ));
        let polyline = svg.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
        let coordinates: Vec<(f64, f64)> = polyline
            .split(' ')
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect();
        assert_eq!(coordinates.len(), 3);
        for (x, y) in &coordinates {
            assert!((LEFT..=WIDTH - RIGHT).contains(x) && (TOP..=HEIGHT - BOTTOM).contains(y), "{x},{y}");
        }
        // The highest balance is drawn highest (smallest y), the lowest lowest.
        assert!(coordinates[1].1 < coordinates[0].1 && coordinates[0].1 < coordinates[2].1);
        assert_eq!(balance_svg(&[], "EUR", "t"), "<p>No balance history for this period.</p>");
    }
}
