//! Circuit breakers per channel account, in memory: an account the provider disabled, or
//! one that keeps failing, gets no calls until a single probe shows it works again. The
//! transitions come back to the caller so the ops chat hears once per opening.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

use crate::channels::Verdict;
use crate::clock::{UnixMillis, millis};

/// The gauge [`Breakers::report`] sets: 1 while a channel's circuit is open (or probing).
pub const CIRCUIT_OPEN_GAUGE: &str = "qunfa_channel_circuit_open";

/// When a channel's circuit opens and for how long; the defaults suit chat vendors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive retryable failures that open the circuit.
    pub failure_threshold: u32,
    /// How long a run of failures keeps it open before a probe; also how long a probe may
    /// stay unanswered before another caller probes instead.
    pub cooldown: Duration,
    /// How long an account-disabled answer keeps it open before a probe.
    pub disabled_cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cooldown: Duration::from_secs(60),
            disabled_cooldown: Duration::from_secs(600),
        }
    }
}

/// Whether a caller may call the provider now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Call as usual.
    Closed,
    /// Call: this caller is the single probe, and must [`Breakers::record`] its verdict.
    Probe,
    /// Do not call before `until`.
    Open { until: UnixMillis },
}

/// A change worth telling the operators about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Opened { reason: String, until: UnixMillis },
    Closed,
}

/// The state of one channel's circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    /// Open, with one probe call out.
    Probing,
}

/// One channel's breaker, for `/readyz` and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BreakerView {
    pub state: BreakerState,
    /// When it closed, or when it opened (a probe does not reset this).
    pub since: UnixMillis,
    /// Open: when the next probe may go. Probing: when an unanswered probe is replaced.
    pub until: Option<UnixMillis>,
    /// Why it is open.
    pub reason: Option<String>,
    /// Retryable failures in a row so far (closed only).
    pub consecutive_failures: u32,
}

#[derive(Debug, Clone)]
enum State {
    Closed {
        failures: u32,
        since: UnixMillis,
    },
    Open {
        reason: String,
        since: UnixMillis,
        until: UnixMillis,
    },
    Probing {
        reason: String,
        since: UnixMillis,
        /// When the probe counts as lost and another caller may probe.
        probe_deadline: UnixMillis,
    },
}

/// What a verdict says about the account itself.
enum Health {
    /// The account answered: it works, whatever became of this message.
    Works,
    Failing,
    Disabled,
}

fn health(verdict: &Verdict) -> Health {
    match verdict {
        Verdict::Delivered
        | Verdict::RecipientInvalid
        | Verdict::ContentBlocked
        | Verdict::RateLimited { .. } => Health::Works,
        Verdict::Retryable { .. } => Health::Failing,
        Verdict::AccountDisabled => Health::Disabled,
    }
}

const DISABLED_REASON: &str =
    "the provider reports the account disabled or its credentials refused";

/// The breakers of all channels of this process.
#[derive(Debug, Default)]
pub struct Breakers {
    states: Mutex<HashMap<String, State>>,
}

impl Breakers {
    /// No circuits yet: every channel starts closed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Before a call. An open circuit whose wait is over admits one probe; the others are
    /// told to wait until it reports, or until it is a cooldown old (a probe that never
    /// reports must not keep the account shut forever).
    pub fn admit(&self, channel: &str, settings: &BreakerSettings, now: UnixMillis) -> Admission {
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(state) = states.get_mut(channel) else {
            return Admission::Closed;
        };
        match state {
            State::Closed { .. } => Admission::Closed,
            State::Open { until, .. } if now < *until => Admission::Open { until: *until },
            State::Probing { probe_deadline, .. } if now < *probe_deadline => Admission::Open {
                until: *probe_deadline,
            },
            State::Open { reason, since, .. } | State::Probing { reason, since, .. } => {
                *state = State::Probing {
                    reason: std::mem::take(reason),
                    since: *since,
                    probe_deadline: now.saturating_add(millis(settings.cooldown)),
                };
                Admission::Probe
            }
        }
    }

