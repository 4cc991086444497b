//! `gradflow train --data FILE.csv` end to end: classification and
//! regression, eval and predict with the saved encoding, resume and the
//! report, and every bad table (exit 2, file/line/column, nothing written).

mod common;

use common::train;
use common::{gradflow, stdout};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Three well-separated classes with a text column and an identifier.
fn flowers(rows: usize, seed: u64) -> String {
    let mut s = String::from("id,petal_length,petal_width,colour,species\n");
    let mut x = seed;
    let mut noise = || {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((x >> 33) as f64 / (1u64 << 31) as f64) - 0.5
    };
    for i in 0..rows {
        let c = i % 3;
        let pl = [1.5, 4.3, 5.9][c] + noise() * 0.8;
        let pw = [0.25, 1.3, 2.1][c] + noise() * 0.4;
        let colour = ["red", "white", "blue"][(i + i / 3) % 3];
        let name = ["setosa", "versicolor", "virginica"][c];
        writeln!(s, "{i},{pl:.2},{pw:.2},{colour},{name}").unwrap();
    }
    s
}

/// price = 1000·area + 5000·rooms + district, plus a little noise.
fn houses(rows: usize) -> String {
    let mut s = String::from("area,rooms,district,price\n");
    for i in 0..rows {
        let area = 30.0 + (i * 37 % 170) as f64;
        let rooms = 1 + i % 5;
        let (district, extra) = [("north", 20000.0), ("south", 0.0), ("centre", 60000.0)][i % 3];
        let noise = ((i * 7919) % 2000) as f64 - 1000.0;
        let price = 1000.0 * area + 5000.0 * rooms as f64 + extra + noise;
        writeln!(s, "{area},{rooms},{district},{price}").unwrap();
    }
    s
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn classification_round_trip_train_eval_predict() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "flowers.csv", &flowers(150, 1));
    let out = dir.path().join("run");
    let o = train(&data, &out, &["--ignore", "id", "--epochs", "40"]);
    let text = stdout(&o);
    assert!(
        text.contains("120 training rows, 30 test rows, 3 columns as 5 inputs; target 'species': classification of 3 classes (inferred; --task overrides)"),
        "{text}"
    );
    let s = json(&out.join("summary.json"));
    let acc = s["test_accuracy"].as_f64().unwrap();
    assert!(acc > 0.9, "{s}");
    let enc = json(&out.join("encoding.json"));
    assert_eq!(
        enc["class_names"],
        serde_json::json!(["setosa", "versicolor", "virginica"])
    );
    assert_eq!(
        enc["features"][2]["categories"],
        serde_json::json!(["blue", "red", "white"])
    );
    // eval re-reads the same test rows: the same accuracy.
    let e = stdout(&gradflow().arg("eval").arg(&out).output().unwrap());
    assert!(e.contains(&format!("accuracy {:.2}%", acc * 100.0)), "{e}");
    assert!(e.contains("  virginica: "), "{e}");
    // predict without the target column: class names; an unseen category is counted.
    let rows = write(
        dir.path(),
        "rows.csv",
        "colour,petal_width,petal_length\nred,0.2,1.4\ngreen,2.2,6.0\n",
    );
    let o = gradflow().arg("predict").arg(&out).arg(&rows).output().unwrap();
    assert!(o.status.success());
    assert_eq!(
        stdout(&o)
            .lines()
            .map(|l| l.split(',').next().unwrap())
            .collect::<Vec<_>>(),
        ["species", "setosa", "virginica"]
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("1 rows have a category unseen in training"));
    // predict with the target column: written to --out, with the accuracy.
    let preds = dir.path().join("p.csv");
    let o = gradflow()
        .arg("predict")
        .arg(&out)
        .arg(&data)
        .arg("--out")
        .arg(&preds)
        .output()
        .unwrap();
    assert!(
        stdout(&o).contains("'species' column present: accuracy"),
        "{}",
        stdout(&o)
    );
    assert_eq!(std::fs::read_to_string(&preds).unwrap().lines().count(), 151);
    // eval on another file.
    let other = write(dir.path(), "other.csv", &flowers(30, 9));
    let e = stdout(
        &gradflow()
            .arg("eval")
            .arg(&out)
            .arg("--data")
            .arg(&other)
            .output()
            .unwrap(),
    );
    assert!(e.contains("30 rows of") && e.contains("accuracy"), "{e}");
}

