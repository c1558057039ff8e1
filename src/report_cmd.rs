//! `vidflow report billing`: revenue, compute cost and margin per tier and
//! resolution class, from the billing Parquet dataset.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use vidflow_connectors::sinks::read_billing;
use vidflow_operators::billing::format_usd;
use vidflow_operators::ledger::EntryKind;

#[derive(Subcommand)]
pub enum ReportCmd {
    /// Revenue, compute cost and margin per tier and resolution.
    Billing {
        /// The analytics root (`<out_dir>/analytics` of `vidflow serve`).
        #[arg(long, default_value = "out/serve/analytics")]
        dir: PathBuf,
        /// Only entries on or after this UTC date (yyyy-mm-dd).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Default, Clone, serde::Serialize)]
struct Group {
    jobs_charged: u64,
    billed_ms: u64,
    revenue_micro: i64,
    compute_cost_micro: i64,
    margin_micro: i64,
}

impl Group {
    fn add(&mut self, kind: EntryKind, ms: u64, amount: i64, cost: i64) {
        // Charges are the only ledger rows (see vidflow_job::ledger).
        match kind {
            EntryKind::Charge => {
                self.jobs_charged += 1;
                self.billed_ms += ms;
                self.revenue_micro += amount;
            }
        }
        self.compute_cost_micro += cost;
        self.margin_micro = self.revenue_micro - self.compute_cost_micro;
    }
}

pub fn run(c: ReportCmd) -> Result<i32> {
    let ReportCmd::Billing {
        dir,
        since,
        tenant,
        json,
    } = c;
    if let Some(s) = &since {
        anyhow::ensure!(
            s.len() == 10 && s.as_bytes()[4] == b'-' && s.as_bytes()[7] == b'-',
            "--since {s:?}: expected yyyy-mm-dd"
        );
    }
    let rows =
        read_billing(&dir).with_context(|| format!("reading {}", dir.join("billing").display()))?;
    let mut groups: BTreeMap<(String, String), Group> = BTreeMap::new();
    let mut total = Group::default();
    for r in rows {
        if tenant.as_ref().is_some_and(|t| *t != r.tenant) {
            continue;
        }
        if since
            .as_ref()
            .is_some_and(|s| vidflow_operators::quota::date_of_ms(r.ts_ms) < *s)
        {
            continue;
        }
        groups
            .entry((r.tier.clone(), r.resolution_class.clone()))
            .or_default()
            .add(r.kind, r.billed_ms, r.amount_micro, r.compute_cost_micro);
        total.add(r.kind, r.billed_ms, r.amount_micro, r.compute_cost_micro);
    }
    if json {
        let g: Vec<_> = groups
            .iter()
            .map(|((tier, res), g)| serde_json::json!({"tier": tier, "resolution": res, "totals": g}))
            .collect();
        println!("{}", serde_json::json!({"groups": g, "total": total}));
        return Ok(0);
    }
    println!(
        "{:<9} {:<6} {:>7} {:>10} {:>14} {:>14} {:>14}",
        "tier", "res", "charged", "seconds", "revenue $", "compute $", "margin $"
    );
    let line = |tier: &str, res: &str, g: &Group| {
        println!(
            "{:<9} {:<6} {:>7} {:>10.3} {:>14} {:>14} {:>14}",
            tier,
            res,
            g.jobs_charged,
            g.billed_ms as f64 / 1000.0,
            format_usd(g.revenue_micro),
            format_usd(g.compute_cost_micro),
            format_usd(g.margin_micro)
        )
    };
    for ((tier, res), g) in &groups {
        line(tier, res, g);
    }
    line("total", "", &total);
    Ok(0)
}
