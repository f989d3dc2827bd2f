//! Placeholder: the compiler, written by its owner.
