//! The [`Collective`] of a run started by `mpirun`: MPI's world communicator (rsmpi).

use super::Collective;
use crate::error::{Error, Result};
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Root};

/// MPI's world; dropping it finalizes MPI.
pub struct MpiWorld {
    world: SimpleCommunicator,
    // Declared last: MPI is finalized after the communicator is gone.
    _universe: Universe,
}

impl MpiWorld {
    /// Initialize MPI (once per process).
    pub fn initialize() -> Result<MpiWorld> {
        let universe = mpi::initialize()
            .ok_or_else(|| Error::Distributed("MPI was already initialized in this process".into()))?;
        Ok(MpiWorld {
            world: universe.world(),
            _universe: universe,
        })
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
