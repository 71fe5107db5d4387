//! CIFAR-10 in memory (u8), import, cache, split and batches. Owned by the data work (issue #2).

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{0}")]
    Other(String),
}
