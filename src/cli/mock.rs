//! `qroute mock-provider`: the mock upstream as a process.

/// An OpenAI-, Anthropic- and Gemini-compatible mock upstream for tests and
/// load tests, streaming included. Faults by model name: error, flaky,
/// timeout, slow, ratelimit, reject, notools, break, echo-auth, delay<N>,
/// score<N>; `refuse` answers with a refusal.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 9100)]
    port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Mean latency of an answer, in ms.
    #[arg(long, default_value_t = 0.0)]
    latency_ms: f64,
    /// Standard deviation of the latency, in ms.
    #[arg(long, default_value_t = 0.0)]
    jitter_ms: f64,
    /// Latency of models named `slow`, in ms.
    #[arg(long, default_value_t = 1000)]
    slow_ms: u64,
    /// Pause between the content chunks of a streamed answer, in ms.
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let cfg = qroute_mock::MockConfig {
        latency_ms: a.latency_ms,
        jitter_ms: a.jitter_ms,
        slow_ms: a.slow_ms,
        chunk_delay_ms: a.chunk_delay_ms,
        ..Default::default()
    };
    super::runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind((a.host, a.port)).await?;
        tracing::info!(addr = %listener.local_addr()?, "mock provider listening");
        qroute_mock::serve(listener, cfg).await?;
        anyhow::Ok(())
    })
}
