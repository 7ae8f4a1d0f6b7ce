//! Turns the samples one boot printed (`BULKHEAD-BENCH <json>`, see tests/src/bench) into
//! ratios and a table. Time under TCG is emulated, so every figure compared is a ratio of two
//! samples of the same round, taken minutes apart at most in the same boot; a sample whose
//! calibration loop ran slower than [`GUARD`] times the boot's median calibration was taken
//! while the guest was slowed by other load and is left out (the table says how many were).

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// A sample counts only if its calibration took at most this many times the boot's median.
/// Against the median, not the fastest: on an idle host the loop itself varies by about 15%
/// between the fastest and the median run, and only the slow tail is another load's doing.
pub const GUARD: f64 = 1.25;

/// A ratio over the rounds: median and spread.
#[derive(Debug, Clone, PartialEq)]
pub struct Ratio {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub rounds: usize,
}

impl Ratio {
    fn of(mut values: Vec<f64>) -> Option<Ratio> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let mid = values.len() / 2;
        let median = if values.len().is_multiple_of(2) {
            (values[mid - 1] + values[mid]) / 2.0
        } else {
            values[mid]
        };
        Some(Ratio {
            median,
            min: values[0],
            max: values[values.len() - 1],
            rounds: values.len(),
        })
    }

    fn cell(ratio: Option<&Ratio>) -> String {
        match ratio {
            Some(r) if r.rounds > 1 => {
                format!("{:.2}x ({:.2}-{:.2})", r.median, r.min, r.max)
            }
            Some(r) => format!("{:.2}x", r.median),
            None => "n/a".to_owned(),
        }
    }

    fn to_json(&self) -> Value {
        json!({"median": self.median, "min": self.min, "max": self.max, "rounds": self.rounds})
    }
}

/// Which two samples a comparison divides: (state, placement) over (state, placement).
type Side = (&'static str, &'static str);

const MICRO_COMPARISONS: &[(&str, Side, Side)] = &[
    (
        "bulkhead / none",
        ("bulkhead", "outside"),
        ("none", "outside"),
    ),
    ("floor / none", ("floor", "outside"), ("none", "outside")),
    (
        "bulkhead / floor",
        ("bulkhead", "outside"),
        ("floor", "outside"),
    ),
    (
        "in domain / none",
        ("bulkhead", "inside"),
        ("none", "outside"),
    ),
    (
        "in domain / outside",
        ("bulkhead", "inside"),
        ("bulkhead", "outside"),
    ),
];

const START_COMPARISONS: &[(&str, &str, &str)] = &[
    (
        "bulkhead exec / plain fork+exec",
        "bulkhead-exec",
        "plain-fork-exec",
    ),
    (
        "bulkhead-exec (static launcher) / plain fork+exec",
        "launcher-exec",
        "plain-fork-exec",
    ),
    (
        "register + seal / plain fork+exec",
        "register-seal",
        "plain-fork-exec",
    ),
];

/// Everything one boot measured, with what was dropped.
pub struct Report {
    samples: Vec<Value>,
    pub median_calibration: f64,
    pub dropped: usize,
}

fn text<'a>(sample: &'a Value, key: &str) -> &'a str {
    sample[key].as_str().unwrap_or_default()
}

fn number(sample: &Value, key: &str) -> Option<f64> {
    sample[key].as_f64()
}

impl Report {
    pub fn new(samples: Vec<Value>) -> Self {
        let mut calibrations: Vec<f64> = samples
            .iter()
            .filter_map(|s| number(s, "calibration_ns"))
            .filter(|c| *c > 0.0)
            .collect();
        calibrations.sort_by(f64::total_cmp);
        let median_calibration = calibrations
            .get(calibrations.len() / 2)
            .copied()
            .unwrap_or(f64::INFINITY);
        let mut report = Report {
            samples,
            median_calibration,
            dropped: 0,
        };
        report.dropped = report
            .samples
            .iter()
            .filter(|s| matches!(text(s, "kind"), "micro" | "macro" | "start"))
            .filter(|s| !report.at_full_speed(s))
            .count();
        report
    }

    fn at_full_speed(&self, sample: &Value) -> bool {
        number(sample, "calibration_ns").is_some_and(|c| c <= self.median_calibration * GUARD)
    }

    fn kind(&self, kind: &str) -> impl Iterator<Item = &Value> {
        let kind = kind.to_owned();
        self.samples.iter().filter(move |s| text(s, "kind") == kind)
    }

    /// Names of a kind's workloads, in the order first measured.
    fn names(&self, kind: &str) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for sample in self.kind(kind) {
            let name = text(sample, "name");
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
        names
    }

