//! The HTTP side: the embedded page, a JSON API per session, and a stream of
//! frames over server-sent events. Each session trains on its own thread;
//! handlers only flip flags or take the session's lock for a moment.
//!
//! Every malformed request is answered with a 4xx and a JSON body
//! `{"error": "…"}`; caps on sessions, streams, connections and body sizes keep
//! one page from exhausting the machine.

use crate::config::{
    Config, DatasetKind, Feature, Problem, Regularization, DOMAIN, MAX_CSV_BYTES, MAX_FEATURES, MAX_LAYERS,
    MAX_NEURONS, MAX_POINTS,
};
use crate::data::parse_csv;
use crate::engine::{Engine, Frame, StateView};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::Stream;
use gradflow_nn::optim::OptimizerSpec;
use gradflow_nn::Init;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Caps and pacing of a server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Sessions alive at once (each has a training thread).
    pub max_sessions: usize,
    /// Event streams open at once, over all sessions.
    pub max_streams: usize,
    /// Event streams open at once on one session.
    pub max_streams_per_session: usize,
    /// TCP connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Largest request body in bytes.
    pub max_body: usize,
    /// Time between frames while training runs (33 ms: 30 frames a second).
    pub frame_interval: Duration,
    /// A session with no open stream and no request for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sessions: 8,
            max_streams: 16,
            max_streams_per_session: 4,
            max_connections: 64,
            max_body: MAX_CSV_BYTES + 4096,
            frame_interval: Duration::from_millis(33),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// An error answered as `{"error": message}` with a 4xx (or 5xx) status.
#[derive(Debug)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// What went wrong, for a person.
    pub message: String,
}

impl ApiError {
    /// A 400 Bad Request.
    pub fn bad(message: impl std::fmt::Display) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.to_string(),
        }
    }
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One page's training session.
struct Session {
    engine: Mutex<Engine>,
    playing: AtomicBool,
    closed: AtomicBool,
    wake: (Mutex<()>, Condvar),
    frames: watch::Sender<Arc<str>>,
    streams: AtomicUsize,
    last_seen: Mutex<Instant>,
}

impl Session {
    fn touch(&self) {
        *lock(&self.last_seen) = Instant::now();
    }
    fn wake(&self) {
        let _g = lock(&self.wake.0);
        self.wake.1.notify_all();
    }
    fn publish(&self, frame: &Frame) {
        if let Ok(s) = serde_json::to_string(frame) {
            self.frames.send_replace(Arc::from(s));
        }
    }
    /// Build and publish the current frame.
    fn refresh(&self, engine: &mut Engine) -> crate::Result<()> {
        let f = engine.frame(self.playing.load(Ordering::SeqCst))?;
        self.publish(&f);
        Ok(())
    }
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.playing.store(false, Ordering::SeqCst);
        self.frames.send_replace(Arc::from("{\"closed\":true}"));
        self.wake();
    }
}

/// The training thread: while playing, train for most of a frame interval, publish a frame, repeat.
fn session_loop(s: Arc<Session>, interval: Duration) {
    while !s.closed.load(Ordering::SeqCst) {
        if !s.playing.load(Ordering::SeqCst) {
            let g = lock(&s.wake.0);
            if !s.playing.load(Ordering::SeqCst) && !s.closed.load(Ordering::SeqCst) {
                let _ = s.wake.1.wait_timeout(g, Duration::from_millis(500));
            }
            continue;
        }
        let start = Instant::now();
        {
            let mut e = lock(&s.engine);
            let budget = interval.mul_f64(0.75);
            let result = e.train_frame(start + budget);
            if result.is_err() || e.diverged() {
                s.playing.store(false, Ordering::SeqCst);
            }
            if s.refresh(&mut e).is_err() {
                s.playing.store(false, Ordering::SeqCst);
            }
        }
        let spent = start.elapsed();
        if spent < interval {
            std::thread::sleep(interval - spent);
        }
    }
}

/// Shared server state: the sessions and the caps.
pub struct AppState {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    streams: AtomicUsize,
    limits: Limits,
    /// When set, requests must name one of these hosts (DNS-rebinding guard for a loopback server).
    allowed_hosts: Option<Vec<String>>,
}

impl AppState {
    /// State for a server bound to `addr`. A loopback server only answers requests
    /// whose `Host` is localhost, 127.0.0.1 or `[::1]`, so a web page elsewhere cannot
    /// reach it through DNS rebinding.
    pub fn new(limits: Limits, addr: SocketAddr) -> Arc<AppState> {
        let allowed_hosts = addr.ip().is_loopback().then(|| {
            let p = addr.port();
            vec![
                format!("localhost:{p}"),
                format!("127.0.0.1:{p}"),
                format!("[::1]:{p}"),
                "localhost".into(),
                "127.0.0.1".into(),
                "[::1]".into(),
            ]
        });
        Arc::new(AppState {
            sessions: Mutex::new(HashMap::new()),
            streams: AtomicUsize::new(0),
            limits,
            allowed_hosts,
        })
    }

