//! The experiments a gateway knows, their arms ready to route with, and
//! their lifecycle (create, stop), persisted in the experience store.
//!
//! Requests read the set through an `ArcSwap` (no lock on the request path);
//! creating or stopping an experiment builds a new set under a mutex, saves
//! the changed experiment, and swaps the set in.
//!
//! One experiment enrols at a time: two running over the same traffic would
//! compete for it, and a request can follow only one arm. Creating one whose
//! window overlaps another that has not ended or stopped is a conflict.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::assign::{Assigner, Assignment};
use super::spec::{ArmSpec, Experiment, ExperimentSpec, HOLDOUT};
use qroute_core::policy::{FrozenPolicy, Strategy};
use qroute_core::record::ExperimentTag;
use qroute_core::store::{Documents, ExperienceStore};
use qroute_core::{Error, Result};

/// The store tree experiments are saved in.
const TREE: &str = "experiments";

/// An arm ready to route with.
#[derive(Clone)]
pub struct LiveArm {
    pub strategy: Strategy,
    /// The frozen checkpoint it scores with; `None`: the live policy.
    pub policy: Option<Arc<FrozenPolicy>>,
}

/// An experiment with its assigner and arms.
pub struct LiveExperiment {
    pub experiment: Experiment,
    pub assigner: Assigner,
    pub arms: Vec<LiveArm>,
}

/// Where one request of an enrolled unit goes.
pub struct Enrollment {
    pub experiment: Arc<LiveExperiment>,
    /// Index into `experiment.arms`; `None` for the holdout.
    pub arm: Option<usize>,
    /// Probability that a unit is assigned where this one was.
    pub propensity: f64,
    /// [`crate::assign::stable_hash`] of the unit key.
    pub unit: u64,
}

impl LiveExperiment {
    /// Assigns `unit` (sticky: a pure function of the experiment id and the unit).
    pub fn enroll(self: &Arc<Self>, unit: &str) -> Enrollment {
        let hash = super::assign::stable_hash(&self.experiment.spec.id, unit);
        let (arm, propensity) = match self.assigner.assign(unit) {
            Assignment::Holdout => (None, self.assigner.holdout()),
            Assignment::Arm { index, propensity, .. } => (Some(index), propensity),
        };
        Enrollment {
            experiment: self.clone(),
            arm,
            propensity,
            unit: hash,
        }
    }
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment")
            .field("experiment", &self.experiment.experiment.spec.id)
            .field("arm", &self.arm)
            .field("propensity", &self.propensity)
            .finish()
    }
}

impl Enrollment {
    /// The strategy of the assigned arm; `None` for the holdout.
    pub fn arm(&self) -> Option<&LiveArm> {
        self.arm.map(|i| &self.experiment.arms[i])
    }

    /// The tag its decision records carry. `default` names the strategy a
    /// holdout unit is served by.
    pub fn tag(&self, default: &Strategy) -> ExperimentTag {
        let spec = &self.experiment.experiment.spec;
        let (arm, strategy) = match self.arm {
            Some(i) => (spec.arms[i].name.clone(), spec.arms[i].strategy.name()),
            None => (HOLDOUT.to_string(), default.name()),
        };
        ExperimentTag {
            experiment: spec.id.clone(),
            arm,
            strategy: strategy.to_string(),
            assignment_propensity: self.propensity as f32,
            unit: self.unit,
        }
    }
}

/// Turns an arm's spec into a [`LiveArm`], checking it against the gateway
/// (the models a fixed or weighted arm names, the checkpoint's features).
pub type ArmResolver = dyn Fn(&ArmSpec) -> Result<LiveArm> + Send + Sync;

/// Every experiment a gateway knows, running or not.
pub struct Experiments {
    store: Arc<dyn ExperienceStore>,
    resolve: Box<ArmResolver>,
    all: ArcSwap<Vec<Arc<LiveExperiment>>>,
    /// Serialises create and stop.
    write: Mutex<()>,
    /// Most experiments stored (finished ones included): each keeps its
    /// arms' policies in memory and is reloaded at every start.
    max_stored: usize,
}

