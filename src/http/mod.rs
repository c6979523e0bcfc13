//! The HTTP endpoint: `/metrics` (Prometheus text), `/health` (503 when critical),
//! `/stats`, `/alerts` and the dashboard at `/`. Every route but `/health` needs
//! `Authorization: Bearer <token>` when `[http] token` is set.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;

use crate::server::ServerState;

const DASHBOARD: &str = include_str!("dashboard.html");

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// The routes, for [`serve`] and for tests.
pub fn router(state: Arc<ServerState>) -> Router {
    let protected = Router::new()
        .route("/", get(dashboard))
        .route("/metrics", get(metrics))
        .route("/stats", get(stats))
        .route("/stats/reset", post(reset_stats))
        .route("/alerts", get(alerts))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/health", get(health))
        .merge(protected)
        .with_state(state)
}

pub async fn serve(listener: TcpListener, state: Arc<ServerState>) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "HTTP endpoint listening");
    }
    if let Err(e) = axum::serve(listener, router(state)).await {
        tracing::error!(error = %e, "HTTP endpoint stopped");
    }
}

async fn require_token(
    State(state): State<Arc<ServerState>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &state.config.http.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let query_token = request.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("token="))
                .map(str::to_string)
        });
        // The dashboard page itself may be opened with ?token=…; its requests
        // then send the header.
        let ok = given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes()))
            || (request.uri().path() == "/"
                && query_token.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())));
        if !ok {
            let mut r = (
                StatusCode::UNAUTHORIZED,
                Json(serde_json::json!({"error": "a bearer token is required: Authorization: Bearer <[http] token>"})),
            )
                .into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn dashboard() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        DASHBOARD,
    )
}

async fn metrics(State(state): State<Arc<ServerState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.observer.metrics_text(),
    )
}

async fn stats(State(state): State<Arc<ServerState>>) -> impl IntoResponse {
    Json(state.observer.stats_json())
}

async fn reset_stats(State(state): State<Arc<ServerState>>) -> impl IntoResponse {
    state.observer.reset_stats();
    Json(serde_json::json!({"reset": true}))
}

async fn alerts(State(state): State<Arc<ServerState>>) -> impl IntoResponse {
    Json(state.observer.alerts_json())
}

async fn health(State(state): State<Arc<ServerState>>) -> impl IntoResponse {
    let (critical, body) = state.observer.health_json();
    let status = if critical {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(body))
}