    fn get(&self, id: &str) -> ApiResult<Arc<Session>> {
        let s = lock(&self.sessions).get(id).cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no session '{id}' (it may have expired)"),
            )
        })?;
        s.touch();
        Ok(s)
    }

    /// Close sessions that have had no stream and no request for the idle timeout.
    pub fn reap(&self) {
        let mut map = lock(&self.sessions);
        let timeout = self.limits.idle_timeout;
        map.retain(|_, s| {
            let idle = s.streams.load(Ordering::SeqCst) == 0 && lock(&s.last_seen).elapsed() > timeout;
            if idle {
                s.close();
            }
            !idle
        });
    }

    /// Close every session (their threads end).
    pub fn close_all(&self) {
        for (_, s) in lock(&self.sessions).drain() {
            s.close();
        }
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }
}

/// The router: page, API and event streams.
pub fn router(app: Arc<AppState>) -> Router {
    let max_body = app.limits.max_body;
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/app.js", get(app_js))
        .route("/style.css", get(style_css))
        .route("/api/limits", get(limits))
        .route("/api/sessions", post(create_session))
        .route("/api/sessions/{id}", get(get_session).delete(delete_session))
        .route("/api/sessions/{id}/config", post(set_config))
        .route("/api/sessions/{id}/control", post(control))
        .route("/api/sessions/{id}/csv", post(upload_csv))
        .route("/api/sessions/{id}/inspect", post(inspect))
        .route("/api/sessions/{id}/events", get(events))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(app.clone(), guard_host))
        .with_state(app)
}

async fn guard_host(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(allowed) = &app.allowed_hosts {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if !allowed.contains(&host) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                format!("host '{host}' is not served here (use http://127.0.0.1)"),
            )
            .into_response();
        }
    }
    let mut res = next.run(req).await;
    res.headers_mut()
        .insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    res
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such page or endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
}

const CSP: &str =
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; connect-src 'self'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", include_str!("../static/index.html"))
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("../static/app.js"))
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", include_str!("../static/style.css"))
}

async fn limits(State(app): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(limits_json(&app.limits))
}

fn limits_json(l: &Limits) -> serde_json::Value {
    serde_json::json!({
        "max_layers": MAX_LAYERS,
        "max_neurons": MAX_NEURONS,
        "max_features": MAX_FEATURES,
        "max_points": MAX_POINTS,
        "max_csv_bytes": MAX_CSV_BYTES,
        "max_sessions": l.max_sessions,
        "activations": activation_choices(),
        "inits": Init::registry()
            .iter()
            .filter(|d| crate::config::init_names().contains(&d.name))
            .map(|d| choice(d.name, d.name, d.description))
            .collect::<Vec<_>>(),
        "optimizers": OptimizerSpec::registry()
            .iter()
            .map(|o| choice(o.name, o.torch_name, o.description))
            .collect::<Vec<_>>(),
        "regularizations": Regularization::ALL
            .iter()
            .map(|r| choice(r.id(), r.label(), r.description()))
            .collect::<Vec<_>>(),
        "problems": Problem::ALL
            .iter()
            .map(|p| choice(p.id(), p.label(), p.description()))
            .collect::<Vec<_>>(),
        "speeds": crate::config::SPEEDS,
        "datasets": DatasetKind::ALL.iter().map(|&d| dataset_choice(d)).collect::<Vec<_>>(),
        "features": Feature::ALL.iter().map(|&f| feature_choice(f)).collect::<Vec<_>>(),
        "defaults": Config::default(),
    })
}

/// One entry of a menu: the value the API takes, what the page shows, and a tooltip.
fn choice(id: &str, label: &str, description: &str) -> serde_json::Value {
    serde_json::json!({ "id": id, "label": label, "description": description })
}

/// Side of a feature's thumbnail grid.
const THUMB: usize = 20;

/// A data set for the page's picker, with a sample of its points (no noise) to draw its thumbnail.
fn dataset_choice(d: DatasetKind) -> serde_json::Value {
    let mut rng = gradflow::seeded_rng(0);
    let points: Vec<[f64; 3]> = crate::data::generate(d, 200, 0.0, &mut rng)
        .iter()
        .map(|p| [round2(p.x1), round2(p.x2), round2(p.label)])
        .collect();
    serde_json::json!({
        "id": d,
        "label": d.label(),
        "problem": d.problem().map(Problem::id),
        "points": points,
    })
}

