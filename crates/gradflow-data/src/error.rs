//! The single error type of this crate.
//!
//! Data comes from files that users hand us, so every failure must be
//! reportable in one line that says *which* file is wrong and *why*, instead
//! of a panic or a bare `io::Error` that loses the path.

use std::path::Path;

/// Everything that can go wrong while loading or preparing data.
///
/// Each variant's `Display` is a single line that starts with the file (or
/// source name) as the caller gave it, so a CLI can print it verbatim.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The operating system refused an operation on a file (open, read, ...).
    #[error("{path}: {error}")]
    Io {
        /// The path exactly as the caller passed it.
        path: String,
        /// The underlying I/O error (kept for `kind()` checks; already part of
        /// the message, so it is deliberately not exposed as `source()`).
        error: std::io::Error,
    },
    /// A file or directory that must exist does not; `hint` says how to fix it.
    #[error("{path}: not found; {hint}")]
    NotFound {
        /// The missing path, as the caller (or default lookup) spelled it.
        path: String,
        /// What the user can do about it (download, `--data DIR`, env var).
        hint: String,
    },
    /// The file exists but its content is malformed or inconsistent.
    #[error("{path}: {message}")]
    Format {
        /// The file (or in-memory source name) holding the bad content.
        path: String,
        /// What is wrong, with enough detail (line, index, value) to find it.
        message: String,
    },
    /// An argument given by the program (not a file) is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// Result alias so signatures in this crate stay short.
pub type Result<T> = std::result::Result<T, DataError>;

impl DataError {
    /// Builds a [`DataError::Format`] without repeating `to_string()` calls.
    pub(crate) fn format(path: impl Into<String>, message: impl Into<String>) -> Self {
        DataError::Format {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Builds a [`DataError::Io`] for `path`.
    pub(crate) fn io(path: &Path, error: std::io::Error) -> Self {
        DataError::Io {
            path: path.display().to_string(),
            error,
        }
    }

    /// The file this error is about, when there is one; handy for callers
    /// that want to highlight or retry a specific file.
    pub fn path(&self) -> Option<&str> {
        match self {
            DataError::Io { path, .. } | DataError::NotFound { path, .. } | DataError::Format { path, .. } => {
                Some(path)
            }
            DataError::InvalidArgument(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_line_starting_with_the_path() {
        let e = DataError::format("data/x.gz", "bad magic number");
        assert_eq!(e.to_string(), "data/x.gz: bad magic number");
        assert_eq!(e.path(), Some("data/x.gz"));
        let e = DataError::io(
            Path::new("a/b"),
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied"),
        );
        assert_eq!(e.to_string(), "a/b: denied");
        assert!(!e.to_string().contains('\n'));
        let e = DataError::InvalidArgument("batch size must be at least 1".into());
        assert_eq!(e.path(), None);
        assert!(e.to_string().contains("batch size"));
    }
}
