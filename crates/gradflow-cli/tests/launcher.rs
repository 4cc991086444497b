//! A gradflow built without the `mpi` feature, started by an MPI launcher,
//! refuses to train (each process would train the whole model and write the
//! same run directory) and says how to build it.
#![cfg(not(feature = "mpi"))]

use std::process::Command;

#[test]
fn a_build_without_mpi_refuses_to_run_under_a_launcher() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_gradflow"))
        .args(["train", "--limit-train", "64", "--epochs", "1", "--out"])
        .arg(dir.path().join("run"))
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("started by an MPI launcher with 2 processes, but this gradflow was built without MPI: build it with `cargo build --release --features mpi`"),
        "{err}"
    );
    assert!(!dir.path().join("run").exists());
}
