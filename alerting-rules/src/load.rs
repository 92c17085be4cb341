//! Loading and validating rule packs and care plans.
//!
//! Parsing is two-phase. Phase 1 turns the TOML document into spanned values
//! (`toml::de::DeTable`), then deserializes every `[[rule]]` entry on its
//! own with `serde_path_to_error`, so one broken rule does not hide the
//! errors of the next. Phase 2 checks meaning (units against metrics,
//! window bounds, placeholder names, unique ids across packs) using
//! `toml::Spanned` positions. Every error carries file, line, column and
//! field path, and all of them are returned together.

use std::collections::BTreeMap;
use std::ops::Range;

use device_profiles::Metric;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use crate::duration::RuleDuration;
use crate::error::FileError;
use crate::message::Template;
use crate::plan::{CarePlans, Plan};
use crate::quantity::{convert_difference, Quantity};
use crate::raw::{
    RawAverage, RawDelta, RawKinds, RawMissing, RawRule, RawSlope, RawThreshold, RawTier,
};
use crate::rule::{
    param_key, ClearPolicy, Condition, Count, FlapPolicy, Leaf, LeafKind, Param, Rule, Scope,
};
use crate::tier::{compile_tier, RuleMention, TierRule};

/// Longest window a rule may look back. Bounded so that the cost of one
/// evaluation never depends on how long a patient has been enrolled.
pub const MAX_WINDOW: RuleDuration = RuleDuration::days(90);
/// Most readings a `last = N`, `consecutive` or `m_of_n` rule may ask for.
pub const MAX_LAST: usize = 1000;
/// Most consecutive evaluations a clear or count rule may ask for.
pub const MAX_STREAK: usize = 50;

/// A rule or plan file given by name and content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Name used in errors (a path or a bare file name).
    pub name: String,
    /// The TOML text.
    pub text: String,
}

impl SourceFile {
    /// A source from name and text.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        SourceFile {
            name: name.into(),
            text: text.into(),
        }
    }
}

/// What a pack file declared about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackInfo {
    /// `pack = "..."`.
    pub name: String,
    /// `version = N`.
    pub version: u32,
    /// File it came from.
    pub file: String,
}

/// A successfully parsed pack, with the position of each rule id for the
/// cross-pack duplicate check.
pub(crate) struct LoadedPack {
    pub info: PackInfo,
    pub rules: Vec<(Rule, (usize, usize))>,
    /// `[[tier]]` entries, with the position of each id.
    pub tiers: Vec<(TierRule, (usize, usize))>,
    /// Rule ids the pack's tier part names (`trend_rules`, `alerts.rules`).
    pub mentions: Vec<RuleMention>,
    /// `trend_rules = [...]`.
    pub trend_rules: Vec<String>,
}

/// Error sink bound to one file.
pub(crate) struct Ctx<'a> {
    pub file: &'a str,
    pub text: &'a str,
    pub errs: &'a mut Vec<FileError>,
}

impl Ctx<'_> {
    pub(crate) fn err(
        &mut self,
        span: Option<Range<usize>>,
        field: impl Into<String>,
        msg: impl ToString,
    ) {
        self.errs.push(FileError::spanned(
            self.file,
            self.text,
            span,
            field,
            msg.to_string(),
        ));
    }

    /// Deserializes one spanned value, reporting the serde field path under
    /// `prefix` and the toml span as line and column.
    pub(crate) fn de<T: DeserializeOwned>(
        &mut self,
        value: Spanned<DeValue<'_>>,
        prefix: &str,
    ) -> Option<T> {
        let span = value.span();
        match serde_path_to_error::deserialize::<_, T>(ValueDeserializer::from(value)) {
            Ok(v) => Some(v),
            Err(e) => {
                let field = join_path(prefix, e.path());
                let inner = e.into_inner();
                self.err(inner.span().or(Some(span)), field, inner.message());
                None
            }
        }
    }
}

