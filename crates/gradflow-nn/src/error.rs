//! One error type for gradflow-nn. Every variant's message is complete on its
//! own (it names the file, layer, flag or tensor at fault), because the CLI
//! prints it as the one line a user sees.

/// Everything that can go wrong above the core: a model that does not fit
/// together, a bad name or hyperparameter, a weights file that does not match.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// An op of the core failed.
    #[error(transparent)]
    Core(#[from] gradflow::Error),
    /// A layer cannot take an input of this per-sample shape; the message says why.
    #[error("{0}")]
    Shape(String),
    /// A model file or spec could not be read, parsed or built; the message names the layer and the cause.
    #[error("{0}")]
    Spec(String),
    /// A weights file could not be written, read or matched to the model; the message names every offending tensor.
    #[error("{0}")]
    Weights(String),
    /// A name that no declaration of this kind carries.
    #[error("unknown {what} '{name}' (expected {expected})")]
    UnknownName {
        /// The kind of thing named ("initializer", "loss").
        what: &'static str,
        /// The name as given (normalized the way the lookup saw it).
        name: String,
        /// The known names, as a sentence ("a, b or c").
        expected: String,
    },
    /// A name that no declaration of this kind carries, in the "one of" form of the optimizer and schedule lists.
    #[error("unknown {what} '{name}'; expected one of: {expected}")]
    UnknownChoice {
        /// The kind of thing named ("optimizer", "schedule").
        what: &'static str,
        /// The name as given.
        name: String,
        /// The known names, comma-separated.
        expected: String,
    },
    /// A hyperparameter that PyTorch's constructor would reject, or that makes no sense.
    #[error("{0}")]
    Hyperparameter(String),
}

/// Results of gradflow-nn.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `a, b or c`: the known names in an error message.
pub(crate) fn one_of(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// `Err(Error::Shape(msg))`, for the `output_shape` checks of the layers.
pub(crate) fn bad_shape<T>(msg: String) -> Result<T> {
    Err(Error::Shape(msg))
}
