//! `rpm-gateway questionnaires`: check a program's own (licensed)
//! questionnaire definitions before deploying them, and list what a
//! gateway would load; neither needs the store.

use anyhow::Result;
use clap::Subcommand;
use device_profiles::questionnaire::{bundled, QuestionnaireSet};
use std::path::PathBuf;
use std::process::ExitCode;

/// `questionnaires` subcommands.
#[derive(Debug, Subcommand)]
pub enum QuestionnairesCommand {
    /// Validate a directory of FHIR Questionnaire JSON files (beside the
    /// bundled ones); every error with file, line and field.
    Check {
        /// Directory of `*.json` definitions.
        dir: PathBuf,
    },
    /// List the bundled definitions and their scores.
    List,
}

fn print(set: &QuestionnaireSet) {
    for q in set.iter() {
        let scores: Vec<String> = q
            .scores
            .iter()
            .map(|s| {
                let (system, code) = s.metric.coding();
                format!("{} ({system}|{code})", s.metric)
            })
            .chain(
                q.items
                    .iter()
                    .filter_map(|i| i.reading.map(|m| format!("{m} (item {})", i.link_id))),
            )
            .collect();
        println!(
            "{}|{}  {}  -> {}",
            q.url,
            q.version,
            q.title,
            scores.join(", ")
        );
    }
}

/// Runs a `questionnaires` subcommand.
pub fn run(cmd: QuestionnairesCommand) -> Result<ExitCode> {
    match cmd {
        QuestionnairesCommand::List => {
            print(&bundled());
            Ok(ExitCode::SUCCESS)
        }
        QuestionnairesCommand::Check { dir } => {
            let mut set = bundled();
            let before = set.len();
            match set.add_dir(&dir) {
                Ok(()) => {
                    println!(
                        "questionnaires OK: {} definition(s) besides the {before} bundled",
                        set.len() - before
                    );
                    print(&set);
                    Ok(ExitCode::SUCCESS)
                }
                Err(errors) => {
                    for e in errors {
                        eprintln!("{e}");
                    }
                    Ok(ExitCode::from(2))
                }
            }
        }
    }
}
