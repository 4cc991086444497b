//! Whole-model benchmarks of gradflow, in `benches/models.rs`: a training step of the
//! benchmark MLP, and `--step-profile`, where each phase of a step's time goes.
//!
//! They live in this crate, above `gradflow-nn`, so that the core crate's benches
//! (the kernels, in `crates/gradflow/benches/kernels.rs`) depend on no layer crate.
//! The library itself is empty.
