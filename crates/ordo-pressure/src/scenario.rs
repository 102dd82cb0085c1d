//! What a run does: its stages, its traffic mix, its thresholds and its bounds. From the
//! command line (`--stages 100/s:30s,1000/s:30s,peak`) or a TOML scenario file.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One stage of load.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Stage {
    /// Requests sent at `per_s` a second for `secs`, whatever the server does.
    Rate { per_s: f64, secs: f64 },
    /// Search for the highest rate that keeps p99 and the error rate under the thresholds.
    Peak,
}

impl Stage {
    pub fn label(&self) -> String {
        match self {
            Stage::Rate { per_s, secs } => format!("{per_s}/s:{secs}s"),
            Stage::Peak => "peak".to_string(),
        }
    }
}

/// `100/s:30s,1000/s:1m,peak`; durations in `ms`, `s` or `m`.
pub fn parse_stages(text: &str) -> Result<Vec<Stage>> {
    let mut stages = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part == "peak" {
            stages.push(Stage::Peak);
            continue;
        }
        let (rate, duration) = part
            .split_once(':')
            .with_context(|| format!("stage `{part}`: expected RATE/s:DURATION or peak"))?;
        let per_s: f64 = rate
            .strip_suffix("/s")
            .and_then(|r| r.parse().ok())
            .filter(|r: &f64| r.is_finite() && *r > 0.0)
            .with_context(|| format!("stage `{part}`: `{rate}` is not a rate such as 100/s"))?;
        let secs = parse_duration(duration).with_context(|| format!("stage `{part}`"))?.as_secs_f64();
        stages.push(Stage::Rate { per_s, secs });
    }
    if stages.is_empty() {
        bail!("no stages: give e.g. --stages 100/s:30s,peak");
    }
    Ok(stages)
}

/// `250ms`, `30s`, `2m`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let (number, unit) =
        text.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((text, ""), |i| text.split_at(i));
    let n: f64 = number
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n > 0.0)
        .with_context(|| format!("`{text}` is not a duration such as 30s"))?;
    let secs = match unit {
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        _ => bail!("`{text}`: the unit is ms, s or m"),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// `3x`, `0.5x` or `3`.
pub fn parse_speed(text: &str) -> Result<f64> {
    text.trim_end_matches('x')
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s > 0.0)
        .with_context(|| format!("`{text}` is not a speed such as 3x"))
}

/// Relative weights of the operations of the mix (the shipped specs' lifecycles).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mix {
    pub place: u32,
    pub pay: u32,
    pub ship: u32,
    pub deliver: u32,
    pub cancel: u32,
    pub refund: u32,
    pub deposit: u32,
    pub initiate: u32,
    pub settle: u32,
    pub fail: u32,
    pub read: u32,
}

impl Default for Mix {
    fn default() -> Mix {
        Mix {
            place: 30,
            pay: 20,
            ship: 10,
            deliver: 8,
            cancel: 6,
            refund: 2,
            deposit: 4,
            initiate: 8,
            settle: 6,
            fail: 2,
            read: 4,
        }
    }
}

/// The thresholds a stage must keep.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    pub p99_ms: f64,
    /// Errors over requests (0.001 = 0.1 %).
    pub error_rate: f64,
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds { p99_ms: 150.0, error_rate: 0.001 }
    }
}

/// How the `peak` stage searches.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeakSearch {
    /// The first rate tried (after the stage before, its rate).
    pub start_per_s: f64,
    /// How long each rate is held.
    pub step_secs: f64,
    /// Rates double until one breaks a threshold or this is reached.
    pub max_per_s: f64,
    /// Then this many bisections between the last good and the first bad rate.
    pub refine_steps: u32,
}

impl Default for PeakSearch {
    fn default() -> PeakSearch {
        PeakSearch { start_per_s: 50.0, step_secs: 5.0, max_per_s: 20_000.0, refine_steps: 3 }
    }
}

