//! The HTTP API end to end: a real server on 127.0.0.1:0, a raw HTTP/1.1 client.

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn page_and_assets_are_served_from_the_binary() {
    let s = server();
    let r = get(s.addr, "/");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r
        .header("content-security-policy")
        .unwrap()
        .contains("default-src 'self'"));
    let html = r.text();
    assert!(html.contains("gradflow playground") && html.contains("/app.js"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page loads nothing from elsewhere"
    );
    let js = get(s.addr, "/app.js");
    assert_eq!(js.status, 200);
    assert!(js.header("content-type").unwrap().contains("javascript"));
    assert!(!js.text().contains("https://"));
    assert_eq!(get(s.addr, "/style.css").status, 200);
    let nf = get(s.addr, "/nope");
    assert_eq!(nf.status, 404);
    assert!(nf.json()["error"].is_string());
    let limits = get(s.addr, "/api/limits").json();
    assert_eq!(limits["max_layers"], 20);
    assert_eq!(limits["max_neurons"], 32);
}

#[test]
fn menus_come_from_the_declarations() {
    let s = server_with(Limits {
        max_sessions: 32,
        ..Limits::default()
    });
    let limits = get(s.addr, "/api/limits").json();
    let ids = |menu: &str| -> Vec<String> {
        limits[menu]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    let acts = ids("activations");
    assert_eq!(acts[0], "linear");
    assert_eq!(acts.len(), gradflow_nn::Activation::registry().len() + 1);
    for a in gradflow_nn::Activation::registry() {
        assert!(acts.iter().any(|id| id == a.cli_name), "{} missing", a.cli_name);
    }
    assert_eq!(ids("optimizers"), gradflow_nn::optim::OPTIMIZER_NAMES);
    assert!(!ids("inits").contains(&"zeros".to_string()));
    assert_eq!(ids("regularizations"), ["none", "l1", "l2"]);
    assert_eq!(ids("problems"), ["classification", "regression"]);
    assert_eq!(limits["defaults"]["init"], "xavier");
    // Every offered initializer and speed is accepted; other speeds are refused with the list.
    for init in ids("inits") {
        create(s.addr, &json!({ "init": init }));
    }
    for speed in limits["speeds"].as_array().unwrap() {
        create(s.addr, &json!({ "steps_per_frame": speed }));
    }
    let r = post_json(s.addr, "/api/sessions", &json!({ "steps_per_frame": 7 }));
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"],
        "steps_per_frame must be one of 1, 3, 10, 30, 100, 0, got 7"
    );
}

#[test]
fn create_step_and_read_frames() {
    let s = server();
    let (id, created) = create(s.addr, &json!({}));
    let st = &created["state"];
    assert_eq!(st["head"], "binary");
    assert_eq!(st["config"]["dataset"], "circle");
    assert_eq!(st["train"].as_array().unwrap().len(), 250);
    assert!(st["toml"].as_str().unwrap().contains("type = \"Linear\""));
    assert!(st["cli"]
        .as_str()
        .unwrap()
        .contains("gradflow explain --model playground.toml"));
    let mut ev = Events::open(s.addr, &id).unwrap();
    let f0 = ev.frame();
    assert_eq!(f0["epoch"], 0);
    assert_eq!(f0["grid"], 40);
    assert_eq!(f0["neurons"].as_array().unwrap().len(), 2);
    let c = control(s.addr, &id, "step");
    assert_eq!(c["epoch"], 1);
    let f1 = ev.frame();
    assert_eq!(f1["epoch"], 1);
    assert!(f1["steps"].as_u64().unwrap() >= 25);
    assert_eq!(f1["grad_norm"].as_array().unwrap().len(), 3);
    // The session's state reflects it.
    let st = get(s.addr, &format!("/api/sessions/{id}")).json();
    assert_eq!(st["epoch"], 1);
    // Reset starts again from epoch 0 with a new version.
    let c = control(s.addr, &id, "reset");
    assert_eq!(c["epoch"], 0);
    assert_eq!(c["version"], 2);
    // Delete closes the session and its stream.
    assert_eq!(
        request(s.addr, "DELETE", &format!("/api/sessions/{id}"), None, b"").status,
        204
    );
    loop {
        let (name, _) = ev.next();
        if name == "closed" {
            break;
        }
    }
    assert_eq!(get(s.addr, &format!("/api/sessions/{id}")).status, 404);
}

