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
    /// Draft personas with the model from a description of a population (printed for review;
    /// --save adds them to the database, with a backup)
    Generate(GenerateArgs),
    /// Check a persona against expectations: a short seeded interview through the configured
    /// provider, then a judge model scores the answers 0.0-1.0 against the expectations and the
    /// persona's own facts (exit 0 at or above --min-score, 1 below or without a verdict)
    Check(Box<super::persona_check::CheckArgs>),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The population, e.g. "nurses in a rural hospital"
    #[arg(long)]
    pub context: String,
    /// How many personas (1 to 20)
    #[arg(long, default_value_t = 3)]
    pub count: usize,
    /// Use the built-in simulated provider (offline, deterministic drafts)
    #[arg(long)]
    pub simulated: bool,
    /// Add the drafts to the database (simulation.personas_file): a file keeps its shape, a folder
    /// gets one new file per draft; an unreadable database or a one-agent file is refused before
    /// any draft is made
    #[arg(long)]
    pub save: bool,
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
    /// Print the system prompt the persona gets (every fact it holds) instead of its JSON
    #[arg(long)]
    pub prompt: bool,
    /// With --prompt: write it within this many tokens, leaving out the least important facts
    /// [default: llm.persona_budget_tokens, else a quarter of llm.model's context]
    #[arg(long, value_name = "TOKENS", requires = "prompt")]
    pub budget: Option<u32>,
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
        PersonasCmd::Generate(a) => generate(g, a),
        PersonasCmd::Check(a) => super::persona_check::run(g, *a),
    }
}

fn generate(g: &GlobalArgs, a: GenerateArgs) -> anyhow::Result<ExitCode> {
    use std::sync::Arc;
    use troupe_sim::persona::load::Layout;
    use troupe_sim::persona::{SaveTarget, add_personas, check_add};
    use troupe_sim::prompt::generate::{GenerateRequest, generate_personas};

    let cfg = super::load_config(g, None, &super::Flags::default())?.config;
    let path = cfg.simulation.personas_file.clone();
    // With --save the database is read back before the model is asked, so a save that would be
    // refused (an unreadable file, a one-agent file) costs nothing and drafts nothing.
    let db = if a.save {
        check_add(&path, a.count)?
    } else {
        match PersonaDatabase::load(&path) {
            Ok(db) => Some(db),
            Err(e) if path.exists() => {
                eprintln!("note: the drafts' ids are not checked against the database, which cannot be read: {e}");
                None
            }
            Err(_) => None,
        }
    };
    let provider: Arc<dyn troupe_sim::llm::Provider> = if a.simulated {
        Arc::new(troupe_sim::llm::SimulatedProvider::new(cfg.llm.simulated.clone()))
    } else {
        let (p, notice) = troupe_sim::llm::provider_from_config(&cfg)?;
        if let Some(n) = notice {
            eprintln!("note: {n}");
        }
        p
    };
    let taken = db.as_ref().map(|d| d.personas.iter().map(|p| p.id.clone()).collect()).unwrap_or_default();
    let req = GenerateRequest {
        context: a.context.clone(),
        count: a.count,
        model: cfg.llm.model.clone(),
        temperature: cfg.llm.temperature.max(0.7),
        seed: cfg.simulation.run_seed,
    };
    let drafts =
        super::block_on(generate_personas(&provider, &req, &taken))?.map_err(|e| super::UsageError(e.to_string()))?;
    let values: Vec<_> = drafts.iter().map(|p| p.to_saved_value()).collect();
    println!("{}", serde_json::to_string_pretty(&values)?);
    if !a.save {
        eprintln!("review the drafts above; run again with --save to add them to the database");
        return Ok(ExitCode::SUCCESS);
    }
    let backups = path.parent().map(|p| p.join("backups")).unwrap_or_else(|| PathBuf::from("backups"));
    let r = add_personas(&path, &drafts, &backups)?;
    match r.target {
        SaveTarget::NewFile => eprintln!("created {} with {} persona(s)", path.display(), r.added),
        SaveTarget::File(layout) => {
            let shape = match layout {
                Layout::Wrapped => "appended to its \"personas\" array, the file's other keys kept",
                _ => "appended to its array",
            };
            eprintln!("added {} persona(s) to {} ({shape}; {} in the file now)", r.added, path.display(), r.total);
        }
        SaveTarget::Folder => {
            eprintln!(
                "added {} persona(s) to the folder {}, one new file each (no existing file changed):",
                r.added,
                path.display()
            );
            for w in &r.written {
                eprintln!("  {}", w.display());
            }
        }
    }
    if let Some(b) = r.backup {
        eprintln!("backup of the previous file: {}", b.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn show(g: &GlobalArgs, a: ShowArgs) -> anyhow::Result<ExitCode> {
    let config = super::load_config(g, None, &super::Flags::default())?.config;
    let path = a.personas_file.clone().unwrap_or_else(|| config.simulation.personas_file.clone());
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
    if a.prompt {
        use troupe_sim::prompt::{persona_prompt, prompt_budget};
        let model = p.model.clone().unwrap_or_else(|| config.llm.model.clone());
        let window = troupe_sim::llm::models::context_window(&model);
        let budget = prompt_budget(a.budget.or(config.llm.persona_budget_tokens), window);
        let prompt = persona_prompt(&p, budget);
        println!("{}", prompt.text);
        let tokens = prompt.tokens.unwrap_or_else(|| troupe_sim::llm::tokens::count_tokens(&prompt.text));
        eprintln!("{tokens} tokens of a budget of {budget} (for {model})");
        if !prompt.dropped.is_empty() {
            eprintln!("left out ({}), least important first: {}", prompt.dropped.len(), prompt.dropped.join(", "));
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}", serde_json::to_string_pretty(&p.to_saved_value())?);
    Ok(ExitCode::SUCCESS)
}

fn list(g: &GlobalArgs, a: ListArgs) -> anyhow::Result<ExitCode> {
    let path = match a.personas_file {
        Some(p) => p,
        None => super::load_config(g, None, &super::Flags::default())?.config.simulation.personas_file,
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
