//! A metric's chart as inline SVG: the stored points as a polyline, the
//! patient's effective limits as horizontal lines, alerts as marks on the
//! curve.
//!
//! Drawn on the server, so the console needs no JavaScript and works with
//! the strictest Content-Security-Policy; the page puts the values beside
//! it as a table (the chart's text alternative). A long series (a glucose
//! monitor's 90 days is ~26 000 points) is thinned to the lowest and the
//! highest value of each pixel column, which keeps every excursion a
//! clinician must see while the page stays small.

use chrono::{DateTime, Utc};

/// Plot size in SVG user units (the SVG scales to its container).
pub const WIDTH: f64 = 720.0;
/// See [`WIDTH`].
pub const HEIGHT: f64 = 200.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 22.0;
/// Series longer than this are drawn as a line only.
const MAX_DOTS: usize = 200;

/// A horizontal limit line.
#[derive(Debug, Clone)]
pub struct LimitLine {
    /// y in SVG units.
    pub y: String,
    /// Rule and parameter, with the value (`bp.stage2 limit 160 mm[Hg]`).
    pub label: String,
    /// Whether a per-patient override set it.
    pub overridden: bool,
}

/// An alert marked on the curve.
#[derive(Debug, Clone)]
pub struct Mark {
    /// x in SVG units.
    pub x: String,
    /// y in SVG units.
    pub y: String,
    /// The alert (link target).
    pub alert_id: String,
    /// For the tooltip: severity and message.
    pub title: String,
}

/// An axis label.
#[derive(Debug, Clone)]
pub struct Tick {
    /// Position along its axis in SVG units.
    pub at: String,
    /// Text.
    pub text: String,
}

/// A limit to draw: value in the metric's canonical unit.
#[derive(Debug, Clone)]
pub struct Limit {
    /// Value.
    pub value: f64,
    /// Label.
    pub label: String,
    /// Overridden for this patient.
    pub overridden: bool,
}

/// An alert to mark: when its evidence was measured.
#[derive(Debug, Clone)]
pub struct AlertAt {
    /// Measured time of the reading that fired it.
    pub at: DateTime<Utc>,
    /// Alert id.
    pub alert_id: String,
    /// Tooltip.
    pub title: String,
}

/// A drawn chart.
#[derive(Debug, Clone)]
pub struct Chart {
    /// The polyline's `points` attribute.
    pub points: String,
    /// Each point as a dot (x, y), for series short enough that dots
    /// help; empty for long ones.
    pub dots: Vec<(String, String)>,
    /// Points drawn (after thinning).
    pub drawn: usize,
    /// Points stored in the window.
    pub stored: usize,
    /// Limit lines inside the plotted range.
    pub limits: Vec<LimitLine>,
    /// Alert marks.
    pub marks: Vec<Mark>,
    /// Value axis.
    pub y_ticks: Vec<Tick>,
    /// Time axis.
    pub x_ticks: Vec<Tick>,
    /// The `viewBox`.
    pub view_box: String,
    /// Left edge of the plot (for the axis line).
    pub left: String,
    /// Bottom edge of the plot.
    pub bottom: String,
    /// Right edge of the plot.
    pub right: String,
}

fn f(v: f64) -> String {
    format!("{v:.1}")
}

/// The tick step nearest above `raw` among 1, 2, 2.5 and 5 times a power
/// of ten.
fn nice_step(raw: f64) -> f64 {
    if !raw.is_finite() || raw <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let m = raw / magnitude;
    let nice = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .find(|&n| m <= n + 1e-9)
        .unwrap_or(10.0);
    nice * magnitude
}

