//! Papercup's HTTP API (axum). Today: health, the price of a destination before a call
//! (`GET /api/rates?to=…`) and, for operators on this host only, the TURN relay's live
//! allocations (`GET /admin/turn/allocations`, loopback clients only). The WebSocket
//! signaling, the softphone and the admin UI join this router later.
//!
//! Handlers share [`AppState`] via `with_state`; every error is an [`ApiError`] that maps
//! to a status and a JSON body `{ "error": code, "message": text }` and never leaks
//! internals. [`serve`] runs the router on a listener until a shutdown future resolves.

#![forbid(unsafe_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

/// What handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The billing engine (rates, wallets).
    pub billing: billing::Billing,
    /// The TURN relay of this host, when it runs.
    pub turn: Option<Arc<turn_server::TurnServer>>,
    /// The SIP core of this host (counters, blocked sources), when it runs.
    pub sip: Option<signaling::SipStatus>,
}

/// The API router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/api/rates", get(rate))
        .route("/admin/turn/allocations", get(turn_allocations))
        .route("/admin/sip/status", get(sip_status))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` resolves, then finishes the requests
/// in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The peer address is needed by the loopback-only admin routes.
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// An API error: a status, a stable code and a message for people.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.code,
                message: &self.message,
            }),
        )
            .into_response()
    }
}

impl From<billing::Refusal> for ApiError {
    fn from(r: billing::Refusal) -> Self {
        let status = match r {
            billing::Refusal::InvalidNumber { .. } => StatusCode::BAD_REQUEST,
            billing::Refusal::NoRate { .. } => StatusCode::NOT_FOUND,
            billing::Refusal::InsufficientBalance { .. } => StatusCode::PAYMENT_REQUIRED,
            _ => StatusCode::FORBIDDEN,
        };
        Self {
            status,
            code: r.code(),
            message: r.to_string(),
        }
    }
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    node: String,
    database: &'static str,
    rates: usize,
}

async fn health(State(s): State<AppState>) -> Result<Json<Health>, ApiError> {
    if s.billing.ping().await.is_err() {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "database_unavailable",
            message: "the database does not answer".into(),
        });
    }
    Ok(Json(Health {
        status: "ok",
        node: s.billing.node_id().to_string(),
        database: s.billing.db().backend().name(),
        rates: s.billing.rate_trie().len(),
    }))
}

/// Operator routes answer only clients on this host (they show users and addresses).
fn require_loopback(req: &Request) -> Result<(), ApiError> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        // What tests inject in place of a real connection.
        .or_else(|| {
            req.extensions()
                .get::<axum::extract::connect_info::MockConnectInfo<SocketAddr>>()
                .map(|c| c.0)
        });
    match peer {
        Some(peer) if peer.ip().is_loopback() => Ok(()),
        _ => Err(ApiError {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: "operator routes answer only on the loopback interface".into(),
        }),
    }
}

async fn turn_allocations(
    State(s): State<AppState>,
    req: Request,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_loopback(&req)?;
    Ok(Json(match &s.turn {
        None => serde_json::json!({ "enabled": false, "allocations": [], "metrics": null }),
        Some(t) => serde_json::json!({
            "enabled": true,
            "allocations": t.allocations().await,
            "metrics": t.metrics(),
        }),
    }))
}

/// `GET /admin/sip/status` (loopback only): the SIP core's counters (requests by method,
/// responses by class, auth failures, blocked sources, registrations, active dialogs).
async fn sip_status(
    State(s): State<AppState>,
    req: Request,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_loopback(&req)?;
    Ok(Json(match &s.sip {
        None => serde_json::json!({ "enabled": false }),
        Some(sip) => {
            let mut v = serde_json::to_value(sip.snapshot()).unwrap_or_default();
            v["enabled"] = true.into();
            v
        }
    }))
}

#[derive(Debug, Deserialize)]
struct RateQuery {
    /// The number to call.
    to: String,
    /// Caller ID (optional).
    #[serde(default)]
    from: String,
}

/// The price of a destination, shown before dialling.
#[derive(Debug, Serialize)]
struct RateAnswer {
    number: String,
    country: Option<String>,
    prefix: String,
    description: String,
    currency: String,
    /// Micro-units.
    rate_per_min: i64,
    /// Micro-units.
    connect_fee: i64,
    /// For display: `"0.0120"`.
    rate_per_min_display: String,
    increments: String,
}

async fn rate(
    State(s): State<AppState>,
    Query(q): Query<RateQuery>,
) -> Result<Json<RateAnswer>, ApiError> {
    let quote = s.billing.quote(&q.to, &q.from)?;
    let t = quote.rate.tariff;
    Ok(Json(RateAnswer {
        number: quote.number,
        country: quote.country,
        prefix: quote.rate.prefix,
        description: quote.rate.description,
        currency: s.billing.config().currency.clone(),
        rate_per_min: t.rate_per_min,
        connect_fee: t.connect_fee,
        rate_per_min_display: billing::money::format_amount(t.rate_per_min),
        increments: format!("{}/{}", t.increment_first, t.increment_next),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn app() -> (Router, storage::testing::TestDb) {
        let db = storage::testing::sqlite().await;
        let b = billing::Billing::new(
            db.db.clone(),
            std::sync::Arc::new(billing::SystemClock),
            "web-test",
            billing::BillingConfig::default(),
        )
        .await
        .expect("billing");
        let rate = billing::Rate {
            prefix: "4420".into(),
            origin_prefix: String::new(),
            country: "GB".into(),
            description: "London".into(),
            tariff: billing::Tariff {
                rate_per_min: 12_000,
                connect_fee: 0,
                increment_first: 60,
                increment_next: 60,
            },
            effective_from: 0,
        };
        b.import_rates(&[rate], false, &mut |_, _| {})
            .await
            .expect("rate");
        (
            router(AppState {
                billing: b,
                turn: None,
                sip: None,
            }),
            db,
        )
    }

    async fn get(app: &Router, uri: &str) -> (StatusCode, serde_json::Value) {
        let resp = app
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, serde_json::from_slice(&bytes).expect("json body"))
    }

    #[tokio::test]
    async fn rates_are_quoted_before_a_call() {
        let (app, _db) = app().await;
        let (status, body) = get(&app, "/api/rates?to=%2B442071234567").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["prefix"], "4420");
        assert_eq!(body["rate_per_min"], 12_000);
        assert_eq!(body["rate_per_min_display"], "0.012");
        assert_eq!(body["increments"], "60/60");
        let (status, body) = get(&app, "/api/rates?to=%2B33142685300").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"], "no_rate");
        let (status, body) = get(&app, "/api/rates?to=banana").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "invalid_number");
    }

    #[tokio::test]
    async fn operator_routes_answer_only_loopback_clients() {
        let (app, _db) = app().await;
        let (status, _) = get(&app, "/admin/turn/allocations").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "no peer address: refused");
        let remote = app
            .clone()
            .layer(axum::extract::connect_info::MockConnectInfo(
                SocketAddr::from(([203, 0, 113, 9], 5555)),
            ));
        let (status, _) = get(&remote, "/admin/turn/allocations").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let local = app.layer(axum::extract::connect_info::MockConnectInfo(
            SocketAddr::from(([127, 0, 0, 1], 5555)),
        ));
        let (status, body) = get(&local, "/admin/turn/allocations").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["enabled"], false);
    }

    #[tokio::test]
    async fn health_reports_the_node() {
        let (app, _db) = app().await;
        let (status, body) = get(&app, "/healthz").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["node"], "web-test");
        assert_eq!(body["rates"], 1);
    }
}
