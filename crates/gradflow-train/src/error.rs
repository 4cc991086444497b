//! The one error type of this crate.
//!
//! Every message is one line for the user that names the flag, file or layer
//! at fault; the CLI prints it verbatim. Errors of the crates below pass
//! through unchanged.

/// Everything that can stop a training, evaluation or gradient computation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is out of range or contradicts another; the message names the flag.
    #[error("{0}")]
    Setting(String),
    /// The model could not be resolved, built or fitted to the data; the message names the model or layer.
    #[error("{0}")]
    Model(String),
    /// The data or batch does not suit the model or the task.
    #[error("{0}")]
    Input(String),
    /// A checkpoint is missing, damaged, or belongs to another model or optimizer.
    #[error("{0}")]
    Checkpoint(String),
    /// A file of the run directory could not be written; the message names it.
    #[error("{0}")]
    Output(String),
    /// A file or directory could not be read or written.
    #[error("{context}: {error}")]
    Io {
        /// The path and what was being done to it.
        context: String,
        /// The operating system's reason (already part of the message, so not a `source()`).
        error: std::io::Error,
    },
    /// The processes of a data-parallel run cannot work together; the message says which and why.
    #[error("{0}")]
    Distributed(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Core(#[from] gradflow::Error),
    /// Loading or preparing data failed.
    #[error(transparent)]
    Data(#[from] gradflow_data::DataError),
    /// A model file could not be read or built, a name or hyperparameter is
    /// unknown, or a weights file does not match the model.
    #[error(transparent)]
    Nn(#[from] gradflow_nn::Error),
    /// `diagnostics.jsonl` could not be written.
    #[error(transparent)]
    Diagnostics(#[from] crate::diagnostics::DiagnosticsError),
    /// A run directory could not be turned into a report; the message names the file.
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
    /// An explanation could not be made; the message names the flag or layer.
    #[error(transparent)]
    Explain(#[from] crate::explain::ExplainError),
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O failure on `path`, described as `what` ("cannot read weights").
    pub(crate) fn io(path: &std::path::Path, what: &str, error: std::io::Error) -> Error {
        let context = if what.is_empty() {
            path.display().to_string()
        } else {
            format!("{}: {what}", path.display())
        };
        Error::Io { context, error }
    }
}
