//! CPU kernels: the loops behind the ops. Contiguous inputs take flat fast
//! paths; large ones are split over rayon's threads, small ones stay on one
//! thread where spawning would cost more than it saves.

pub mod elementwise;
pub mod gemm;
pub mod reduce;

/// Below this many elements an elementwise kernel runs on the calling thread.
pub const PAR_THRESHOLD: usize = 1 << 15;
/// Elements per parallel task.
pub const PAR_CHUNK: usize = 1 << 13;

/// Use `n` threads for all of gradflow's kernels (and the matrix products).
/// Call once, before the first op; later calls are ignored.
pub fn set_num_threads(n: usize) -> bool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n.max(1))
        .build_global()
        .is_ok()
}

/// The number of threads kernels run on.
pub fn num_threads() -> usize {
    rayon::current_num_threads()
}
