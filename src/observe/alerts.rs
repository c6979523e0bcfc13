//! Alert rules as data: `aggregation(metric[window]) op threshold`, evaluated per
//! database on the sampled history, with Prometheus' states
//! (inactive → pending → firing → resolved).

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use crate::config::{AlertRuleConfig, Severity};

/// What rules can look at, per database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Mean statement time in ms over the window (ratio of increases).
    QueryTimeMs,
    /// Failed over completed statements in the window.
    ErrorRate,
    /// Statements per second.
    Qps,
    PoolUsage,
    WaitingClients,
    BackendUp,
    StorageUsage,
    ConnectFailures,
    IntegrityViolations,
    ConsistencyWarnings,
    Errors,
    Queries,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ratio,
    Gauge,
    Counter,
}

const METRICS: &[(&str, Metric)] = &[
    ("query_time_ms", Metric::QueryTimeMs),
    ("error_rate", Metric::ErrorRate),
    ("qps", Metric::Qps),
    ("pool_usage", Metric::PoolUsage),
    ("waiting_clients", Metric::WaitingClients),
    ("backend_up", Metric::BackendUp),
    ("storage_usage", Metric::StorageUsage),
    ("connect_failures", Metric::ConnectFailures),
    ("integrity_violations", Metric::IntegrityViolations),
    ("consistency_warnings", Metric::ConsistencyWarnings),
    ("errors", Metric::Errors),
    ("queries", Metric::Queries),
];

impl Metric {
    fn kind(self) -> Kind {
        match self {
            Metric::QueryTimeMs | Metric::ErrorRate | Metric::Qps => Kind::Ratio,
            Metric::PoolUsage
            | Metric::WaitingClients
            | Metric::BackendUp
            | Metric::StorageUsage => Kind::Gauge,
            _ => Kind::Counter,
        }
    }

    fn gauge(self, s: &Sample) -> Option<f64> {
        match self {
            Metric::PoolUsage => Some(s.pool_usage),
            Metric::WaitingClients => Some(s.waiting),
            Metric::BackendUp => Some(s.backend_up),
            Metric::StorageUsage => s.storage_usage,
            _ => None,
        }
    }

    fn counter(self, s: &Sample) -> f64 {
        match self {
            Metric::ConnectFailures => s.connect_failures,
            Metric::IntegrityViolations => s.integrity_violations,
            Metric::ConsistencyWarnings => s.consistency_warnings,
            Metric::Errors => s.errors,
            _ => s.calls,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    Avg,
    Max,
    Min,
    Last,
    Increase,
    Rate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl Op {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Eq => a == b,
            Op::Ne => a != b,
        }
    }
}

/// A parsed rule expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub agg: Agg,
    pub metric: Metric,
    pub window: Duration,
    pub op: Op,
    pub threshold: f64,
}

