//! Wiring a [`Gateway`] from its config: the policy, the providers, the
//! store and its writer, the online trainer, experiments and the shadow.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::{Decider, Gateway, Learning, ServedModel, Shadow};
use crate::access::Access;
use crate::config::{Config, JudgeKind, ProviderConfig, ProviderKind};
use crate::exec::judge::{Judge, LlmJudge};
use crate::exec::providers::{self, Anthropic, Gemini, OpenAiCompat, Provider, Simulated};
use crate::exec::resilience::CircuitBreaker;
use qroute_core::catalog::ModelCard;
use qroute_core::dataset::Dataset;
use qroute_core::features::FeatureSpec;
use qroute_core::policy::{checkpoint, FrozenPolicy, Strategy};
use qroute_core::store::ExperienceStore;
use qroute_core::{unix_ms, Error, Result};
use qroute_experiment::spec::checkpoint_name_ok;
use qroute_experiment::{ArmSpec, Experiments, LiveArm};
use qroute_learn::learner::{Learner, LearnerConfig};
use qroute_learn::online::{Checkpoints, OnlineConfig, OnlineTrainer};
use qroute_learn::registry::{Registry, Start};
use qroute_learn::watch::Watcher;
use qroute_learn::LearningMode;
use qroute_store::pruner::PRUNE_EVERY;
use qroute_store::{GroupWriter, Pruner};

