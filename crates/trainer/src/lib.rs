//! The trainer: CIFAR-10 data, the tutorial's CNNs, optimisers, the training loop and
//! evaluation, all on candle. It never touches SQLite: progress leaves through a callback
//! (see [`train::Observer`]) and the sweep crate persists it.

#![warn(missing_docs)]

pub mod checkpoint;
pub mod clock;
pub mod config;
pub mod data;
pub mod device;
pub mod error;
pub mod kernels;
pub mod metrics;
pub mod models;
pub mod optim;
#[cfg(test)]
mod parity;
mod predict;
pub mod schedule;
pub mod train;

pub use candle_core::Device;
pub use config::TrainConfig;
pub use error::{Error, Result};
