//! Prompt tokenisation. Work in progress.