/// `prefix` + the serde path, without the private segments `toml::Spanned`
/// adds (`$__serde_spanned_private_value`).
fn join_path(prefix: &str, path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = prefix.to_string();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } if key.starts_with("$__") => {}
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// Parses and validates one pack file. Errors go to `errs`; `None` when the
/// file could not be read as a pack at all.
pub(crate) fn load_pack(src: &SourceFile, errs: &mut Vec<FileError>) -> Option<LoadedPack> {
    let mut ctx = Ctx {
        file: &src.name,
        text: &src.text,
        errs,
    };
    let root = match DeTable::parse(&src.text) {
        Ok(r) => r,
        Err(e) => {
            ctx.err(e.span(), "", e.message());
            return None;
        }
    };
    let mut pack: Option<Spanned<String>> = None;
    let mut version: Option<u32> = None;
    let mut rules = Vec::new();
    let mut tiers = Vec::new();
    let mut mentions = Vec::new();
    let mut trend_rules = Vec::new();
    let mut saw_rule_key = false;
    for (key, value) in root.into_inner() {
        let key_span = key.span();
        match key.get_ref().as_ref() {
            "pack" => pack = ctx.de(value, "pack"),
            "version" => version = ctx.de(value, "version"),
            "rule" => {
                saw_rule_key = true;
                let span = value.span();
                match value.into_inner() {
                    DeValue::Array(items) => {
                        for (i, item) in items.into_iter().enumerate() {
                            let path = format!("rule[{i}]");
                            let item_span = item.span();
                            if let Some(raw) = ctx.de::<RawRule>(item, &path) {
                                if let Some(r) = compile_rule(&mut ctx, raw, item_span, &path) {
                                    rules.push(r);
                                }
                            }
                        }
                    }
                    _ => ctx.err(Some(span), "rule", "expected [[rule]] entries"),
                }
            }
            "tier" => {
                saw_rule_key = true;
                let span = value.span();
                match value.into_inner() {
                    DeValue::Array(items) => {
                        for (i, item) in items.into_iter().enumerate() {
                            let path = format!("tier[{i}]");
                            let item_span = item.span();
                            if let Some(raw) = ctx.de::<RawTier>(item, &path) {
                                if let Some(t) =
                                    compile_tier(&mut ctx, raw, item_span, &path, &mut mentions)
                                {
                                    tiers.push(t);
                                }
                            }
                        }
                    }
                    _ => ctx.err(Some(span), "tier", "expected [[tier]] entries"),
                }
            }
            "trend_rules" => {
                if let Some(list) = ctx.de::<Vec<Spanned<String>>>(value, "trend_rules") {
                    for r in list {
                        let (line, column) = crate::error::line_col(ctx.text, r.span().start);
                        mentions.push(RuleMention {
                            rule_id: r.get_ref().clone(),
                            line,
                            column,
                            field: "trend_rules".into(),
                        });
                        trend_rules.push(r.into_inner());
                    }
                }
            }
            other => ctx.err(
                Some(key_span),
                other.to_string(),
                format!(
                    "unknown key `{other}` (expected pack, version, trend_rules, [[rule]], [[tier]])"
                ),
            ),
        }
    }
    if !saw_rule_key {
        ctx.err(None, "rule", "the pack has no [[rule]] or [[tier]] entry");
    }
    let (Some(pack), Some(version)) = (pack, version) else {
        if version.is_none()
            && !ctx
                .errs
                .iter()
                .any(|e| e.file == std::path::Path::new(&src.name) && e.field == "version")
        {
            ctx.err(None, "version", "missing `version = N`");
        }
        if !ctx
            .errs
            .iter()
            .any(|e| e.file == src.name && e.field == "pack")
        {
            ctx.err(None, "pack", "missing `pack = \"name\"`");
        }
        return None;
    };
    if !is_identifier(pack.get_ref()) {
        ctx.err(
            Some(pack.span()),
            "pack",
            "pack names use lowercase letters, digits, `-` and `_`",
        );
    }
    let name = pack.into_inner();
    let rules = rules
        .into_iter()
        .map(|(mut r, pos): (Rule, (usize, usize))| {
            r.pack = name.clone();
            (r, pos)
        })
        .collect();
    let tiers = tiers
        .into_iter()
        .map(|(mut t, pos): (TierRule, (usize, usize))| {
            t.pack = name.clone();
            (t, pos)
        })
        .collect();
    Some(LoadedPack {
        info: PackInfo {
            name,
            version,
            file: src.name.clone(),
        },
        rules,
        tiers,
        mentions,
        trend_rules,
    })
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'))
}

