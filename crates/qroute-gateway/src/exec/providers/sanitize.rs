//! Upstream failure text made fit to show: every [`ProviderError`] an HTTP
//! adapter returns is built here, because its message travels on to the
//! client's error answer, the WARN logs and the experience store (and its
//! export), and an upstream's error body or a transport error can carry
//! what none of those should see.
//!
//! What is removed:
//! - the provider's own API key, anywhere, and fragments of it (8+
//!   characters) such as a masked `sk-abc1…wxyz` echo;
//! - credentials by shape: `Bearer …` / `Basic …`, `Authorization:`,
//!   `x-api-key:`, `x-goog-api-key:`, `api-key:`, `api_key=`, `key=`,
//!   `token=`, … values, and tokens that look like keys (`sk-…`, `AIza…`,
//!   `gsk_…`, `xai-…`, `hf_…`, `ghp_…`, JWTs, …), all as `[redacted]`;
//! - URLs, as `[url]`, and the upstream's `host:port`, as `[upstream]`: an
//!   internal address says where to attack, and a query string may hold a
//!   key;
//! - control characters (a forged log line), and whatever follows the first
//!   [`MAX_DETAIL_CHARS`] characters of what is left.
//!
//! Transport failures are not quoted at all: reqwest's text names the URL,
//! so they are described from a fixed vocabulary ("connection refused",
//! "timed out", "TLS error", …).

use std::borrow::Cow;

use super::{ErrorKind, ProviderError};

/// Characters of upstream text kept in an error message, counted after
/// redaction: enough to see what went wrong, not enough to flood a log
/// line.
pub const MAX_DETAIL_CHARS: usize = 300;

/// What a secret becomes.
pub const REDACTED: &str = "[redacted]";

/// What a URL becomes.
const URL_REDACTED: &str = "[url]";

/// What the upstream's own `host:port` becomes.
const HOST_REDACTED: &str = "[upstream]";

/// Shortest run of characters treated as a fragment of a configured key:
/// long enough that ordinary words rarely qualify.
const MIN_FRAGMENT: usize = 8;

/// Field and header names whose value is a credential, lowercase. These are
/// redacted after `:` or `=`.
const CREDENTIAL_NAMES: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "x-goog-api-key",
    "api-key",
    "api_key",
    "apikey",
    "access_token",
    "refresh_token",
    "id_token",
    "client_secret",
    "x-auth-token",
];

/// Names that are also ordinary words ("invalid token: …"): redacted only
/// after `=` (a query string, a form) or as a quoted JSON key.
const CREDENTIAL_WORDS: &[&str] = &["key", "token", "secret", "password", "passwd", "auth"];

/// Prefixes of well-known API key shapes (OpenAI and Anthropic `sk-`,
/// Google `AIza`, Groq, xAI, Hugging Face, GitHub, Replicate, Perplexity,
/// AWS access keys, JWTs), each followed by at least
/// [`MIN_FRAGMENT`] key characters.
const KEY_PREFIXES: &[&str] = &[
    "sk-",
    "sk_",
    "rk_",
    "AIza",
    "gsk_",
    "xai-",
    "hf_",
    "ghp_",
    "gho_",
    "ghs_",
    "github_pat_",
    "r8_",
    "pplx-",
    "AKIA",
    "eyJ",
];

/// Builds the [`ProviderError`]s of one provider, clean of its key and
/// address. Deliberately not `Debug`: it holds the key.
#[derive(Clone)]
pub struct Scrubber {
    /// The provider's configured name (its kind until told otherwise).
    provider: String,
    /// Exact strings to redact: the API key.
    secrets: Vec<String>,
    /// The upstream's `host:port` and host, to replace by [`HOST_REDACTED`].
    hosts: Vec<String>,
}