/// A feature for the network view, with its values over a grid of the square
/// (row-major from the top left, scaled into [-1, 1]) to draw its thumbnail.
fn feature_choice(f: Feature) -> serde_json::Value {
    let cell = 2.0 * DOMAIN / THUMB as f64;
    let values: Vec<f64> = (0..THUMB * THUMB)
        .map(|k| {
            let (i, j) = (k % THUMB, k / THUMB);
            f.eval(-DOMAIN + (i as f64 + 0.5) * cell, DOMAIN - (j as f64 + 0.5) * cell)
        })
        .collect();
    let scale = values.iter().fold(1e-9f64, |m, v| m.max(v.abs()));
    serde_json::json!({
        "id": f,
        "label": f.label(),
        "map": values.iter().map(|v| round2(v / scale)).collect::<Vec<_>>(),
    })
}

/// Two decimals: enough for a 48-pixel thumbnail, and a small answer.
fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// `linear` (no activation), then every declared activation.
fn activation_choices() -> Vec<serde_json::Value> {
    let mut v = vec![choice("linear", "Linear", "No activation: the layer stays linear.")];
    v.extend(
        gradflow_nn::Activation::registry()
            .iter()
            .map(|a| choice(a.cli_name, a.name, a.description)),
    );
    v
}

fn body_bytes(body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    body.map_err(|r| ApiError::new(r.status(), r.body_text()))
}

/// Require `Content-Type: want` (so a form on another site cannot post here without a CORS preflight).
fn require_type(headers: &HeaderMap, want: &[&str]) -> ApiResult<()> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if want.iter().any(|w| *w == ct) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("expected Content-Type {}, got '{ct}'", want.join(" or ")),
        ))
    }
}

fn parse_json<T: for<'de> Deserialize<'de>>(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> ApiResult<T> {
    require_type(headers, &["application/json"])?;
    let b = body_bytes(body)?;
    serde_json::from_slice(&b).map_err(|e| ApiError::bad(format!("invalid JSON: {e}")))
}

/// Run `f` on the session's engine on a blocking thread.
async fn with_engine<R: Send + 'static>(
    s: Arc<Session>,
    f: impl FnOnce(&Session, &mut Engine) -> ApiResult<R> + Send + 'static,
) -> ApiResult<R> {
    tokio::task::spawn_blocking(move || {
        let mut e = lock(&s.engine);
        f(&s, &mut e)
    })
    .await
    .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the session's worker failed"))?
}

#[derive(Serialize)]
struct Created {
    id: String,
    state: StateView,
    limits: serde_json::Value,
}

async fn create_session(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Created>)> {
    let cfg: Config = parse_json(&headers, body)?;
    cfg.validate().map_err(ApiError::bad)?;
    if app.session_count() >= app.limits.max_sessions {
        app.reap();
    }
    if app.session_count() >= app.limits.max_sessions {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{} sessions are open; close a playground tab and try again",
                app.limits.max_sessions
            ),
        ));
    }
    let interval = app.limits.frame_interval;
    let (engine, frame) = tokio::task::spawn_blocking(move || -> ApiResult<(Engine, Frame)> {
        let mut e = Engine::new(cfg, None, 1).map_err(ApiError::bad)?;
        let f = e.frame(false).map_err(ApiError::bad)?;
        Ok((e, f))
    })
    .await
    .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "building the network failed"))??;
    let state = engine.state();
    let id = format!("{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>());
    let (tx, _) = watch::channel::<Arc<str>>(Arc::from(""));
    let session = Arc::new(Session {
        engine: Mutex::new(engine),
        playing: AtomicBool::new(false),
        closed: AtomicBool::new(false),
        wake: (Mutex::new(()), Condvar::new()),
        frames: tx,
        streams: AtomicUsize::new(0),
        last_seen: Mutex::new(Instant::now()),
    });
    session.publish(&frame);
    {
        let mut map = lock(&app.sessions);
        if map.len() >= app.limits.max_sessions {
            return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too many sessions"));
        }
        map.insert(id.clone(), session.clone());
    }
    let s2 = session.clone();
    std::thread::Builder::new()
        .name(format!("playground-{}", &id[..8]))
        .spawn(move || session_loop(s2, interval))
        .map_err(|e| {
            lock(&app.sessions).remove(&id);
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot start a training thread: {e}"),
            )
        })?;
    Ok((
        StatusCode::CREATED,
        Json(Created {
            id,
            state,
            limits: limits_json(&app.limits),
        }),
    ))
}

