//! Process-wide services the platform handlers share: the in-memory front of callback
//! de-duplication, one HTTP client for reply APIs, a cache of platform access tokens, and
//! a tracker of asynchronous replies so shutdown can let them finish.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio_util::task::TaskTracker;

use super::api::Verdict;
use super::store;
use crate::db::Db;
use crate::read_mostly::ReadMostly;
use crate::telemetry::CALLBACKS_TOTAL;

/// How many recent event ids are remembered in memory (and loaded at start): a platform
/// retries within minutes, and its time window refuses older replays anyway.
const RECENT_CAPACITY: usize = 50_000;

/// Shared by every inbound handler of one process.
#[derive(Debug)]
pub struct InboundRuntime {
    recent: Mutex<Recent>,
    loaded: OnceCell<()>,
    http: reqwest::Client,
    tokens: TokenCache,
    replies: TaskTracker,
    /// `qunfa_callbacks_total` by platform and verdict, kept after first use: looking a
    /// metric up in the registry builds and hashes its label set on every callback.
    callback_counters: ReadMostly<(&'static str, Verdict), metrics::Counter>,
}

impl Default for InboundRuntime {
    fn default() -> Self {
        Self {
            recent: Mutex::new(Recent::default()),
            loaded: OnceCell::new(),
            http: crate::channels::http_client(Duration::from_secs(10)),
            tokens: TokenCache::default(),
            replies: TaskTracker::new(),
            callback_counters: ReadMostly::default(),
        }
    }
}

impl InboundRuntime {
    /// Whether `key` was recorded recently by this process.
    pub(crate) fn seen_recently(&self, key: &str) -> bool {
        self.recent.lock().is_ok_and(|recent| recent.contains(key))
    }

    /// Remembers `key` once the database has it: remembering before a failed write would
    /// make the platform's retry look like a duplicate.
    pub(crate) fn remember(&self, key: &str) {
        if let Ok(mut recent) = self.recent.lock() {
            recent.check_and_insert(key);
        }
    }

    /// Claims `key` for this process: true when it was not seen recently (the caller goes
    /// on), false for a duplicate. Claimed at once, before any database write, so a replay
    /// arriving while the first copy is still being handled is caught.
    pub(crate) fn claim(&self, key: &Arc<str>) -> bool {
        self.recent
            .lock()
            .is_ok_and(|mut recent| recent.insert(key))
    }

    /// Gives up a claim whose work did not happen (its transaction failed, or the request
    /// was cancelled), so the platform's retry is handled rather than taken for a duplicate.
    pub(crate) fn release(&self, key: &str) {
        if let Ok(mut recent) = self.recent.lock() {
            // Its place in the eviction order stays: should the key be claimed again, it is
            // merely forgotten a little early, which the database still backs.
            recent.remove(key);
        }
    }

