//! Tables: typing, encoding, splitting, and every bad table's message.

use gradflow_data::{read_table, Encoding, Feature, Missing, Table, TableOptions, Targets, Task};
use std::path::{Path, PathBuf};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn read(text: &str, options: &TableOptions) -> Result<Table, String> {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "t.csv", text.as_bytes());
    read_table(&p, None, options).map_err(|e| e.to_string().replace(&p.display().to_string(), "t.csv"))
}

fn err(text: &str, options: &TableOptions) -> String {
    read(text, options).unwrap_err()
}

/// 12 rows, 3 classes of 4, a numeric and a string column.
fn flowers() -> String {
    let mut s = String::from("id,size,colour,species\n");
    for i in 0..12 {
        let species = ["rose", "tulip", "daisy"][i % 3];
        let colour = ["red", "white"][i % 2];
        s += &format!("{i},{}.5,{colour},{species}\n", i * 2);
    }
    s
}

#[test]
fn classification_with_one_hot_and_stratified_split() {
    let opts = TableOptions {
        ignore: vec!["id".into()],
        test_split: 0.25,
        ..TableOptions::default()
    };
    let t = read(&flowers(), &opts).unwrap();
    let e = &t.encoding;
    assert_eq!(e.task, Task::Classification);
    assert!(t.task_inferred);
    assert_eq!(e.target, "species");
    assert_eq!(e.class_names, vec!["daisy", "rose", "tulip"]);
    assert_eq!(e.width(), 3);
    assert_eq!(e.outputs(), 3);
    assert_eq!((t.train.len(), t.test.len()), (9, 3));
    // One test row per class.
    let mut test_labels = t.test.labels().unwrap().to_vec();
    test_labels.sort_unstable();
    assert_eq!(test_labels, vec![0, 1, 2]);
    // Standardized with the training rows' statistics: their mean is 0.
    let mean: f32 = (0..t.train.len()).map(|r| t.train.sample(r).unwrap()[0]).sum::<f32>() / 9.0;
    assert!(mean.abs() < 1e-5, "{mean}");
    match &e.features[1] {
        Feature::Categorical { name, categories } => {
            assert_eq!(name, "colour");
            assert_eq!(categories, &vec!["red".to_string(), "white".into()]);
        }
        f => panic!("{f:?}"),
    }
    for r in 0..t.train.len() {
        let s = t.train.sample(r).unwrap();
        assert_eq!(s[1] + s[2], 1.0);
    }
    // The JSON round trip is exact.
    let back: Encoding = serde_json::from_str(&e.to_json()).unwrap();
    assert_eq!(&back, e);
}

#[test]
fn same_seed_same_split_and_other_seed_other_split() {
    let a = read(&flowers(), &TableOptions::default()).unwrap();
    let b = read(&flowers(), &TableOptions::default()).unwrap();
    assert_eq!(a.test.features, b.test.features);
    let c = read(
        &flowers(),
        &TableOptions {
            seed: 5,
            ..TableOptions::default()
        },
    )
    .unwrap();
    assert_ne!(a.test.features, c.test.features);
}

#[test]
fn task_inference_and_override() {
    let real = "x,y\n1,0.5\n2,1.5\n3,2.25\n4,3.0\n5,4.5\n";
    let t = read(real, &TableOptions::default()).unwrap();
    assert_eq!(t.encoding.task, Task::Regression);
    assert_eq!(t.encoding.outputs(), 1);
    assert!(matches!(t.train.targets, Targets::Values { width: 1, .. }));
    // Targets are standardized with the training rows' mean and std.
    let Targets::Values { values, .. } = &t.train.targets else {
        unreachable!()
    };
    let m: f32 = values.iter().sum::<f32>() / values.len() as f32;
    assert!(m.abs() < 1e-5);
    let ints = "x,y\n1,0\n2,1\n3,0\n4,1\n5,0\n6,1\n";
    assert_eq!(
        read(ints, &TableOptions::default()).unwrap().encoding.task,
        Task::Classification
    );
    let forced = TableOptions {
        task: Some(Task::Regression),
        ..TableOptions::default()
    };
    let t = read(ints, &forced).unwrap();
    assert_eq!(t.encoding.task, Task::Regression);
    assert!(!t.task_inferred);
    // More than 50 distinct integers: regression.
    let mut many = String::from("x,y\n");
    for i in 0..60 {
        many += &format!("{i},{}\n", i * 3);
    }
    assert_eq!(
        read(&many, &TableOptions::default()).unwrap().encoding.task,
        Task::Regression
    );
}