/// How the client retries a request that got no answer, a 5xx, a 429 or 408, or a key
/// still in use: with the same key, backing off, honouring `Retry-After`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retry {
    /// Sends after the first (0, the default: the first answer is final, so a pressure run
    /// measures the server, not the client's patience).
    pub attempts: u32,
    /// The first back-off, doubled after each retry up to `backoff_max_ms`, half of it
    /// random.
    pub backoff_ms: u64,
    pub backoff_max_ms: u64,
    /// A request gives up this long after it was due.
    pub budget_ms: u64,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry { attempts: 0, backoff_ms: 100, backoff_max_ms: 2_000, budget_ms: 30_000 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// As on the command line: `100/s:30s,peak`.
    pub stages: String,
    pub mix: Mix,
    pub thresholds: Thresholds,
    pub peak: PeakSearch,
    /// Share of placements on the one hot SKU (the flash sale), and its stock.
    pub hot_share: f64,
    pub hot_stock: i64,
    /// Other SKUs, each with this much stock.
    pub skus: usize,
    pub stock_per_sku: i64,
    /// Wallets (for orders) and accounts (for transfers), each funded with this much.
    pub accounts: usize,
    pub balance: i64,
    /// Share of requests whose response is "lost": re-sent with the same key at once, in
    /// parallel, or later (after `lost_later_ms`).
    pub lost_parallel_share: f64,
    pub lost_later_share: f64,
    pub lost_later_ms: u64,
    /// Share of events sent to a random order whatever its state (conflicting commands).
    pub conflict_share: f64,
    /// Every request is bounded by this.
    pub request_timeout_ms: u64,
    /// The run stops at this many requests or this long, whichever comes first.
    pub max_requests: u64,
    pub max_secs: f64,
    /// Requests in flight at most; a request due when this many are in flight is counted
    /// as an error (the client could not send it on time), never delayed.
    pub max_in_flight: usize,
    pub retry: Retry,
    pub seed: u64,
}

impl Default for Scenario {
    fn default() -> Scenario {
        Scenario {
            stages: "50/s:5s".to_string(),
            mix: Mix::default(),
            thresholds: Thresholds::default(),
            peak: PeakSearch::default(),
            hot_share: 0.2,
            hot_stock: 200,
            skus: 20,
            stock_per_sku: 1_000_000,
            accounts: 20,
            balance: 1_000_000_000_000,
            lost_parallel_share: 0.02,
            lost_later_share: 0.03,
            lost_later_ms: 500,
            conflict_share: 0.05,
            request_timeout_ms: 5_000,
            max_requests: 200_000,
            max_secs: 600.0,
            max_in_flight: 4_096,
            retry: Retry::default(),
            seed: 1,
        }
    }
}

impl Scenario {
    pub fn from_toml(text: &str) -> Result<Scenario> {
        let s: Scenario = toml::from_str(text)?;
        s.validate()?;
        Ok(s)
    }

    pub fn validate(&self) -> Result<()> {
        parse_stages(&self.stages)?;
        let shares = [self.hot_share, self.lost_parallel_share, self.lost_later_share, self.conflict_share];
        if shares.iter().any(|s| !(0.0..=1.0).contains(s)) {
            bail!("shares are between 0 and 1");
        }
        if self.skus == 0 || self.accounts < 2 {
            bail!("at least one SKU and two accounts");
        }
        if self.max_in_flight == 0 || self.request_timeout_ms == 0 || self.max_requests == 0 {
            bail!("max_in_flight, request_timeout_ms and max_requests must be positive");
        }
        if self.retry.attempts > 0 && (self.retry.backoff_ms == 0 || self.retry.budget_ms == 0) {
            bail!("retries need a positive backoff_ms and budget_ms");
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stages_parse_and_refuse_nonsense() {
        assert_eq!(
            parse_stages("100/s:30s, 1000/s:1m,peak").unwrap(),
            vec![
                Stage::Rate { per_s: 100.0, secs: 30.0 },
                Stage::Rate { per_s: 1000.0, secs: 60.0 },
                Stage::Peak
            ]
        );
        assert_eq!(parse_stages("2.5/s:250ms").unwrap(), vec![Stage::Rate { per_s: 2.5, secs: 0.25 }]);
        for bad in ["", "100:30s", "100/s", "0/s:1s", "-1/s:1s", "10/s:0s", "10/s:3h", "x/s:1s", "fast"] {
            assert!(parse_stages(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_speed("3x").unwrap(), 3.0);
        assert!(parse_speed("0x").is_err());
    }

    #[test]
    fn a_scenario_file_overrides_defaults_and_refuses_unknown_keys() {
        let s = Scenario::from_toml("stages = \"10/s:1s\"\nhot_share = 0.5\n[thresholds]\np99_ms = 50\n")
            .unwrap();
        assert_eq!(s.hot_share, 0.5);
        assert_eq!(s.thresholds.p99_ms, 50.0);
        assert_eq!(s.thresholds.error_rate, 0.001);
        assert!(Scenario::from_toml("stagez = \"10/s:1s\"").is_err());
        assert!(Scenario::from_toml("hot_share = 2.0").is_err());
    }
}