fn is_rule_id(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// Accumulates the parameters and leaf names of one rule while compiling.
struct RuleBuild {
    params: BTreeMap<String, Param>,
    leaf_names: Vec<String>,
    next_part: usize,
}

fn compile_rule(
    ctx: &mut Ctx,
    mut raw: RawRule,
    span: Range<usize>,
    path: &str,
) -> Option<(Rule, (usize, usize))> {
    let before = ctx.errs.len();
    let id = raw.id.get_ref().clone();
    if !is_rule_id(&id) {
        ctx.err(
            Some(raw.id.span()),
            format!("{path}.id"),
            "rule ids use lowercase letters, digits, `.`, `-` and `_`",
        );
    }
    if *raw.version.get_ref() == 0 {
        ctx.err(
            Some(raw.version.span()),
            format!("{path}.version"),
            "versions start at 1",
        );
    }
    if raw.source.get_ref().trim().is_empty() {
        ctx.err(
            Some(raw.source.span()),
            format!("{path}.source"),
            "cite the guideline the limit comes from",
        );
    }
    let renotify = match &raw.renotify {
        Some(r) if r.get_ref().delta() < chrono::TimeDelta::minutes(1) => {
            ctx.err(
                Some(r.span()),
                format!("{path}.renotify"),
                "must be at least 1m",
            );
            None
        }
        Some(r) => Some(*r.get_ref()),
        None => None,
    };
    let mut build = RuleBuild {
        params: BTreeMap::new(),
        leaf_names: Vec::new(),
        next_part: 1,
    };
    let kinds = raw.take_kinds();
    let condition = compile_kinds(ctx, kinds, span.clone(), path, None, &mut build, true);

    let message = match Template::parse(raw.message.get_ref(), &build.leaf_names) {
        Ok(t) => Some(t),
        Err(e) => {
            ctx.err(Some(raw.message.span()), format!("{path}.message"), e);
            None
        }
    };

    let is_missing = matches!(
        &condition,
        Some(Condition::Leaf(Leaf {
            kind: LeafKind::Missing { .. },
            ..
        }))
    );
    let mut clear = ClearPolicy {
        consecutive: if is_missing { 1 } else { 2 },
        limit: None,
    };
    if let Some(c) = raw.clear.take() {
        if let Some(k) = &c.consecutive {
            let v = *k.get_ref();
            if v == 0 || v as usize > MAX_STREAK {
                ctx.err(
                    Some(k.span()),
                    format!("{path}.clear.consecutive"),
                    format!("must be 1..={MAX_STREAK}"),
                );
            }
            clear.consecutive = v.max(1);
        }
        if let Some(limit) = &c.limit {
            clear.limit =
                compile_clear_limit(ctx, condition.as_ref(), limit, path, &mut build.params);
        }
    }

    let mut flap = FlapPolicy::default();
    if let Some(f) = &raw.flap {
        if *f.max_changes.get_ref() < 2 {
            ctx.err(
                Some(f.max_changes.span()),
                format!("{path}.flap.max_changes"),
                "must be at least 2 (one fire and one resolve)",
            );
        }
        check_window(ctx, &f.window, &format!("{path}.flap.window"));
        flap = FlapPolicy {
            max_changes: *f.max_changes.get_ref(),
            window: *f.window.get_ref(),
        };
    }

    if ctx.errs.len() != before {
        return None;
    }
    let (condition, message) = (condition?, message?);
    let severity = raw.severity;
    let pos = crate::error::line_col(ctx.text, raw.id.span().start);
    let mut rule = Rule {
        id,
        version: *raw.version.get_ref(),
        pack: String::new(),
        severity,
        message,
        source: raw.source.into_inner(),
        condition,
        clear,
        renotify: renotify.unwrap_or(RuleDuration::from_delta(severity.default_renotify())),
        flap,
        params: build.params,
        defaults: Default::default(),
    };
    rule.defaults = crate::overrides::Defaults::of(&rule);
    Some((rule, pos))
}

/// A separate clear threshold is only meaningful for a rule with one leaf
/// that compares with a limit; it must sit on the normal side of the firing
/// limit, or the rule would resolve while still breaching.
fn compile_clear_limit(
    ctx: &mut Ctx,
    condition: Option<&Condition>,
    limit: &Spanned<Quantity>,
    path: &str,
    params: &mut BTreeMap<String, Param>,
) -> Option<String> {
    let field = format!("{path}.clear.limit");
    let Some(Condition::Leaf(leaf)) = condition else {
        if condition.is_some() {
            ctx.err(Some(limit.span()), field, "a clear limit needs a rule with a single condition; use clear.consecutive for all/any");
        }
        return None;
    };
    let (Some(metric), Some(op)) = (leaf.kind.metric(), leaf.kind.op()) else {
        ctx.err(
            Some(limit.span()),
            field,
            "a missing-data rule clears when data arrives; it has no clear limit",
        );
        return None;
    };
    let fire = params.get("limit")?.clone();
    let value = convert(ctx, limit, metric, fire.difference, &field)?;
    let fire_value = fire.default?;
    if op.holds(value, fire_value) && value != fire_value {
        ctx.err(
            Some(limit.span()),
            field,
            format!("the clear limit must be on the normal side of the firing limit (rule fires when {op} {})", limit_text(&fire, fire_value)),
        );
        return None;
    }
    params.insert(
        "clear_limit".to_string(),
        Param {
            default: Some(value),
            ..fire
        },
    );
    Some("clear_limit".to_string())
}

fn limit_text(p: &Param, canonical: f64) -> String {
    let shown = if p.difference {
        convert_difference(canonical, p.metric.canonical_unit(), p.display_unit)
    } else {
        p.metric.canonical_unit().convert(canonical, p.display_unit)
    };
    Quantity::new(shown.unwrap_or(canonical), p.display_unit).to_string()
}

#[allow(clippy::too_many_arguments)]
fn compile_kinds(
    ctx: &mut Ctx,
    kinds: RawKinds,
    span: Range<usize>,
    path: &str,
    part_name: Option<String>,
    build: &mut RuleBuild,
    top: bool,
) -> Option<Condition> {
    let present: Vec<&str> = [
        ("threshold", kinds.threshold.is_some()),
        ("delta", kinds.delta.is_some()),
        ("average", kinds.average.is_some()),
        ("slope", kinds.slope.is_some()),
        ("missing", kinds.missing.is_some()),
        ("all", kinds.all.is_some()),
        ("any", kinds.any.is_some()),
    ]
    .into_iter()
    .filter_map(|(n, p)| p.then_some(n))
    .collect();
    if present.len() != 1 {
        let allowed = if top {
            "threshold, delta, average, slope, missing, all or any"
        } else {
            "threshold, delta, average, slope, all or any"
        };
        let found = if present.is_empty() {
            "none".to_string()
        } else {
            present.join(", ")
        };
        ctx.err(
            Some(span),
            path,
            format!("needs exactly one condition ({allowed}); found {found}"),
        );
        return None;
    }
    // A single leaf at the top of a rule has the empty name, so its
    // parameters are plain `limit`, `clear_limit`, `baseline`.
    let name = part_name.unwrap_or_default();
    let leaf = |kind: Option<LeafKind>, build: &mut RuleBuild| {
        let kind = kind?;
        build.leaf_names.push(name.clone());
        Some(Condition::Leaf(Leaf::new(name.clone(), kind)))
    };
    if let Some(t) = kinds.threshold {
        let k = threshold(
            ctx,
            t,
            &format!("{path}.threshold"),
            &name,
            &mut build.params,
        );
        return leaf(k, build);
    }
    if let Some(d) = kinds.delta {
        let k = delta(ctx, d, &format!("{path}.delta"), &name, &mut build.params);
        return leaf(k, build);
    }
    if let Some(a) = kinds.average {
        let k = average(ctx, a, &format!("{path}.average"), &name, &mut build.params);
        return leaf(k, build);
    }
    if let Some(s) = kinds.slope {
        let k = slope(ctx, s, &format!("{path}.slope"), &name, &mut build.params);
        return leaf(k, build);
    }
    if let Some(m) = kinds.missing {
        let k = missing(ctx, m, &format!("{path}.missing"));
        return leaf(k, build);
    }
    let (parts, key, is_all) = match (kinds.all, kinds.any) {
        (Some(p), _) => (p, "all", true),
        (None, Some(p)) => (p, "any", false),
        (None, None) => return None,
    };
    if parts.is_empty() {
        ctx.err(
            Some(span),
            format!("{path}.{key}"),
            format!("`{key}` needs at least one part"),
        );
        return None;
    }
    let mut out = Vec::new();
    let mut failed = false;
    for (i, part) in parts.into_iter().enumerate() {
        let part_path = format!("{path}.{key}[{i}]");
        let part_span = part.span();
        let part = part.into_inner();
        let name = match &part.name {
            Some(n) if !is_identifier(n.get_ref()) => {
                ctx.err(
                    Some(n.span()),
                    format!("{part_path}.name"),
                    "names use lowercase letters, digits, `-` and `_`",
                );
                n.get_ref().clone()
            }
            Some(n) if build.leaf_names.contains(n.get_ref()) => {
                ctx.err(
                    Some(n.span()),
                    format!("{part_path}.name"),
                    format!("name `{}` is used twice in this rule", n.get_ref()),
                );
                n.get_ref().clone()
            }
            Some(n) => n.get_ref().clone(),
            None => build.next_part.to_string(),
        };
        build.next_part += 1;
        match compile_kinds(
            ctx,
            part.into_kinds(),
            part_span,
            &part_path,
            Some(name),
            build,
            false,
        ) {
            Some(c) => out.push(c),
            None => failed = true,
        }
    }
    if failed {
        return None;
    }
    Some(if is_all {
        Condition::All(out)
    } else {
        Condition::Any(out)
    })
}

/// Converts a limit to the metric's canonical unit, reporting a unit that
/// cannot measure the metric at the limit's position.
fn convert(
    ctx: &mut Ctx,
    q: &Spanned<Quantity>,
    metric: Metric,
    difference: bool,
    field: &str,
) -> Option<f64> {
    let r = if difference {
        q.get_ref().difference_in_canonical(metric)
    } else {
        q.get_ref().level_in_canonical(metric)
    };
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            ctx.err(Some(q.span()), field, e);
            None
        }
    }
}

