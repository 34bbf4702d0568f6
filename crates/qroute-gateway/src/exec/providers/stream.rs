//! Streamed answers: the [`DeltaStream`] every adapter returns, and
//! [`replay`], which streams an answer that is already whole (a simulated
//! model, a cache hit, the judged best of several variations).

use futures_util::stream::{self, BoxStream, StreamExt};

use super::chat::{Choice, Completion, Delta};
use super::ProviderError;

/// An answer as it is generated. It ends after its last delta, or with one
/// error when the upstream breaks off.
pub type DeltaStream = BoxStream<'static, Result<Delta, ProviderError>>;

/// Ends `s` after its first error, so that nothing is read past a break.
pub fn end_at_first_error<T: Send + 'static>(
    s: impl futures_util::Stream<Item = Result<T, ProviderError>> + Send + 'static,
) -> BoxStream<'static, Result<T, ProviderError>> {
    s.scan(false, |failed, item| {
        if *failed {
            return std::future::ready(None);
        }
        *failed = item.is_err();
        std::future::ready(Some(item))
    })
    .boxed()
}

/// Ends `s` with a timeout error when no delta arrives for `idle`: an
/// upstream that stalls mid-stream would otherwise hold the client, and
/// the request's record, open until the client gives up.
pub fn with_idle_timeout(s: DeltaStream, idle: std::time::Duration) -> DeltaStream {
    let items = stream::unfold(Some(s), move |s| async move {
        let mut s = s?;
        match tokio::time::timeout(idle, s.next()).await {
            Ok(Some(item)) => Some((item, Some(s))),
            Ok(None) => None,
            Err(_) => {
                let e = ProviderError::new(
                    super::ErrorKind::Timeout,
                    format!("the stream stalled: nothing for {} ms", idle.as_millis()),
                );
                Some((Err(e), None))
            }
        }
    });
    end_at_first_error(items)
}

/// Characters per replayed chunk (split at whitespace where possible).
const CHUNK_CHARS: usize = 32;

/// Splits `text` into pieces of about [`CHUNK_CHARS`], each ending after a
/// space where there is one, so concatenating them gives `text` back.
pub fn pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.char_indices().nth(CHUNK_CHARS).map_or(rest.len(), |(i, _)| i);
        if end < rest.len() {
            if let Some(space) = rest[..end].rfind(' ') {
                end = space + 1;
            }
        }
        out.push(&rest[..end]);
        rest = &rest[end..];
    }
    out
}

/// A whole answer as deltas: each choice's text in pieces, its tool calls
/// whole, its finish reason, then the usage.
pub fn replay(c: &Completion) -> DeltaStream {
    let mut deltas = Vec::new();
    for (i, choice) in c.choices().into_iter().enumerate() {
        let Choice {
            text,
            tool_calls,
            finish_reason,
            logprobs,
        } = choice;
        let i = i as u32;
        for p in pieces(&text) {
            deltas.push(Delta {
                choice: i,
                content: Some(p.to_string()),
                ..Delta::default()
            });
        }
        if !tool_calls.is_empty() {
            deltas.push(Delta {
                choice: i,
                tool_calls: tool_calls
                    .into_iter()
                    .enumerate()
                    .map(|(k, t)| super::chat::ToolCallDelta {
                        index: k as u32,
                        id: Some(t.id),
                        kind: Some(t.kind),
                        function: Some(super::chat::FunctionDelta {
                            name: Some(t.function.name),
                            arguments: Some(t.function.arguments),
                        }),
                    })
                    .collect(),
                ..Delta::default()
            });
        }
        deltas.push(Delta {
            choice: i,
            finish_reason: Some(if finish_reason.is_empty() {
                "stop".into()
            } else {
                finish_reason
            }),
            logprobs,
            ..Delta::default()
        });
    }
    deltas.push(Delta {
        usage: Some((c.input_tokens, c.output_tokens)),
        ..Delta::default()
    });
    stream::iter(deltas.into_iter().map(Ok)).boxed()
}

#[cfg(test)]
mod tests {
    use super::super::chat::Assembler;
    use super::*;

    #[test]
    fn pieces_rebuild_the_text() {
        let text = "The answer is 391 because 17 times 23 is 391, and héllo wörld ünïcode is fine too.";
        let p = pieces(text);
        assert!(p.len() > 1);
        assert_eq!(p.concat(), text);
        assert!(p.iter().all(|s| s.chars().count() <= CHUNK_CHARS));
        assert!(pieces("").is_empty());
        let long_word = "x".repeat(100);
        assert_eq!(pieces(&long_word).concat(), long_word);
    }

    #[tokio::test]
    async fn a_replay_reassembles_to_the_completion() {
        let c = Completion {
            text: "a fairly long answer that takes more than one chunk to send whole".into(),
            finish_reason: "stop".into(),
            more_choices: vec![Choice {
                text: "second".into(),
                finish_reason: "length".into(),
                ..Choice::default()
            }],
            input_tokens: 3,
            output_tokens: 9,
            ..Completion::default()
        };
        let mut a = Assembler::default();
        let mut s = replay(&c);
        while let Some(d) = s.next().await {
            a.push(&d.unwrap());
        }
        assert_eq!(a.completion(0), c);
    }

    #[tokio::test]
    async fn nothing_is_read_past_an_error() {
        use super::super::ErrorKind;
        let items = vec![Ok(1), Err(ProviderError::new(ErrorKind::Connect, "broke")), Ok(2)];
        let got: Vec<_> = end_at_first_error(stream::iter(items)).collect().await;
        assert_eq!(got.len(), 2);
    }
}
