//! # gradflow-nn
//!
//! Layers, losses, initializers, regularizers, optimizers and learning-rate
//! schedules, built on the `gradflow` core. Names and layouts follow PyTorch
//! (`nn.Sequential` state_dict names, Linear weights `[out, in]`), so weights
//! travel between the two.
#![warn(missing_docs)]

pub mod error;
pub mod init;
mod kernels;
pub mod layers;
pub mod loss;
pub mod module;
pub mod optim;
pub mod registry;
pub mod regularize;
pub mod schedule;
pub mod serialize;
pub mod spec;

pub use error::{Error, Result};
pub use init::{Init, InitInfo};
pub use layers::*;
pub use loss::{Loss, LossInfo, Target};
pub use module::{Ctx, HiddenGradSlot, Module, NamedTensor, PenaltyTarget};
pub use registry::{registry, Registry};
pub use regularize::Penalty;
pub use spec::{BuildContext, BuildOptions, LayerDecl, LayerSpec, ModelSpec};
