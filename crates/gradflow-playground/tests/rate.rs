//! Frame rate: a 6×8 network streams at least 20 frames a second.
//! (Its own test binary, so that no other test competes for the CPU.)

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn six_by_eight_streams_at_least_20_frames_a_second() {
    let s = server();
    let layers: Vec<_> = (0..6).map(|_| json!({ "neurons": 8, "activation": "tanh" })).collect();
    let (id, _) = create(
        s.addr,
        &json!({ "layers": layers, "features": ["x1", "x2", "x1sq", "x2sq", "x1x2", "sinx1", "sinx2"] }),
    );
    let mut ev = Events::open(s.addr, &id).unwrap();
    ev.frame();
    control(s.addr, &id, "play");
    // Warm up, then count frames for two seconds.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(300) {
        ev.frame();
    }
    let start = Instant::now();
    let mut frames = 0u32;
    let mut last_epoch = 0;
    while start.elapsed() < Duration::from_secs(2) {
        let f = ev.frame();
        assert_eq!(f["neurons"].as_array().unwrap().len(), 6);
        last_epoch = f["epoch"].as_u64().unwrap();
        frames += 1;
    }
    let rate = frames as f64 / start.elapsed().as_secs_f64();
    eprintln!("{rate:.1} frames/s, epoch {last_epoch}");
    assert!(rate >= 20.0, "{rate:.1} frames/s");
    assert!(last_epoch > 10);
}
