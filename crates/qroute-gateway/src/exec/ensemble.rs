//! "Combine" mode: instead of returning the best of the k variations'
//! answers, an aggregator LLM reads them all and writes one answer that
//! keeps what each got right (the aggregate step of Mixture-of-Agents,
//! Wang et al. 2024). Candidates that disagree or are each partly right are
//! where this beats picking one.
//!
//! The aggregator sees one system message — the task, the conversation's
//! own system instructions, and the numbered candidates with their models'
//! names — followed by the conversation's other messages unchanged, so the
//! request still ends with the user's turn and the aggregator answers the
//! user directly. One leading system message and alternating turns are what
//! every wire format and chat template accepts (several system messages, or
//! two user turns in a row, are not accepted everywhere).

use std::time::Duration;

use super::judge::Answer;
use super::providers::{ChatMessage, ChatRequest, Completion, ErrorKind, Params, Provider, ProviderError};

/// The aggregator's task, before the candidates.
const TASK: &str = "You are given several candidate answers, written by different AI models, to the \
user's latest message in the conversation that follows. Write the single best answer to that message: \
check the candidates critically (some may be wrong, incomplete, truncated or refusals), keep what is \
correct, fix what is not, and follow the format the user asked for. Reply to the user directly, as if \
the answer were your own: do not mention the candidates, the models or this process.";

/// The request the aggregator gets; empty candidates are left out, and the
/// rest numbered from 1 in their given order.
fn combine_request(request: &ChatRequest, answers: &[Answer<'_>]) -> ChatRequest {
    let mut system = String::from(TASK);
    let own: Vec<String> = request
        .messages
        .iter()
        .filter(|m| m.role == "system")
        .map(|m| m.content.text())
        .collect();
    if !own.is_empty() {
        system.push_str("\n\nThe conversation's own instructions, which the answer must follow:\n");
        system.push_str(&own.join("\n\n"));
    }
    system.push_str("\n\nCandidate answers:");
    let candidates = answers.iter().filter(|a| !a.completion.text.trim().is_empty());
    for (i, a) in candidates.enumerate() {
        // A cut-off answer may end mid-thought; the aggregator should know.
        let truncated = if a.completion.finish_reason == "length" {
            " truncated=\"true\""
        } else {
            ""
        };
        system.push_str(&format!(
            "\n\n<candidate number=\"{}\" model=\"{}\"{truncated}>\n{}\n</candidate>",
            i + 1,
            a.model,
            a.completion.text.trim()
        ));
    }
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    messages.push(ChatMessage::text("system", system));
    messages.extend(request.messages.iter().filter(|m| m.role != "system").cloned());
    ChatRequest {
        messages,
        // The combined answer is the one the user gets: their limits apply.
        params: Params {
            max_tokens: request.params.max_tokens,
            temperature: request.params.temperature,
            ..Params::default()
        },
    }
}

/// Asks `upstream` on `provider` to merge `answers` (the k variations'
/// answers to `request`) into one best answer, within `timeout`.
///
/// Returns the aggregator's completion as is: its text is the answer to
/// return, and its tokens are an extra cost the caller must price and add
/// (the candidates' costs are already spent). Empty candidates are left
/// out; when none is left this fails with [`ErrorKind::Config`] without a
/// call, and a timeout fails with [`ErrorKind::Timeout`]. No retries: on any
/// error the caller still has the candidates, and can fall back to the
/// judge's best.
pub async fn combine(
    provider: &Provider,
    upstream: &str,
    request: &ChatRequest,
    answers: &[Answer<'_>],
    timeout: Duration,
) -> Result<Completion, ProviderError> {
    if answers.iter().all(|a| a.completion.text.trim().is_empty()) {
        return Err(ProviderError::new(
            ErrorKind::Config,
            "combine: no non-empty candidate answer to combine",
        ));
    }
    let req = combine_request(request, answers);
    provider.complete_within(upstream, &req, timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(text: &str) -> Completion {
        Completion {
            text: text.into(),
            finish_reason: "stop".into(),
            ..Completion::default()
        }
    }

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage::text(role, content)
    }

    #[test]
    fn one_system_message_then_the_conversation() {
        let request = ChatRequest {
            messages: vec![
                msg("system", "Answer in French."),
                msg("user", "Hi"),
                msg("assistant", "Bonjour"),
                msg("user", "Capital of Italy?"),
            ],
            params: Params {
                max_tokens: Some(77),
                temperature: Some(0.3),
                ..Params::default()
            },
        };
        let (a, b, c) = (
            done("Rome"),
            done("  "),
            Completion {
                finish_reason: "length".into(),
                ..done("La capitale est")
            },
        );
        let answers = [
            Answer {
                model: "m1",
                completion: &a,
            },
            Answer {
                model: "m2",
                completion: &b,
            },
            Answer {
                model: "m3",
                completion: &c,
            },
        ];
        let r = combine_request(&request, &answers);
        assert_eq!(r.params.max_tokens, Some(77));
        assert_eq!(r.params.temperature, Some(0.3));
        assert_eq!(r.messages.len(), 4);
        assert_eq!(r.messages[0].role, "system");
        assert_eq!(&r.messages[1..], &request.messages[1..]);
        let s = &r.messages[0].content.text();
        assert!(s.starts_with(TASK));
        assert!(s.contains("Answer in French."));
        assert!(s.contains("<candidate number=\"1\" model=\"m1\">\nRome\n</candidate>"));
        assert!(s.contains("<candidate number=\"2\" model=\"m3\" truncated=\"true\">\nLa capitale est"));
        assert!(!s.contains("model=\"m2\""));
    }

    #[tokio::test]
    async fn nothing_to_combine_fails_without_a_call() {
        let empty = done("");
        let answers = [Answer {
            model: "m",
            completion: &empty,
        }];
        // A provider that would fail loudly if called: a malformed URL.
        let provider = Provider::OpenAi(crate::exec::providers::OpenAiCompat::new(
            crate::exec::providers::http_client(Duration::from_secs(1)).unwrap(),
            "not a url",
            None,
        ));
        let e = combine(
            &provider,
            "x",
            &ChatRequest::user("q"),
            &answers,
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Config);
        assert!(e.message.contains("no non-empty candidate"));
    }
}