impl Scrubber {
    /// For the provider called `provider` at `base_url` holding `api_key`.
    pub fn new(provider: &str, base_url: &str, api_key: Option<&str>) -> Scrubber {
        let secrets = api_key
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| vec![k.to_string()])
            .unwrap_or_default();
        let mut hosts = Vec::new();
        if let Ok(url) = reqwest::Url::parse(base_url) {
            if let Some(host) = url.host_str().filter(|h| h.len() >= 4) {
                if let Some(port) = url.port() {
                    hosts.push(format!("{host}:{port}"));
                }
                hosts.push(host.to_string());
            }
        }
        Scrubber {
            provider: provider.to_string(),
            secrets,
            hosts,
        }
    }

    /// The same, under another provider name.
    pub fn renamed(&mut self, provider: &str) {
        self.provider = provider.to_string();
    }

    /// `text` redacted, one line, cut at [`MAX_DETAIL_CHARS`].
    pub fn clean(&self, text: &str) -> String {
        let secrets: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
        let mut text = redact(text, &secrets);
        for host in &self.hosts {
            if text.contains(host.as_str()) {
                text = text.replace(host.as_str(), HOST_REDACTED);
            }
        }
        truncate(&one_line(&text), MAX_DETAIL_CHARS)
    }

    /// A failure described by the gateway itself ("answer has no choices").
    /// Still passed through [`Scrubber::clean`]: the text may quote a
    /// configured value.
    pub fn error(&self, kind: ErrorKind, what: &str) -> ProviderError {
        ProviderError::new(kind, format!("provider {}: {}", self.provider, self.clean(what)))
    }

    /// A non-2xx answer, with the upstream's own explanation (`reason`).
    pub fn status(&self, status: reqwest::StatusCode, reason: &str) -> ProviderError {
        let code = match status.canonical_reason() {
            Some(words) => format!("{} {words}", status.as_u16()),
            None => status.as_u16().to_string(),
        };
        ProviderError::new(
            ErrorKind::Status(status.as_u16()),
            format!(
                "provider {}: upstream answered {code}: {}",
                self.provider,
                self.clean(reason)
            ),
        )
    }

    /// A transport failure, in words that name neither URL nor address.
    pub fn transport(&self, e: &reqwest::Error) -> ProviderError {
        let (kind, what) = transport_reason(e);
        ProviderError::new(kind, format!("provider {}: {what}", self.provider))
    }

    /// A 2xx answer that is not the format's JSON. serde's explanation may
    /// quote the body (`unknown variant "…"`), so it is cleaned with it.
    pub fn decode(&self, e: &serde_json::Error, body: &[u8]) -> ProviderError {
        let text = format!("unreadable answer ({e}): {}", String::from_utf8_lossy(body));
        ProviderError::new(
            ErrorKind::Decode,
            format!("provider {}: {}", self.provider, self.clean(&text)),
        )
    }
}

/// The category of a reqwest failure (as retry decides on it) and a
/// description from a fixed vocabulary: reqwest's own text includes the
/// URL, and its sources may name hosts and addresses.
pub fn transport_reason(e: &reqwest::Error) -> (ErrorKind, &'static str) {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_decode() {
        ErrorKind::Decode
    } else if let Some(s) = e.status() {
        ErrorKind::Status(s.as_u16())
    } else if e.is_builder() {
        ErrorKind::Config
    } else {
        ErrorKind::Connect
    };
    let mut io_kind = None;
    let mut chain = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if io_kind.is_none() {
            io_kind = err.downcast_ref::<std::io::Error>().map(std::io::Error::kind);
        }
        chain.push_str(&err.to_string().to_ascii_lowercase());
        chain.push('\n');
        source = err.source();
    }
    use std::io::ErrorKind as Io;
    let what = match io_kind {
        _ if e.is_timeout() => "timed out",
        Some(Io::ConnectionRefused) => "connection refused",
        Some(Io::ConnectionReset | Io::ConnectionAborted | Io::BrokenPipe) => "connection reset",
        Some(Io::UnexpectedEof) => "connection closed early",
        Some(Io::AddrNotAvailable | Io::AddrInUse) => "could not connect (no local address)",
        _ if chain.contains("dns error") || chain.contains("failed to lookup") => "DNS lookup failed",
        _ if ["certificate", "tls", "ssl", "handshake"]
            .iter()
            .any(|w| chain.contains(w)) =>
        {
            "TLS error"
        }
        _ if chain.contains("connection refused") => "connection refused",
        _ if chain.contains("connection reset") => "connection reset",
        _ if chain.contains("connection closed") || chain.contains("incomplete message") => "connection closed early",
        _ if e.is_builder() => "invalid request (check base_url)",
        _ if e.is_redirect() => "too many redirects",
        _ if e.is_decode() => "unreadable answer",
        _ if e.is_body() => "the answer broke off",
        _ if e.is_connect() => "could not connect",
        _ => "request failed",
    };
    (kind, what)
}