impl Gateway {
    /// Loads the policy, opens the store, builds the provider clients, and
    /// starts the writer and (when enabled) the online trainer.
    pub fn build(config: Config) -> Result<Gateway> {
        let base = match &config.policy.path {
            Some(p) => checkpoint::load(p)?,
            None => crate::embedded::policy()?,
        };
        // Beside the experience store: shared by every replica on PostgreSQL.
        let registry = match &config.store.url {
            Some(url) => Registry::open_postgres(url)?,
            None => Registry::open(config.learning.registry_dir(&config.store.path))?,
        };
        let mut start = registry.start_from(base)?;
        let policy = start.policy_mut();
        let client = providers::http_client(Duration::from_millis(config.limits.connect_timeout_ms))?;
        let mut built: HashMap<String, Arc<Provider>> = HashMap::new();
        for p in &config.providers {
            built.insert(p.name.clone(), Arc::new(provider(p, &client)?.with_name(&p.name)));
        }

        let mut models = Vec::with_capacity(config.models.len());
        for m in &config.models {
            let card = match policy.catalog.get(&m.id) {
                Some(c) => c.clone(),
                None => {
                    let mut c = ModelCard::from_prices(
                        &m.id,
                        m.input_per_mtok,
                        m.output_per_mtok,
                        config.policy.expected_output_tokens,
                        m.tags.clone(),
                    );
                    if let Provider::Simulated(sim) = &*built[&m.provider] {
                        if let Some(fitted) = sim.cards().find(|f| f.id == m.upstream()) {
                            c = ModelCard {
                                id: m.id.clone(),
                                tags: m.tags.clone(),
                                ..fitted.clone()
                            };
                        }
                    }
                    // Known to the policy from now on, so the trainer learns it.
                    policy.catalog.models.push(c.clone());
                    c
                }
            };
            let kind = config
                .providers
                .iter()
                .find(|p| p.name == m.provider)
                .map_or(ProviderKind::Simulated, |p| p.kind);
            models.push(ServedModel {
                capabilities: m.capabilities(kind),
                config: m.clone(),
                card,
                provider: built[&m.provider].clone(),
                breaker: CircuitBreaker::new(&config.breaker),
            });
        }
        policy.refresh_cache();
        let (policy, lineage) = match start {
            Start::Resume { policy, lineage } => (policy, lineage),
            Start::Fresh { policy, lineage } => {
                registry.save(&policy, &lineage)?;
                (policy, lineage)
            }
        };
        tracing::info!(version = policy.version, registry = %registry.location(), "policy");
        let index = models
            .iter()
            .enumerate()
            .map(|(i, m)| (m.config.id.clone(), i))
            .collect();

        let store: Arc<dyn ExperienceStore> = qroute_store::open(&config.store)?;
        let pruner = match &config.store.retention {
            Some(r) => Some(Pruner::spawn(store.clone(), r.retention(), PRUNE_EVERY, |n| {
                metrics::counter!("qroute_experiences_pruned_total").increment(n);
            })?),
            None => None,
        };
        let redis = config
            .redis
            .as_ref()
            .map(|r| crate::shared::SharedRedis::open(r).map(Arc::new))
            .transpose()?;
        let access = Access::open_shared(&config.auth, store.clone(), redis.clone())?;
        let decider = Decider::new(policy.spec.clone(), &config.policy)?;
        let served: Vec<ModelCard> = models.iter().map(|m| m.card.clone()).collect();
        let shadow = match &config.policy.shadow {
            None => None,
            Some(s) => Some(Shadow {
                name: s.name.clone(),
                policy: FrozenPolicy::load(&s.path, &policy.spec, &served)
                    .map_err(|e| Error::InvalidInput(format!("policy.shadow: {e}")))?,
                decisions: Default::default(),
                agreements: Default::default(),
            }),
        };
        let experiments = {
            let spec = policy.spec.clone();
            let places = PolicyPlaces {
                registry: registry.clone(),
                checkpoints_dir: config.policy.checkpoints_dir.clone(),
            };
            let resolve = move |arm: &ArmSpec| resolve_arm(arm, &served, &spec, &places);
            Experiments::open(store.clone(), &config.experiments, Box::new(resolve), unix_ms())?
                .with_cap(config.limits.max_experiments)
        };
        let judge = match config.variations.judge {
            JudgeKind::Heuristic => Judge::Heuristic,
            JudgeKind::Agreement => Judge::Agreement,
            JudgeKind::Dataset => Judge::Dataset,
            JudgeKind::Head => Judge::Head,
            JudgeKind::Llm => {
                let id = config.variations.judge_model.as_deref().unwrap_or_default();
                let m = models
                    .iter()
                    .find(|m| m.config.id == id)
                    .ok_or_else(|| Error::InvalidInput(format!("variations.judge_model: no model is named {id:?}")))?;
                Judge::Llm(LlmJudge {
                    provider: m.provider.clone(),
                    upstream: m.config.upstream().to_string(),
                    input_per_mtok: m.config.input_per_mtok,
                    output_per_mtok: m.config.output_per_mtok,
                    timeout: config.limits.attempt_timeout(),
                })
            }
        };

        let mut learning = Learning::default();
        let policy = match config.learning.mode() {
            LearningMode::Online => {
                learning.trainer_lock = Some(registry.lock_trainer()?);
                let learner = Learner::new(policy, LearnerConfig::online(), rand::random());
                let trainer = Arc::new(OnlineTrainer::spawn(
                    store.clone(),
                    learner,
                    OnlineConfig::from_section(
                        &config.learning,
                        Some(Checkpoints::from_section(
                            &config.learning,
                            registry.clone(),
                            lineage,
                            "online",
                        )),
                    ),
                )?);
                learning.trainer = Some(trainer.clone());
                trainer.current()
            }
            LearningMode::External => {
                let current = Arc::new(ArcSwap::from_pointee(policy));
                learning.watcher = Some(Watcher::spawn(registry.clone(), current.clone(), WATCH_EVERY)?);
                current
            }
            LearningMode::Off => Arc::new(ArcSwap::from_pointee(policy)),
        };
        learning.registry = Some(registry);
        let writer = {
            let trainer = learning.trainer.clone();
            GroupWriter::spawn(store.clone(), move |n| {
                metrics::counter!("qroute_outcomes_recorded_total").increment(n as u64);
                if let Some(t) = &trainer {
                    t.notify();
                }
            })?
        };
        let cache = crate::cache::build_shared(&config.cache, redis);
        Ok(Gateway {
            config,
            models,
            index,
            decider,
            policy,
            experiments,
            access,
            shadow,
            judge,
            cache,
            cache_counts: Default::default(),
            writer,
            learning,
            _pruner: pruner,
            store,
            started: Instant::now(),
        })
    }
}

