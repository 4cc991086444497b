//! The command line's shared optimizer flags reach each optimizer as they did
//! when `optimizer_spec` took every variant apart by hand.

use gradflow_nn::optim::{AdagradConfig, AdamConfig, AdamWConfig, OptimizerSpec, RmsPropConfig, SgdConfig};
use gradflow_nn::schedule::{CosineConfig, ScheduleSpec};
use gradflow_train::TrainConfig;

fn spec(optimizer: &str, change: impl FnOnce(&mut TrainConfig)) -> OptimizerSpec {
    let mut c = TrainConfig {
        optimizer: optimizer.into(),
        lr: 0.05,
        ..TrainConfig::default()
    };
    change(&mut c);
    c.optimizer_spec().unwrap()
}

#[test]
fn sgd_takes_the_default_momentum_and_nesterov() {
    let want = SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        nesterov: true,
        weight_decay: 5e-4,
        ..Default::default()
    };
    let got = spec("sgd", |c| {
        c.nesterov = true;
        c.weight_decay = 5e-4;
    });
    assert_eq!(got, want.into());
}

#[test]
fn rmsprop_keeps_torchs_zero_momentum_unless_asked() {
    let plain = RmsPropConfig {
        lr: 0.05,
        ..Default::default()
    };
    assert_eq!(spec("rmsprop", |_| {}), plain.into());
    let with_momentum = RmsPropConfig { momentum: 0.5, ..plain };
    assert_eq!(spec("rmsprop", |c| c.momentum = 0.5), with_momentum.into());
}

#[test]
fn weight_decay_reaches_adam_adagrad_and_adamw_keeps_its_own_default() {
    let adam = AdamConfig {
        lr: 0.05,
        weight_decay: 0.2,
        ..Default::default()
    };
    assert_eq!(spec("adam", |c| c.weight_decay = 0.2), adam.into());
    let adagrad = AdagradConfig {
        lr: 0.05,
        weight_decay: 0.2,
        ..Default::default()
    };
    assert_eq!(spec("adagrad", |c| c.weight_decay = 0.2), adagrad.into());
    let adamw = AdamWConfig {
        lr: 0.05,
        ..Default::default()
    };
    assert_eq!(spec("adamw", |_| {}), adamw.into());
    assert_eq!(spec("adamw", |_| {}).lr(), 0.05);
    let e = TrainConfig {
        optimizer: "adamax".into(),
        ..TrainConfig::default()
    }
    .optimizer_spec()
    .unwrap_err();
    assert!(e.to_string().contains("unknown optimizer 'adamax'"), "{e}");
}

#[test]
fn warm_up_wraps_the_schedule_sized_for_the_rest_of_the_run() {
    let c = TrainConfig {
        epochs: 10,
        warmup_epochs: 2,
        schedule: "cosine".into(),
        ..TrainConfig::default()
    };
    let cosine: ScheduleSpec = CosineConfig { t_max: 8, eta_min: 0.0 }.into();
    assert_eq!(c.schedule_spec().unwrap(), cosine.with_warmup(2, 1.0 / 3.0));
}
