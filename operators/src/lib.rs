//! Placeholder: see README.md for what this crate will own.
