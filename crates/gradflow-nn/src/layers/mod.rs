//! The layers a model file can name, under PyTorch's class names.

pub mod activation;
pub mod batchnorm;
pub mod conv;
pub mod linear;
pub mod recurrent;
pub mod sequential;
pub mod simple;

pub use activation::{Activation, ActivationInfo, Approximate, Saturation};
pub use batchnorm::BatchNorm;
pub use conv::{Conv2d, Conv2dConfig, Size2d};
pub use linear::{Linear, LinearConfig};
pub use recurrent::{Recurrent, RecurrentConfig, RecurrentOutput};
pub use sequential::Sequential;
pub use simple::{AvgPool2d, Dropout, Flatten, MaxPool2d};
