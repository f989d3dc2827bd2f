//! Placeholder: the registry model, written by its owner.