/// Draws `points` (time, value; in time order) over `from..to`, with
/// `limits` and `alerts`.
pub fn draw(
    points: &[(DateTime<Utc>, f64)],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limits: &[Limit],
    alerts: &[AlertAt],
) -> Chart {
    let (t0, t1) = (from.timestamp_millis() as f64, to.timestamp_millis() as f64);
    let span_t = (t1 - t0).max(1.0);
    // The value range covers the data and the limits, with a margin.
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for &(_, v) in points {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    for l in limits {
        if points.is_empty() || (l.value >= lo - (hi - lo) && l.value <= hi + (hi - lo) + 1.0) {
            lo = lo.min(l.value);
            hi = hi.max(l.value);
        }
    }
    if !lo.is_finite() || !hi.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    // A margin, at least 5 % of the values' size so that a flat series
    // is not drawn as noise; then round to a tick step a reader can count
    // in (1, 2, 2.5 or 5 times a power of ten).
    let pad = ((hi - lo) * 0.08)
        .max(lo.abs().max(hi.abs()) * 0.05)
        .max(0.5);
    let step = nice_step((hi - lo + 2.0 * pad) / 4.0);
    let (lo, hi) = (
        ((lo - pad) / step).floor() * step,
        ((hi + pad) / step).ceil() * step,
    );
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |ms: f64| LEFT + (ms - t0) / span_t * plot_w;
    let y = |v: f64| TOP + (hi - v) / (hi - lo) * plot_h;

    // Thin to min and max per pixel column when there are many more
    // points than columns.
    let columns = plot_w as usize;
    let mut drawn: Vec<(f64, f64)> = Vec::with_capacity(points.len().min(columns * 2));
    if points.len() > columns * 2 {
        let mut i = 0;
        while i < points.len() {
            let col = ((x(points[i].0.timestamp_millis() as f64) - LEFT) as usize).min(columns);
            let (mut min_i, mut max_i) = (i, i);
            while i < points.len()
                && ((x(points[i].0.timestamp_millis() as f64) - LEFT) as usize).min(columns) == col
            {
                if points[i].1 < points[min_i].1 {
                    min_i = i;
                }
                if points[i].1 > points[max_i].1 {
                    max_i = i;
                }
                i += 1;
            }
            for j in if min_i <= max_i {
                [min_i, max_i]
            } else {
                [max_i, min_i]
            } {
                let p = points[j];
                drawn.push((x(p.0.timestamp_millis() as f64), y(p.1)));
                if min_i == max_i {
                    break;
                }
            }
        }
    } else {
        drawn.extend(
            points
                .iter()
                .map(|p| (x(p.0.timestamp_millis() as f64), y(p.1))),
        );
    }
    let mut text = String::with_capacity(drawn.len() * 12);
    for (i, (px, py)) in drawn.iter().enumerate() {
        if i > 0 {
            text.push(' ');
        }
        text.push_str(&f(*px));
        text.push(',');
        text.push_str(&f(*py));
    }
    let limits = limits
        .iter()
        .filter(|l| l.value >= lo && l.value <= hi)
        .map(|l| LimitLine {
            y: f(y(l.value)),
            label: l.label.clone(),
            overridden: l.overridden,
        })
        .collect();
    // An alert sits on the stored point nearest its measured time.
    let marks = alerts
        .iter()
        .filter(|a| a.at >= from && a.at <= to)
        .filter_map(|a| {
            let i = points.partition_point(|p| p.0 < a.at);
            let near = [i.checked_sub(1), (i < points.len()).then_some(i)]
                .into_iter()
                .flatten()
                .min_by_key(|&j| (points[j].0 - a.at).num_milliseconds().abs())?;
            Some(Mark {
                x: f(x(points[near].0.timestamp_millis() as f64)),
                y: f(y(points[near].1)),
                alert_id: a.alert_id.clone(),
                title: a.title.clone(),
            })
        })
        .collect();
    let decimals = if step >= 1.0 {
        0
    } else if step >= 0.1 {
        1
    } else {
        2
    };
    let n = ((hi - lo) / step).round() as i64;
    let y_ticks = (0..=n.clamp(1, 12))
        .map(|k| {
            let v = lo + step * k as f64;
            Tick {
                at: f(y(v)),
                text: format!("{v:.decimals$}"),
            }
        })
        .collect();
    let days = (to - from).num_days().max(1);
    let step = if days <= 7 {
        1
    } else if days <= 30 {
        7
    } else {
        15
    };
    let x_ticks = (0..=days)
        .step_by(step as usize)
        .map(|d| {
            let t = from + chrono::TimeDelta::days(d);
            Tick {
                at: f(x(t.timestamp_millis() as f64)),
                text: t.format("%d %b").to_string(),
            }
        })
        .collect();
    let dots = if drawn.len() <= MAX_DOTS {
        drawn.iter().map(|(px, py)| (f(*px), f(*py))).collect()
    } else {
        Vec::new()
    };
    Chart {
        points: text,
        dots,
        drawn: drawn.len(),
        stored: points.len(),
        limits,
        marks,
        y_ticks,
        x_ticks,
        view_box: format!("0 0 {WIDTH} {HEIGHT}"),
        left: f(LEFT),
        bottom: f(HEIGHT - BOTTOM),
        right: f(WIDTH - RIGHT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn at(h: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap() + TimeDelta::hours(h)
    }

    #[test]
    fn every_point_is_drawn_with_limits_and_alert_marks() {
        let pts: Vec<_> = (0..10).map(|h| (at(h), 80.0 + h as f64)).collect();
        let c = draw(
            &pts,
            at(0),
            at(24),
            &[Limit {
                value: 95.0,
                label: "limit".into(),
                overridden: false,
            }],
            &[AlertAt {
                at: at(9),
                alert_id: "a1".into(),
                title: "t".into(),
            }],
        );
        assert_eq!(c.points.split(' ').count(), 10);
        assert_eq!(c.dots.len(), 10);
        assert_eq!((c.drawn, c.stored), (10, 10));
        assert_eq!(c.limits.len(), 1);
        assert_eq!(c.marks.len(), 1);
        // Higher values are higher up (smaller y).
        let y_of = |s: &str| s.split(',').nth(1).unwrap().parse::<f64>().unwrap();
        let ys: Vec<f64> = c.points.split(' ').map(y_of).collect();
        assert!(ys[9] < ys[0]);
        let limit_y: f64 = c.limits[0].y.parse().unwrap();
        assert!(limit_y < ys[9], "95 is above 89");
    }

    #[test]
    fn long_series_are_thinned_but_keep_their_extremes() {
        let mut pts: Vec<_> = (0..30_000)
            .map(|i| (at(0) + TimeDelta::minutes(i * 4), 100.0))
            .collect();
        pts[12_345].1 = 400.0;
        let c = draw(&pts, at(0), at(24 * 90), &[], &[]);
        assert!(c.drawn <= 2 * 664 + 2, "{}", c.drawn);
        assert_eq!(c.stored, 30_000);
        let min_y = c
            .points
            .split(' ')
            .map(|p| p.split(',').nth(1).unwrap().parse::<f64>().unwrap())
            .fold(f64::INFINITY, f64::min);
        // 400 on an axis from 0 to 500, the rest at 100.
        let plot_h = HEIGHT - TOP - BOTTOM;
        assert!(
            (min_y - (TOP + plot_h * 0.2)).abs() < 1.0,
            "the spike is drawn: {min_y}"
        );
    }

    #[test]
    fn the_value_axis_counts_in_round_steps() {
        assert_eq!(nice_step(7.3), 10.0);
        assert_eq!(nice_step(1.75), 2.0);
        assert_eq!(nice_step(0.22), 0.25);
        assert_eq!(nice_step(30.0), 50.0);
        let flat: Vec<_> = (0..5).map(|h| (at(h), 70.0)).collect();
        let c = draw(&flat, at(0), at(5), &[], &[]);
        let texts: Vec<&str> = c.y_ticks.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(texts, ["66", "68", "70", "72", "74"]);
    }

    #[test]
    fn an_empty_series_draws_nothing_and_does_not_panic() {
        let c = draw(&[], at(0), at(24), &[], &[]);
        assert_eq!((c.drawn, c.points.as_str()), (0, ""));
    }
}
