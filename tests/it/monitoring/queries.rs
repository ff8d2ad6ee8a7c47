//! What a PromQL query reads, from its syntax tree (`promql-parser`): the metrics it
//! selects with their matchers, and the labels it groups or matches by.

use std::collections::BTreeSet;

use promql_parser::label::{MatchOp, Matchers};
use promql_parser::parser::{self, Expr, VectorSelector};
use promql_parser::util::{ExprVisitor, walk_expr};

/// One series selector: `metric{label="value", ...}`.
#[derive(Debug)]
pub struct Selector {
    pub metric: String,
    /// Label, whether it is an equality match, and the value.
    pub matchers: Vec<(String, bool, String)>,
}

/// Everything a query reads.
#[derive(Debug, Default)]
pub struct Reads {
    pub selectors: Vec<Selector>,
    /// Labels of `by`/`without`, `on`/`ignoring` and `group_left`/`group_right`.
    pub grouping: BTreeSet<String>,
}

/// What `query` reads, or why it does not parse.
pub fn reads(query: &str) -> Result<Reads, String> {
    let expr = parser::parse(query)?;
    let mut reads = Reads::default();
    walk_expr(&mut reads, &expr)?;
    Ok(reads)
}

/// A Grafana query as Prometheus sees it: interval variables become durations and the
/// dashboard's own variables (`$namespace`), which only stand in matcher values, `.*`.
pub fn grafana(query: &str) -> String {
    let mut out = query
        .replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h");
    while let Some(at) = out.find('$') {
        let end = out[at + 1..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '{' || c == '}'))
            .map_or(out.len(), |n| at + 1 + n);
        out.replace_range(at..end, ".*");
    }
    out
}

impl ExprVisitor for Reads {
    type Error = String;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        match expr {
            Expr::VectorSelector(vs) => self.selector(vs)?,
            Expr::MatrixSelector(ms) => self.selector(&ms.vs)?,
            Expr::Aggregate(agg) => {
                if let Some(modifier) = &agg.modifier {
                    self.grouping
                        .extend(modifier.labels().labels.iter().cloned());
                }
            }
            Expr::Binary(bin) => {
                if let Some(modifier) = &bin.modifier {
                    if let Some(matching) = &modifier.matching {
                        self.grouping
                            .extend(matching.labels().labels.iter().cloned());
                    }
                    if let Some(group) = modifier.card.labels() {
                        self.grouping.extend(group.labels.iter().cloned());
                    }
                }
            }
            _ => {}
        }
        Ok(true)
    }
}

impl Reads {
    fn selector(&mut self, vs: &VectorSelector) -> Result<(), String> {
        let matchers = matchers(&vs.matchers);
        let metric = vs
            .name
            .clone()
            .or_else(|| {
                matchers
                    .iter()
                    .find(|(l, eq, _)| l == "__name__" && *eq)
                    .map(|m| m.2.clone())
            })
            .ok_or_else(|| format!("a selector without a metric name: {vs}"))?;
        self.selectors.push(Selector {
            metric,
            matchers: matchers.into_iter().filter(|m| m.0 != "__name__").collect(),
        });
        Ok(())
    }
}

fn matchers(m: &Matchers) -> Vec<(String, bool, String)> {
    m.matchers
        .iter()
        .chain(m.or_matchers.iter().flatten())
        .map(|m| {
            (
                m.name.clone(),
                matches!(m.op, MatchOp::Equal),
                m.value.clone(),
            )
        })
        .collect()
}

/// Selectors, matchers and grouping labels come out of nested aggregations, binary
/// operators with their matching clauses, and range functions.
#[test]
fn reads_selectors_and_grouping() {
    let r = reads(
        "sum by (route, code) (rate(tokex_requests_total{status=~\"5..\", code!=\"\"}[5m])) \
         / ignoring (code) group_left sum by (route) (rate(tokex_requests_total[5m]))",
    )
    .unwrap();
    assert_eq!(r.selectors.len(), 2);
    assert_eq!(r.selectors[0].metric, "tokex_requests_total");
    assert_eq!(
        r.selectors[0].matchers,
        [
            ("status".to_string(), false, "5..".to_string()),
            ("code".to_string(), false, String::new())
        ]
    );
    assert_eq!(r.grouping, BTreeSet::from(["code".into(), "route".into()]));
    assert!(reads("sum(").is_err());
    assert_eq!(
        grafana("rate(x{pod=~\"$pod\", ns=~\"${namespace}\"}[$__rate_interval])"),
        "rate(x{pod=~\".*\", ns=~\".*\"}[5m])"
    );
}
