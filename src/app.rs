//! Wiring for `qunfa serve`: the shared state every handler and worker reads, building it
//! from settings, and running the server, the workers and the rules reloader until
//! shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::channels::{ChannelRegistry, ChannelStatus};
use crate::clock::{SharedClock, SystemClock};
use crate::db::{DatabaseUrl, Db};
use crate::delivery::breaker::Breakers;
use crate::delivery::{DeliverySetup, Dispatcher, Outbox, report_gauges};
use crate::rules::{DeliverySettings, InboundPlatform, Rules};

/// One version of the rules together with what was built from them. Swapped as a whole
/// on reload, so a handler never sees new rules with old channels.
#[derive(Debug)]
pub struct Live {
    pub rules: Arc<Rules>,
    pub channels: ChannelRegistry,
    /// Inbound accounts that cannot take callbacks, with the reason (usually a missing
    /// secret variable).
    pub disabled_inbound: Vec<(String, String)>,
}

impl Live {
    /// Builds channels from `rules`, resolving secrets now, and logs every account that
    /// a missing secret disables.
    pub fn build(rules: Rules, clock: &SharedClock) -> Self {
        let channels = ChannelRegistry::build(&rules, clock);
        for (id, reason) in channels.disabled() {
            tracing::warn!(channel = id, "channel disabled: {reason}");
        }
        let disabled_inbound = crate::rules::disabled_inbound(&rules);
        for (id, reason) in &disabled_inbound {
            tracing::warn!(inbound = %id, "inbound account disabled: {reason}");
        }
        Self {
            rules: Arc::new(rules),
            channels,
            disabled_inbound,
        }
    }
}

/// Everything a request handler or worker needs. One pointer: axum clones the state for
/// every request (and every layer that reads it), and a clone field by field was a dozen
/// reference counts bumped and dropped per request, on cache lines both cores share.
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

impl From<AppParts> for AppState {
    fn from(parts: AppParts) -> Self {
        Self(Arc::new(parts))
    }
}

/// What [`AppState`] holds.
pub struct AppParts {
    pub db: Db,
    pub live: Arc<ArcSwap<Live>>,
    pub clock: SharedClock,
    pub metrics: PrometheusHandle,
    /// The bearer token `qunfa shell` must present; written 0600 beside the database.
    pub shell_token: Arc<SecretString>,
    /// `QUNFA_ADMIN_TOKEN`, when set: an admin bearer token for the API.
    pub admin_token: Option<Arc<SecretString>>,
    /// De-duplication memory, reply client and token cache of the inbound handlers.
    pub inbound: Arc<crate::inbound::InboundRuntime>,
    /// Wakes the delivery workers after something was queued in this process, so a
    /// message does not wait for the next poll.
    pub delivery_wake: Arc<tokio::sync::Notify>,
    /// The circuit breakers of this process's delivery workers, for `/quota`.
    pub breakers: Arc<Breakers>,
}

impl AppState {
    /// The rules and channels in force right now.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }
}

/// The delivery workers read settings and channels from the hot-reloaded rules, and
/// send their alerts through the same state.
struct LiveSetup(AppState);

impl DeliverySetup for LiveSetup {
    fn settings(&self) -> DeliverySettings {
        self.0.live.load().rules.delivery.clone()
    }

    fn channel(&self, id: &str) -> Option<ChannelStatus> {
        self.0.live.load().channels.get(id).cloned()
    }

    fn batch_size(&self, id: &str) -> usize {
        self.0.live.load().channels.batch_size(id)
    }

    fn largest_batch(&self) -> usize {
        self.0.live.load().channels.largest_batch()
    }

    fn limits(&self, id: &str) -> crate::rules::Limits {
        self.0.live.load().channels.limits(id)
    }

    fn alert(&self, key: String, about_channel: String, text: String) {
        let state = self.0.clone();
        tokio::spawn(async move {
            raise_alert(&state, &key, Some(&about_channel), &text).await;
        });
    }
}

/// Queues an alert for the ops chat and wakes the workers; problems are logged, since an
/// alert must never take down what it reports on.
async fn raise_alert(state: &AppState, key: &str, about_channel: Option<&str>, text: &str) {
    let live = state.live();
    let raised = crate::delivery::alerts::raise(
        &Outbox::new(state.db.clone()),
        &live.rules.delivery,
        &live.channels,
        key,
        about_channel,
        text,
        state.clock.now_ms(),
    )
    .await;
    match raised {
        Ok(crate::delivery::alerts::Raised::Undeliverable(reason)) => {
            tracing::warn!(%reason, alert = %text, "cannot alert the ops chat");
        }
        Ok(_) => state.delivery_wake.notify_one(),
        Err(error) => tracing::warn!(%error, alert = %text, "cannot queue an alert"),
    }
}

/// What `qunfa serve` is told on its command line.
#[derive(Debug, Clone)]
pub struct Settings {
    pub rules_dir: PathBuf,
    pub database: DatabaseUrl,
    pub listen: String,
    /// How long in-flight sends may take to finish after a shutdown signal.
    pub drain_timeout: Duration,
}

/// A built, not yet running, service: the port is bound, the database migrated, the
/// rules loaded.
pub struct App {
    state: AppState,
    listener: TcpListener,
    settings: Settings,
    token_file: PathBuf,
}