fn add_limit(
    ctx: &mut Ctx,
    q: &Spanned<Quantity>,
    metric: Metric,
    difference: bool,
    path: &str,
    name: &str,
    params: &mut BTreeMap<String, Param>,
) -> Option<Param> {
    let v = convert(ctx, q, metric, difference, &format!("{path}.limit"))?;
    let display_unit = q.get_ref().unit_for(metric).ok()?;
    let p = Param {
        default: Some(v),
        metric,
        display_unit,
        difference,
    };
    params.insert(param_key(name, "limit"), p.clone());
    Some(p)
}

fn check_window(ctx: &mut Ctx, w: &Spanned<RuleDuration>, field: &str) -> bool {
    let d = w.get_ref().delta();
    if d <= chrono::TimeDelta::zero() || d > MAX_WINDOW.delta() {
        ctx.err(
            Some(w.span()),
            field,
            format!("must be more than 0 and at most {MAX_WINDOW}"),
        );
        return false;
    }
    true
}

fn check_count(ctx: &mut Ctx, n: &Spanned<usize>, min: usize, max: usize, field: &str) -> bool {
    let v = *n.get_ref();
    if v < min || v > max {
        ctx.err(Some(n.span()), field, format!("must be {min}..={max}"));
        return false;
    }
    true
}

