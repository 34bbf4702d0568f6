//! Small fixtures for the workspace's tests (feature `testing`, enabled by
//! the other crates' dev-dependencies; never in a release build).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rand::SeedableRng;

use crate::catalog::{Catalog, ModelCard};
use crate::features::FeatureSpec;
use crate::policy::network::Network;
use crate::policy::{DqnPolicy, Scales};

/// A two-model policy ("cheap", "dear") with random weights and a small
/// feature space.
pub fn toy_policy(seed: u64) -> DqnPolicy {
    let spec = FeatureSpec {
        dim: 512,
        ..FeatureSpec::default()
    };
    let arch = DqnPolicy::arch_for(&spec);
    let net = Network::new(arch, &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let catalog = Catalog {
        models: vec![
            ModelCard::fit("cheap", &[(100.0, 0.0001, Some(200.0)), (200.0, 0.0002, Some(300.0))]),
            ModelCard::fit("dear", &[(100.0, 0.01, Some(900.0)), (200.0, 0.02, Some(1200.0))]),
        ],
    };
    let scales = Scales {
        cost_usd: catalog.cost_scale(),
        latency_ms: catalog.latency_scale(),
    };
    DqnPolicy::new(1, net, catalog, spec, scales, vec![]).unwrap()
}

/// The PostgreSQL the tests use (this machine's and CI's, trust auth):
/// checks that it accepts connections, starting it with the machine's own
/// command when it does not, and returns its URL without a schema. Panics
/// (failing the test) when it cannot be started.
#[allow(clippy::panic)]
pub fn ensure_postgres() -> &'static str {
    const URL: &str = "postgres://postgres@127.0.0.1:5432/test";
    ensure_service(
        "postgres",
        5432,
        "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    );
    URL
}

/// The Redis the tests use (127.0.0.1:6379), started with the machine's own
/// command when it is not up; returns its URL.
pub fn ensure_redis() -> &'static str {
    ensure_service(
        "redis",
        6379,
        "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log",
    );
    "redis://127.0.0.1:6379"
}

#[allow(clippy::panic)]
fn ensure_service(name: &str, port: u16, start: &str) {
    use std::net::{SocketAddr, TcpStream};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};
    static STARTING: Mutex<()> = Mutex::new(());
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let up = || TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok();
    if up() {
        return;
    }
    let _one = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    if up() {
        return;
    }
    let status = std::process::Command::new("sh").arg("-c").arg(start).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !up() {
        if Instant::now() > deadline {
            panic!("{name} is not up on 127.0.0.1:{port} and `{start}` did not start it ({status:?})");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A schema name no other test (in this process or another) uses.
pub fn unique_schema(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    )
}