#[test]
fn regression_reports_rmse_mae_r2_in_target_units_and_the_report_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "houses.csv", &houses(300));
    let out = dir.path().join("run");
    let o = train(
        &data,
        &out,
        &["--epochs", "60", "--val-split", "0.1", "--loss", "huber"],
    );
    assert!(
        stdout(&o).contains("target 'price': regression (inferred"),
        "{}",
        stdout(&o)
    );
    let s = json(&out.join("summary.json"));
    let (rmse, mae, r2) = (
        s["test_rmse"].as_f64().unwrap(),
        s["test_mae"].as_f64().unwrap(),
        s["test_r2"].as_f64().unwrap(),
    );
    // Prices span about 250 000; an RMSE in standardized units would be below 1.
    assert!(r2 > 0.9 && rmse > 100.0 && rmse < 20000.0 && mae <= rmse, "{s}");
    let last = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(last.lines().last().unwrap()).unwrap();
    assert!(
        last["val_rmse"].as_f64().unwrap() > 100.0 && last["train_rmse"].is_number(),
        "{last}"
    );
    gradflow().arg("report").arg(&out).assert().success();
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("Test R²") && html.contains("<th>val rmse</th>"));
    let e = stdout(&gradflow().arg("eval").arg(&out).output().unwrap());
    assert!(e.contains(&format!("RMSE {rmse:.4}")), "{e}: {rmse}");
    let o = gradflow().arg("predict").arg(&out).arg(&data).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("'price' column present: RMSE"));
}

#[test]
fn resume_continues_a_table_run_and_refuses_a_changed_table() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "flowers.csv", &flowers(90, 2));
    let out = dir.path().join("run");
    train(
        &data,
        &out,
        &["--ignore", "id", "--epochs", "2", "--diagnostics-every", "1"],
    );
    let o = gradflow()
        .args(["train", "--threads", "1", "--epochs", "4", "--resume"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(json(&out.join("summary.json"))["epochs"], 4);
    assert_eq!(
        std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        4
    );
    assert!(
        std::fs::read_to_string(out.join("diagnostics.jsonl"))
            .unwrap()
            .lines()
            .count()
            > 4
    );
    gradflow().arg("report").arg(&out).assert().success();
    std::fs::write(&data, flowers(90, 3)).unwrap();
    let o = gradflow()
        .args(["train", "--epochs", "6", "--resume"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("the table no longer encodes as when the run started"));
}

#[test]
fn l1_l2_and_a_model_file_work_on_tables() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "flowers.csv", &flowers(60, 4));
    let model = write(
        dir.path(),
        "small.toml",
        "input = [5]\n[[layer]]\ntype = \"Linear\"\nout_features = 8\n[[layer]]\ntype = \"Tanh\"\n[[layer]]\ntype = \"Linear\"\nout_features = 3\n",
    );
    let out = dir.path().join("run");
    train(
        &data,
        &out,
        &["--ignore", "id", "--epochs", "3", "--l1", "1e-4", "--l2", "1e-4"],
    );
    let s = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(s.lines().last().unwrap()).unwrap();
    assert!(last["train_penalty"].as_f64().unwrap() > 0.0, "{last}");
    let out2 = dir.path().join("run2");
    let o = gradflow()
        .args(["train", "--threads", "1", "--ignore", "id", "--epochs", "2", "--model"])
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&out2)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("(75 parameters)"), "{}", stdout(&o));
}

