//! The `[server]` section: what the HTTP edge accepts before a request
//! reaches a handler (which `Host` names, which browser origins) and how
//! long a connection may hold a slot while sending nothing useful.
//!
//! The defaults are safe for a gateway on a private address: any `Host` is
//! accepted (set `allowed_hosts` when the port is reachable from a browser,
//! to close DNS rebinding), no CORS headers are sent (so no web page can
//! read an answer), and slow or silent connections are closed. The request
//! side of these checks lives in [`crate::http::edge`].

use std::net::Ipv6Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Upper bound for `max_connections`: far above any file-handle limit, and
/// well inside what a tokio semaphore can count.
const MAX_CONNECTIONS_CAP: usize = 1_000_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Host names (no port, no scheme) a request's `Host` header may carry;
    /// anything else is answered 421. Empty accepts any `Host`. Exact names
    /// only, compared case-insensitively: a wildcard would quietly widen
    /// what a rebinding attacker can use.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Browser origins (`https://app.example.com`) allowed to call the API
    /// cross-site: they get CORS headers, and only they may send unsafe
    /// methods with an `Origin` header. Empty sends no CORS headers at all.
    #[serde(default)]
    pub cors_allowed_origins: Vec<String>,
    /// A request head (request line and headers) must arrive within this,
    /// counted from the connection's accept or from the first byte of a
    /// later request; a connection that never sends a request is closed
    /// after it too, so silent sockets cannot pile up.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// The whole request body must arrive within this, counted from the end
    /// of the head; otherwise the answer is 408 and the connection closes.
    #[serde(default = "default_body_read_timeout_ms")]
    pub body_read_timeout_ms: u64,
    /// A keep-alive connection with no request in flight and no traffic for
    /// this long is closed; so is one whose client stops reading an answer.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Connections served at once; at the limit the gateway stops accepting
    /// (new ones wait in the kernel's backlog) until one closes. Lowered at
    /// start-up, with a warning, when the open-file limit cannot carry two
    /// handles per connection (its own and an upstream one).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Whether `/metrics` is served without credentials (read by the
    /// authentication layer).
    #[serde(default)]
    pub metrics_public: bool,
}

fn default_header_read_timeout_ms() -> u64 {
    10_000
}
fn default_body_read_timeout_ms() -> u64 {
    30_000
}
fn default_idle_timeout_ms() -> u64 {
    60_000
}
fn default_max_connections() -> usize {
    10_000
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            allowed_hosts: Vec::new(),
            cors_allowed_origins: Vec::new(),
            header_read_timeout_ms: default_header_read_timeout_ms(),
            body_read_timeout_ms: default_body_read_timeout_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
            max_connections: default_max_connections(),
            metrics_public: false,
        }
    }
}

impl ServerConfig {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// The checks TOML types cannot express; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        for (field, ms) in [
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("body_read_timeout_ms", self.body_read_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
        ] {
            // A day bounds the arithmetic on deadlines and catches seconds
            // given where milliseconds are meant the other way round.
            if ms == 0 || ms > 86_400_000 {
                return Err(format!(
                    "server.{field}: must be between 1 and 86400000 (one day), got {ms}"
                ));
            }
        }
        if self.max_connections == 0 || self.max_connections > MAX_CONNECTIONS_CAP {
            return Err(format!(
                "server.max_connections: must be between 1 and {MAX_CONNECTIONS_CAP}, got {}",
                self.max_connections
            ));
        }
        for (i, h) in self.allowed_hosts.iter().enumerate() {
            check_host(h).map_err(|why| format!("server.allowed_hosts[{i}]: {h:?}: {why}"))?;
        }
        for (i, o) in self.cors_allowed_origins.iter().enumerate() {
            check_origin(o).map_err(|why| format!("server.cors_allowed_origins[{i}]: {o:?}: {why}"))?;
        }
        Ok(())
    }
}

/// A host name as compared: lower case, without the brackets of an IPv6
/// literal or a trailing dot.
pub fn normalize_host(host: &str) -> String {
    let h = host.trim();
    let h = h.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(h);
    h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase()
}