fn threshold(
    ctx: &mut Ctx,
    t: RawThreshold,
    path: &str,
    name: &str,
    params: &mut BTreeMap<String, Param>,
) -> Option<LeafKind> {
    let limit = add_limit(ctx, &t.limit, t.metric, false, path, name, params);
    let count =
        match (&t.consecutive, &t.m_of_n) {
            (Some(c), Some(_)) => {
                ctx.err(
                    Some(c.span()),
                    format!("{path}.consecutive"),
                    "use either consecutive or m_of_n, not both",
                );
                None
            }
            (Some(c), None) => check_count(ctx, c, 1, MAX_STREAK, &format!("{path}.consecutive"))
                .then(|| match *c.get_ref() {
                    1 => Count::Latest,
                    n => Count::Consecutive(n),
                }),
            (None, Some(mn)) => match mn.get_ref().as_slice() {
                &[m, n] if m >= 1 && m <= n && n <= MAX_STREAK => Some(Count::MOfN(m, n)),
                _ => {
                    ctx.err(
                        Some(mn.span()),
                        format!("{path}.m_of_n"),
                        format!("expected [M, N] with 1 <= M <= N <= {MAX_STREAK}"),
                    );
                    None
                }
            },
            (None, None) => Some(Count::Latest),
        };
    let max_age = match &t.max_age {
        Some(w) => check_window(ctx, w, &format!("{path}.max_age")).then(|| *w.get_ref()),
        None => Some(RuleDuration::hours(24)),
    };
    limit?;
    Some(LeafKind::Threshold {
        metric: t.metric,
        op: t.op,
        count: count?,
        max_age: max_age?,
    })
}

