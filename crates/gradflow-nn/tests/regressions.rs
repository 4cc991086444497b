//! Regression tests for hostile model files and weights files: every input
//! here once crashed, overflowed or tried to allocate without bound (found by
//! reading the code or by the fuzz targets in `fuzz/`). Each must now be a
//! one-line error naming the layer or tensor, quickly, with no allocation
//! driven by the file's numbers.

use gradflow_nn::serialize::{from_safetensors, to_safetensors};
use gradflow_nn::spec::{MAX_DIM, MAX_PARAMETERS, MAX_SAMPLE_ELEMENTS};
use gradflow_nn::{BuildOptions, ModelSpec, NamedTensor};
use std::time::Instant;

fn parse(text: &str) -> Result<ModelSpec, String> {
    ModelSpec::parse(text, "m.toml").map_err(|e| e.to_string())
}

/// Parse, then build; the error of whichever step fails.
fn build(text: &str) -> Result<usize, String> {
    let spec = parse(text)?;
    let net = spec.build(BuildOptions::default()).map_err(|e| e.to_string())?;
    spec.output_shape().map_err(|e| e.to_string())?;
    Ok(net.num_parameters())
}

fn linear(input: &str, out: &str) -> String {
    format!("input = {input}\n[[layer]]\ntype = \"Flatten\"\n[[layer]]\ntype = \"Linear\"\nout_features = {out}\n")
}

#[test]
fn huge_layer_sizes_are_refused_before_allocating() {
    let start = Instant::now();
    // 10^12 outputs on 784 inputs would be 3 PB of weights.
    let e = build(&linear("[784]", "1000000000000")).unwrap_err();
    assert_eq!(
        e,
        format!("m.toml: layer 1 (Linear): 'out_features' = 1000000000000 is too large (at most {MAX_DIM})")
    );
    // Within the per-size cap but not the parameter budget: (784 + 1) × 2^24.
    let e = build(&linear("[784]", &MAX_DIM.to_string())).unwrap_err();
    assert!(
        e.starts_with(
            "layer 1 (Linear): 13170114560 parameters on input [784] would make the model larger than the limit of"
        ),
        "{e}"
    );
    // Many moderately wide layers add up.
    let mut text = "input = [16384]\n".to_string();
    for _ in 0..20 {
        text.push_str("[[layer]]\ntype = \"Linear\"\nout_features = 16384\n");
    }
    let e = build(&text).unwrap_err();
    assert!(
        e.starts_with("layer 0 (Linear): ") || e.contains("larger than the limit"),
        "{e}"
    );
    assert!(e.contains(&MAX_PARAMETERS.to_string()), "{e}");
    let e = build(
        "input = [1, 1, 1]\n[[layer]]\ntype = \"Conv2d\"\nout_channels = 16777216\nkernel_size = 1\n[[layer]]\ntype = \"Conv2d\"\nout_channels = 16\nkernel_size = 1\n",
    )
    .unwrap_err();
    assert!(
        e.starts_with("layer 1 (Conv2d): ") && e.contains("larger than the limit"),
        "{e}"
    );
    assert!(start.elapsed().as_secs() < 5, "took {:?}", start.elapsed());
}

#[test]
fn huge_or_overflowing_shapes_are_errors_not_panics() {
    // The product of the input overflows usize: Flatten used to panic.
    let e = parse("input = [4294967296, 4294967296, 4294967296]\n[[layer]]\ntype = \"Flatten\"\n").unwrap_err();
    assert!(
        e.contains("'input' must be a non-empty list of positive integers of at most"),
        "{e}"
    );
    let e = parse("input = [65536, 65536, 65536]\n[[layer]]\ntype = \"Flatten\"\n").unwrap_err();
    assert_eq!(
        e,
        format!("m.toml: 'input' [65536, 65536, 65536] has more than {MAX_SAMPLE_ELEMENTS} values per sample")
    );
    // Padding and dilation near i64::MAX overflowed the output-size formula.
    for (key, value) in [("padding", "9223372036854775807"), ("dilation", "4611686018427387904")] {
        let text = format!(
            "input = [1, 4, 4]\n[[layer]]\ntype = \"Conv2d\"\nout_channels = 1\nkernel_size = 3\n{key} = {value}\n"
        );
        let e = parse(&text).unwrap_err();
        assert_eq!(
            e,
            format!("m.toml: layer 0 (Conv2d): '{key}' = {value} is too large (at most {MAX_DIM})")
        );
    }
    let e = parse("input = [1, 4, 4]\n[[layer]]\ntype = \"MaxPool2d\"\nkernel_size = [2, 99999999999]\n").unwrap_err();
    assert!(e.contains("'kernel_size' = 99999999999 is too large"), "{e}");
    // Negative values keep their own message.
    let e = parse("input = [1]\n[[layer]]\ntype = \"Linear\"\nout_features = -5\n").unwrap_err();
    assert!(e.contains("'out_features' must be a positive integer, got -5"), "{e}");
    // A padded pooling output that grows past the per-sample budget.
    let e = build(
        "input = [1, 16384, 16384]\n[[layer]]\ntype = \"AvgPool2d\"\nkernel_size = 1\nstride = 1\n[[layer]]\ntype = \"Conv2d\"\nout_channels = 64\nkernel_size = 1\n",
    )
    .unwrap_err();
    assert!(e.contains("values per sample"), "{e}");
}

