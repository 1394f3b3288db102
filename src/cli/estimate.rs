//! `troupe estimate`: calls, tokens and cost before running.

use std::process::ExitCode;

use clap::Args;
use troupe_sim::config::{ProviderKind, SimulationConfig};
use troupe_sim::cost::Pricing;
use troupe_sim::estimate::estimate;
use troupe_sim::llm::provider_bills;

use super::GlobalArgs;
use super::plan::PlanArgs;

#[derive(Debug, Args)]
pub struct EstimateArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &GlobalArgs, a: EstimateArgs) -> anyhow::Result<ExitCode> {
    let (plan, cfg) = super::plan::load(g, &a.plan, &a.plan.flags()?)?;
    // No provider is built: an estimate never fetches the local model or calls a server.
    let pricing = Pricing::load(&cfg.llm.pricing_file)?;
    let mut e = estimate(&plan, &cfg, &pricing);
    if !provider_bills(&cfg) {
        e.assumptions.push(format!(
            "the configured provider ({}) costs nothing; the cost shown is what {} would cost with a paid provider",
            free_provider(&cfg),
            cfg.llm.model
        ));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&e)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<24} {:>8} {:>14} {:>14} {:>12}", "MODEL", "CALLS", "PROMPT TOK", "OUTPUT TOK", "COST USD");
    for (model, m) in &e.by_model {
        let cost = m.cost_usd.map(|c| format!("{c:.4}")).unwrap_or_else(|| "unpriced".into());
        println!("{model:<24} {:>8} {:>14} {:>14} {cost:>12}", m.calls, m.prompt_tokens, m.completion_tokens);
    }
    println!("{:<24} {:>8} {:>14} {:>14} {:>12.4}", "total", e.calls, e.prompt_tokens, e.completion_tokens, e.cost_usd);
    for a in &e.assumptions {
        println!("assumes: {a}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Names the free provider a run would use.
fn free_provider(cfg: &SimulationConfig) -> &'static str {
    match cfg.llm.provider {
        ProviderKind::Simulated => "simulated",
        ProviderKind::Local => "local",
        _ => "auto: the local model, else the simulated provider, since no API key or base_url is set",
    }
}
