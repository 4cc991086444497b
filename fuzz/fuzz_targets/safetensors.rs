//! Weights reader: `from_safetensors`, then matching against a small model
//! and a write/read round trip of whatever was accepted.
#![no_main]

use gradflow_nn::serialize::{dominant_dtype, from_safetensors, load_into, to_safetensors};
use gradflow_nn::{BuildOptions, ModelSpec, NamedTensor};
use libfuzzer_sys::fuzz_target;

const MODEL: &str = "input = [2]\n[[layer]]\ntype = \"Linear\"\nout_features = 3\n[[layer]]\ntype = \"BatchNorm1d\"\n";

fuzz_target!(|data: &[u8]| {
    let Ok((tensors, _meta)) = from_safetensors(data, "fuzz.safetensors") else {
        return;
    };
    let _ = dominant_dtype(&tensors);
    let net = ModelSpec::parse(MODEL, "m")
        .unwrap()
        .build(BuildOptions::default())
        .unwrap();
    let _ = load_into(&net.state_dict(), &tensors, "fuzz.safetensors", true);
    let _ = load_into(&net.state_dict(), &tensors, "fuzz.safetensors", false);

    let named: Vec<NamedTensor> = tensors
        .iter()
        .map(|(name, t)| NamedTensor {
            name: name.clone(),
            tensor: t.clone(),
        })
        .collect();
    let bytes = to_safetensors(&named, None).expect("accepted tensors serialize");
    let (again, _) = from_safetensors(&bytes, "round trip").expect("written weights read back");
    assert_eq!(tensors.len(), again.len());
    for (name, t) in &tensors {
        let u = &again[name];
        assert_eq!(t.shape(), u.shape(), "{name}");
        let (a, b) = (t.to_vec_f64(), u.to_vec_f64());
        assert!(
            a.iter()
                .zip(&b)
                .all(|(x, y)| x == y || (x.is_nan() && y.is_nan()) || name.ends_with("num_batches_tracked")),
            "{name}"
        );
    }
});