#[test]
fn specs_built_in_code_are_checked_too() {
    let mut spec = parse(&linear("[4]", "3")).unwrap();
    spec.input = vec![usize::MAX, 2];
    let e = spec.build(BuildOptions::default()).unwrap_err().to_string();
    assert!(e.contains("'input' must be"), "{e}");
    let mut spec = parse(&linear("[4]", "3")).unwrap();
    if let gradflow_nn::LayerSpec::Linear(linear) = &mut spec.layers[1] {
        linear.out_features = usize::MAX;
    }
    let e = spec.output_shape().unwrap_err().to_string();
    assert!(
        e.starts_with("layer 1 (Linear): 'out_features' = 18446744073709551615 is too large"),
        "{e}"
    );
}

#[test]
fn a_small_limit_caps_the_build() {
    let spec = ModelSpec::preset("mlp").unwrap();
    let e = spec
        .build_with_limit(BuildOptions::default(), 1000)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "layer 1 (Linear): 628000 parameters on input [784] would make the model larger than the limit of 1000"
    );
    let net = spec.build_with_limit(BuildOptions::default(), 636_010).unwrap();
    assert_eq!(net.num_parameters(), 636_010);
    // Presets stay far below the default limit and round-trip through to_toml.
    for (name, _) in gradflow_nn::spec::PRESETS {
        let spec = ModelSpec::preset(name).unwrap();
        assert!(spec.build(BuildOptions::default()).is_ok(), "{name}");
        assert_eq!(ModelSpec::parse(&spec.to_toml(), name).unwrap(), spec);
    }
}

#[test]
fn weights_with_impossible_shapes_are_errors() {
    // Zero elements, but the other dimensions multiply past usize: the
    // contiguous strides of such a tensor overflowed.
    let header = br#"{"e":{"dtype":"F32","shape":[0,4294967296,4294967296],"data_offsets":[0,0]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    let e = from_safetensors(&bytes, "w.safetensors").unwrap_err().to_string();
    assert!(e.starts_with("w.safetensors: tensor 'e'"), "{e}");
    // An honest empty tensor still loads.
    let header = br#"{"e":{"dtype":"F32","shape":[0,4],"data_offsets":[0,0]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    let (t, _) = from_safetensors(&bytes, "w").unwrap();
    assert_eq!(t["e"].shape(), &[0, 4]);
    let named = vec![NamedTensor {
        name: "e".into(),
        tensor: t["e"].clone(),
    }];
    assert!(to_safetensors(&named, None).is_ok());
}

/// Every file of a committed fuzz corpus (seeds and crash inputs).
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().to_string(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn fuzz_crash_inputs_are_clean_errors() {
    // Found by the model_toml target within a minute on the code before the
    // caps, mutating the presets: each tried to allocate gigabytes.
    let cases = [
        (
            "crash-d0be1f0c32d31c7a79e18c77a22a10ed6150fb28",
            "layer 5 (Linear): 10497049600 parameters on input [1024] would make the model larger than the limit of",
        ),
        (
            "oom-f4c176dd24b972cb3143722b0520df471722db69",
            "layer 2 (Linear): 803858840 parameters on input [784] would make the model larger than the limit of",
        ),
    ];
    let files = corpus("model_toml");
    for (name, want) in cases {
        let (_, bytes) = files.iter().find(|(n, _)| n == name).unwrap();
        let spec = ModelSpec::parse(std::str::from_utf8(bytes).unwrap(), name).unwrap();
        let e = spec.build(BuildOptions::default()).unwrap_err().to_string();
        assert!(e.starts_with(want), "{name}: {e}");
        assert_eq!(spec.output_shape().unwrap_err().to_string(), e);
    }
}

#[test]
fn fuzz_corpora_replay_without_panics() {
    // What the model_toml and safetensors targets check, on every committed
    // input, in the ordinary test build.
    for (name, bytes) in corpus("model_toml") {
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        let Ok(spec) = ModelSpec::parse(text, &name) else {
            continue;
        };
        assert_eq!(ModelSpec::parse(&spec.to_toml(), &name).unwrap(), spec, "{name}");
        let _ = spec.build_with_limit(BuildOptions::default(), 1 << 16);
    }
    for (name, bytes) in corpus("safetensors") {
        if let Ok((tensors, _)) = from_safetensors(&bytes, &name) {
            let named: Vec<NamedTensor> = tensors
                .iter()
                .map(|(n, t)| NamedTensor {
                    name: n.clone(),
                    tensor: t.clone(),
                })
                .collect();
            assert!(to_safetensors(&named, None).is_ok(), "{name}");
        }
    }
}
