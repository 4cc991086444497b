//! The layers a model file can name, under PyTorch's class names.

pub mod activation;
pub mod batchnorm;
pub mod conv;
pub mod embedding;
pub mod layernorm;
pub mod linear;
pub mod position_embedding;
pub mod recurrent;
pub mod residual;
pub mod sequence_pool;
pub mod sequential;
pub mod simple;

pub use activation::{Activation, ActivationInfo, Approximate, Saturation};
pub use batchnorm::BatchNorm;
pub use conv::{Conv2d, Conv2dConfig, Size2d};
pub use embedding::{Embedding, EmbeddingConfig};
pub use layernorm::LayerNorm;
pub use linear::{Linear, LinearConfig};
pub use position_embedding::PositionEmbedding;
pub use recurrent::{Recurrent, RecurrentConfig, RecurrentOutput};
pub use residual::Residual;
pub use sequence_pool::{PoolMode, SequencePool};
pub use sequential::Sequential;
pub use simple::{AvgPool2d, Dropout, Flatten, MaxPool2d};
