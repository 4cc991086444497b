//! IDX reader: raw and gzip, images and labels. The first byte picks the
//! mode so the fuzzer can reach the header checks behind gzip too.
//!
//! Properties: no panic; a successful parse is self-consistent; and (with
//! `-malloc_limit_mb`) no allocation is driven by the header alone.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Write;

fuzz_target!(|input: &[u8]| {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    let compressed;
    let data = if mode & 2 != 0 {
        // Compress the mutated bytes so header/length logic behind the
        // decoder is explored, not only the decoder's own checks.
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        compressed = enc.finish().unwrap();
        &compressed[..]
    } else {
        data
    };
    if mode & 1 == 0 {
        if let Ok(img) = gradflow_data::parse_idx_images_bytes(data, "fuzz") {
            assert_eq!(img.pixels.len(), img.count * img.rows * img.cols);
            assert!(img.rows > 0 && img.cols > 0);
            if img.count > 0 {
                assert!(img.image(img.count - 1).is_some());
            }
            assert!(img.image(img.count).is_none());
        }
    } else if let Ok(labels) = gradflow_data::parse_idx_labels_bytes(data, "fuzz") {
        assert!(labels.len() + 8 <= data.len() || mode & 2 != 0);
    }
});
