//! The one error type of the playground. Every message is one line the page
//! shows as it is, naming the setting, CSV line or example at fault.

use crate::config::{activation_names, init_names, MAX_CSV_BYTES, MAX_FEATURES, MAX_LAYERS, MAX_POINTS, SPEEDS};

/// Everything a request can get wrong, and the engine failures behind it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A real-valued setting is outside its range.
    #[error("{field} must be between {lo} and {hi}, got {value}")]
    OutOfRange {
        /// The setting (`noise`, `layers[0].dropout`).
        field: String,
        /// Smallest allowed value.
        lo: f64,
        /// Largest allowed value.
        hi: f64,
        /// The value given.
        value: f64,
    },
    /// A count setting is outside its range.
    #[error("{field} must be between {lo} and {hi}, got {value}")]
    CountOutOfRange {
        /// The setting (`points`, `batch_size`, `layers[0].neurons`).
        field: String,
        /// Smallest allowed value.
        lo: usize,
        /// Largest allowed value.
        hi: usize,
        /// The value given.
        value: usize,
    },
    /// No feature, or more than there are.
    #[error("features: choose between 1 and {MAX_FEATURES}, got {0}")]
    FeatureCount(usize),
    /// A feature listed twice.
    #[error("features: {0} is listed twice")]
    RepeatedFeature(&'static str),
    /// Too many hidden layers.
    #[error("layers: at most {MAX_LAYERS} hidden layers, got {0}")]
    LayerCount(usize),
    /// A hidden layer's activation is unknown.
    #[error("layers[{layer}].activation: {error}")]
    LayerActivation {
        /// Index of the hidden layer.
        layer: usize,
        /// What is wrong with it.
        error: Box<Error>,
    },
    /// An activation name no declaration carries.
    #[error("unknown activation '{name}' (expected linear, {})", activation_names().join(", "))]
    UnknownActivation {
        /// The name given.
        name: String,
    },
    /// The learning rate is not in (0, 10].
    #[error("learning_rate must be in (0, 10], got {0}")]
    LearningRate(f64),
    /// A speed the control does not offer.
    #[error("steps_per_frame must be one of {}, got {value}", SPEEDS.map(|s| s.to_string()).join(", "))]
    Speed {
        /// The value given.
        value: usize,
    },
    /// The optimizer is unknown or its settings invalid.
    #[error("optimizer: {0}")]
    Optimizer(gradflow_nn::Error),
    /// An initializer name the page does not offer.
    #[error("init: unknown initializer '{name}' (expected {})", init_names().join(", "))]
    UnknownInit {
        /// The name given.
        name: String,
    },
    /// `dataset = csv` before any upload.
    #[error("dataset is csv but no CSV was uploaded to this session")]
    NoUpload,
    /// The split left nothing to train on.
    #[error("the data set has no training points")]
    NoTrainingPoints,
    /// An inspected example with a NaN or infinite coordinate or label.
    #[error("x1, x2 and label must be finite numbers")]
    NonFiniteExample,
    /// An inspected example's label is not a class of a multi-class head.
    #[error("label must be a class index below {classes}, got {label}")]
    ClassLabel {
        /// Number of classes.
        classes: usize,
        /// The label given.
        label: f64,
    },
    /// An inspected example's label is not 0 or 1 for a binary head.
    #[error("label must be 0 or 1, got {0}")]
    BinaryLabel(f64),
    /// The upload is too large.
    #[error("the CSV is larger than {MAX_CSV_BYTES} bytes")]
    CsvTooLarge,
    /// The upload has too many rows.
    #[error("the CSV has more than {MAX_POINTS} rows")]
    CsvTooManyRows,
    /// The upload has too few rows to split and train on.
    #[error("the CSV needs at least 4 rows of x1,x2,label, got {0}")]
    CsvTooFewRows(usize),
    /// A CSV row of three numbers, one of them NaN or infinite.
    #[error("line {0}: values must be finite numbers")]
    CsvNotFinite(usize),
    /// A CSV row that is not three numbers.
    #[error("line {line}: expected three numbers x1,x2,label, got '{text}'")]
    CsvRow {
        /// 1-based line number.
        line: usize,
        /// The row's start, as written.
        text: String,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Core(#[from] gradflow::Error),
    /// A model, loss or optimizer of gradflow-nn failed.
    #[error(transparent)]
    Nn(#[from] gradflow_nn::Error),
    /// The shared training step failed.
    #[error(transparent)]
    Train(#[from] gradflow_train::Error),
}

/// Results of the playground.
pub type Result<T, E = Error> = std::result::Result<T, E>;