#[test]
fn delimiter_quotes_and_bom() {
    let text = "\u{feff}name;\"note; with delimiter\";y\n\"a \"\"quoted\"\" name\";\"line\nbreak\";1\nb;c;2\nb;d;1\na \"\"x;c;2\n";
    let opts = TableOptions {
        delimiter: b';',
        test_split: 0.5,
        ..TableOptions::default()
    };
    let t = read(text, &opts).unwrap();
    assert_eq!(t.encoding.features[0].name(), "name");
    assert_eq!(t.encoding.features[1].name(), "note; with delimiter");
    assert_eq!(t.train.len() + t.test.len(), 4);
}

#[test]
fn missing_values_error_drop_or_mean() {
    let text = "a,b,y\n1,2,x\n2,NA,y\n3,4,x\n4,5,y\n5,6,x\n6,7,y\n";
    assert_eq!(
        err(text, &TableOptions::default()),
        "t.csv: line 3, column 2 'b': missing value ('NA'); give --missing drop to drop such rows or --missing mean to impute"
    );
    let e = err("a,b,y\n1,,x\n", &TableOptions::default());
    assert!(e.contains("line 2, column 2 'b': missing value (empty)"), "{e}");
    let drop = TableOptions {
        missing: Missing::Drop,
        ..TableOptions::default()
    };
    let t = read(text, &drop).unwrap();
    assert_eq!(t.train.len() + t.test.len(), 5);
    assert!(
        t.warnings.iter().any(|w| w.contains("dropped 1 rows")),
        "{:?}",
        t.warnings
    );
    let mean = TableOptions {
        missing: Missing::Mean,
        ..TableOptions::default()
    };
    let t = read(text, &mean).unwrap();
    assert_eq!(t.train.len() + t.test.len(), 6);
    assert!(t.train.features.iter().chain(&t.test.features).all(|v| v.is_finite()));
}

#[test]
fn ragged_row() {
    assert_eq!(
        err("a,y\n1,2\n3\n", &TableOptions::default()),
        "t.csv: line 3: 1 fields, but the header has 2 columns (a ragged row; check the delimiter and the quotes)"
    );
}

#[test]
fn text_in_a_numeric_column() {
    assert_eq!(
        err("a,b,y\n1,2,x\n1,oops,y\n", &TableOptions::default()),
        "t.csv: line 3, column 2 'b': 'oops' is not a number (the column holds numbers from line 2)"
    );
    assert!(err("a,y\n1,x\ninf,y\n", &TableOptions::default()).contains("'inf' is not a finite number"));
}

#[test]
fn unknown_target_or_ignored_column_names_the_columns() {
    let opts = TableOptions {
        target: Some("price".into()),
        ..TableOptions::default()
    };
    assert_eq!(
        err("a,b,y\n1,2,3\n", &opts),
        "t.csv: line 1: no column named 'price' (--target); the columns are: a, b, y"
    );
    let opts = TableOptions {
        ignore: vec!["idx".into()],
        ..TableOptions::default()
    };
    assert!(err("a,b,y\n1,2,3\n", &opts).contains("no column named 'idx' (--ignore)"));
}

#[test]
fn constant_column_is_dropped_with_a_warning() {
    let t = read("a,k,y\n1,7,x\n2,7,y\n3,7,x\n4,7,y\n", &TableOptions::default()).unwrap();
    assert_eq!(t.encoding.features.len(), 1);
    assert_eq!(t.warnings.len(), 1);
    assert!(t.warnings[0].ends_with("t.csv: column 'k' has a single value in every row; dropped"));
    assert!(err("k,y\n7,x\n7,y\n", &TableOptions::default()).contains("no input columns left"));
}

#[test]
fn a_class_with_a_single_row_cannot_be_stratified() {
    let e = err("a,y\n1,x\n2,x\n3,lonely\n4,x\n", &TableOptions::default());
    assert_eq!(
        e,
        "t.csv: line 4, column 'y': class 'lonely' has a single row, too few to hold one out for testing (stratified --test-split); add rows, drop it, or give --test FILE"
    );
}

