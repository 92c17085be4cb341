//! Scores from answers, by each instrument's published rules.
//!
//! An item's score is its answer option's `ordinalValue`, 1/0 for yes/no,
//! or the number answered. A score over `n` items with `m` unanswered:
//! more than the definition's `maxMissing` gives no score at all (a partial
//! sum would read as "better" than the patient is); otherwise `sum` is
//! prorated, `round(mean of the answered × n)` (half away from zero), the
//! convention of the PHQ instruments' scoring guidance, and `mean`, `max`,
//! `scaled` and `count` use the answered items.

use std::collections::BTreeMap;

use super::model::{Method, Questionnaire, ScoreDef};
use crate::metric::Metric;

/// One computed score.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// What it is.
    pub metric: Metric,
    /// The value; `None` when too many items were unanswered.
    pub value: Option<f64>,
    /// Items of the score that were unanswered.
    pub missing: usize,
}

/// Computes every score of `q` from item scores by linkId.
pub fn score(q: &Questionnaire, item_scores: &BTreeMap<String, f64>) -> Vec<Score> {
    q.scores.iter().map(|d| one(q, d, item_scores)).collect()
}

fn one(q: &Questionnaire, d: &ScoreDef, item_scores: &BTreeMap<String, f64>) -> Score {
    let answered: Vec<f64> = d
        .items
        .iter()
        .filter_map(|l| item_scores.get(l).copied())
        .collect();
    let n = d.items.len();
    let missing = n - answered.len();
    let value = (missing <= d.max_missing && !answered.is_empty()).then(|| {
        let k = answered.len() as f64;
        let sum: f64 = answered.iter().sum();
        match d.method {
            Method::Sum if missing == 0 => sum,
            Method::Sum => (sum / k * n as f64).round(),
            Method::Mean => sum / k,
            Method::Max => answered.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            Method::Count => answered.iter().filter(|v| **v > 0.0).count() as f64,
            Method::Scaled => {
                let (lo, hi) = d
                    .items
                    .first()
                    .and_then(|l| q.item(l))
                    .and_then(|i| i.range())
                    .unwrap_or((0.0, 1.0));
                100.0 * (sum / k - lo) / (hi - lo)
            }
        }
    });
    Score {
        metric: d.metric,
        value,
        missing,
    }
}
