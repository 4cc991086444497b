//! The [`Collective`] of a run started by `mpirun`: MPI's world communicator (rsmpi).

use super::Collective;
use crate::error::{Error, Result};
use mpi::collective::SystemOperation;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Root};

/// MPI's world communicator. MPI is finalized by [`finish`], not when this
/// drops: after an error in one process the others must be aborted, and
/// finalizing would wait for them forever.
pub struct MpiWorld {
    world: SimpleCommunicator,
}

impl MpiWorld {
    /// Initialize MPI (once per process).
    pub fn initialize() -> Result<MpiWorld> {
        let universe = mpi::initialize()
            .ok_or_else(|| Error::Distributed("MPI was already initialized in this process".into()))?;
        let world = universe.world();
        std::mem::forget(universe);
        Ok(MpiWorld { world })
    }
}

/// End MPI in this process: finalize after success; after an error, abort
/// every process (the others may be waiting for this one in a collective).
pub fn finish(ok: bool) {
    if !mpi::environment::is_initialized() || mpi::environment::is_finalized() {
        return;
    }
    if !ok {
        SimpleCommunicator::world().abort(1);
    }
    // SAFETY: MPI is initialized and not finalized, and no communication is pending.
    unsafe {
        mpi::ffi::MPI_Finalize();
    }
}

impl Collective for MpiWorld {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    fn size(&self) -> usize {
        self.world.size() as usize
    }
    fn sum_f64(&self, values: &mut [f64]) {
        let send = values.to_vec();
        self.world.all_reduce_into(&send[..], values, SystemOperation::sum());
    }
    fn sum_f32(&self, values: &mut [f32]) {
        let send = values.to_vec();
        self.world.all_reduce_into(&send[..], values, SystemOperation::sum());
    }
    fn broadcast(&self, bytes: &mut [u8]) {
        self.world.process_at_rank(0).broadcast_into(bytes);
    }
}