/// How often a gateway in external mode looks for a new version: well
/// inside the one second within which it must serve it.
const WATCH_EVERY: Duration = Duration::from_millis(200);

/// Where an experiment arm's `checkpoint` name may point.
struct PolicyPlaces {
    registry: Registry,
    checkpoints_dir: Option<std::path::PathBuf>,
}

impl PolicyPlaces {
    /// Loads the policy `name` names: `vN` in the registry, else a directory
    /// of `policy.checkpoints_dir`. Whatever goes wrong, the caller learns
    /// only that no usable policy has that name, never whether some path
    /// exists (the details go to the log).
    fn load(&self, name: &str, spec: &FeatureSpec, served: &[ModelCard]) -> Result<FrozenPolicy> {
        let version = name.strip_prefix('v').and_then(|v| v.parse::<u64>().ok());
        let loaded = match (version, &self.checkpoints_dir) {
            _ if !checkpoint_name_ok(name) => Err("not a usable checkpoint name".to_string()),
            (Some(v), _) => self
                .registry
                .load(v)
                .and_then(|p| FrozenPolicy::new(p, name, spec, served))
                .map_err(|e| e.to_string()),
            (None, Some(d)) => FrozenPolicy::load(&d.join(name), spec, served).map_err(|e| e.to_string()),
            (None, None) => Err("not a registered version and no policy.checkpoints_dir".to_string()),
        };
        loaded.map_err(|detail| {
            tracing::info!(checkpoint = name, %detail, "an experiment arm's checkpoint did not load");
            Error::InvalidInput(format!(
                "checkpoint {name:?}: no usable policy of that name in the policy registry \
                     or policy.checkpoints_dir"
            ))
        })
    }
}

/// Checks an experiment arm against the served models and loads its checkpoint.
fn resolve_arm(arm: &ArmSpec, served: &[ModelCard], spec: &FeatureSpec, places: &PolicyPlaces) -> Result<LiveArm> {
    let unknown = |m: &String| {
        (!served.iter().any(|c| &c.id == m)).then(|| Error::InvalidInput(format!("no model is named {m:?}")))
    };
    match &arm.strategy {
        Strategy::Fixed { model } => unknown(model).map_or(Ok(()), Err)?,
        Strategy::Weighted { weights } => weights.keys().find_map(unknown).map_or(Ok(()), Err)?,
        _ => {}
    }
    Ok(LiveArm {
        strategy: arm.strategy.clone(),
        policy: arm
            .checkpoint
            .as_deref()
            .map(|name| places.load(name, spec, served).map(Arc::new))
            .transpose()?,
    })
}

/// Builds the client for one configured provider.
fn provider(p: &ProviderConfig, client: &reqwest::Client) -> Result<Provider> {
    let config_err = |message: String| Error::Config {
        path: format!("providers.{}", p.name).into(),
        message,
    };
    let api_key = match &p.api_key_env {
        Some(var) => Some(
            std::env::var(var)
                .map_err(|_| config_err(format!("api_key_env: environment variable {var} is not set")))?,
        ),
        None => None,
    };
    let url = p.base_url.clone().unwrap_or_default();
    Ok(match p.kind {
        ProviderKind::Openai => Provider::OpenAi(OpenAiCompat::new(client.clone(), url, api_key)),
        ProviderKind::Anthropic => Provider::Anthropic(Anthropic::new(client.clone(), url, api_key)),
        ProviderKind::Gemini => Provider::Gemini(Gemini::new(client.clone(), url, api_key)),
        ProviderKind::Simulated => {
            let name = p.dataset.as_deref().unwrap_or_default();
            let ds = match crate::embedded::dataset(name) {
                Some(bytes) => Dataset::from_bytes(Path::new(name), bytes)?,
                None => Dataset::load(name)?,
            };
            Provider::Simulated(Simulated::new(ds, p.simulate_latency))
        }
    })
}
