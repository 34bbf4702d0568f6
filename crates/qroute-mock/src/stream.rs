//! Streamed answers: framing events, pacing them, breaking them off for a
//! `break` model, and counting the streams that finish.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream;
use serde_json::Value;

use crate::MockStats;

/// Content chunks a streamed text answer comes in.
pub(crate) const TEXT_CHUNKS: usize = 8;

/// Content chunks a `break` model streams before dropping the connection
/// (fewer when the answer has no more than that: it never finishes).
const BREAK_AFTER_CHUNKS: usize = 3;

/// How long a `break` stream waits before it breaks, so that the chunks
/// before the break reach the client.
const BREAK_FLUSH: Duration = Duration::from_millis(20);

/// One piece of a stream, framed as it goes on the wire.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub bytes: Bytes,
    /// Whether it carries content (text or tool-call arguments), which is
    /// what the chunk delay paces and a `break` model counts.
    pub content: bool,
}

impl Event {
    /// An event around the content: a start, a finish, usage, `[DONE]`.
    pub fn framing(bytes: impl Into<Bytes>) -> Event {
        Event {
            bytes: bytes.into(),
            content: false,
        }
    }

    pub fn content(bytes: impl Into<Bytes>) -> Event {
        Event {
            bytes: bytes.into(),
            content: true,
        }
    }
}

/// `data: JSON`, as OpenAI's and Gemini's streams send each event.
pub(crate) fn sse_data(data: &Value) -> String {
    format!("data: {data}\n\n")
}

/// `event: NAME` then `data: JSON`, as Anthropic's stream sends each event.
pub(crate) fn sse_named(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// `text` cut into exactly [`TEXT_CHUNKS`] pieces of near-equal length (in
/// characters), padded with spaces if it has fewer characters than that, so
/// every streamed text has the same number of chunks.
pub(crate) fn text_pieces(text: &str) -> Vec<String> {
    let mut padded = text.to_string();
    let missing = TEXT_CHUNKS.saturating_sub(text.chars().count());
    padded.extend(std::iter::repeat_n(' ', missing));
    split_even(&padded, TEXT_CHUNKS)
}

/// `text` cut into `pieces` pieces of near-equal length in characters (fewer
/// if it is shorter than that, but at least one).
pub(crate) fn split_even(text: &str, pieces: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let pieces = pieces.clamp(1, chars.len().max(1));
    (0..pieces)
        .map(|i| {
            chars[i * chars.len() / pieces..(i + 1) * chars.len() / pieces]
                .iter()
                .collect()
        })
        .collect()
}

/// A stream about to be sent.
pub(crate) struct Plan {
    pub events: Vec<Event>,
    pub content_type: &'static str,
    /// The pause before each content event after the first.
    pub chunk_delay_ms: u64,
    /// Whether the stream breaks off (a `break` model).
    pub breaks: bool,
    pub stats: Arc<MockStats>,
    pub model: String,
}

/// Where a stream is: the next event to send, and content events sent.
struct Cursor {
    plan: Plan,
    /// Content events to send before the connection is dropped, if it is.
    break_after: Option<usize>,
    next: usize,
    content_sent: usize,
}

impl Plan {
    /// The streaming response; the body yields the events one at a time,
    /// so each goes out as its own chunk.
    pub fn into_response(self) -> Response {
        let content_type = self.content_type;
        let content_events = self.events.iter().filter(|e| e.content).count();
        let cursor = Cursor {
            break_after: self
                .breaks
                .then(|| BREAK_AFTER_CHUNKS.min(content_events.saturating_sub(1))),
            plan: self,
            next: 0,
            content_sent: 0,
        };
        let body = Body::from_stream(stream::unfold(cursor, next_event));
        ([(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")], body).into_response()
    }
}

/// The stream's next item: the next event after its pause; an error where a
/// `break` model breaks (hyper then drops the connection without ending the
/// body); nothing after the last event. The finished count goes up as the
/// last event is yielded, before the client can have read it.
async fn next_event(mut cursor: Cursor) -> Option<(std::io::Result<Bytes>, Cursor)> {
    let event = cursor.plan.events.get(cursor.next)?.clone();
    if event.content {
        if cursor.break_after == Some(cursor.content_sent) {
            // Waiting lets hyper flush what was sent so far, which it would
            // otherwise drop with the connection.
            tokio::time::sleep(BREAK_FLUSH.max(Duration::from_millis(cursor.plan.chunk_delay_ms))).await;
            // Leave the cursor past the end, so the stream ends after the error.
            cursor.next = cursor.plan.events.len();
            let broken = std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "mock: stream broken");
            return Some((Err(broken), cursor));
        }
        if cursor.content_sent > 0 && cursor.plan.chunk_delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(cursor.plan.chunk_delay_ms)).await;
        }
        cursor.content_sent += 1;
    }
    cursor.next += 1;
    if cursor.next == cursor.plan.events.len() {
        cursor.plan.stats.stream_finished(&cursor.plan.model);
    }
    Some((Ok(event.bytes), cursor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_comes_in_eight_pieces_that_reassemble() {
        let text = "mock answer from m: héllo wörld, a text of some length";
        let pieces = text_pieces(text);
        assert_eq!(pieces.len(), TEXT_CHUNKS);
        assert!(pieces.iter().all(|p| !p.is_empty()));
        assert_eq!(pieces.concat(), text);

        let short = text_pieces("mock");
        assert_eq!(short.len(), TEXT_CHUNKS);
        assert_eq!(short.concat(), "mock    ");
    }

    #[test]
    fn split_even_never_makes_empty_pieces() {
        assert_eq!(split_even("{}", 8), ["{", "}"]);
        assert_eq!(split_even("", 8), [""]);
        assert_eq!(split_even("abcdefgh", 4), ["ab", "cd", "ef", "gh"]);
    }
}
