//! Examples live beside this file; see the README.
