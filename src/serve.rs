//! `papercup serve`: wires storage, billing, the meter, the janitor, change notifications
//! and the HTTP API, and shuts them down in order on SIGINT/SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use billing::meter::{self, MeterEvent};
use storage::{ChangeWatcher, Topic};
use tokio::sync::{mpsc, watch};

use crate::config::Config;

pub async fn run(config: Config) -> Result<()> {
    let db = storage::Db::open(&config.database.url, &config.db_options())
        .await
        .context("opening the database")?;
    tracing::info!(database = %db.display_url(), backend = db.backend().name(), "database ready");
    let billing = billing::Billing::new(
        db.clone(),
        Arc::new(billing::SystemClock),
        config.node_id.clone(),
        config.billing_config(),
    )
    .await?;
    // Calls this node owned before a restart died with the old process: settle them now.
    let leftovers = billing.settle_own_leftovers().await?;
    if !leftovers.is_empty() {
        tracing::warn!(
            count = leftovers.len(),
            "settled calls left by the previous run"
        );
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (hangup_tx, mut hangup_rx) = mpsc::unbounded_channel::<MeterEvent>();
    let (meter, meter_task) = meter::spawn(billing.clone(), hangup_tx);

    // Call control is created once SIP listens; until then (and for calls it no longer
    // has) a hang-up is only logged.
    let control_slot: Arc<std::sync::OnceLock<Arc<signaling::b2bua::CallControl>>> = Arc::default();
    let hangups = {
        let slot = control_slot.clone();
        tokio::spawn(async move {
            while let Some(ev) = hangup_rx.recv().await {
                if let MeterEvent::HangUp {
                    call_id, deadline, ..
                } = ev
                {
                    tracing::info!(%call_id, deadline, "credit exhausted: hang up");
                    if let Some(c) = slot.get() {
                        c.credit_exhausted(&call_id, deadline);
                    }
                }
            }
        })
    };

    let janitor = {
        let (b, mut stop) = (billing.clone(), shutdown_rx.clone());
        let every = Duration::from_secs(config.billing.janitor_interval_secs);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.changed() => return,
                }
                match b.expire_reservations().await {
                    Ok(settled) if !settled.is_empty() => {
                        tracing::warn!(count = settled.len(), "settled reservations of lost nodes")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "janitor failed"),
                }
                let now = chrono::Utc::now().timestamp_millis();
                if let Err(e) = signaling::store::prune_expired(b.db(), now).await {
                    tracing::error!(error = %e, "pruning expired registrations failed");
                }
            }
        })
    };

    let watcher = {
        let mut w = ChangeWatcher::new(
            db.clone(),
            Duration::from_millis(config.database.change_poll_ms),
        )
        .await
        .context("starting the change watcher")?;
        let (b, m, mut stop) = (billing.clone(), meter.clone(), shutdown_rx.clone());
        let slot = control_slot.clone();
        tokio::spawn(async move {
            loop {
                let changed = tokio::select! {
                    c = w.changed() => c,
                    _ = stop.changed() => return,
                };
                match changed {
                    Ok(topics) => {
                        for t in topics {
                            match t {
                                Topic::Rates => match b.reload_rates().await {
                                    Ok(n) => tracing::info!(rates = n, "rate deck reloaded"),
                                    Err(e) => tracing::error!(error = %e, "reloading rates failed"),
                                },
                                Topic::Policy => match b.reload_policy().await {
                                    Ok(n) => tracing::info!(blocked = n, "block-list reloaded"),
                                    Err(e) => {
                                        tracing::error!(error = %e, "reloading the block-list failed")
                                    }
                                },
                                // A top-up (here or on another host) may feed starved calls.
                                Topic::Wallets => m.wake_starved(None),
                                Topic::Trunks => {
                                    if let Some(c) = slot.get() {
                                        reload_trunks(c).await;
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "watching for changes failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        })
    };

    let turn = match config.turn_config() {
        Ok(Some(tc)) => {
            let t = turn_server::TurnServer::start(tc)
                .await
                .context("starting the TURN relay")?;
            Some(Arc::new(t))
        }
        Ok(None) => {
            tracing::info!("TURN relay off (turn.secrets is empty)");
            None
        }
        Err((key, msg)) => anyhow::bail!("config key `{key}`: {msg}"),
    };

    let health = if config.trunks.health_interval_secs > 0 {
        Some(tokio::spawn(trunk_health(
            db.clone(),
            config.node_id.clone(),
            config.trunks.clone(),
            control_slot.clone(),
            shutdown_rx.clone(),
        )))
    } else {
        None
    };

    let sip_config = config
        .sip_config()
        .map_err(|(key, msg)| anyhow::anyhow!("config key `{key}`: {msg}"))?;
    let sip = signaling::SipServer::start(sip_config, db.clone())
        .await
        .context("starting SIP")?;
    let media_config = config
        .media_config(sip.caller().advertised().map(|a| a.ip()))
        .map_err(|(key, msg)| anyhow::anyhow!("config key `{key}`: {msg}"))?;
    let media = media::engine::MediaEngine::new(media_config)
        .map_err(|e| anyhow::anyhow!("config key `media.rtp_ports`/`media.webrtc_ports`: {e}"))?;
    let control = signaling::b2bua::CallControl::new(
        sip.caller(),
        db.clone(),
        billing.clone(),
        meter.clone(),
        signaling::b2bua::ControlConfig {
            node_id: config.node_id.clone(),
            setup_timeout: Duration::from_secs(config.trunks.setup_timeout_secs),
            media,
            echo_extension: config.media.echo_extension.trim().to_string(),
        },
    )
    .await
    .context("loading trunks and numbers")?;
    sip.set_call_control(control.clone());
    let _ = control_slot.set(control);
    // Printed before the HTTP line: when that one appears, SIP is listening too.
    println!("papercup sip listening {}", sip.listening().join(" "));

    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on {} (http.listen)", config.http.listen))?;
    let addr = listener.local_addr()?;
    // Printed on stdout so scripts (and tests binding port 0) learn the address.
    println!(
        "papercup {} serving http://{addr} (node {}, {})",
        env!("CARGO_PKG_VERSION"),
        config.node_id,
        db.display_url()
    );
    let app = web::router(web::AppState {
        billing: billing.clone(),
        turn: turn.clone(),
        sip: Some(sip.status()),
    });
    let mut http_stop = shutdown_rx.clone();
    let http = tokio::spawn(web::serve(listener, app, async move {
        let _ = http_stop.changed().await;
    }));

    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    http.await.context("http task")?.context("http server")?;
    let _ = tokio::join!(janitor, watcher);
    if let Some(h) = health {
        let _ = h.await;
    }
    sip.shutdown().await;
    if let Some(c) = control_slot.get() {
        c.close();
    }
    if let Some(t) = turn.and_then(|t| Arc::try_unwrap(t).ok()) {
        t.close().await;
    }
    drop(meter);
    let _ = meter_task.await;
    let _ = hangups.await;
    db.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Probes every enabled trunk with OPTIONS each `health_interval_secs`, keeps their
/// up/down state with hysteresis, logs changes and records this host's view in the
/// database (`papercup trunk list` shows it). Trunks added or removed with the CLI are
/// picked up at the next round.
async fn trunk_health(
    db: storage::Db,
    node_id: String,
    cfg: crate::config::TrunksSection,
    control: Arc<std::sync::OnceLock<Arc<signaling::b2bua::CallControl>>>,
    mut stop: watch::Receiver<bool>,
) {
    use std::collections::HashMap;
    let policy = sip_trunk::HealthPolicy {
        down_after: cfg.down_after,
        up_after: cfg.up_after,
    };
    let timeout = Duration::from_secs(cfg.health_timeout_secs);
    let mut states: HashMap<i64, sip_trunk::TrunkHealth> = HashMap::new();
    loop {
        match sip_trunk::store::trunks(&db).await {
            Ok(trunks) => {
                states.retain(|id, _| trunks.iter().any(|t| t.id == *id && t.enabled));
                let mut probes = tokio::task::JoinSet::new();
                for t in trunks.into_iter().filter(|t| t.enabled) {
                    probes.spawn(async move {
                        let r = signaling::probe::probe_trunk(&t, timeout).await;
                        (t, r)
                    });
                }
                while let Some(done) = probes.join_next().await {
                    let Ok((t, r)) = done else { continue };
                    let h = states.entry(t.id).or_default();
                    let changed = match &r {
                        Ok(p) => h.record(
                            policy,
                            Some(p.latency_ms),
                            format!("{} {}", p.status, p.reason),
                        ),
                        Err(e) => h.record(policy, None, e.to_string()),
                    };
                    if let Some(c) = control.get() {
                        c.set_health(t.id, h.state);
                    }
                    if let Some(state) = changed {
                        match state {
                            sip_trunk::Health::Down => {
                                tracing::warn!(trunk = %t.name, result = %h.last_result, "trunk down")
                            }
                            _ => {
                                tracing::info!(trunk = %t.name, state = state.as_str(), latency_ms = ?h.latency_ms, "trunk state")
                            }
                        }
                    }
                    let now = chrono::Utc::now().timestamp_millis();
                    if let Err(e) =
                        sip_trunk::store::record_health(&db, t.id, &node_id, h, now).await
                    {
                        tracing::error!(error = %e, "recording trunk health failed");
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "loading trunks for health checks failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(cfg.health_interval_secs)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Reloads trunks and numbers into call control after a change (CLI, another host).
async fn reload_trunks(control: &signaling::b2bua::CallControl) {
    match control.reload().await {
        Ok((trunks, numbers)) => tracing::info!(trunks, numbers, "trunks and numbers reloaded"),
        Err(e) => tracing::error!(error = %e, "reloading trunks failed"),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