#[test]
fn empty_file_and_header_only() {
    assert_eq!(
        err("", &TableOptions::default()),
        "t.csv: empty file: expected a header row naming the columns"
    );
    assert_eq!(
        err("a,y\n", &TableOptions::default()),
        "t.csv: the file has a header but no data rows"
    );
}

#[test]
fn other_encodings() {
    let dir = tempfile::tempdir().unwrap();
    let latin1 = write(dir.path(), "l.csv", b"name,y\ncaf\xe9,1\ntea,2\n");
    let e = read_table(&latin1, None, &TableOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with("l.csv: line 2, column 1 'name': not valid UTF-8 (the file is in another encoding, e.g. Latin-1; save it as UTF-8)"),
        "{e}"
    );
    let utf16 = write(dir.path(), "w.csv", b"\xff\xfea\x00,\x00y\x00\n\x00");
    let e = read_table(&utf16, None, &TableOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 1: the file is UTF-16 encoded; save it as UTF-8"),
        "{e}"
    );
}

#[test]
fn test_file_and_saved_encoding_count_unseen_categories() {
    let dir = tempfile::tempdir().unwrap();
    let train = write(dir.path(), "train.csv", flowers().as_bytes());
    let test = write(
        dir.path(),
        "test.csv",
        b"id,size,colour,species\n1,3,blue,rose\n2,5,red,tulip\n",
    );
    let opts = TableOptions {
        ignore: vec!["id".into()],
        ..TableOptions::default()
    };
    let t = read_table(&train, Some(&test), &opts).unwrap();
    assert_eq!((t.train.len(), t.test.len(), t.test_unseen_rows), (12, 2, 1));
    assert_eq!(t.test.sample(0).unwrap()[1..], [0.0, 0.0]);
    // Rows to predict: no target column, columns in another order.
    let rows = write(dir.path(), "rows.csv", b"colour,size\nwhite,3\npurple,1\n");
    let r = t.encoding.read_rows(&rows).unwrap();
    assert!(!r.has_target);
    assert_eq!((r.dataset.len(), r.unseen_rows), (2, 1));
    let with_target = t.encoding.read_rows(&test).unwrap();
    assert!(with_target.has_target);
    assert_eq!(with_target.dataset.labels(), t.test.labels());
    assert_eq!(with_target.dataset.features, t.test.features);
    let bad = write(dir.path(), "bad.csv", b"size\n1\n");
    let e = t.encoding.read_rows(&bad).unwrap_err().to_string();
    assert!(e.contains("no column named 'colour'"), "{e}");
    let unknown = write(dir.path(), "u.csv", b"size,colour,species\n1,red,lily\n");
    let e = t.encoding.read_rows(&unknown).unwrap_err().to_string();
    assert!(
        e.contains("line 2, column 3 'species': class 'lily' does not occur in the training rows"),
        "{e}"
    );
}

#[test]
fn numeric_training_rows_encoded_in_place_match_the_saved_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("a,b,y\n");
    for i in 0..40 {
        text += &format!("{},{},{}\n", i * 3 % 7, (i * 5 % 11) as f32 * 0.5, i % 2);
    }
    let p = write(dir.path(), "n.csv", text.as_bytes());
    let t = read_table(&p, Some(&p), &TableOptions::default()).unwrap();
    let again = t.encoding.read_rows(&p).unwrap();
    assert_eq!(t.train.features, again.dataset.features);
    assert_eq!(t.train.labels(), again.dataset.labels());
    // With a split: training and test rows together are the file's rows.
    let t = read_table(&p, None, &TableOptions::default()).unwrap();
    assert_eq!((t.train.len(), t.test.len()), (32, 8));
    let all = t.encoding.read_rows(&p).unwrap().dataset;
    let mut rows: Vec<&[f32]> = (0..40).map(|r| all.sample(r).unwrap()).collect();
    let mut split: Vec<&[f32]> = (0..32)
        .map(|r| t.train.sample(r).unwrap())
        .chain((0..8).map(|r| t.test.sample(r).unwrap()))
        .collect();
    rows.sort_by(|a, b| a.partial_cmp(b).unwrap());
    split.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(rows, split);
}