impl Experiments {
    /// Loads the stored experiments, then creates each configured one the
    /// store does not have yet (a configured experiment already stored keeps
    /// its stored state: a restart does not undo a stop).
    pub fn open(
        store: Arc<dyn ExperienceStore>,
        configured: &[ExperimentSpec],
        resolve: Box<ArmResolver>,
        now_ms: u64,
    ) -> Result<Experiments> {
        let stored: Vec<Experiment> = store.docs(TREE)?;
        let mut live = Vec::with_capacity(stored.len());
        for e in stored {
            let built = match build(e.clone(), &*resolve) {
                Ok(b) => b,
                // The gateway changed under it (a model or checkpoint it
                // names is gone). A finished experiment routes nothing and
                // needs only the names for its results; an unfinished one
                // cannot run as designed, so it is stopped now rather than
                // keep the gateway from starting (its records stay).
                Err(err) => {
                    let mut e = e;
                    if e.end_ms().is_none_or(|end| end > now_ms) {
                        tracing::error!(experiment = %e.spec.id, "stopped: its arms no longer resolve ({err})");
                        e.stopped_ms = Some(now_ms);
                        store.put_doc(TREE, &e.spec.id, &e)?;
                    } else {
                        tracing::warn!(experiment = %e.spec.id, "arms no longer resolve ({err}); kept for results");
                    }
                    LiveExperiment {
                        assigner: e.spec.assigner()?,
                        arms: e
                            .spec
                            .arms
                            .iter()
                            .map(|a| LiveArm {
                                strategy: a.strategy.clone(),
                                policy: None,
                            })
                            .collect(),
                        experiment: e,
                    }
                }
            };
            live.push(Arc::new(built));
        }
        live.sort_by_key(|l| l.experiment.created_ms);
        let registry = Experiments {
            max_stored: usize::MAX,
            store,
            resolve,
            all: ArcSwap::from_pointee(live),
            write: Mutex::new(()),
        };
        for spec in configured {
            if registry.get(&spec.id).is_none() {
                registry
                    .create(spec.clone(), now_ms)
                    .map_err(|e| Error::InvalidInput(format!("experiments `{}`: {e}", spec.id)))?;
            }
        }
        Ok(registry)
    }

    /// Every experiment, oldest first.
    pub fn list(&self) -> Arc<Vec<Arc<LiveExperiment>>> {
        self.all.load_full()
    }

    pub fn get(&self, id: &str) -> Option<Arc<LiveExperiment>> {
        self.all.load().iter().find(|l| l.experiment.spec.id == id).cloned()
    }

    /// The experiment enrolling requests at `now_ms`, if any.
    pub fn running(&self, now_ms: u64) -> Option<Arc<LiveExperiment>> {
        self.all.load().iter().find(|l| l.experiment.enrolling(now_ms)).cloned()
    }

    /// Creates and saves an experiment. Fails with `InvalidInput` for a bad
    /// spec, `Conflict` for an id in use or a window that overlaps an
    /// experiment that has not ended.
    pub fn create(&self, spec: ExperimentSpec, now_ms: u64) -> Result<Arc<LiveExperiment>> {
        spec.validate()?;
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let all = self.all.load_full();
        if all.len() >= self.max_stored {
            return Err(Error::Conflict(format!(
                "this gateway holds its maximum of {} experiments (limits.max_experiments)",
                self.max_stored
            )));
        }
        if all.iter().any(|l| l.experiment.spec.id == spec.id) {
            return Err(Error::Conflict(format!("an experiment with id {:?} exists", spec.id)));
        }
        let experiment = Experiment {
            spec,
            created_ms: now_ms,
            stopped_ms: None,
            first_seq: self.store.len() as u64,
        };
        // The arms first: a spec that could never run is a 400 whatever else runs.
        let live = Arc::new(build(experiment, &*self.resolve)?);
        if let Some(other) = all.iter().find(|l| l.experiment.overlaps(&live.experiment)) {
            return Err(Error::Conflict(format!(
                "experiment {:?} ({}) overlaps this one's window; one experiment enrols at a time, \
                 stop it or choose start_ms after it ends",
                other.experiment.spec.id,
                other.experiment.status(now_ms).as_str()
            )));
        }
        self.store.put_doc(TREE, &live.experiment.spec.id, &live.experiment)?;
        let mut next = (*all).clone();
        next.push(live.clone());
        self.all.store(Arc::new(next));
        Ok(live)
    }

    /// Refuses to create more than `max` experiments in all.
    pub fn with_cap(mut self, max: usize) -> Experiments {
        self.max_stored = max;
        self
    }

    /// Ends enrolment now. Every decision the experiment made stays in the
    /// store, and requests already enrolled finish in their arm. Stopping a
    /// stopped or ended experiment changes nothing.
    pub fn stop(&self, id: &str, now_ms: u64) -> Result<Arc<LiveExperiment>> {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let all = self.all.load_full();
        let pos = all
            .iter()
            .position(|l| l.experiment.spec.id == id)
            .ok_or_else(|| Error::NotFound(format!("experiment {id:?}")))?;
        let current = &all[pos];
        if current.experiment.end_ms().is_some_and(|e| e <= now_ms) {
            return Ok(current.clone());
        }
        let mut experiment = current.experiment.clone();
        experiment.stopped_ms = Some(now_ms);
        self.store.put_doc(TREE, id, &experiment)?;
        let live = Arc::new(LiveExperiment {
            experiment,
            assigner: current.assigner.clone(),
            arms: current.arms.clone(),
        });
        let mut next = (*all).clone();
        next[pos] = live.clone();
        self.all.store(Arc::new(next));
        Ok(live)
    }
}

fn build(experiment: Experiment, resolve: &ArmResolver) -> Result<LiveExperiment> {
    let assigner = experiment.spec.assigner()?;
    let arms = experiment
        .spec
        .arms
        .iter()
        .map(|a| resolve(a).map_err(|e| Error::InvalidInput(format!("arm {:?}: {e}", a.name))))
        .collect::<Result<_>>()?;
    Ok(LiveExperiment {
        experiment,
        assigner,
        arms,
    })
}
