//! One error type for the whole core, so that a caller sees which op failed and why.

/// Everything that can go wrong inside the core: the message always names the op and the shapes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// Shapes that cannot meet in this op, e.g. `matmul: [32, 784] x [512, 10]: inner dimensions 784 and 512 differ`.
    #[error("{op}: {msg}")]
    Shape {
        /// The op that rejected its inputs.
        op: &'static str,
        /// What was wrong, with the shapes.
        msg: String,
    },
    /// Two tensors of different element types met in one op.
    #[error("{op}: dtype mismatch: {lhs} and {rhs}")]
    DType {
        /// The op that rejected its inputs.
        op: &'static str,
        /// The first operand's dtype.
        lhs: crate::DType,
        /// The second operand's dtype.
        rhs: crate::DType,
    },
    /// An argument outside its domain (an axis out of range, a negative probability, ...).
    #[error("{op}: {msg}")]
    Argument {
        /// The op that rejected its argument.
        op: &'static str,
        /// What was wrong.
        msg: String,
    },
    /// Backward was asked for something it cannot do (a non-scalar root without a seed gradient, ...).
    #[error("backward: {0}")]
    Backward(String),
    /// An error raised while layer `index` of a model ran: the op's own message says
    /// what was wrong, the layer says where (nested models give a path,
    /// `layer 2 (Residual): layer 0 (Linear): …`).
    #[error("layer {index} ({kind}): {source}")]
    InLayer {
        /// The layer's position in its model.
        index: usize,
        /// The layer's type, as a model file names it.
        kind: &'static str,
        /// What went wrong inside it.
        source: Box<Error>,
    },
}

/// Result alias used throughout the core.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn shape_err<T>(op: &'static str, msg: impl Into<String>) -> Result<T> {
    Err(Error::Shape { op, msg: msg.into() })
}

pub(crate) fn arg_err<T>(op: &'static str, msg: impl Into<String>) -> Result<T> {
    Err(Error::Argument { op, msg: msg.into() })
}
