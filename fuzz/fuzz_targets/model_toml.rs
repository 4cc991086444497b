//! Model TOML loader: parse, shape-check and build under a small parameter
//! cap (so hostile sizes cost an error, not an allocation), then check that
//! `to_toml` round-trips (resume re-parses the saved model.toml).
#![no_main]

use gradflow_nn::{BuildOptions, Init, ModelSpec};
use libfuzzer_sys::fuzz_target;

/// Small enough that every accepted model builds in microseconds.
const CAP: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = ModelSpec::parse(text, "fuzz.toml") else {
        return;
    };
    let again = ModelSpec::parse(&spec.to_toml(), "round trip").expect("to_toml output must parse");
    assert_eq!(spec, again, "to_toml must round-trip");
    let opts = BuildOptions {
        init: Init::Zeros,
        ..Default::default()
    };
    if let Ok(net) = spec.build_with_limit(opts, CAP) {
        assert!(net.num_parameters() <= CAP);
        let shapes = net.infer_shapes(&spec.input).expect("a built model infers its shapes");
        let out = spec.output_shape().expect("output_shape agrees with build");
        assert_eq!(shapes.last().cloned().unwrap_or_default(), out);
    }
});