fn delta(
    ctx: &mut Ctx,
    d: RawDelta,
    path: &str,
    name: &str,
    params: &mut BTreeMap<String, Param>,
) -> Option<LeafKind> {
    let limit = add_limit(ctx, &d.limit, d.metric, true, path, name, params);
    let window_ok = check_window(ctx, &d.window, &format!("{path}.window"));
    let limit = limit?;
    // A fixed baseline (a clinician-set dry weight) is an override-only
    // parameter: it has no default, and setting it replaces `baseline`.
    params.insert(
        param_key(name, "baseline"),
        Param {
            default: None,
            difference: false,
            ..limit
        },
    );
    window_ok.then_some(LeafKind::Delta {
        metric: d.metric,
        op: d.op,
        window: *d.window.get_ref(),
        baseline: d.baseline,
    })
}

fn average(
    ctx: &mut Ctx,
    a: RawAverage,
    path: &str,
    name: &str,
    params: &mut BTreeMap<String, Param>,
) -> Option<LeafKind> {
    let limit = add_limit(ctx, &a.limit, a.metric, false, path, name, params);
    let min_ok = check_count(
        ctx,
        &a.min_readings,
        1,
        MAX_LAST,
        &format!("{path}.min_readings"),
    );
    let scope = match (&a.window, &a.last) {
        (Some(w), None) => {
            check_window(ctx, w, &format!("{path}.window")).then(|| Scope::Window(*w.get_ref()))
        }
        (None, Some(n)) => {
            let ok = check_count(ctx, n, 1, MAX_LAST, &format!("{path}.last"));
            if ok && *a.min_readings.get_ref() > *n.get_ref() {
                ctx.err(
                    Some(a.min_readings.span()),
                    format!("{path}.min_readings"),
                    "cannot exceed `last`",
                );
                None
            } else {
                ok.then(|| Scope::Last(*n.get_ref()))
            }
        }
        (Some(w), Some(_)) => {
            ctx.err(
                Some(w.span()),
                format!("{path}.window"),
                "use either window or last, not both",
            );
            None
        }
        (None, None) => {
            ctx.err(
                Some(a.limit.span()),
                path,
                "needs `window = \"7d\"` or `last = N`",
            );
            None
        }
    };
    let days_ok = match &a.min_days {
        Some(d) => {
            let ok = check_count(ctx, d, 1, 90, &format!("{path}.min_days"));
            if ok && a.window.is_none() {
                ctx.err(
                    Some(d.span()),
                    format!("{path}.min_days"),
                    "needs `window` (days are counted within it)",
                );
                false
            } else {
                ok
            }
        }
        None => true,
    };
    if a.discard_first_day && a.window.is_none() {
        ctx.err(
            Some(a.limit.span()),
            format!("{path}.discard_first_day"),
            "needs `window`",
        );
        return None;
    }
    limit?;
    if !min_ok || !days_ok {
        return None;
    }
    Some(LeafKind::Average {
        metric: a.metric,
        stat: a.stat,
        scope: scope?,
        op: a.op,
        min_readings: *a.min_readings.get_ref(),
        min_days: a.min_days.map_or(0, |d| *d.get_ref()),
        discard_first_day: a.discard_first_day,
    })
}