impl Expr {
    /// Parses `agg(metric[window]) op number`.
    pub fn parse(text: &str) -> Result<Expr, String> {
        let usage =
            "expected `aggregation(metric[window]) op threshold`, e.g. `avg(error_rate[5m]) > 0.1`";
        let t = text.trim();
        let open = t.find('(').ok_or_else(|| usage.to_string())?;
        let close = t.find(')').ok_or_else(|| usage.to_string())?;
        if close < open {
            return Err(usage.to_string());
        }
        let agg = match t[..open].trim() {
            "avg" => Agg::Avg,
            "max" => Agg::Max,
            "min" => Agg::Min,
            "last" => Agg::Last,
            "increase" => Agg::Increase,
            "rate" => Agg::Rate,
            other => {
                return Err(format!(
                    "unknown aggregation `{other}`: use avg, max, min, last, increase or rate"
                ))
            }
        };
        let inner = &t[open + 1..close];
        let lb = inner
            .find('[')
            .ok_or_else(|| format!("missing [window] in `{inner}`"))?;
        let rb = inner
            .find(']')
            .ok_or_else(|| format!("missing ] in `{inner}`"))?;
        let name = inner[..lb].trim();
        let metric = METRICS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                let names: Vec<&str> = METRICS.iter().map(|(n, _)| *n).collect();
                format!("unknown metric `{name}`; known: {}", names.join(", "))
            })?;
        let window = humantime::parse_duration(inner[lb + 1..rb].trim())
            .map_err(|e| format!("bad window `{}`: {e}", &inner[lb + 1..rb]))?;
        if window.is_zero() {
            return Err("the window must be longer than 0".into());
        }
        let rest = t[close + 1..].trim();
        let (op, num) = [
            (">=", Op::Ge),
            ("<=", Op::Le),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            (">", Op::Gt),
            ("<", Op::Lt),
        ]
        .iter()
        .find_map(|(s, op)| rest.strip_prefix(s).map(|n| (*op, n)))
        .ok_or_else(|| format!("expected a comparison (> >= < <= == !=) after `)`: {usage}"))?;
        let threshold: f64 = num
            .trim()
            .parse()
            .map_err(|_| format!("threshold `{}` is not a number", num.trim()))?;
        let ok = match metric.kind() {
            Kind::Ratio => agg == Agg::Avg,
            Kind::Gauge => matches!(agg, Agg::Avg | Agg::Max | Agg::Min | Agg::Last),
            Kind::Counter => matches!(agg, Agg::Increase | Agg::Rate),
        };
        if !ok {
            let allowed = match metric.kind() {
                Kind::Ratio => "avg",
                Kind::Gauge => "avg, max, min or last",
                Kind::Counter => "increase or rate",
            };
            return Err(format!("`{name}` takes {allowed}"));
        }
        Ok(Expr {
            agg,
            metric,
            window,
            op,
            threshold,
        })
    }

    /// The aggregated value over `history` (oldest first) of one database, or
    /// `None` when there is no data (no statements for a ratio, no limit for storage).
    pub fn value(&self, history: &VecDeque<Sample>) -> Option<f64> {
        let last = history.back()?;
        let start = last.t - self.window.as_secs_f64();
        // The base: the newest sample at or before the window start, else the oldest.
        let base_idx = history
            .iter()
            .rposition(|s| s.t <= start + 1e-9)
            .unwrap_or(0);
        let base = &history[base_idx];
        match self.metric.kind() {
            Kind::Ratio => {
                let calls = last.calls - base.calls;
                match self.metric {
                    Metric::Qps => {
                        let dt = last.t - base.t;
                        (dt > 0.0).then(|| calls / dt)
                    }
                    _ if calls <= 0.0 => None,
                    Metric::ErrorRate => Some((last.errors - base.errors) / calls),
                    _ => Some((last.duration_s - base.duration_s) * 1000.0 / calls),
                }
            }
            Kind::Counter => {
                let inc = self.metric.counter(last) - self.metric.counter(base);
                match self.agg {
                    Agg::Rate => {
                        let dt = last.t - base.t;
                        (dt > 0.0).then(|| inc / dt)
                    }
                    _ => Some(inc),
                }
            }
            Kind::Gauge => {
                let values = history
                    .iter()
                    .skip(base_idx)
                    .filter(|s| s.t > start || base_idx == 0)
                    .filter_map(|s| self.metric.gauge(s));
                match self.agg {
                    Agg::Last => self.metric.gauge(last),
                    Agg::Max => values.reduce(f64::max),
                    Agg::Min => values.reduce(f64::min),
                    _ => {
                        let (n, sum) = values.fold((0.0, 0.0), |(n, s), v| (n + 1.0, s + v));
                        (n > 0.0).then(|| sum / n)
                    }
                }
            }
        }
    }

    pub fn holds(&self, value: f64) -> bool {
        self.op.holds(value, self.threshold)
    }
}

/// One database's cumulative values at one evaluation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Seconds since the observer started.
    pub t: f64,
    pub calls: f64,
    pub errors: f64,
    pub duration_s: f64,
    pub pool_usage: f64,
    pub waiting: f64,
    pub backend_up: f64,
    pub storage_usage: Option<f64>,
    pub connect_failures: f64,
    pub integrity_violations: f64,
    pub consistency_warnings: f64,
}

/// A rule ready to evaluate.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub expr_text: String,
    pub expr: Expr,
    pub for_: Duration,
    pub severity: Severity,
    pub summary: String,
}

