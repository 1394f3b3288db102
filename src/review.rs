//! After a run: what the faces (the CLI, the web app, experiments) call once a saved run has
//! finished. Its analysis (`analysis.json`, and `charts/*.svg` with
//! `output.save_visualizations`) when `output.auto_analysis` is on; then, when
//! `validation.in_character` is on, a judge model's in-character scores, with the personas the
//! run's journal recorded.
//!
//! Not part of the engine: analysis reads saved records only, so `troupe analyze` does the same
//! for old runs, and the engine never waits on a judge.
//!
//! ```no_run
//! # async fn demo(engine: troupe_sim::engine::SimulationEngine, plan: troupe_sim::scenario::RunPlan)
//! # -> Result<(), troupe_sim::engine::EngineError> {
//! use troupe_sim::engine::RunOptions;
//! let opts = RunOptions { save_under: Some("outputs/conversations".into()), ..Default::default() };
//! let results = troupe_sim::review::finish(engine.start(plan, opts).await?).await?;
//! assert!(results.analysis_error.is_none());
//! # Ok(()) }
//! ```

use std::path::Path;

use crate::analysis::{ConversationAnalysis, save_analysis, write_analysis};
use crate::engine::{EngineError, RunHandle, SimulationEngine};
use crate::record::journal::{FILE_NAME as JOURNAL_FILE, read_header};
use crate::record::results::SimulationResults;
use crate::validation::Caller;
use crate::validation::in_character::judge_run;

/// Waits for a started run, then reviews it (see [`review`]).
pub async fn finish(handle: RunHandle) -> Result<SimulationResults, EngineError> {
    let engine = handle.engine().clone();
    let mut results = handle.wait().await?;
    review(&mut results, &engine).await;
    Ok(results)
}

/// Analyses a finished, saved run as its config asks (nothing for a run kept in memory). The run
/// is already saved; a review that fails says so in `results.analysis_error` and how to redo it.
pub async fn review(results: &mut SimulationResults, engine: &SimulationEngine) {
    let Some(dir) = results.run_dir.clone() else { return };
    let config = engine.config();
    if !config.output.auto_analysis {
        return;
    }
    match save_analysis(results, &dir, config.output.save_visualizations) {
        Err(e) => {
            results.analysis_error =
                Some(format!("the run was saved but its analysis was not: {e}; run `troupe analyze` on the folder"))
        }
        Ok((analysis, _)) if config.validation.in_character => {
            if let Err(why) = judge(analysis, results, engine, &dir).await {
                results.analysis_error = Some(format!(
                    "the run was saved but its in-character analysis was not: {why}; run `troupe analyze --in-character` on the folder"
                ));
            }
        }
        Ok(_) => {}
    }
}

/// Scores each persona's messages against its own facts and adds them to `analysis.json`.
async fn judge(
    mut analysis: ConversationAnalysis,
    results: &SimulationResults,
    engine: &SimulationEngine,
    dir: &Path,
) -> Result<(), String> {
    let config = engine.config();
    let header = read_header(&dir.join(JOURNAL_FILE)).map_err(|e| e.to_string())?;
    let personas = header.plan.all_personas();
    let caller = Caller::new(engine.provider().clone(), config, engine.pricing().clone())
        .with_prior_spend(results.metrics.counts.cost_usd);
    let model = config.validation.judge_model_or(&results.config.model).to_string();
    let ic = judge_run(&caller, config, &personas, results, &model).await;
    tracing::info!(mean_score = ?ic.mean_score, calls = ic.calls, "in-character analysis done");
    analysis.in_character = Some(ic);
    write_analysis(&analysis, results, dir, false).map(|_| ()).map_err(|e| e.to_string())
}