fn check_host(host: &str) -> Result<(), &'static str> {
    if host.contains('*') {
        return Err("wildcards are not supported; list each name (an empty list accepts any host)");
    }
    let h = normalize_host(host);
    if h.is_empty() {
        return Err("empty host name");
    }
    if h.parse::<Ipv6Addr>().is_ok() {
        return Ok(());
    }
    if !h
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err("give a bare host name or IP address, without scheme, port or path");
    }
    Ok(())
}

/// An origin as browsers send it: `scheme://host[:port]`, nothing after.
fn check_origin(origin: &str) -> Result<(), &'static str> {
    if origin == "*" {
        return Err("a wildcard would let every web page read answers; list the origins");
    }
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return Err("must start with http:// or https://");
    };
    if rest.is_empty() || rest.contains(['/', '*', '?', '#', ' ']) || !rest.is_ascii() {
        return Err("must be scheme://host[:port] with no path or trailing slash");
    }
    if origin.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("write it in lower case, as browsers send it");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let c = ServerConfig::default();
        assert!(c.validate().is_ok());
        assert_eq!(c.max_connections, 10_000);
        assert_eq!(c.header_read_timeout(), Duration::from_secs(10));
        assert!(c.allowed_hosts.is_empty() && c.cors_allowed_origins.is_empty() && !c.metrics_public);
    }

    #[test]
    fn errors_name_the_field() {
        type Edit = fn(&mut ServerConfig);
        let cases: [(Edit, &str); 8] = [
            (|c| c.header_read_timeout_ms = 0, "server.header_read_timeout_ms"),
            (|c| c.body_read_timeout_ms = 0, "server.body_read_timeout_ms"),
            (|c| c.idle_timeout_ms = 100_000_000, "server.idle_timeout_ms"),
            (|c| c.max_connections = 0, "server.max_connections"),
            (
                |c| c.allowed_hosts = vec!["localhost:8080".into()],
                "server.allowed_hosts[0]",
            ),
            (
                |c| c.allowed_hosts = vec!["*.example.com".into()],
                "server.allowed_hosts[0]",
            ),
            (
                |c| c.cors_allowed_origins = vec!["*".into()],
                "server.cors_allowed_origins[0]",
            ),
            (
                |c| c.cors_allowed_origins = vec!["https://a.example".into(), "https://b.example/".into()],
                "server.cors_allowed_origins[1]",
            ),
        ];
        for (set, field) in cases {
            let mut c = ServerConfig::default();
            set(&mut c);
            let e = c.validate().unwrap_err();
            assert!(e.starts_with(field), "{e}");
        }
    }

    #[test]
    fn the_example_section_parses_once_uncommented() {
        #[derive(Deserialize)]
        struct Wrapper {
            server: ServerConfig,
        }
        let text = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/example.toml"));
        let start = text.find("# [server]").unwrap();
        let end = start + text[start..].find("\n\n").unwrap();
        let section: String = text[start..end]
            .lines()
            .map(|l| {
                l.trim_start_matches("# ")
                    .split(" #")
                    .next()
                    .unwrap()
                    .trim_end()
                    .to_string()
                    + "\n"
            })
            .collect();
        let c = toml::from_str::<Wrapper>(&section).unwrap().server;
        c.validate().unwrap();
        assert_eq!(c.header_read_timeout_ms, default_header_read_timeout_ms());
        assert_eq!(c.max_connections, default_max_connections());
    }

    #[test]
    fn hosts_and_origins_that_pass() {
        let c = ServerConfig {
            allowed_hosts: vec![
                "localhost".into(),
                "127.0.0.1".into(),
                "[::1]".into(),
                "GW.Example.COM.".into(),
            ],
            cors_allowed_origins: vec!["http://localhost:3000".into(), "https://app.example.com".into()],
            ..ServerConfig::default()
        };
        assert!(c.validate().is_ok(), "{:?}", c.validate());
        assert_eq!(normalize_host("[::1]"), "::1");
        assert_eq!(normalize_host("GW.Example.COM."), "gw.example.com");
    }
}
