//! # gradflow-train
//!
//! The fit loop, metrics, checkpoints and diagnostics. Everything the
//! `gradflow` CLI does is available here to Rust code.
#![warn(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod diagnostics;
pub mod experiment;
pub mod explain;
pub mod metrics;
pub mod report;
pub mod trainer;

pub use config::TrainConfig;
pub use diagnostics::Warning;
pub use metrics::{evaluate, EpochMetrics, Evaluation};
pub use trainer::{DataSource, Observer, Silent, Summary, TrainError, Trainer};

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
