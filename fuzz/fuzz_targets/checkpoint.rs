//! Checkpoint reader: `checkpoint::load_bytes`, then everything `--resume`
//! does with an accepted checkpoint short of loading data: validate the
//! saved settings, rebuild the saved model (under a small cap), load the
//! weights, verify the checksum, restore optimizer and schedule state.
#![no_main]

use gradflow_nn::optim;
use gradflow_nn::serialize::load_into;
use gradflow_nn::{BuildOptions, ModelSpec};
use gradflow_train::checkpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(ck) = checkpoint::load_bytes(data, "fuzz/checkpoint.safetensors") else {
        return;
    };
    let config = &ck.meta.config;
    if config.validate().is_err() {
        return;
    }
    let Ok(spec) = ModelSpec::parse(&ck.meta.model_toml, "fuzz (model)") else {
        return;
    };
    let Ok(net) = spec.build_with_limit(BuildOptions::default(), 1 << 16) else {
        return;
    };
    if load_into(&net.state_dict(), &ck.model, "fuzz", false).is_err() {
        return;
    }
    let _ = checkpoint::verify(&ck.meta, &net.state_dict(), &ck.optimizer, "fuzz");
    if let Ok(spec) = config.optimizer_spec() {
        let mut opt = optim::build(&spec);
        let _ = opt.load_state(&ck.optimizer);
    }
    if let Ok(spec) = config.schedule_spec() {
        let mut schedule = spec.build(config.lr);
        if schedule.load_state(&ck.meta.schedule).is_ok() {
            let _ = schedule.lr();
            let _ = schedule.step(Some(1.0));
        }
    }
});
