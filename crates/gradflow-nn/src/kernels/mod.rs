//! Tuned versions of rules whose plain form lives with their declaration
//! (each is tested against it there).

pub(crate) mod adam;