/// `text` with `secrets` (exact strings), URLs and credential-shaped
/// values redacted; see the module's documentation for the rules.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = redact_urls(text);
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        if out.contains(secret) {
            out = out.replace(secret, REDACTED);
        }
    }
    let out = redact_named_values(&out);
    let out = redact_auth_schemes(&out);
    let out = redact_key_shapes(&out);
    redact_fragments(&out, secrets).into_owned()
}

/// The first `max` characters of `text`, with `…` when something was cut.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// Control characters (newlines included) as spaces, so that upstream text
/// cannot start a log line of its own.
fn one_line(text: &str) -> Cow<'_, str> {
    if text.chars().any(char::is_control) {
        Cow::Owned(text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect())
    } else {
        Cow::Borrowed(text)
    }
}

/// Part of a word for boundary checks: `x-api-key` and `api_key` are one
/// word each.
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// A character that can be part of a key or token (base64, base64url,
/// masks like `sk-ab***yz`).
fn is_key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'~' | b'+' | b'/' | b'=' | b'*')
}

/// Where an unquoted value ends. A value that starts with one of these is
/// none (`x-api-key: (none)`).
fn ends_value(b: u8) -> bool {
    b.is_ascii_whitespace()
        || b.is_ascii_control()
        || matches!(
            b,
            b'&' | b',' | b';' | b'"' | b'\'' | b'(' | b')' | b'{' | b'}' | b'<' | b'>' | b'|' | b'`'
        )
}

/// A character of a URL's scheme.
fn is_scheme_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'-')
}

/// Where a URL ends.
fn ends_url(b: u8) -> bool {
    b.is_ascii_whitespace()
        || b.is_ascii_control()
        || matches!(
            b,
            b'"' | b'\'' | b'<' | b'>' | b'`' | b'\\' | b'|' | b'{' | b'}' | b'^' | b')'
        )
}

/// Whether `text[at..]` starts with `word` (ASCII, lowercase), ignoring case.
fn starts_with_ci(text: &[u8], at: usize, word: &str) -> bool {
    text.get(at..at + word.len())
        .is_some_and(|w| w.eq_ignore_ascii_case(word.as_bytes()))
}

/// Rebuilds `text` with spans replaced: `find(bytes, i)` says whether a
/// replacement starts at `i`, returning the span's end and its new text.
/// Spans start and end at ASCII characters, so every cut is a character
/// boundary.
fn replace_spans<'a>(text: &'a str, mut find: impl FnMut(&[u8], usize) -> Option<(usize, String)>) -> Cow<'a, str> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Every pattern starts with an ASCII character, always a character boundary.
        if !bytes[i].is_ascii() {
            i += 1;
            continue;
        }
        match find(bytes, i) {
            Some((end, with)) if end > i => {
                let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
                o.push_str(&text[copied..i]);
                o.push_str(&with);
                copied = end;
                i = end;
            }
            _ => i += 1,
        }
    }
    match out {
        Some(mut o) => {
            o.push_str(&text[copied..]);
            Cow::Owned(o)
        }
        None => Cow::Borrowed(text),
    }
}

/// `scheme://…` as [`URL_REDACTED`]; sentence punctuation after it stays.
fn redact_urls(text: &str) -> String {
    replace_spans(text, |b, i| {
        // A scheme starts with a letter, after something that is not part
        // of one (so each run of scheme characters is scanned once).
        if !b[i].is_ascii_alphabetic() || (i > 0 && is_scheme_char(b[i - 1])) {
            return None;
        }
        let j = run_end(b, i, is_scheme_char);
        if !b[j..].starts_with(b"://") {
            return None;
        }
        let mut end = j + 3;
        while end < b.len() && !ends_url(b[end]) {
            end += 1;
        }
        while end > j + 3 && matches!(b[end - 1], b'.' | b',' | b':' | b';' | b'!' | b'?') {
            end -= 1;
        }
        Some((end, URL_REDACTED.to_string()))
    })
    .into_owned()
}

