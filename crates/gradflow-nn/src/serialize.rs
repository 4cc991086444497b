//! Weights in safetensors, under PyTorch's state_dict names, so a file
//! written here loads with `load_state_dict(safetensors.torch.load_file(…))`
//! and a PyTorch file loads here.

use crate::error::{Error, Result};
use crate::module::NamedTensor;
use gradflow::{DType, Tensor};
use safetensors::tensor::{Dtype as StDtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};

fn is_integer_buffer(name: &str) -> bool {
    name.ends_with("num_batches_tracked")
}

/// Serialize tensors (and string metadata) to safetensors bytes. Buffers named
/// `*.num_batches_tracked` are written as int64, as PyTorch keeps them.
pub fn to_safetensors(tensors: &[NamedTensor], metadata: Option<HashMap<String, String>>) -> Result<Vec<u8>> {
    let mut bytes: Vec<(String, StDtype, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for t in tensors {
        let shape = t.tensor.shape().to_vec();
        let v = t.tensor.to_vec_f64();
        let (dt, data) = if is_integer_buffer(&t.name) {
            (StDtype::I64, v.iter().flat_map(|&x| (x as i64).to_le_bytes()).collect())
        } else {
            match t.tensor.dtype() {
                DType::F32 => (StDtype::F32, v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect()),
                DType::F64 => (StDtype::F64, v.iter().flat_map(|&x| x.to_le_bytes()).collect()),
            }
        };
        bytes.push((t.name.clone(), dt, shape, data));
    }
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(n, dt, s, d)| {
            Ok((
                n.clone(),
                TensorView::new(*dt, s.clone(), d).map_err(|e| Error::Weights(format!("{n}: {e}")))?,
            ))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize(views, &metadata).map_err(|e| Error::Weights(format!("cannot serialize weights: {e}")))
}

/// Every tensor of a safetensors file, as f32/f64 tensors (int64 buffers become f64), plus its metadata.
pub fn from_safetensors(bytes: &[u8], source: &str) -> Result<(BTreeMap<String, Tensor>, HashMap<String, String>)> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::Weights(format!("{source}: not a valid safetensors file: {e}")))?;
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| Error::Weights(format!("{source}: {e}")))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        // safetensors checks that the elements fit the data, but an empty
        // tensor may still claim dimensions whose product (its strides)
        // overflows; refuse those instead of building a broken layout.
        if shape
            .iter()
            .filter(|&&d| d != 0)
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .is_none()
        {
            return Err(Error::Weights(format!(
                "{source}: tensor '{name}' has an impossible shape {shape:?} (its size overflows)"
            )));
        }
        let data = view.data();
        let t = match view.dtype() {
            StDtype::F32 => Tensor::from_vec(
                data.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect::<Vec<f32>>(),
                &shape,
            ),
            StDtype::F64 => Tensor::from_vec(
                data.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                    .collect::<Vec<f64>>(),
                &shape,
            ),
            StDtype::I64 => Tensor::from_vec(
                data.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect::<Vec<f64>>(),
                &shape,
            ),
            other => {
                return Err(Error::Weights(format!(
                    "{source}: tensor '{name}' has dtype {other:?}; gradflow reads F32, F64 and I64"
                )))
            }
        }
        .map_err(|e| Error::Weights(format!("{source}: tensor '{name}': {e}")))?;
        out.insert(name, t);
    }
    Ok((out, metadata))
}

/// Copy `loaded` into the model's tensors in place, matching by name. Every
/// missing, unexpected or misshapen tensor is reported, one per line. With
/// `convert_dtype` false, a dtype difference is an error too.
pub fn load_into(
    model: &[NamedTensor],
    loaded: &BTreeMap<String, Tensor>,
    source: &str,
    convert_dtype: bool,
) -> Result<()> {
    let mut problems = Vec::new();
    for t in model {
        match loaded.get(&t.name) {
            None => problems.push(format!("missing tensor '{}' (shape {:?})", t.name, t.tensor.shape())),
            Some(l) if l.shape() != t.tensor.shape() => problems.push(format!(
                "tensor '{}' has shape {:?} in the file but {:?} in the model",
                t.name,
                l.shape(),
                t.tensor.shape()
            )),
            Some(l) if !convert_dtype && !is_integer_buffer(&t.name) && l.dtype() != t.tensor.dtype() => {
                problems.push(format!(
                    "tensor '{}' is {} in the file but {} in the model",
                    t.name,
                    l.dtype(),
                    t.tensor.dtype()
                ))
            }
            Some(_) => {}
        }
    }
    for name in loaded.keys() {
        if !model.iter().any(|t| &t.name == name) {
            problems.push(format!("unexpected tensor '{name}' (not in the model)"));
        }
    }
    if !problems.is_empty() {
        return Err(Error::Weights(format!(
            "{source}: weights do not match the model:\n  {}",
            problems.join("\n  ")
        )));
    }
    for t in model {
        t.tensor
            .assign(&loaded[&t.name])
            .map_err(|e| Error::Weights(format!("{source}: {}: {e}", t.name)))?;
    }
    Ok(())
}

/// The dtype most of a file's floating tensors use (to build a model in the weights' precision).
pub fn dominant_dtype(loaded: &BTreeMap<String, Tensor>) -> DType {
    let f64s = loaded
        .iter()
        .filter(|(n, t)| !is_integer_buffer(n) && t.dtype() == DType::F64)
        .count();
    if f64s * 2 > loaded.len() {
        DType::F64
    } else {
        DType::F32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::Module;
    use crate::spec::{BuildOptions, ModelSpec};

    #[test]
    fn round_trip_and_name_by_name_errors() {
        let spec = ModelSpec::parse(
            "input = [4]\n[[layer]]\ntype = \"Linear\"\nout_features = 3\n[[layer]]\ntype = \"BatchNorm1d\"\n",
            "m",
        )
        .unwrap();
        let a = spec
            .build(BuildOptions {
                seed: 1,
                ..Default::default()
            })
            .unwrap();
        let b = spec
            .build(BuildOptions {
                seed: 2,
                ..Default::default()
            })
            .unwrap();
        let bytes = to_safetensors(&a.state_dict(), None).unwrap();
        let (loaded, _) = from_safetensors(&bytes, "a.safetensors").unwrap();
        assert!(loaded.contains_key("1.num_batches_tracked"));
        load_into(&b.state_dict(), &loaded, "a.safetensors", false).unwrap();
        assert_eq!(
            a.parameters()[0].tensor.to_vec::<f32>().unwrap(),
            b.parameters()[0].tensor.to_vec::<f32>().unwrap()
        );

        let mut wrong = loaded.clone();
        wrong.remove("0.bias");
        wrong.insert("0.weight".into(), Tensor::zeros(&[2, 4], DType::F32));
        wrong.insert("9.weight".into(), Tensor::zeros(&[1], DType::F32));
        let e = load_into(&b.state_dict(), &wrong, "w.safetensors", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing tensor '0.bias'"), "{e}");
        assert!(
            e.contains("tensor '0.weight' has shape [2, 4] in the file but [3, 4] in the model"),
            "{e}"
        );
        assert!(e.contains("unexpected tensor '9.weight'"), "{e}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let e = from_safetensors(b"not a safetensors file", "x.safetensors")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("x.safetensors: not a valid safetensors file"), "{e}");
        let e = from_safetensors(&[255; 16], "y").unwrap_err().to_string();
        assert!(e.starts_with("y: "));
    }
}