#[test]
fn playing_lowers_the_test_loss_on_the_circle() {
    let s = server();
    let (id, _) = create(s.addr, &json!({ "learning_rate": 0.03, "optimizer": "adam" }));
    let mut ev = Events::open(s.addr, &id).unwrap();
    let first = ev.frame()["test_loss"].as_f64().unwrap();
    control(s.addr, &id, "play");
    let start = Instant::now();
    let last = loop {
        let f = ev.frame();
        assert!(f["playing"].as_bool().unwrap() || f["epoch"] == 0);
        let l = f["test_loss"].as_f64().unwrap();
        if l < 0.15 || start.elapsed() > Duration::from_secs(60) {
            break f;
        }
    };
    let l = last["test_loss"].as_f64().unwrap();
    assert!(l < 0.15, "test loss {first} → {l} after {:?}", start.elapsed());
    assert!(last["test_acc"].as_f64().unwrap() > 0.95);
    assert!(control(s.addr, &id, "pause")["playing"] == false);
}

#[test]
fn config_changes_switch_activation_regularization_and_softmax() {
    let s = server();
    let (id, _) = create(s.addr, &json!({}));
    control(s.addr, &id, "step");
    // A new learning rate keeps the weights.
    let r = post_json(
        s.addr,
        &format!("/api/sessions/{id}/config"),
        &json!({ "learning_rate": 0.1 }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["reset"], false);
    assert_eq!(r.json()["state"]["epoch"], 1);
    // A new activation per layer rebuilds the network.
    let cfg = json!({
        "learning_rate": 0.1,
        "layers": [
            { "neurons": 8, "activation": "relu" },
            { "neurons": 8, "activation": "elu", "dropout": 0.1 },
            { "neurons": 4, "activation": "gelu" },
            { "neurons": 4, "activation": "leaky_relu" },
            { "neurons": 4, "activation": "silu" }
        ],
        "regularization": "l1",
        "reg_rate": 0.01,
        "dataset": "spiral3",
        "features": ["x1", "x2", "sinx1", "sinx2", "x1x2"]
    });
    let r = post_json(s.addr, &format!("/api/sessions/{id}/config"), &cfg);
    assert_eq!(r.status, 200, "{}", r.text());
    let st = &r.json()["state"];
    assert_eq!(r.json()["reset"], true);
    assert_eq!(st["head"], "multiclass");
    assert_eq!(st["classes"], 3);
    let toml = st["toml"].as_str().unwrap();
    for t in ["ReLU", "ELU", "GELU", "LeakyReLU", "SiLU", "Dropout"] {
        assert!(toml.contains(&format!("type = \"{t}\"")), "{t} missing from\n{toml}");
    }
    assert!(toml.contains("input = [5]"));
    let parsed = gradflow_nn::ModelSpec::parse(toml, "export").unwrap();
    assert_eq!(parsed.output_shape().unwrap(), vec![3]);
    let mut ev = Events::open(s.addr, &id).unwrap();
    let f = ev.frame();
    assert_eq!(f["channels"], 3);
    assert_eq!(f["neurons"].as_array().unwrap().len(), 5);
    assert_eq!(f["saturation"].as_array().unwrap().len(), 5);
    // Train a few epochs: L1 (as a proximal step) puts weights at exactly zero.
    for _ in 0..15 {
        control(s.addr, &id, "step");
    }
    let f = loop {
        let f = ev.frame();
        if f["epoch"] == 15 {
            break f;
        }
    };
    assert!(f["zero_weights"].as_u64().unwrap() > 0, "sparsity {}", f["sparsity"]);
}

#[test]
fn inspect_walks_one_example_forward_and_backward() {
    let s = server();
    let (id, _) = create(
        s.addr,
        &json!({ "layers": [{ "neurons": 3, "activation": "sigmoid" }] }),
    );
    let r = post_json(
        s.addr,
        &format!("/api/sessions/{id}/inspect"),
        &json!({ "x1": 1.0, "x2": -2.0, "label": 1 }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let w = r.json();
    assert_eq!(w["input"], json!([1.0, -2.0]));
    let l = &w["layers"][0];
    assert_eq!(l["activation"], "Sigmoid");
    for j in 0..3 {
        let (a, da, dz) = (
            l["a"][j].as_f64().unwrap(),
            l["da"][j].as_f64().unwrap(),
            l["dz"][j].as_f64().unwrap(),
        );
        assert!((dz - da * a * (1.0 - a)).abs() < 1e-3, "sigmoid chain rule at unit {j}");
    }
    let p = w["prediction"][0].as_f64().unwrap();
    assert!((w["out_dz"][0].as_f64().unwrap() - (p - 1.0)).abs() < 1e-3);
    let bad = post_json(
        s.addr,
        &format!("/api/sessions/{id}/inspect"),
        &json!({ "x1": 1.0, "x2": 0.0, "label": 7 }),
    );
    assert_eq!(bad.status, 400);
}

#[test]
fn csv_upload_trains_on_the_uploaded_points() {
    let s = server();
    let (id, _) = create(s.addr, &json!({}));
    let mut csv = String::from("x1,x2,label\n");
    for i in 0..90 {
        let t = i as f64 * 0.37;
        csv.push_str(&format!("{},{},{}\n", 3.0 * t.cos(), 3.0 * t.sin(), i % 3));
    }
    let r = request(
        s.addr,
        "POST",
        &format!("/api/sessions/{id}/csv"),
        Some("text/csv"),
        csv.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let st = r.json();
    assert_eq!(st["config"]["dataset"], "csv");
    assert_eq!(st["classes"], 3);
    let n = st["train"].as_array().unwrap().len() + st["test"].as_array().unwrap().len();
    assert_eq!(n, 90);
    control(s.addr, &id, "step");
    // Changing the learning rate keeps the uploaded data.
    let mut cfg = st["config"].clone();
    cfg["learning_rate"] = json!(0.3);
    let r = post_json(s.addr, &format!("/api/sessions/{id}/config"), &cfg);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"]["config"]["dataset"], "csv");
}

fn assert_4xx(r: &Resp, status: u16, needle: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let e = r.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(e.contains(needle), "error '{e}' should mention '{needle}'");
}

#[test]
fn malformed_requests_get_json_4xx() {
    let s = server();
    let a = s.addr;
    let new = "/api/sessions";
    assert_4xx(
        &request(a, "POST", new, Some("application/json"), b"{not json"),
        400,
        "invalid JSON",
    );
    assert_4xx(&post_json(a, new, &json!({ "colour": "red" })), 400, "unknown field");
    assert_4xx(
        &post_json(a, new, &json!({ "layers": vec![json!({"neurons": 2}); 21] })),
        400,
        "at most 20",
    );
    assert_4xx(
        &post_json(a, new, &json!({ "layers": [{"neurons": 33}] })),
        400,
        "neurons",
    );
    assert_4xx(
        &post_json(a, new, &json!({ "layers": [{"neurons": 4, "activation": "swish2"}] })),
        400,
        "activation",
    );
    assert_4xx(&post_json(a, new, &json!({ "points": 100000 })), 400, "points");
    assert_4xx(&post_json(a, new, &json!({ "features": [] })), 400, "features");
    assert_4xx(&post_json(a, new, &json!({ "features": ["x3"] })), 400, "invalid JSON");
    assert_4xx(
        &post_json(a, new, &json!({ "learning_rate": -1 })),
        400,
        "learning_rate",
    );
    assert_4xx(&post_json(a, new, &json!({ "optimizer": "lbfgs" })), 400, "optimizer");
    assert_4xx(&post_json(a, new, &json!({ "dataset": "csv" })), 400, "CSV");
    assert_4xx(&request(a, "POST", new, Some("text/plain"), b"{}"), 415, "Content-Type");
    assert_4xx(&request(a, "POST", new, None, b"{}"), 415, "Content-Type");
    let (id, _) = create(a, &json!({}));
    let csv = format!("/api/sessions/{id}/csv");
    assert_4xx(
        &request(a, "POST", &csv, Some("text/csv"), b"1,2\n3,4\n"),
        400,
        "line 1",
    );
    assert_4xx(&request(a, "POST", &csv, Some("text/csv"), b"1,2,x\n"), 400, "line 1");
    assert_4xx(
        &request(a, "POST", &csv, Some("text/csv"), b"1,2,1\n"),
        400,
        "at least 4",
    );
    assert_4xx(
        &request(a, "POST", &csv, Some("text/csv"), &[0xff, 0xfe, b'1']),
        400,
        "UTF-8",
    );
    let big = "1,2,1\n".repeat(180_000); // ~1.08 MB
    assert_eq!(request(a, "POST", &csv, Some("text/csv"), big.as_bytes()).status, 413);
    let huge = vec![b' '; 3 << 20];
    assert_eq!(request(a, "POST", &csv, Some("text/csv"), &huge).status, 413);
    assert_4xx(
        &post_json(a, &format!("/api/sessions/{id}/control"), &json!({ "action": "fly" })),
        400,
        "unknown action",
    );
    assert_4xx(
        &post_json(a, &format!("/api/sessions/{id}/control"), &json!({})),
        400,
        "invalid JSON",
    );
    assert_4xx(
        &post_json(a, "/api/sessions/nope/control", &json!({ "action": "play" })),
        404,
        "no session",
    );
    assert_4xx(&get(a, "/api/sessions/nope/events"), 404, "no session");
    assert_4xx(&request(a, "PUT", new, Some("application/json"), b"{}"), 405, "method");
    // A page elsewhere that rebinds its DNS name to 127.0.0.1 is refused.
    assert_4xx(&request_host(a, "evil.example:80", "GET", "/", None, b""), 403, "host");
    // The session still works after all that.
    assert_eq!(control(a, &id, "step")["epoch"], 1);
}

#[test]
fn sessions_and_streams_are_capped() {
    let s = server_with(Limits {
        max_sessions: 2,
        max_streams: 3,
        max_streams_per_session: 2,
        ..Limits::default()
    });
    let (a, _) = create(s.addr, &json!({}));
    let (b, _) = create(s.addr, &json!({}));
    let r = post_json(s.addr, "/api/sessions", &json!({}));
    assert_4xx(&r, 429, "sessions");
    let _e1 = Events::open(s.addr, &a).unwrap();
    let _e2 = Events::open(s.addr, &a).unwrap();
    let r = Events::open(s.addr, &a)
        .err()
        .expect("third stream on one session is refused");
    assert_eq!(r.status, 429);
    let _e3 = Events::open(s.addr, &b).unwrap();
    let r = Events::open(s.addr, &b)
        .err()
        .expect("fourth stream overall is refused");
    assert_eq!(r.status, 429);
    // Closing a session makes room.
    assert_eq!(
        request(s.addr, "DELETE", &format!("/api/sessions/{b}"), None, b"").status,
        204
    );
    create(s.addr, &json!({}));
    assert_eq!(s.session_count(), 2);
}