/// `name: value` and `name=value` for credential names, JSON's
/// `"name": "value"` included. An `Authorization` value keeps its scheme
/// (`Authorization: Bearer [redacted]`).
fn redact_named_values(text: &str) -> Cow<'_, str> {
    replace_spans(text, |b, i| {
        if i > 0 && is_word(b[i - 1]) {
            return None;
        }
        let quoted = i > 0 && matches!(b[i - 1], b'"' | b'\'');
        let (name, strict) = CREDENTIAL_NAMES
            .iter()
            .map(|n| (*n, false))
            .chain(CREDENTIAL_WORDS.iter().map(|n| (*n, true)))
            .find(|(n, _)| starts_with_ci(b, i, n) && !b.get(i + n.len()).copied().is_some_and(is_word))?;
        let mut j = i + name.len();
        if quoted {
            // The closing quote, escaped when the JSON is quoted in a string.
            if b.get(j) == Some(&b'\\') {
                j += 1;
            }
            if matches!(b.get(j), Some(b'"' | b'\'')) {
                j += 1;
            }
        }
        while b.get(j) == Some(&b' ') {
            j += 1;
        }
        let sep = *b.get(j)?;
        if !(sep == b'=' || (sep == b':' && (quoted || !strict))) {
            return None;
        }
        j += 1;
        while b.get(j) == Some(&b' ') {
            j += 1;
        }
        // JSON quoted inside a string arrives escaped: `\"value\"`.
        if b.get(j) == Some(&b'\\') && matches!(b.get(j + 1), Some(b'"' | b'\'')) {
            j += 1;
        }
        if let Some(&q @ (b'"' | b'\'')) = b.get(j) {
            let mut close = b[j + 1..].iter().position(|&c| c == q).map_or(b.len(), |p| j + 1 + p);
            if close > j + 1 && b[close - 1] == b'\\' {
                close -= 1;
            }
            let (inner, _) = redacted_value(b, j + 1, close)?;
            return Some((close, format!("{}{inner}", as_str(b, i, j + 1))));
        }
        let (inner, end) = redacted_value(b, j, run_end(b, j, |c| !ends_value(c)))?;
        Some((end, format!("{}{inner}", as_str(b, i, j))))
    })
}

/// The redacted form of the value at `b[start..end]` and where it really
/// ends: a scheme word (`Bearer`, `Basic`, …) is kept and the token after
/// it taken too. `None` when there is nothing to redact.
fn redacted_value(b: &[u8], start: usize, end: usize) -> Option<(String, usize)> {
    if start >= end || b[start..end].starts_with(REDACTED.as_bytes()) {
        return None;
    }
    let word = &b[start..end];
    let is_scheme = ["bearer", "basic", "token", "digest", "apikey"]
        .iter()
        .any(|s| word.eq_ignore_ascii_case(s.as_bytes()));
    if is_scheme {
        let mut j = end;
        while b.get(j) == Some(&b' ') {
            j += 1;
        }
        let token_end = run_end(b, j, |c| !ends_value(c));
        if token_end == j || b[j..].starts_with(REDACTED.as_bytes()) {
            return None;
        }
        let scheme = std::str::from_utf8(word).unwrap_or("Bearer");
        return Some((format!("{scheme} {REDACTED}"), token_end));
    }
    Some((REDACTED.to_string(), end))
}

/// `Bearer TOKEN` and `Basic CREDENTIALS` anywhere (a quoted header, a
/// curl command line).
fn redact_auth_schemes(text: &str) -> Cow<'_, str> {
    replace_spans(text, |b, i| {
        if i > 0 && is_word(b[i - 1]) {
            return None;
        }
        let scheme = ["bearer", "basic"].into_iter().find(|s| starts_with_ci(b, i, s))?;
        let mut j = i + scheme.len();
        let spaces = run_end(b, j, |c| c == b' ');
        if spaces == j {
            return None;
        }
        j = spaces;
        let end = run_end(b, j, is_key_char);
        let token = &b[j..end];
        // "Basic information" is prose; base64 credentials have digits or padding.
        let looks_secret = match scheme {
            "basic" => {
                token.len() >= MIN_FRAGMENT
                    && (token.iter().any(|c| c.is_ascii_digit() || b"+/=".contains(c))
                        || token[1..].iter().any(u8::is_ascii_uppercase))
            }
            _ => !token.is_empty(),
        };
        looks_secret.then(|| (end, format!("{}{REDACTED}", as_str(b, i, j))))
    })
}

