//! What the mock needs of a request, whatever its wire format, and the
//! helpers that read the formats' loosely typed parts into it.

use serde_json::Value;

/// A request, as the three formats' parsers fold it.
#[derive(Debug, Default)]
pub(crate) struct Request {
    pub model: String,
    /// The system prompts, joined by blank lines.
    pub system: Option<String>,
    /// The last user message's text, or the last tool result's.
    pub last_user: String,
    /// Characters of every message and system prompt, for the token count.
    pub total_chars: usize,
    /// Images anywhere in the conversation.
    pub images: usize,
    pub max_tokens: Option<u32>,
    /// Tools the model may call.
    pub tools: Vec<ToolSpec>,
    pub tool_choice: ToolChoice,
    /// Whether the conversation ends with a tool's result, which the model
    /// then answers in words rather than with another call.
    pub ends_with_tool_result: bool,
    pub json: JsonMode,
    /// How many alternative answers to give (at least 1).
    pub choices: u32,
    /// Whether OpenAI's log probabilities were asked for.
    pub logprobs: bool,
    /// How the answer is streamed, if it is.
    pub stream: Option<StreamMode>,
}

/// How a streamed answer is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamMode {
    /// Server-sent events; `include_usage` is OpenAI's
    /// `stream_options.include_usage`.
    Sse { include_usage: bool },
    /// Gemini's stream without `alt=sse`: one JSON array, sent an element at
    /// a time.
    JsonArray,
}

/// A tool the request declares.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ToolSpec {
    pub name: String,
    /// Its arguments' JSON schema (`Value::Null` when it declares none).
    pub parameters: Value,
}

/// Which tool, if any, the request lets or makes the model call.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) enum ToolChoice {
    /// The model picks; the mock picks the first tool.
    #[default]
    Auto,
    /// No tool may be called.
    None,
    /// This tool must be called.
    Named(String),
}

/// Whether the answer must be JSON.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) enum JsonMode {
    #[default]
    Off,
    /// Any JSON object.
    Object,
    /// An object following this JSON schema.
    Schema(Value),
}

/// What one message (or system prompt) contributes.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Content {
    pub text: String,
    pub images: usize,
    /// Whether it carries a tool's result (Anthropic's `tool_result` block,
    /// Gemini's `functionResponse` part).
    pub tool_result: bool,
}

impl Content {
    /// A string, a list of typed parts (OpenAI's and Anthropic's), or
    /// nothing (`null`, as an assistant message with tool calls has).
    pub fn read(content: &Value) -> Content {
        match content {
            Value::String(s) => Content {
                text: s.clone(),
                ..Content::default()
            },
            Value::Array(parts) => Content::from_parts(parts),
            _ => Content::default(),
        }
    }

    /// Text parts count as text, images as images, tool results as the text
    /// of their content; anything else (audio, tool calls…) is accepted and
    /// ignored.
    pub fn from_parts(parts: &[Value]) -> Content {
        let mut content = Content::default();
        for part in parts {
            content.add_part(part);
        }
        content
    }

    fn add_part(&mut self, part: &Value) {
        if let Some(text) = part.get("text").and_then(Value::as_str) {
            self.text.push_str(text);
        } else if is_image(part) {
            self.images += 1;
        } else if part.get("type").and_then(Value::as_str) == Some("tool_result") {
            let inner = Content::read(part.get("content").unwrap_or(&Value::Null));
            self.text.push_str(&inner.text);
            self.images += inner.images;
            self.tool_result = true;
        } else if let Some(response) = part.get("functionResponse").or_else(|| part.get("function_response")) {
            self.text
                .push_str(&response.get("response").unwrap_or(response).to_string());
            self.tool_result = true;
        }
    }
}

/// An image part in any of the formats: OpenAI's `image_url`, Anthropic's
/// `image` block, Gemini's `inlineData`/`fileData`.
fn is_image(part: &Value) -> bool {
    let typed = matches!(
        part.get("type").and_then(Value::as_str),
        Some("image_url" | "image" | "input_image")
    );
    typed
        || ["inlineData", "inline_data", "fileData", "file_data"]
            .iter()
            .any(|k| part.get(k).is_some())
}

/// Folds messages into a [`Request`], one at a time, whatever their format.
#[derive(Default)]
pub(crate) struct Transcript {
    system: Vec<String>,
    last_user: String,
    total_chars: usize,
    images: usize,
    ends_with_tool_result: bool,
}

impl Transcript {
    /// A top-level system prompt (Anthropic's and Gemini's way).
    pub fn system(&mut self, content: Content) {
        self.total_chars += content.text.chars().count();
        self.images += content.images;
        self.system.push(content.text);
    }

    /// One message of the conversation. System prompts found inside the
    /// list (OpenAI's way) join the top-level one; a tool's result counts as
    /// the user's last word.
    pub fn message(&mut self, role: &str, content: Content) {
        self.total_chars += content.text.chars().count();
        self.images += content.images;
        let tool_result = content.tool_result || role == "tool" || role == "function";
        self.ends_with_tool_result = tool_result;
        if role == "system" || role == "developer" {
            self.system.push(content.text);
        } else if role == "user" || tool_result {
            self.last_user = content.text;
        }
    }

    /// The request with these messages; its other fields are the parser's
    /// to fill.
    pub fn into_request(self, model: String) -> Request {
        Request {
            model,
            system: (!self.system.is_empty()).then(|| self.system.join("\n\n")),
            last_user: self.last_user,
            total_chars: self.total_chars,
            images: self.images,
            ends_with_tool_result: self.ends_with_tool_result,
            choices: 1,
            ..Request::default()
        }
    }
}

/// A `u32` field that may be absent or null, as the APIs allow.
pub(crate) fn opt_u32(v: &Value, key: &str) -> Option<u32> {
    v.get(key).and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok())
}

/// A boolean field that may be absent or null.
pub(crate) fn flag(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// A string field, or "" when absent.
pub(crate) fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// An array field, or an empty slice when absent or not an array.
pub(crate) fn array_of<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parts_count_text_images_and_tool_results() {
        let c = Content::read(&json!([
            {"type": "text", "text": "look "},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
            {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
            {"text": "here"}
        ]));
        assert_eq!((c.text.as_str(), c.images, c.tool_result), ("look here", 3, false));

        let c = Content::read(&json!([{"type": "tool_result", "tool_use_id": "t", "content": "21 C"}]));
        assert_eq!((c.text.as_str(), c.tool_result), ("21 C", true));
        let c = Content::read(&json!([{"functionResponse": {"name": "f", "response": {"t": 21}}}]));
        assert_eq!((c.text.as_str(), c.tool_result), (r#"{"t":21}"#, true));
        assert_eq!(Content::read(&Value::Null), Content::default());
    }

    #[test]
    fn transcript_takes_the_last_user_or_tool_message() {
        let mut t = Transcript::default();
        t.system(Content::read(&json!("Be brief.")));
        t.message("user", Content::read(&json!("weather?")));
        t.message("assistant", Content::read(&Value::Null));
        t.message("tool", Content::read(&json!("sunny")));
        let req = t.into_request("m".into());
        assert_eq!(req.system.as_deref(), Some("Be brief."));
        assert_eq!(req.last_user, "sunny");
        assert!(req.ends_with_tool_result);
        assert_eq!(req.total_chars, "Be brief.weather?sunny".len());
        assert_eq!(req.choices, 1);
    }
}
