//! sparsevar-experiment: the protocols.
//!
//! Configs (YAML with `key=value` overrides), ensemble training with per-member success,
//! divergence and attention capture, results folders (one schema for writing and reading),
//! and the workflows the program and scripts share (`workflow`). The shaping decision: an
//! experiment is always an ensemble — a single run is R = 1 — so every protocol here hands
//! whole grids of seeds to one graph.

pub mod baselines;
pub mod budget;
pub mod checkpoint;
pub mod compare;
pub mod config;
pub mod fits;
pub mod learners;
pub mod reference;
pub mod results;
pub mod sweep;
pub mod train;
pub mod units;
pub mod weights;
pub mod workflow;