/// Tokens shaped like well-known API keys ([`KEY_PREFIXES`]).
fn redact_key_shapes(text: &str) -> Cow<'_, str> {
    replace_spans(text, |b, i| {
        if i > 0 && (is_word(b[i - 1]) || b[i - 1] == b'.') {
            return None;
        }
        let prefix = KEY_PREFIXES.iter().find(|p| b[i..].starts_with(p.as_bytes()))?;
        let tail = i + prefix.len();
        // A JWT's dots are part of it; elsewhere a dot ends a sentence.
        let end = if *prefix == "eyJ" {
            let mut end = run_end(b, tail, |c| is_word(c) || c == b'.' || c == b'*');
            while end > tail && b[end - 1] == b'.' {
                end -= 1;
            }
            end
        } else {
            run_end(b, tail, |c| is_word(c) || c == b'*')
        };
        (end - tail >= MIN_FRAGMENT).then(|| (end, REDACTED.to_string()))
    })
}

/// Runs of [`MIN_FRAGMENT`]+ key characters found inside a configured key:
/// what is left of a key an upstream echoed masked or cut.
fn redact_fragments<'a>(text: &'a str, secrets: &[&str]) -> Cow<'a, str> {
    let secrets: Vec<&str> = secrets.iter().copied().filter(|s| s.len() > MIN_FRAGMENT).collect();
    if secrets.is_empty() {
        return Cow::Borrowed(text);
    }
    replace_spans(text, |b, i| {
        if i > 0 && is_word(b[i - 1]) {
            return None;
        }
        let end = run_end(b, i, is_word);
        let run = std::str::from_utf8(&b[i..end]).ok()?;
        (run.len() >= MIN_FRAGMENT && secrets.iter().any(|s| s.contains(run))).then(|| (end, REDACTED.to_string()))
    })
}

/// The end of the run of bytes satisfying `keep` from `start`.
fn run_end(b: &[u8], start: usize, keep: impl Fn(u8) -> bool) -> usize {
    let mut j = start;
    while j < b.len() && keep(b[j]) {
        j += 1;
    }
    j
}

