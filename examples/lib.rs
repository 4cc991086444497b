//! Examples live beside this file; see the README.

/// The worked examples of `docs/architecture.md` (adding an activation, a
/// layer, a loss and an optimizer), compiled and run as doc tests so that the
/// contributor's map cannot drift from the code.
#[doc = include_str!("../docs/architecture.md")]
#[cfg(doctest)]
pub struct ArchitectureGuide;