fn slope(
    ctx: &mut Ctx,
    s: RawSlope,
    path: &str,
    name: &str,
    params: &mut BTreeMap<String, Param>,
) -> Option<LeafKind> {
    let limit = add_limit(ctx, &s.limit, s.metric, true, path, name, params);
    let window_ok = check_window(ctx, &s.window, &format!("{path}.window"));
    let min_ok = check_count(
        ctx,
        &s.min_readings,
        2,
        MAX_LAST,
        &format!("{path}.min_readings"),
    );
    limit?;
    (window_ok && min_ok).then_some(LeafKind::Slope {
        metric: s.metric,
        window: *s.window.get_ref(),
        op: s.op,
        min_readings: *s.min_readings.get_ref(),
    })
}

fn missing(ctx: &mut Ctx, m: RawMissing, path: &str) -> Option<LeafKind> {
    let ok = check_window(ctx, &m.after, &format!("{path}.for"));
    let mut metrics = m.metrics.unwrap_or_default();
    metrics.sort();
    metrics.dedup();
    ok.then(|| LeafKind::Missing {
        metrics,
        after: *m.after.get_ref(),
    })
}

// ---------------------------------------------------------------- plans

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlans {
    #[serde(default)]
    always: Vec<Spanned<String>>,
    #[serde(default)]
    plan: BTreeMap<String, RawPlan>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    #[serde(default)]
    packs: Vec<Spanned<String>>,
    #[serde(default)]
    excludes: Vec<Spanned<String>>,
}

/// Parses `plans.toml` and checks that every pack it names was loaded.
pub(crate) fn load_plans(
    src: &SourceFile,
    known_packs: &[String],
    errs: &mut Vec<FileError>,
) -> Option<CarePlans> {
    let mut ctx = Ctx {
        file: &src.name,
        text: &src.text,
        errs,
    };
    let de = match toml::Deserializer::parse(&src.text) {
        Ok(d) => d,
        Err(e) => {
            ctx.err(e.span(), "", e.message());
            return None;
        }
    };
    let raw: RawPlans = match serde_path_to_error::deserialize(de) {
        Ok(r) => r,
        Err(e) => {
            let field = join_path("", e.path());
            let inner = e.into_inner();
            ctx.err(inner.span(), field, inner.message());
            return None;
        }
    };
    let mut check = |list: &[Spanned<String>], field: String| {
        for p in list {
            if !known_packs.iter().any(|k| k == p.get_ref()) {
                ctx.err(
                    Some(p.span()),
                    field.clone(),
                    format!(
                        "unknown pack `{}` (loaded: {})",
                        p.get_ref(),
                        known_packs.join(", ")
                    ),
                );
            }
        }
    };
    check(&raw.always, "always".to_string());
    for (name, plan) in &raw.plan {
        check(&plan.packs, format!("plan.{name}.packs"));
        check(&plan.excludes, format!("plan.{name}.excludes"));
    }
    let names =
        |v: Vec<Spanned<String>>| v.into_iter().map(Spanned::into_inner).collect::<Vec<_>>();
    Some(CarePlans {
        always: names(raw.always),
        plan: raw
            .plan
            .into_iter()
            .map(|(k, p)| {
                (
                    k,
                    Plan {
                        packs: names(p.packs),
                        excludes: names(p.excludes),
                    },
                )
            })
            .collect(),
    })
}
