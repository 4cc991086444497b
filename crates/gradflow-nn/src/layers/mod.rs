//! The layers a model file can name, under PyTorch's class names.

pub mod activation;
pub mod attention;
pub mod batchnorm;
pub mod conv;
pub mod layernorm;
pub mod linear;
pub mod recurrent;
pub mod residual;
pub mod sequential;
pub mod simple;
pub mod transformer;

pub use activation::{Activation, ActivationInfo, Approximate, Saturation};
pub use attention::{MultiheadAttention, MultiheadAttentionConfig};
pub use batchnorm::BatchNorm;
pub use conv::{Conv2d, Conv2dConfig, Size2d};
pub use layernorm::LayerNorm;
pub use linear::{Linear, LinearConfig};
pub use recurrent::{Recurrent, RecurrentConfig, RecurrentOutput};
pub use residual::Residual;
pub use sequential::Sequential;
pub use simple::{AvgPool2d, Dropout, Flatten, MaxPool2d};
pub use transformer::{TransformerEncoderLayer, TransformerEncoderLayerConfig};
