//! Wiring for `qunfa serve`: the shared state every handler and worker reads.

use std::sync::Arc;

use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::SecretString;

use crate::channels::ChannelRegistry;
use crate::clock::SharedClock;
use crate::db::Db;
use crate::rules::Rules;

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

/// Everything a request handler or worker needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub live: Arc<ArcSwap<Live>>,
    pub clock: SharedClock,
    pub metrics: PrometheusHandle,
    /// The bearer token `qunfa shell` must present; written 0600 beside the database.
    pub shell_token: Arc<SecretString>,
    /// `QUNFA_ADMIN_TOKEN`, when set: an admin bearer token for the API.
    pub admin_token: Option<Arc<SecretString>>,
}

impl AppState {
    /// The rules and channels in force right now.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }
}
