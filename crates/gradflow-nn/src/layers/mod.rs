//! The layers a model file can name, under PyTorch's class names.

pub mod activation;
pub mod attention;
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
pub mod transformer;

pub use activation::{Activation, ActivationInfo, Approximate, Saturation};
pub use attention::{MultiheadAttention, MultiheadAttentionConfig, MultiheadAttentionSpec};
pub use batchnorm::{BatchNorm, BatchNormSpec};
pub use conv::{Conv2d, Conv2dConfig, Conv2dSpec, Size2d};
pub use embedding::{Embedding, EmbeddingConfig, EmbeddingSpec};
pub use layernorm::{LayerNorm, LayerNormSpec};
pub use linear::{Linear, LinearConfig, LinearSpec};
pub use position_embedding::{PositionEmbedding, PositionEmbeddingSpec};
pub use recurrent::{Recurrent, RecurrentConfig, RecurrentOutput, RecurrentSpec};
pub use residual::{Residual, ResidualSpec};
pub use sequence_pool::{PoolMode, SequencePool, SequencePoolSpec};
pub use sequential::Sequential;
pub use simple::{AvgPool2d, AvgPool2dSpec, Dropout, DropoutSpec, Flatten, FlattenSpec, MaxPool2d, MaxPool2dSpec};
pub use transformer::{TransformerEncoderLayer, TransformerEncoderLayerConfig, TransformerEncoderLayerSpec};