    /// round -> ns of the full-speed sample of (kind, name, state, placement).
    fn series(&self, kind: &str, name: &str, (state, placement): Side) -> BTreeMap<u64, f64> {
        self.kind(kind)
            .filter(|s| {
                text(s, "name") == name
                    && text(s, "state") == state
                    && text(s, "placement") == placement
                    && self.at_full_speed(s)
            })
            .filter_map(|s| Some((s["round"].as_u64()?, number(s, "ns")?)))
            .collect()
    }

    /// `over / under` per round where both were measured at full speed.
    fn ratio(&self, kind: &str, over: (&str, Side), under: (&str, Side)) -> Option<Ratio> {
        let over_series = self.series(kind, over.0, over.1);
        let under_series = self.series(kind, under.0, under.1);
        Ratio::of(
            over_series
                .iter()
                .filter_map(|(round, o)| under_series.get(round).map(|u| o / u))
                .filter(|r| r.is_finite())
                .collect(),
        )
    }

    fn micro_ratios(&self, kind: &str) -> Vec<(String, Vec<Option<Ratio>>)> {
        self.names(kind)
            .into_iter()
            .map(|name| {
                let ratios = MICRO_COMPARISONS
                    .iter()
                    .map(|(_, over, under)| {
                        self.ratio(kind, (name.as_str(), *over), (name.as_str(), *under))
                    })
                    .collect();
                (name, ratios)
            })
            .collect()
    }

    fn start_ratios(&self) -> Vec<(&'static str, Option<Ratio>)> {
        START_COMPARISONS
            .iter()
            .map(|(label, over, under)| {
                let side = ("bulkhead", "outside");
                (*label, self.ratio("start", (over, side), (under, side)))
            })
            .collect()
    }

    /// The geometric mean of the medians of a column (the macro workloads' summary).
    fn geo_mean(rows: &[(String, Vec<Option<Ratio>>)], column: usize) -> Option<f64> {
        let medians: Vec<f64> = rows
            .iter()
            .filter_map(|(_, ratios)| ratios[column].as_ref().map(|r| r.median))
            .collect();
        (!medians.is_empty())
            .then(|| (medians.iter().map(|m| m.ln()).sum::<f64>() / medians.len() as f64).exp())
    }

    pub fn table(&self, kernel: &str) -> String {
        let mut out = String::new();
        let meta = self.kind("meta").next().cloned().unwrap_or(Value::Null);
        out.push_str(&format!(
            "#### {kernel} (guest kernel {}, profile {}, {} rounds; {} of {} timed samples dropped as taken at reduced guest speed)\n\n",
            text(&meta, "kernel"),
            text(&meta, "profile"),
            meta["rounds"],
            self.dropped,
            self.kind("micro").count() + self.kind("macro").count() + self.kind("start").count(),
        ));
        let header = MICRO_COMPARISONS
            .iter()
            .map(|(label, _, _)| *label)
            .collect::<Vec<_>>()
            .join(" | ");
        out.push_str(&format!("| microbenchmark | {header} |\n|---|"));
        out.push_str(&"---|".repeat(MICRO_COMPARISONS.len()));
        out.push('\n');
        for (name, ratios) in self.micro_ratios("micro") {
            let cells: Vec<String> = ratios.iter().map(|r| Ratio::cell(r.as_ref())).collect();
            out.push_str(&format!("| {name} | {} |\n", cells.join(" | ")));
        }
        out.push_str("\n| file-tree workload, outside | bulkhead / none | floor / none | bulkhead / floor |\n|---|---|---|---|\n");
        let macro_rows = self.micro_ratios("macro");
        for (name, ratios) in &macro_rows {
            let cells: Vec<String> = ratios[..3]
                .iter()
                .map(|r| Ratio::cell(r.as_ref()))
                .collect();
            out.push_str(&format!("| {name} | {} |\n", cells.join(" | ")));
        }
        let geo: Vec<String> = (0..3)
            .map(|c| Self::geo_mean(&macro_rows, c).map_or("n/a".into(), |g| format!("{g:.2}x")))
            .collect();
        out.push_str(&format!("| geometric mean | {} |\n", geo.join(" | ")));
        out.push_str("\n| task start | ratio |\n|---|---|\n");
        for (label, ratio) in self.start_ratios() {
            out.push_str(&format!("| {label} | {} |\n", Ratio::cell(ratio.as_ref())));
        }
        out.push_str(&self.broker_table());
        for memory in self.kind("memory") {
            out.push_str(&format!(
                "\nagent memory after the broker load: {} KiB resident, peak {} KiB\n",
                memory["rss_kib"], memory["peak_rss_kib"]
            ));
        }
        out
    }