/// Runs `train` on `text` and checks: exit 2, the message, and no run directory.
fn bad_table(text: &[u8], extra: &[&str], needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.csv");
    std::fs::write(&p, text).unwrap();
    let out = dir.path().join("run");
    let o = gradflow()
        .arg("train")
        .arg("--data")
        .arg(&p)
        .arg("--out")
        .arg(&out)
        .args(extra)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let expected = format!("error: {}: {needle}", p.display());
    assert!(err.contains(&expected), "expected '{expected}' in: {err}");
    assert!(!out.exists(), "the run directory was written before the data validated");
}

#[test]
fn every_bad_table_is_exit_2_with_file_line_and_column() {
    bad_table(
        b"a,b,y\n1,2,x\n1,NA,y\n",
        &[],
        "line 3, column 2 'b': missing value ('NA'); give --missing drop to drop such rows or --missing mean to impute",
    );
    bad_table(b"a,b,y\n1,,x\n", &[], "line 2, column 2 'b': missing value (empty)");
    bad_table(b"a,b,y\n1,NaN,x\n", &[], "line 2, column 2 'b': missing value ('NaN')");
    bad_table(
        b"a,y\n1,2\n3\n",
        &[],
        "line 3: 1 fields, but the header has 2 columns (a ragged row; check the delimiter and the quotes)",
    );
    bad_table(
        b"a,b,y\n1,2,x\n1,oops,y\n",
        &[],
        "line 3, column 2 'b': 'oops' is not a number (the column holds numbers from line 2)",
    );
    bad_table(
        b"a,b,y\n1,2,3\n",
        &["--target", "price"],
        "line 1: no column named 'price' (--target); the columns are: a, b, y",
    );
    bad_table(
        b"a,y\n1,x\n2,x\n3,lonely\n4,x\n",
        &[],
        "line 4, column 'y': class 'lonely' has a single row, too few to hold one out for testing",
    );
    bad_table(b"", &[], "empty file: expected a header row naming the columns");
    bad_table(b"a,y\n", &[], "the file has a header but no data rows");
    bad_table(
        b"name,y\ncaf\xe9,1\ntea,2\n",
        &[],
        "line 2, column 1 'name': not valid UTF-8 (the file is in another encoding, e.g. Latin-1; save it as UTF-8)",
    );
    bad_table(
        b"\xff\xfea\x00,\x00y\x00\n\x00",
        &[],
        "line 1: the file is UTF-16 encoded; save it as UTF-8",
    );
    bad_table(b"k,y\n7,x\n7,y\n", &[], "line 1: no input columns left");
}

#[test]
fn missing_drop_and_mean_and_a_constant_column_warn_and_train() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "f.csv", &flowers(60, 5).replace(",red,", ",NA,"));
    let o = train(
        &data,
        &dir.path().join("a"),
        &["--ignore", "id", "--epochs", "1", "--missing", "drop"],
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("dropped"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    train(
        &data,
        &dir.path().join("b"),
        &["--ignore", "id", "--epochs", "1", "--missing", "mean"],
    );
    let constant = write(dir.path(), "c.csv", "a,k,y\n1,7,x\n2,7,y\n3,7,x\n4,7,y\n5,7,x\n6,7,y\n");
    let o = train(&constant, &dir.path().join("c"), &["--epochs", "1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("warning: ") && err.contains("column 'k' has a single value in every row; dropped"),
        "{err}"
    );
}

#[test]
fn flags_for_tables_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "f.csv", &flowers(30, 6));
    let o = gradflow()
        .args(["train", "--loss", "l1", "--epochs", "1", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(dir.path().join("r"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--loss is for regression"));
    let o = gradflow()
        .args(["train", "--delimiter", "ab", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("--delimiter \"ab\": expected one ASCII character"));
    let semi = write(dir.path(), "s.csv", &flowers(30, 6).replace(',', ";"));
    train(
        &semi,
        &dir.path().join("s"),
        &["--delimiter", ";", "--ignore", "id", "--epochs", "1"],
    );
}