async fn get_session(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> ApiResult<Json<StateView>> {
    let s = app.get(&id)?;
    with_engine(s, |_, e| Ok(Json(e.state()))).await
}

async fn delete_session(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let s = lock(&app.sessions)
        .remove(&id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no session '{id}'")))?;
    s.close();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
struct Applied {
    /// True when training restarted.
    reset: bool,
    state: StateView,
}

async fn set_config(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Applied>> {
    let cfg: Config = parse_json(&headers, body)?;
    cfg.validate().map_err(ApiError::bad)?;
    let s = app.get(&id)?;
    with_engine(s, move |s, e| {
        let reset = e.apply(cfg).map_err(ApiError::bad)?;
        s.refresh(e).map_err(ApiError::bad)?;
        Ok(Json(Applied {
            reset,
            state: e.state(),
        }))
    })
    .await
}

/// What `/control` does.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlRequest {
    /// play, pause, step or reset.
    action: String,
}

#[derive(Serialize)]
struct Controlled {
    playing: bool,
    epoch: u64,
    version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<StateView>,
}

async fn control(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Controlled>> {
    let req: ControlRequest = parse_json(&headers, body)?;
    let s = app.get(&id)?;
    let action = req.action.to_ascii_lowercase();
    if !["play", "pause", "step", "reset"].contains(&action.as_str()) {
        return Err(ApiError::bad(format!(
            "unknown action '{}' (expected play, pause, step or reset)",
            req.action
        )));
    }
    with_engine(s, move |s, e| {
        let mut state = None;
        match action.as_str() {
            "play" => {
                if e.diverged() {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "training diverged (the loss is not finite): reset or lower the learning rate",
                    ));
                }
                s.playing.store(true, Ordering::SeqCst);
                s.wake();
            }
            "pause" => s.playing.store(false, Ordering::SeqCst),
            "step" => {
                s.playing.store(false, Ordering::SeqCst);
                e.train_until(Instant::now() + Duration::from_secs(2))
                    .map_err(ApiError::bad)?;
            }
            _ => {
                e.reset().map_err(ApiError::bad)?;
                state = Some(e.state());
            }
        }
        s.refresh(e).map_err(ApiError::bad)?;
        Ok(Json(Controlled {
            playing: s.playing.load(Ordering::SeqCst),
            epoch: e.epoch(),
            version: e.version(),
            state,
        }))
    })
    .await
}

async fn upload_csv(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<StateView>> {
    require_type(&headers, &["text/csv", "text/plain", "application/octet-stream"])?;
    let b = body_bytes(body)?;
    if b.len() > MAX_CSV_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the CSV is larger than {MAX_CSV_BYTES} bytes"),
        ));
    }
    let text = std::str::from_utf8(&b).map_err(|_| ApiError::bad("the CSV is not UTF-8 text"))?;
    let csv = parse_csv(text).map_err(ApiError::bad)?;
    let s = app.get(&id)?;
    with_engine(s, move |s, e| {
        e.upload(csv).map_err(ApiError::bad)?;
        s.refresh(e).map_err(ApiError::bad)?;
        Ok(Json(e.state()))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InspectRequest {
    x1: f64,
    x2: f64,
    label: f64,
}

async fn inspect(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<crate::engine::Walk>> {
    let req: InspectRequest = parse_json(&headers, body)?;
    let s = app.get(&id)?;
    with_engine(s, move |_, e| {
        e.walk(req.x1, req.x2, req.label).map(Json).map_err(ApiError::bad)
    })
    .await
}

/// Counts an open stream; dropping it (when the client goes away) uncounts it.
struct StreamGuard {
    app: Arc<AppState>,
    session: Arc<Session>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.app.streams.fetch_sub(1, Ordering::SeqCst);
        self.session.streams.fetch_sub(1, Ordering::SeqCst);
        self.session.touch();
    }
}

async fn events(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let s = app.get(&id)?;
    let total = app.streams.fetch_add(1, Ordering::SeqCst);
    let mine = s.streams.fetch_add(1, Ordering::SeqCst);
    let guard = StreamGuard {
        app: app.clone(),
        session: s.clone(),
    };
    if total >= app.limits.max_streams || mine >= app.limits.max_streams_per_session {
        drop(guard);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many open event streams",
        ));
    }
    let rx = s.frames.subscribe();
    let stream = futures_util::stream::unfold((rx, guard, true), |(mut rx, guard, first)| async move {
        if guard.session.closed.load(Ordering::SeqCst) {
            return None;
        }
        if !first && rx.changed().await.is_err() {
            return None;
        }
        let data = rx.borrow_and_update().clone();
        let event = if data.starts_with("{\"closed\"") {
            Event::default().event("closed").data("{}")
        } else {
            Event::default().event("frame").data(&*data)
        };
        Some((Ok(event), (rx, guard, false)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
