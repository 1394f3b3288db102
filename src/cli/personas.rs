//! `troupe personas ...`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use troupe_sim::persona::PersonaDatabase;

use super::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum PersonasCmd {
    /// List personas, optionally only those with any of the given tags
    List(ListArgs),
    /// Print one persona as JSON, optionally with fragments applied
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Persona id
    pub id: String,
    /// Fragment file(s) to deep-merge into the persona, in order
    #[arg(long = "fragment", value_name = "FILE")]
    pub fragments: Vec<PathBuf>,
    /// Persona file or folder [default: simulation.personas_file]
    #[arg(long, value_name = "PATH")]
    pub personas_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Comma-separated tags; a persona matches when it has any of them
    #[arg(long, value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Persona file or folder [default: simulation.personas_file]
    #[arg(long, value_name = "PATH")]
    pub personas_file: Option<PathBuf>,
    /// Print JSON (the personas in the native schema)
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &GlobalArgs, cmd: PersonasCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        PersonasCmd::List(a) => list(g, a),
        PersonasCmd::Show(a) => show(g, a),
    }
}

fn show(g: &GlobalArgs, a: ShowArgs) -> anyhow::Result<ExitCode> {
    let path = match a.personas_file {
        Some(p) => p,
        None => super::load_config(g, None, &[])?.config.simulation.personas_file,
    };
    let db = PersonaDatabase::load(&path)?;
    let Some(mut p) = db.get(&a.id).cloned() else {
        let ids: Vec<&str> = db.personas.iter().map(|p| p.id.as_str()).collect();
        let hint = troupe_sim::scenario::did_you_mean(&a.id, &ids)
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        return Err(super::UsageError(format!("no persona `{}` in {}{hint}", a.id, path.display())).into());
    };
    for f in &a.fragments {
        let fdb = PersonaDatabase::load(f)?;
        let Some(frag) = fdb.fragments.first() else {
            return Err(super::UsageError(format!(
                "{} is not a fragment file (expected {{\"type\": \"Fragment\", \"persona\": {{...}}}})",
                f.display()
            ))
            .into());
        };
        p = troupe_sim::persona::apply_fragment(&p, frag)?;
    }
    println!("{}", serde_json::to_string_pretty(&p.to_saved_value())?);
    Ok(ExitCode::SUCCESS)
}

fn list(g: &GlobalArgs, a: ListArgs) -> anyhow::Result<ExitCode> {
    let path = match a.personas_file {
        Some(p) => p,
        None => super::load_config(g, None, &[])?.config.simulation.personas_file,
    };
    let db = PersonaDatabase::load(&path)?;
    let found = db.by_tags(&a.tags);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&found)?);
        return Ok(ExitCode::SUCCESS);
    }
    let idw = found.iter().map(|p| p.id.len()).max().unwrap_or(2).max(2);
    let nw = found.iter().map(|p| p.name.chars().count()).max().unwrap_or(4).max(4);
    println!("{:idw$}  {:nw$}  ROLE / TAGS", "ID", "NAME");
    for p in &found {
        println!("{:idw$}  {:nw$}  {} [{}]", p.id, p.name, p.role, p.tags.join(", "));
    }
    println!("{} of {} persona(s)", found.len(), db.personas.len());
    Ok(ExitCode::SUCCESS)
}
