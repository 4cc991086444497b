//! CSV reader. The first byte picks the task and the delimiter; the label
//! column is always named `label`.
#![no_main]

use gradflow_data::{CsvOptions, Task};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    let task = if mode & 1 == 0 {
        Task::Classification
    } else {
        Task::Regression
    };
    let delimiter = [b',', b';', b'\t', b' '][usize::from(mode >> 1) & 3];
    let opts = CsvOptions::new("label", task).with_delimiter(delimiter);
    if let Ok(t) = gradflow_data::parse_csv_bytes(data, "fuzz.csv", &opts) {
        let n = t.dataset.len();
        assert!(n > 0);
        assert_eq!(t.dataset.features.len(), n * t.feature_names.len());
        assert!(t.dataset.features.iter().all(|v| v.is_finite()));
        if let Some(names) = &t.class_names {
            let labels = t.dataset.labels().expect("classification has labels");
            assert!(labels.iter().all(|&l| l < names.len()));
        }
    }
});