/// The rules unidb ships with; `[[alerts]]` entries with the same name replace them.
pub fn builtin_rules() -> Vec<AlertRuleConfig> {
    let rule = |name: &str, expr: &str, for_secs: u64, severity, summary: &str| AlertRuleConfig {
        name: name.into(),
        expr: expr.into(),
        for_: Duration::from_secs(for_secs),
        severity,
        summary: summary.into(),
        enabled: true,
    };
    vec![
        rule(
            "BackendConnectFailures",
            "increase(connect_failures[1m]) > 0",
            0,
            Severity::Critical,
            "Connections to the backend are failing",
        ),
        rule(
            "BackendDown",
            "max(backend_up[1m]) < 1",
            30,
            Severity::Critical,
            "The backend is unreachable",
        ),
        rule(
            "IntegrityViolation",
            "increase(integrity_violations[1h]) > 0",
            0,
            Severity::Critical,
            "An integrity check reported a violation",
        ),
        rule(
            "HighErrorRate",
            "avg(error_rate[5m]) > 0.1",
            60,
            Severity::Critical,
            "More than 10% of statements fail",
        ),
        rule(
            "SlowQueries",
            "avg(query_time_ms[5m]) > 1000",
            60,
            Severity::Warning,
            "Average statement time above 1 s",
        ),
        rule(
            "PoolSaturated",
            "avg(pool_usage[1m]) > 0.8",
            60,
            Severity::Warning,
            "More than 80% of the pool is in use",
        ),
        rule(
            "ConsistencyWarning",
            "increase(consistency_warnings[1h]) > 0",
            0,
            Severity::Warning,
            "A consistency check reported a warning",
        ),
        rule(
            "StorageNearLimit",
            "last(storage_usage[1m]) > 0.9",
            0,
            Severity::Warning,
            "Storage above 90% of the configured limit",
        ),
    ]
}

/// Built-in rules overridden by configured ones (same name), plus the others.
pub fn effective_rules(configured: &[AlertRuleConfig]) -> Result<Vec<Rule>, String> {
    let mut all = builtin_rules();
    for c in configured {
        match all.iter_mut().find(|r| r.name == c.name) {
            Some(r) => *r = c.clone(),
            None => all.push(c.clone()),
        }
    }
    all.into_iter()
        .filter(|r| r.enabled)
        .map(|r| {
            Ok(Rule {
                expr: Expr::parse(&r.expr).map_err(|e| format!("alert {}: {e}", r.name))?,
                name: r.name,
                expr_text: r.expr,
                for_: r.for_,
                severity: r.severity,
                summary: r.summary,
            })
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Inactive,
    Pending,
    Firing,
    Resolved,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Inactive => "inactive",
            State::Pending => "pending",
            State::Firing => "firing",
            State::Resolved => "resolved",
        }
    }
}

/// One rule on one database.
#[derive(Debug, Clone)]
pub struct Instance {
    pub rule: usize,
    pub database: usize,
    pub state: State,
    /// When the current state was entered.
    pub since: Option<SystemTime>,
    /// When it started firing (Alertmanager's `startsAt`).
    pub fired_at: Option<SystemTime>,
    pub value: Option<f64>,
}

/// A state change to log, count and send.
#[derive(Debug, Clone)]
pub struct Transition {
    pub instance: Instance,
    pub from: State,
}

