//! Checkpoints: the weights as safetensors, everything else as JSON.
//!
//! A policy directory holds `model.safetensors` and `policy.json`. The JSON
//! carries the feature spec, the catalog, the scales, the architecture and
//! the version, so a checkpoint is self-describing: loading it never depends
//! on flags matching the ones it was trained with.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use super::action::Scales;
use super::answer::AnswerHead;
use super::dqn::{DqnPolicy, QualityPrior};
use super::network::{Arch, Network};
use crate::catalog::Catalog;
use crate::features::FeatureSpec;
use crate::{Error, Result};

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const META_FILE: &str = "policy.json";
const FORMAT: &str = "qroute-policy";
const FORMAT_VERSION: u32 = 1;

/// Everything in `policy.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub format: String,
    pub format_version: u32,
    pub version: u64,
    pub arch: Arch,
    pub feature_spec: FeatureSpec,
    pub catalog: Catalog,
    pub scales: Scales,
    pub operating_points: Vec<f32>,
    /// Absent in checkpoints from before it existed: no shrinkage.
    #[serde(default)]
    pub quality_prior: QualityPrior,
    /// Only in policies trained on data with recorded answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_head: Option<AnswerHead>,
    /// How the policy was made (data, split, seed, epochs, metrics…): free-form.
    #[serde(default)]
    pub training: serde_json::Value,
}

fn err(path: &Path, message: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes `policy` to `dir` (created if missing). The weights file is
/// written first and renamed into place, so a crash never leaves a torn one.
pub fn save(policy: &DqnPolicy, dir: &Path, training: serde_json::Value) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let (meta, weights) = to_bytes(policy, training, dir)?;
    write_atomic(&dir.join(WEIGHTS_FILE), &weights)?;
    write_atomic(&dir.join(META_FILE), &meta)
}

/// The two files' contents, `(policy.json, model.safetensors)`: what
/// [`save`] writes and [`from_bytes`] reads (a registry in a database keeps
/// them as columns); `origin` names them in errors.
pub fn to_bytes(policy: &DqnPolicy, training: serde_json::Value, origin: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let n = &policy.net;
    let tensors: Vec<(&str, Vec<usize>, Vec<u8>)> = n
        .params()
        .into_iter()
        .map(|(name, shape, data)| (name, shape.to_vec(), f32_bytes(data)))
        .collect();
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.to_string(), v))
                .map_err(|e| err(origin, e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let header: HashMap<String, String> = [("format".to_string(), FORMAT.to_string())].into();
    let weights = safetensors::serialize(views, &Some(header)).map_err(|e| err(origin, e.to_string()))?;
    let meta = Metadata {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        version: policy.version,
        arch: n.arch,
        feature_spec: policy.spec.clone(),
        catalog: policy.catalog.clone(),
        scales: policy.scales,
        operating_points: policy.operating_points.clone(),
        quality_prior: policy.quality_prior.clone(),
        answer_head: policy.answer_head.clone(),
        training,
    };
    let json = serde_json::to_vec_pretty(&meta).map_err(|e| err(origin, e.to_string()))?;
    Ok((json, weights))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp: PathBuf = path.with_extension("tmp");
    fs::write(&tmp, bytes).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io(format!("renaming to {}", path.display()), e))
}

/// Reads the metadata alone (cheap; no weights).
pub fn load_metadata(dir: &Path) -> Result<Metadata> {
    let path = dir.join(META_FILE);
    let text = fs::read(&path).map_err(|e| err(&path, format!("cannot read: {e}")))?;
    parse_metadata(&text, &path)
}

fn parse_metadata(text: &[u8], path: &Path) -> Result<Metadata> {
    let meta: Metadata = serde_json::from_slice(text).map_err(|e| err(path, e.to_string()))?;
    if meta.format != FORMAT || meta.format_version != FORMAT_VERSION {
        return Err(err(
            path,
            format!(
                "format {} v{} is not {FORMAT} v{FORMAT_VERSION}",
                meta.format, meta.format_version
            ),
        ));
    }
    Ok(meta)
}

