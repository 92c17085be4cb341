//! The loaded questionnaires: the bundled ones and a program's own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::model::Questionnaire;
use crate::profile::FileError;
use crate::reject::Reject;

/// Every loaded definition, by canonical URL and version.
#[derive(Debug, Clone, Default)]
pub struct QuestionnaireSet {
    by_url: BTreeMap<String, BTreeMap<String, Arc<Questionnaire>>>,
}

impl QuestionnaireSet {
    /// Adds a definition; a second one with the same URL and version is an error.
    pub fn add(&mut self, q: Questionnaire) -> Result<(), FileError> {
        let versions = self.by_url.entry(q.url.clone()).or_default();
        if let Some(first) = versions.get(&q.version) {
            return Err(FileError::whole(
                &q.file,
                "url",
                format!(
                    "`{}|{}` is already loaded from {}",
                    q.url,
                    q.version,
                    first.file.display()
                ),
            ));
        }
        versions.insert(q.version.clone(), Arc::new(q));
        Ok(())
    }

    /// Adds every `*.json` directly in `dir`, in file-name order; returns
    /// every broken file's error, not only the first.
    pub fn add_dir(&mut self, dir: &Path) -> Result<(), Vec<FileError>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| vec![FileError::whole(dir, "(file)", e.to_string())])?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        let mut errors = Vec::new();
        for file in files {
            let loaded = std::fs::read_to_string(&file)
                .map_err(|e| FileError::whole(&file, "(file)", e.to_string()))
                .and_then(|text| Questionnaire::from_json(&text, &file))
                .and_then(|q| self.add(q));
            if let Err(e) = loaded {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The definition a response names. Without a version, the only one
    /// loaded for the URL, or the highest version when several are.
    pub fn find(&self, url: &str, version: Option<&str>) -> Result<Arc<Questionnaire>, Reject> {
        let versions = self
            .by_url
            .get(url)
            .ok_or_else(|| Reject::UnknownQuestionnaire { url: url.into() })?;
        match version {
            Some(v) => versions
                .get(v)
                .cloned()
                .ok_or_else(|| Reject::QuestionnaireVersion {
                    url: url.into(),
                    version: v.into(),
                    loaded: versions.keys().cloned().collect::<Vec<_>>().join(", "),
                }),
            None => versions
                .values()
                .next_back()
                .cloned()
                .ok_or_else(|| Reject::UnknownQuestionnaire { url: url.into() }),
        }
    }

    /// Every definition, by URL then version.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Questionnaire>> {
        self.by_url.values().flat_map(|v| v.values())
    }

    /// A definition by its id (the resource's `id`) or name.
    pub fn by_id(&self, id: &str) -> Option<&Arc<Questionnaire>> {
        self.iter().find(|q| {
            q.resource.get("id").and_then(serde_json::Value::as_str) == Some(id) || q.name == id
        })
    }

    /// Number of definitions.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether none is loaded.
    pub fn is_empty(&self) -> bool {
        self.by_url.is_empty()
    }
}

/// The directory of the bundled definitions.
pub fn bundled_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("questionnaires")
}

/// The definitions shipped with this crate (only instruments whose
/// licence allows it; see `questionnaires/README.md`), compiled in.
pub fn bundled() -> QuestionnaireSet {
    const FILES: &[(&str, &str)] = &[
        (
            "hf-daily-checkin.json",
            include_str!("../../questionnaires/hf-daily-checkin.json"),
        ),
        (
            "copd-daily-diary.json",
            include_str!("../../questionnaires/copd-daily-diary.json"),
        ),
        ("mmrc.json", include_str!("../../questionnaires/mmrc.json")),
        (
            "phq-2.json",
            include_str!("../../questionnaires/phq-2.json"),
        ),
        (
            "phq-9.json",
            include_str!("../../questionnaires/phq-9.json"),
        ),
        (
            "gad-7.json",
            include_str!("../../questionnaires/gad-7.json"),
        ),
    ];
    let mut set = QuestionnaireSet::default();
    for (name, text) in FILES {
        let file = bundled_dir().join(name);
        // The bundled files are tested (`bundled_questionnaires_load`).
        if let Ok(q) = Questionnaire::from_json(text, &file) {
            let _ = set.add(q);
        }
    }
    set
}
