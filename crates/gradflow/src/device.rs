//! The device abstraction. Kernels dispatch on [`Storage`](crate::Storage); this
//! enum is what users name.

/// Where a tensor lives and its ops run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// The host CPU, with kernels threaded by rayon.
    #[default]
    Cpu,
}