/// `b[start..end]` as text; both ends are at ASCII characters.
fn as_str(b: &[u8], start: usize, end: usize) -> &str {
    std::str::from_utf8(&b[start..end]).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrub(text: &str) -> String {
        redact(text, &[])
    }

    #[test]
    fn a_configured_key_is_redacted_whatever_its_shape() {
        let key = "plain0secret9value";
        let out = redact(&format!("Incorrect API key provided: {key}. Try again."), &[key]);
        assert_eq!(out, "Incorrect API key provided: [redacted]. Try again.");
        // A masked or cut echo keeps no fragment of 8+ characters.
        let out = redact("key plain0se****9value or plain0secret9", &[key]);
        assert!(!out.contains("plain0se") && !out.contains("plain0secret9"), "{out}");
    }

    #[test]
    fn bearer_and_basic_credentials_are_redacted() {
        assert_eq!(scrub("sent Bearer abc.def-123 then"), "sent Bearer [redacted] then");
        assert_eq!(scrub("bearer   xyz"), "bearer   [redacted]");
        assert_eq!(scrub("Basic dXNlcjpwYXNz"), "Basic [redacted]");
        assert_eq!(scrub("basic dXNlcjpwYXNzMQ=="), "basic [redacted]");
        assert_eq!(scrub("Basic information only"), "Basic information only");
    }

    #[test]
    fn credential_headers_and_fields_are_redacted() {
        assert_eq!(
            scrub("Authorization: Bearer sk-abcdefghijklmnop; next"),
            "Authorization: Bearer [redacted]; next"
        );
        assert_eq!(scrub("x-api-key: hunter2hunter2"), "x-api-key: [redacted]");
        assert_eq!(scrub("X-Goog-Api-Key:abc123"), "X-Goog-Api-Key:[redacted]");
        assert_eq!(scrub("api-key = zzz, more"), "api-key = [redacted], more");
        assert_eq!(
            scrub(r#"{"api_key": "s3cr3t value", "model": "m"}"#),
            r#"{"api_key": "[redacted]", "model": "m"}"#
        );
        assert_eq!(scrub(r#"{"key":"abc"}"#), r#"{"key":"[redacted]"}"#);
        assert_eq!(
            scrub(r#"body "{\"token\": \"abc\"}""#),
            r#"body "{\"token\": \"[redacted]\"}""#
        );
        assert_eq!(scrub("q?alt=json&key=abc123&x=1"), "q?alt=json&key=[redacted]&x=1");
        assert_eq!(scrub("password=hunter2"), "password=[redacted]");
        assert_eq!(scrub("x-api-key: (none), next"), "x-api-key: (none), next");
        // Ordinary words stay when nothing credential-like follows.
        assert_eq!(scrub("invalid key: check it"), "invalid key: check it");
        assert_eq!(scrub("the monkey=1"), "the monkey=1");
    }

    #[test]
    fn key_shaped_tokens_are_redacted() {
        for key in [
            "sk-proj-AbCdEf123456_789",
            "sk-ant-api03-abcdefghijkl",
            "AIzaSyA1234567890abcdefghijklmnopqrstu",
            "gsk_abcdefgh12345678",
            "xai-abcdefgh12345678",
            "hf_abcdefghijklmnop",
            "ghp_abcdefghijklmnop1234",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-nat_ure",
            "sk-abc1****************wxyz",
        ] {
            let out = scrub(&format!("got {key}."));
            assert_eq!(out, "got [redacted].", "{key}");
        }
        // Short or embedded look-alikes stay.
        assert_eq!(
            scrub("sk-learn and task-12345678 and desk_123"),
            "sk-learn and task-12345678 and desk_123"
        );
    }

    #[test]
    fn urls_are_removed_with_any_key_in_them() {
        assert_eq!(
            scrub("error sending request for url (http://10.0.0.7:8000/v1/chat/completions?key=abc)"),
            "error sending request for url ([url])"
        );
        assert_eq!(scrub("see https://example.com/docs."), "see [url].");
        assert_eq!(scrub("at http://[::1]:9/x and ws://h"), "at [url] and [url]");
        assert_eq!(scrub("x-http://h/p"), "[url]");
    }

    #[test]
    fn redaction_leaves_other_text_and_unicode_alone() {
        let text = "modèle «m» indisponible — réessayez 😀";
        assert_eq!(scrub(text), text);
        assert_eq!(scrub("Bearer"), "Bearer");
        assert_eq!(scrub(""), "");
        // Idempotent: cleaning clean text changes nothing.
        let once = scrub("Authorization: Bearer abc x-api-key: def https://h/p sk-abcdefghijk");
        assert_eq!(scrub(&once), once);
    }

    #[test]
    fn clean_redacts_before_cutting_and_stays_on_one_line() {
        let key = "k3y-0123456789abcdef";
        let s = Scrubber::new("openai", "http://127.0.0.1:4000/v1", Some(key));
        let long = format!("{}{key}{}", "x".repeat(MAX_DETAIL_CHARS - 5), "y".repeat(50));
        let out = s.clean(&long);
        assert!(
            !out.contains("k3y-0"),
            "a key straddling the cut is still redacted: {out}"
        );
        assert!(out.ends_with('…'));
        assert_eq!(out.chars().count(), MAX_DETAIL_CHARS + 1);
        let out = s.clean("line one\nforged: line two at 127.0.0.1:4000 (127.0.0.1)");
        assert_eq!(out, "line one forged: line two at [upstream] ([upstream])");
    }

    #[test]
    fn errors_name_the_provider() {
        let s = Scrubber::new("groq", "https://api.groq.com/openai/v1", Some("gsk_secretsecret"));
        let e = s.status(reqwest::StatusCode::UNAUTHORIZED, "Invalid API Key gsk_secretsecret");
        assert_eq!(e.kind, ErrorKind::Status(401));
        assert_eq!(
            e.message,
            "provider groq: upstream answered 401 Unauthorized: Invalid API Key [redacted]"
        );
        let e = s.error(ErrorKind::Decode, "answer has no choices");
        assert_eq!(e.message, "provider groq: answer has no choices");
        let bad: serde_json::Error = match serde_json::from_str::<u8>("\"sk-abcdefghijklmnop\"") {
            Err(e) => e,
            Ok(_) => unreachable!(),
        };
        let e = s.decode(&bad, b"{\"token\": \"abc\"} via https://api.groq.com/x");
        assert!(
            e.message.starts_with("provider groq: unreadable answer"),
            "{}",
            e.message
        );
        assert!(!e.message.contains("sk-abc") && !e.message.contains("abc\"") && !e.message.contains("api.groq"));
    }

    #[tokio::test]
    async fn transport_errors_name_no_address() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/secret/path"))
            .send()
            .await
            .unwrap_err();
        let s = Scrubber::new("local", &format!("http://127.0.0.1:{port}"), None);
        let pe = s.transport(&e);
        assert_eq!(pe.kind, ErrorKind::Connect);
        assert_eq!(pe.message, "provider local: connection refused");
    }
}