impl App {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let clock: SharedClock = Arc::new(SystemClock);
        let rules = crate::rules::load(&settings.rules_dir).map_err(|error| {
            anyhow::anyhow!(
                "the rules in {} have problems; fix them (qunfa check-rules lists them all):\n{error}",
                settings.rules_dir.display()
            )
        })?;
        let db = Db::open(&settings.database).await?;
        let listener = TcpListener::bind(&settings.listen).await.map_err(|error| {
            anyhow::anyhow!(
                "cannot listen on {}: {error} (is another qunfa running? choose another address with --listen)",
                settings.listen
            )
        })?;
        let local = listener.local_addr()?;
        let live = Live::build(rules, &clock);
        let token_file = crate::inbound::token_file_path(&settings.database);
        let shell_account = live
            .rules
            .inbound
            .iter()
            .find(|account| account.platform == InboundPlatform::Shell)
            .map(|account| account.id.clone());
        let shell_url = format!("http://{}", loopback_url_host(local));
        let shell_token = crate::inbound::write_token_file(
            &token_file,
            &shell_url,
            shell_account.as_deref().unwrap_or(""),
        )
        .with_context(|| format!("cannot write the shell token file {}", token_file.display()))?;
        let admin_token = std::env::var("QUNFA_ADMIN_TOKEN")
            .ok()
            .filter(|token| !token.trim().is_empty())
            .map(|token| Arc::new(SecretString::from(token)));
        let state = AppState::from(AppParts {
            db,
            live: Arc::new(ArcSwap::from_pointee(live)),
            clock,
            metrics: crate::telemetry::install_metrics(),
            shell_token: Arc::new(shell_token),
            admin_token,
            inbound: Arc::default(),
            delivery_wake: Arc::default(),
            breakers: Arc::default(),
        });
        Ok(Self {
            state,
            listener,
            settings,
            token_file,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` fires: stops accepting, stops claiming, lets in-flight
    /// sends finish within the drain timeout, then closes the database.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            state,
            listener,
            settings,
            token_file,
        } = self;
        let workers = CancellationToken::new();
        let outbox = Outbox::new(state.db.clone());
        let dispatcher = Dispatcher::new(
            outbox.clone(),
            Arc::new(LiveSetup(state.clone())),
            state.clock.clone(),
            worker_id(),
        )
        .woken_by(state.delivery_wake.clone())
        .with_breakers(state.breakers.clone());
        let dispatching = tokio::spawn(dispatcher.run(workers.clone(), settings.drain_timeout));
        let gauges = tokio::spawn(report_gauges(
            outbox,
            state.clock.clone(),
            workers.clone(),
            Duration::from_secs(5),
        ));
        let reloading = tokio::spawn(reload_on_change(
            state.clone(),
            settings.rules_dir.clone(),
            workers.clone(),
        ));

        tracing::info!(
            listen = %listener.local_addr()?,
            database = %settings.database.redacted(),
            rules = %settings.rules_dir.display(),
            "qunfa is serving"
        );
        let router = crate::http::router(state.clone(), crate::inbound::routes());
        let served = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await;

        workers.cancel();
        state.inbound.finish_replies(settings.drain_timeout).await;
        let _ = dispatching.await;
        let _ = gauges.await;
        let _ = reloading.await;
        let _ = std::fs::remove_file(&token_file);
        state.db.close().await;
        served.context("the HTTP server failed")?;
        tracing::info!("qunfa stopped");
        Ok(())
    }
}

/// Reloads the rules on SIGHUP and on file changes; a bad version keeps the old rules.
async fn reload_on_change(state: AppState, dir: PathBuf, cancel: CancellationToken) {
    let mut changes = crate::rules::spawn_watcher(dir.clone(), cancel.clone());
    while let Some(cause) = changes.recv().await {
        match crate::rules::load(&dir) {
            Ok(rules) => {
                let live = Live::build(rules, &state.clock);
                state.live.store(Arc::new(live));
                metrics::counter!("qunfa_rules_reloads_total", "result" => "ok").increment(1);
                tracing::info!(?cause, "rules reloaded");
            }
            Err(error) => {
                metrics::counter!("qunfa_rules_reloads_total", "result" => "rejected").increment(1);
                tracing::error!(
                    ?cause,
                    "the changed rules have problems; keeping the previous rules:\n{error}"
                );
                alert_rejected_reload(&state, &error.to_string()).await;
            }
        }
    }
}

/// Tells the ops chat that a reload was refused, once per distinct set of problems.
async fn alert_rejected_reload(state: &AppState, problems: &str) {
    let text = format!(
        "rules reload rejected, the previous rules stay in force / 规则重载被拒绝，继续使用原规则:\n{}",
        crate::channels::truncate(problems, 1200)
    );
    let key = format!(
        "reload-rejected:{}",
        crate::delivery::alerts::digest(problems)
    );
    raise_alert(state, &key, None, &text).await;
}

/// A name for this process in leases and the attempts log.
fn worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "qunfa".to_string());
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &nonce[..6])
}

/// The address a local client should dial: a wildcard listen address is reached over
/// loopback, which the shell endpoint insists on anyway.
fn loopback_url_host(local: SocketAddr) -> String {
    match local {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => format!("127.0.0.1:{}", v4.port()),
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => format!("[::1]:{}", v6.port()),
        other => other.to_string(),
    }
}