    /// Fills the memory from the database once per process, so that right after a restart
    /// the callback ids of the last moments are still known without asking the database
    /// on every callback. Later calls return at once. A failure is logged and not retried:
    /// the memory then fills from new callbacks only.
    pub(crate) async fn load_recent(&self, db: &Db) {
        self.loaded
            .get_or_init(|| async {
                match store::recent_event_keys(db, RECENT_CAPACITY).await {
                    Ok(keys) => {
                        let count = keys.len();
                        if let Ok(mut recent) = self.recent.lock() {
                            // Oldest first, so that eviction keeps the newest.
                            for (account, event_id) in keys.iter().rev() {
                                recent.insert(&memory_key(account, event_id));
                            }
                        }
                        tracing::debug!(count, "recent callback ids loaded");
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot load recent callback ids; de-duplication after this restart relies on the database alone");
                    }
                }
            })
            .await;
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Counts one callback in `qunfa_callbacks_total`.
    pub(crate) fn count_callback(&self, platform: &'static str, verdict: Verdict) {
        let key = (platform, verdict);
        self.callback_counters.with(
            &key,
            || key,
            || metrics::counter!(CALLBACKS_TOTAL, "platform" => platform, "verdict" => verdict.as_str()),
            |counter| counter.increment(1),
        );
    }

    pub fn tokens(&self) -> &TokenCache {
        &self.tokens
    }

    /// Runs a reply that goes out after the HTTP answer (an API call, a deadline the
    /// platform would otherwise miss).
    pub fn spawn_reply(&self, reply: impl Future<Output = ()> + Send + 'static) {
        self.replies.spawn(reply);
    }

    /// Waits up to `limit` for asynchronous replies still running.
    pub async fn finish_replies(&self, limit: Duration) {
        self.replies.close();
        if tokio::time::timeout(limit, self.replies.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                pending = self.replies.len(),
                "asynchronous chat replies still running at shutdown were dropped"
            );
        }
    }
}

/// The memory's key for one account's callback id.
pub(crate) fn memory_key(account: &str, event_id: &str) -> Arc<str> {
    let mut key = String::with_capacity(account.len() + 1 + event_id.len());
    key.push_str(account);
    key.push('\u{0}');
    key.push_str(event_id);
    Arc::from(key)
}

/// The recent callback ids as 128-bit fingerprints rather than the strings: 50,000
/// strings scattered over the heap made every callback's lookup, insertion and eviction a
/// handful of cache misses (a twentieth of a callback's cost); 16 bytes each fit the caches.
/// The fingerprint is keyed by two random SipHash keys of this process, so nobody outside
/// can aim for a collision, and two distinct ids share one with a probability of 2^-128 per
/// pair: nothing a platform will ever send.
#[derive(Debug)]
struct Recent {
    keys: HashSet<u128, BuildHasherDefault<Fingerprinted>>,
    order: VecDeque<u128>,
    seeds: (RandomState, RandomState),
}

impl Default for Recent {
    fn default() -> Self {
        Self {
            // Full size from the start: growing rehashes every fingerprint held.
            keys: HashSet::with_capacity_and_hasher(RECENT_CAPACITY + 1, Default::default()),
            order: VecDeque::with_capacity(RECENT_CAPACITY + 1),
            seeds: Default::default(),
        }
    }
}

/// The set's hasher: a fingerprint is already a keyed hash, so its low half is the bucket
/// hash as it is; hashing it again with SipHash cost every lookup, insertion and eviction.
#[derive(Debug, Default)]
struct Fingerprinted(u64);

impl Hasher for Fingerprinted {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u128` is used by `u128`'s `Hash`; anything else still spreads.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u128(&mut self, fingerprint: u128) {
        self.0 = fingerprint as u64;
    }
}

impl Recent {
    fn fingerprint(&self, key: &str) -> u128 {
        let high = self.seeds.0.hash_one(key);
        let low = self.seeds.1.hash_one(key);
        (u128::from(high) << 64) | u128::from(low)
    }

    fn contains(&self, key: &str) -> bool {
        self.keys.contains(&self.fingerprint(key))
    }

    fn remove(&mut self, key: &str) {
        let fingerprint = self.fingerprint(key);
        self.keys.remove(&fingerprint);
    }

    /// True when `key` was present; inserts it otherwise.
    fn check_and_insert(&mut self, key: &str) -> bool {
        !self.insert(key)
    }

    /// Inserts `key` unless present; true when inserted.
    fn insert(&mut self, key: &str) -> bool {
        let fingerprint = self.fingerprint(key);
        if !self.keys.insert(fingerprint) {
            return false;
        }
        self.order.push_back(fingerprint);
        if self.order.len() > RECENT_CAPACITY
            && let Some(oldest) = self.order.pop_front()
        {
            self.keys.remove(&oldest);
        }
        true
    }
}

/// Access tokens by key (e.g. `feishu:{app_id}`): the same cache the channels use.
pub use crate::channels::TokenCache;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_keys_are_remembered_up_to_the_capacity() {
        let mut recent = Recent::default();
        assert!(!recent.check_and_insert("a"));
        assert!(recent.check_and_insert("a"));
        for i in 0..RECENT_CAPACITY {
            recent.check_and_insert(&i.to_string());
        }
        assert!(!recent.check_and_insert("a"), "the oldest key was evicted");
        assert_eq!(recent.order.len(), RECENT_CAPACITY);
    }
}
