//! The layers a model file can name, under PyTorch's class names.

pub mod activation;
pub mod batchnorm;
pub mod conv;
pub mod layernorm;
pub mod linear;
pub mod recurrent;
pub mod residual;
pub mod sequential;
pub mod simple;

pub use activation::{Activation, ActivationInfo, Approximate, Saturation};
pub use batchnorm::{BatchNorm, BatchNormSpec};
pub use conv::{Conv2d, Conv2dConfig, Conv2dSpec, Size2d};
pub use layernorm::{LayerNorm, LayerNormSpec};
pub use linear::{Linear, LinearConfig, LinearSpec};
pub use recurrent::{Recurrent, RecurrentConfig, RecurrentOutput, RecurrentSpec};
pub use residual::{Residual, ResidualSpec};
pub use sequential::Sequential;
pub use simple::{AvgPool2d, AvgPool2dSpec, Dropout, DropoutSpec, Flatten, FlattenSpec, MaxPool2d, MaxPool2dSpec};
