//! End-to-end tests of the `cifar-sweep` binary: one target, compiled once.

mod charts;
mod cluster;
mod common;
mod hostile_cli;
mod hostile_store;
mod hostile_trainer;
mod malformed;
mod pg;
mod reliability;
mod search;
mod slurm;
mod sweep_e2e;