    fn broker_table(&self) -> String {
        let rows: Vec<&Value> = self.kind("broker").collect();
        if rows.is_empty() {
            return String::new();
        }
        let mut out = String::from(
            "\n| broker (state on) | clients | ops/s (TCG) | vs 1 client | p50 ms | p99 ms | p99 / status p99 |\n|---|---|---|---|---|---|---|\n",
        );
        let find = |name: &str, clients: u64| {
            rows.iter()
                .find(|r| text(r, "name") == name && r["clients"].as_u64() == Some(clients))
        };
        for row in &rows {
            let name = text(row, "name");
            let clients = row["clients"].as_u64().unwrap_or(0);
            let throughput = number(row, "throughput_per_s").unwrap_or(0.0);
            let scaling = find(name, 1)
                .and_then(|one| number(one, "throughput_per_s"))
                .filter(|t| *t > 0.0)
                .map_or("n/a".into(), |t| format!("{:.2}x", throughput / t));
            let p99 = number(row, "p99_ns").unwrap_or(0.0);
            let against_status = find("status", clients)
                .and_then(|s| number(s, "p99_ns"))
                .filter(|p| *p > 0.0)
                .map_or("n/a".into(), |p| format!("{:.2}x", p99 / p));
            out.push_str(&format!(
                "| {name} ({}) | {clients} | {throughput:.1} | {scaling} | {:.1} | {:.1} | {against_status} |\n",
                text(row, "storage"),
                number(row, "p50_ns").unwrap_or(0.0) / 1e6,
                p99 / 1e6,
            ));
        }
        out
    }

    /// The samples and the ratios, for comparing two commits.
    pub fn to_json(&self, kernel: &str) -> Value {
        let micro = |kind: &str| -> Value {
            self.micro_ratios(kind)
                .into_iter()
                .map(|(name, ratios)| {
                    let by_label: serde_json::Map<String, Value> = MICRO_COMPARISONS
                        .iter()
                        .zip(ratios)
                        .map(|((label, _, _), r)| {
                            ((*label).to_owned(), r.map_or(Value::Null, |r| r.to_json()))
                        })
                        .collect();
                    (name, Value::Object(by_label))
                })
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let start: serde_json::Map<String, Value> = self
            .start_ratios()
            .into_iter()
            .map(|(label, r)| (label.to_owned(), r.map_or(Value::Null, |r| r.to_json())))
            .collect();
        json!({
            "kernel": kernel,
            "guard": GUARD,
            "dropped_samples": self.dropped,
            "micro": micro("micro"),
            "macro": micro("macro"),
            "start": start,
            "broker": self.kind("broker").cloned().collect::<Vec<_>>(),
            "memory": self.kind("memory").cloned().collect::<Vec<_>>(),
            "samples": self.samples,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, state: &str, placement: &str, round: u64, ns: f64, calib: f64) -> Value {
        json!({"kind": "micro", "name": name, "state": state, "placement": placement,
               "round": round, "ns": ns, "calibration_ns": calib})
    }

    #[test]
    fn ratios_pair_samples_of_the_same_round_and_skip_slow_ones() {
        let report = Report::new(vec![
            sample("stat", "bulkhead", "outside", 0, 120.0, 100.0),
            sample("stat", "none", "outside", 0, 100.0, 100.0),
            sample("stat", "bulkhead", "outside", 1, 150.0, 101.0),
            sample("stat", "none", "outside", 1, 100.0, 100.0),
            // Round 2's bulkhead sample ran at reduced guest speed: the pair is dropped.
            sample("stat", "bulkhead", "outside", 2, 900.0, 200.0),
            sample("stat", "none", "outside", 2, 100.0, 100.0),
        ]);
        assert_eq!(report.dropped, 1);
        let ratio = report
            .ratio(
                "micro",
                ("stat", ("bulkhead", "outside")),
                ("stat", ("none", "outside")),
            )
            .unwrap();
        assert_eq!(ratio.rounds, 2);
        assert!((ratio.median - 1.35).abs() < 1e-9, "{ratio:?}");
        assert!((ratio.min - 1.2).abs() < 1e-9 && (ratio.max - 1.5).abs() < 1e-9);
    }

    #[test]
    fn a_comparison_without_samples_is_not_applicable_not_zero() {
        let report = Report::new(vec![sample("stat", "none", "outside", 0, 100.0, 100.0)]);
        let table = report.table("bookworm");
        assert!(table.contains("| stat | n/a |"), "{table}");
    }

    #[test]
    fn broker_rows_compare_with_one_client_and_with_status() {
        let broker = |name: &str, clients: u64, throughput: f64, p99: f64| {
            json!({"kind": "broker", "name": name, "clients": clients, "storage": "tmpfs",
                   "throughput_per_s": throughput, "p50_ns": 1e6, "p99_ns": p99})
        };
        let report = Report::new(vec![
            broker("status", 1, 100.0, 2e6),
            broker("status", 8, 300.0, 4e6),
            broker("mint", 1, 50.0, 4e6),
            broker("mint", 8, 75.0, 12e6),
        ]);
        let table = report.broker_table();
        assert!(
            table.contains("| mint (tmpfs) | 8 | 75.0 | 1.50x | 1.0 | 12.0 | 3.00x |"),
            "{table}"
        );
    }
}
