//! A provider simulated from a routing dataset, so that the embedded default
//! set-up learns from real outcomes without any API key.
//!
//! A prompt found in the dataset gets the chosen model's recorded answer
//! (where the dataset keeps it), quality and cost, and, when asked, its
//! recorded or mean latency as a delay. So judges judge real answers and the
//! trainer learns from real outcomes. Any other prompt is answered with a
//! text that says plainly it is simulated, unknown quality, and the cost the
//! model's fitted price line predicts.

use std::collections::HashMap;
use std::time::Duration;

use super::{ChatRequest, Completion, ErrorKind, ProviderError};
use qroute_core::catalog::ModelCard;
use qroute_core::dataset::{Dataset, ModelOutcome};

/// The text a dataset keys its prompts by: the last user message.
pub fn last_user_text(req: &ChatRequest) -> String {
    req.messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| m.content.text())
        .unwrap_or_default()
}

/// Characters per token, for the token counts a simulated answer reports.
const CHARS_PER_TOKEN: usize = 4;

/// What a dataset recorded for one prompt.
#[derive(Debug)]
struct Recorded {
    outcomes: Vec<ModelOutcome>,
    responses: Vec<Option<String>>,
}

#[derive(Debug)]
pub struct Simulated {
    /// Model name → its position in each row's outcomes, and its fitted card.
    models: HashMap<String, (usize, ModelCard)>,
    /// Prompt → outcome and recorded answer of every model, indexed like
    /// `models`' positions.
    prompts: HashMap<String, Recorded>,
    /// Sleep for the recorded (or mean) latency before answering.
    delay: bool,
}

impl Simulated {
    /// Takes the dataset whole: its prompts and recorded answers (tens of
    /// megabytes for the bundled sets) move into the lookup, not copied.
    pub fn new(dataset: Dataset, delay: bool) -> Simulated {
        let rows: Vec<_> = dataset.rows.iter().collect();
        let models = dataset
            .fit_catalog(&rows)
            .models
            .into_iter()
            .enumerate()
            .map(|(i, card)| (card.id.clone(), (i, card)))
            .collect();
        let prompts = dataset
            .rows
            .into_iter()
            .map(|r| {
                let recorded = Recorded {
                    outcomes: r.outcomes,
                    responses: r.responses,
                };
                (r.prompt, recorded)
            })
            .collect();
        Simulated { models, prompts, delay }
    }

    /// Whether the dataset recorded `prompt` (the last user message's text):
    /// then its answers, qualities and costs are real.
    pub fn knows(&self, prompt: &str) -> bool {
        self.prompts.contains_key(prompt)
    }

    /// Whether this provider can answer as `model`.
    pub fn serves(&self, model: &str) -> bool {
        self.models.contains_key(model)
    }

    /// The models this provider can answer as, with their fitted cards.
    pub fn cards(&self) -> impl Iterator<Item = &ModelCard> {
        self.models.values().map(|(_, c)| c)
    }

    pub async fn complete(&self, upstream_model: &str, req: &ChatRequest) -> Result<Completion, ProviderError> {
        let Some((pos, card)) = self.models.get(upstream_model) else {
            return Err(ProviderError::new(
                ErrorKind::Status(404),
                format!("simulated provider has no model {upstream_model:?}"),
            ));
        };
        let prompt = last_user_text(req);
        let chars = req
            .messages
            .iter()
            .map(|m| m.content.text().chars().count())
            .sum::<usize>();
        let row = self.prompts.get(&prompt);
        let recorded = row.map(|r| r.outcomes[*pos]);
        let latency = recorded.and_then(|o| o.latency_ms).or(card.mean_latency_ms);
        if self.delay {
            if let Some(ms) = latency {
                tokio::time::sleep(Duration::from_secs_f64(ms / 1000.0)).await;
            }
        }
        let answer = row.and_then(|r| r.responses[*pos].clone());
        let text = match (answer, recorded) {
            (Some(answer), _) => answer,
            (None, Some(o)) => format!(
                "[simulated answer of {upstream_model} to a recorded prompt whose answer text the dataset does not keep: quality {:.2}]",
                o.quality
            ),
            (None, None) => format!(
                "[simulated answer of {upstream_model}: this prompt is not in the bundled dataset, so there is no recorded answer; qroute's embedded default only simulates models]"
            ),
        };
        let output_tokens = (text.len() / CHARS_PER_TOKEN).max(1) as u64;
        Ok(Completion {
            text,
            input_tokens: (chars / CHARS_PER_TOKEN).max(1) as u64,
            output_tokens,
            finish_reason: "stop".into(),
            known_quality: recorded.map(|o| o.quality),
            known_cost_usd: Some(recorded.map_or_else(|| card.estimate_cost(chars as f32), |o| o.cost_usd)),
            ..Completion::default()
        })
    }
}