impl Instance {
    /// Moves the state machine with the rule's latest value.
    pub fn step(
        &mut self,
        rule: &Rule,
        value: Option<f64>,
        now: SystemTime,
        retention: Duration,
    ) -> Option<Transition> {
        self.value = value;
        let active = value.is_some_and(|v| rule.expr.holds(v));
        let held_for = |since: Option<SystemTime>| {
            since
                .and_then(|s| now.duration_since(s).ok())
                .unwrap_or_default()
        };
        let from = self.state;
        let to = match (self.state, active) {
            (State::Inactive | State::Resolved, true) if rule.for_.is_zero() => State::Firing,
            (State::Inactive | State::Resolved, true) => State::Pending,
            (State::Pending, true) if held_for(self.since) >= rule.for_ => State::Firing,
            (State::Pending, false) => State::Inactive,
            (State::Firing, false) => State::Resolved,
            (State::Resolved, false) if held_for(self.since) >= retention => State::Inactive,
            (s, _) => s,
        };
        if to == from {
            return None;
        }
        self.state = to;
        self.since = Some(now);
        if to == State::Firing {
            self.fired_at = Some(now);
        }
        Some(Transition {
            instance: self.clone(),
            from,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_parse_and_reject_with_reasons() {
        let e = Expr::parse("avg(error_rate[5m]) > 0.1").unwrap();
        assert_eq!(
            (e.agg, e.metric, e.window, e.op, e.threshold),
            (
                Agg::Avg,
                Metric::ErrorRate,
                Duration::from_secs(300),
                Op::Gt,
                0.1
            )
        );
        assert_eq!(Expr::parse("max(pool_usage[30s])>=0.8").unwrap().op, Op::Ge);
        for (bad, why) in [
            ("avg(nope[5m]) > 1", "unknown metric"),
            ("median(qps[5m]) > 1", "unknown aggregation"),
            ("avg(qps) > 1", "window"),
            ("avg(qps[5m]) ~ 1", "comparison"),
            ("avg(qps[5m]) > x", "not a number"),
            ("increase(error_rate[5m]) > 1", "takes avg"),
            ("avg(errors[5m]) > 1", "increase or rate"),
        ] {
            let err = Expr::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!(effective_rules(&[]).unwrap().len() >= 8);
    }

    fn sample(t: f64, calls: f64, errors: f64, duration_s: f64, pool: f64) -> Sample {
        Sample {
            t,
            calls,
            errors,
            duration_s,
            pool_usage: pool,
            backend_up: 1.0,
            ..Sample::default()
        }
    }

    #[test]
    fn window_values() {
        let h: VecDeque<Sample> = vec![
            sample(0.0, 0.0, 0.0, 0.0, 0.0),
            sample(10.0, 100.0, 0.0, 1.0, 0.5),
            sample(20.0, 200.0, 50.0, 3.0, 1.0),
        ]
        .into();
        let v = |e: &str| Expr::parse(e).unwrap().value(&h);
        assert_eq!(v("avg(error_rate[10s]) > 0"), Some(0.5));
        assert_eq!(v("avg(query_time_ms[10s]) > 0"), Some(20.0));
        assert_eq!(v("avg(query_time_ms[1h]) > 0"), Some(15.0));
        assert_eq!(v("avg(qps[10s]) > 0"), Some(10.0));
        assert_eq!(v("max(pool_usage[15s]) > 0"), Some(1.0));
        assert_eq!(v("avg(pool_usage[10s]) > 0"), Some(1.0));
        assert_eq!(v("increase(errors[10s]) > 0"), Some(50.0));
        assert_eq!(v("last(storage_usage[10s]) > 0"), None);
    }

    #[test]
    fn state_machine_follows_prometheus() {
        let rule = effective_rules(&[AlertRuleConfig {
            name: "T".into(),
            expr: "avg(qps[1m]) > 1".into(),
            for_: Duration::from_secs(10),
            severity: Severity::Warning,
            summary: String::new(),
            enabled: true,
        }])
        .unwrap()
        .pop()
        .unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut i = Instance {
            rule: 0,
            database: 0,
            state: State::Inactive,
            since: None,
            fired_at: None,
            value: None,
        };
        let ret = Duration::from_secs(60);
        assert_eq!(
            i.step(&rule, Some(2.0), at(0), ret).unwrap().instance.state,
            State::Pending
        );
        assert!(i.step(&rule, Some(2.0), at(5), ret).is_none());
        assert_eq!(
            i.step(&rule, Some(2.0), at(10), ret)
                .unwrap()
                .instance
                .state,
            State::Firing
        );
        assert_eq!(
            i.step(&rule, Some(0.5), at(11), ret)
                .unwrap()
                .instance
                .state,
            State::Resolved
        );
        assert!(i.step(&rule, None, at(30), ret).is_none());
        assert_eq!(
            i.step(&rule, None, at(80), ret).unwrap().instance.state,
            State::Inactive
        );
        assert_eq!(
            i.step(&rule, Some(3.0), at(81), ret)
                .unwrap()
                .instance
                .state,
            State::Pending
        );
        assert_eq!(
            i.step(&rule, Some(0.0), at(82), ret)
                .unwrap()
                .instance
                .state,
            State::Inactive
        );
    }
}