    /// After a call, with its verdict. Account-disabled opens the circuit at once;
    /// `failure_threshold` retryable verdicts in a row open it for `cooldown`; a verdict
    /// that shows the account works (delivered, recipient-invalid, content-blocked,
    /// rate-limited) resets the run and closes a probing circuit; a failed probe re-opens
    /// it without a new [`Transition::Opened`], since the operators were told already.
    ///
    /// While open without a probe, only account-disabled counts (it lengthens the wait):
    /// other verdicts then are late answers to calls admitted before the circuit opened.
    /// While probing, any verdict decides, as a caller cannot be told from the probe.
    pub fn record(
        &self,
        channel: &str,
        settings: &BreakerSettings,
        verdict: &Verdict,
        now: UnixMillis,
    ) -> Option<Transition> {
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        let state = states.entry(channel.to_string()).or_insert(State::Closed {
            failures: 0,
            since: now,
        });
        let disabled_until = now.saturating_add(millis(settings.disabled_cooldown));
        let cooled_until = now.saturating_add(millis(settings.cooldown));
        match (&mut *state, health(verdict)) {
            (State::Closed { failures, .. }, Health::Works) => {
                *failures = 0;
                None
            }
            (State::Closed { failures, .. }, Health::Failing) => {
                *failures = failures.saturating_add(1);
                if *failures < settings.failure_threshold.max(1) {
                    return None;
                }
                let reason = format!("{failures} retryable failures in a row");
                Some(open(state, reason, now, cooled_until))
            }
            (State::Closed { .. }, Health::Disabled) => Some(open(
                state,
                DISABLED_REASON.to_string(),
                now,
                disabled_until,
            )),
            (State::Probing { .. }, Health::Works) => {
                *state = State::Closed {
                    failures: 0,
                    since: now,
                };
                Some(Transition::Closed)
            }
            (State::Probing { since, .. }, Health::Failing) => {
                *state = State::Open {
                    reason: "the probe failed with a retryable error".to_string(),
                    since: *since,
                    until: cooled_until,
                };
                None
            }
            (State::Probing { since, .. }, Health::Disabled) => {
                *state = State::Open {
                    reason: DISABLED_REASON.to_string(),
                    since: *since,
                    until: disabled_until,
                };
                None
            }
            (State::Open { reason, until, .. }, Health::Disabled) => {
                *reason = DISABLED_REASON.to_string();
                *until = (*until).max(disabled_until);
                None
            }
            (State::Open { .. }, Health::Works | Health::Failing) => None,
        }
    }

    /// Every channel that has reported, sorted by channel.
    pub fn snapshot(&self) -> Vec<(String, BreakerView)> {
        let states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        let mut views: Vec<(String, BreakerView)> = states
            .iter()
            .map(|(channel, state)| (channel.clone(), view(state)))
            .collect();
        views.sort_by(|a, b| a.0.cmp(&b.0));
        views
    }

    /// Sets `qunfa_channel_circuit_open{channel}` to 1 for each open or probing circuit
    /// and 0 for each closed one.
    pub fn report(&self) {
        for (channel, view) in self.snapshot() {
            let open = if view.state == BreakerState::Closed {
                0.0
            } else {
                1.0
            };
            metrics::gauge!(CIRCUIT_OPEN_GAUGE, "channel" => channel).set(open);
        }
    }
}

fn open(state: &mut State, reason: String, now: UnixMillis, until: UnixMillis) -> Transition {
    *state = State::Open {
        reason: reason.clone(),
        since: now,
        until,
    };
    Transition::Opened { reason, until }
}

fn view(state: &State) -> BreakerView {
    match state {
        State::Closed { failures, since } => BreakerView {
            state: BreakerState::Closed,
            since: *since,
            until: None,
            reason: None,
            consecutive_failures: *failures,
        },
        State::Open {
            reason,
            since,
            until,
        } => BreakerView {
            state: BreakerState::Open,
            since: *since,
            until: Some(*until),
            reason: Some(reason.clone()),
            consecutive_failures: 0,
        },
        State::Probing {
            reason,
            since,
            probe_deadline,
        } => BreakerView {
            state: BreakerState::Probing,
            since: *since,
            until: Some(*probe_deadline),
            reason: Some(reason.clone()),
            consecutive_failures: 0,
        },
    }
}

#[cfg(test)]
#[path = "breaker_tests.rs"]
mod tests;