/// Loads a policy saved by [`save`], checking every tensor's shape against
/// the metadata.
pub fn load(dir: &Path) -> Result<DqnPolicy> {
    let meta_path = dir.join(META_FILE);
    let meta = fs::read(&meta_path).map_err(|e| err(&meta_path, format!("cannot read: {e}")))?;
    let path = dir.join(WEIGHTS_FILE);
    let weights = fs::read(&path).map_err(|e| err(&path, format!("cannot read: {e}")))?;
    from_bytes(&meta, &weights, dir)
}

/// A policy from the two files' contents; `origin` names them in errors.
pub fn from_bytes(meta: &[u8], weights: &[u8], origin: &Path) -> Result<DqnPolicy> {
    let meta = parse_metadata(meta, &origin.join(META_FILE))?;
    let path = origin.join(WEIGHTS_FILE);
    let st = SafeTensors::deserialize(weights).map_err(|e| err(&path, e.to_string()))?;
    let a = meta.arch;
    let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
        let t = st.tensor(name).map_err(|e| err(&path, format!("tensor {name}: {e}")))?;
        if t.dtype() != Dtype::F32 || t.shape() != shape {
            return Err(err(
                &path,
                format!(
                    "tensor {name}: {:?} {:?}, expected F32 {:?}",
                    t.dtype(),
                    t.shape(),
                    shape
                ),
            ));
        }
        Ok(t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    };
    let m2 = |name: &str, r: usize, c: usize| -> Result<Array2<f32>> {
        Array2::from_shape_vec((r, c), get(name, &[r, c])?).map_err(|e| err(&path, e.to_string()))
    };
    let v1 = |name: &str, n: usize| -> Result<Array1<f32>> { Ok(Array1::from(get(name, &[n])?)) };
    let net = Network {
        arch: a,
        w1x: m2("w1x", a.ctx_dim, a.hidden1)?.into_shared(),
        w1a: m2("w1a", a.action_dim, a.hidden1)?,
        b1: v1("b1", a.hidden1)?,
        w2: m2("w2", a.hidden1, a.hidden2)?,
        b2: v1("b2", a.hidden2)?,
        w3: m2("w3", a.hidden2, super::network::HEADS)?,
        b3: v1("b3", super::network::HEADS)?,
        wide: m2("wide", a.ctx_dim, a.wide_slots)?.into_shared(),
    };
    DqnPolicy::new(
        meta.version,
        net,
        meta.catalog,
        meta.feature_spec,
        meta.scales,
        meta.operating_points,
    )
    .map(|p| {
        let mut p = p.with_prior(meta.quality_prior);
        p.answer_head = meta.answer_head;
        p
    })
    .map_err(|e| err(origin, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{Featurizer, RequestContext};
    use crate::policy::Policy;
    use crate::testing::toy_policy;

    #[test]
    fn checkpoint_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = toy_policy(9);
        p.operating_points = vec![0.0, 0.5, 2.0];
        let prior = QualityPrior {
            weight: 0.25,
            means: [(p.catalog.models[0].id.clone(), 0.9)].into(),
        };
        let p = p.with_prior(prior.clone());
        save(&p, dir.path(), serde_json::json!({"note": "test"})).unwrap();
        let q = load(dir.path()).unwrap();
        assert_eq!(q.net, p.net);
        assert_eq!(q.catalog, p.catalog);
        assert_eq!(q.spec, p.spec);
        assert_eq!(q.scales, p.scales);
        assert_eq!(q.version, p.version);
        assert_eq!(q.operating_points, p.operating_points);
        assert_eq!(q.quality_prior, prior);
        let fz = Featurizer::new(p.spec.clone()).unwrap();
        let x = fz.featurize(&RequestContext {
            prompt: "round trip",
            ..Default::default()
        });
        let cards: Vec<_> = p.catalog.models.iter().collect();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        p.predict(&x, &cards, &mut a).unwrap();
        q.predict(&x, &cards, &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(load_metadata(dir.path()).unwrap().training["note"], "test");
    }

    #[test]
    fn corrupt_or_missing_checkpoints_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("policy.json"), "{e}");
        save(&toy_policy(1), dir.path(), serde_json::Value::Null).unwrap();
        fs::write(dir.path().join(WEIGHTS_FILE), b"not safetensors").unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("model.safetensors"), "{e}");
    }
}
