//! What happens to a job after a provider answered: pure decisions from the retry policy,
//! so the schedule, jitter and maximum age are tested without a database or a clock.

use std::time::Duration;

use rand::Rng;

use crate::channels::Verdict;
use crate::clock::{UnixMillis, millis};
use crate::rules::RetryPolicy;

/// The job's next state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Sent,
    /// Try again at `run_at`; `counts_as_failure` is false for rate-limit waits, so a
    /// throttled channel does not burn its retry budget.
    Retry {
        run_at: UnixMillis,
        counts_as_failure: bool,
    },
    /// Permanently refused for a reason retrying cannot fix.
    Failed,
    /// Retrying would go past the policy's maximum age.
    Dead,
}

/// The wait before retry number `failures_before + 1`: the schedule's entry (the last one
/// repeats), spread by ±`jitter`.
pub fn backoff(policy: &RetryPolicy, failures_before: i64, rng: &mut impl Rng) -> Duration {
    let Some(last) = policy.schedule.last() else {
        return Duration::ZERO;
    };
    let index = usize::try_from(failures_before).unwrap_or(0);
    let base = policy.schedule.get(index).unwrap_or(last);
    spread(*base, policy.jitter, rng)
}

fn spread(base: Duration, jitter: f64, rng: &mut impl Rng) -> Duration {
    if jitter <= 0.0 || base.is_zero() {
        return base;
    }
    let factor = rng.random_range((1.0 - jitter)..=(1.0 + jitter));
    base.mul_f64(factor.max(0.0))
}

/// Decides the next state of a job whose attempt ended with `verdict` at `now`.
pub fn decide(
    policy: &RetryPolicy,
    verdict: &Verdict,
    failures_before: i64,
    now: UnixMillis,
    expires_at: UnixMillis,
    rng: &mut impl Rng,
) -> Next {
    let (wait, counts_as_failure) = match verdict {
        Verdict::Delivered => return Next::Sent,
        Verdict::ContentBlocked | Verdict::RecipientInvalid | Verdict::AccountDisabled => {
            return Next::Failed;
        }
        Verdict::Retryable { after } => {
            let scheduled = backoff(policy, failures_before, rng);
            // A provider's own hint wins when it asks for longer than our schedule.
            (scheduled.max(after.unwrap_or_default()), true)
        }
        // A small spread keeps every throttled job from returning in the same millisecond.
        Verdict::RateLimited { wait } => (spread(*wait, policy.jitter.min(0.1), rng), false),
    };
    let run_at = now.saturating_add(millis(wait));
    if run_at > expires_at {
        Next::Dead
    } else {
        Next::Retry {
            run_at,
            counts_as_failure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn policy(schedule_secs: &[u64], jitter: f64, max_age_secs: u64) -> RetryPolicy {
        RetryPolicy {
            schedule: schedule_secs
                .iter()
                .map(|s| Duration::from_secs(*s))
                .collect(),
            jitter,
            max_age: Duration::from_secs(max_age_secs),
        }
    }

    #[test]
    fn schedule_is_followed_and_its_last_step_repeats() {
        let policy = policy(&[5, 30, 120], 0.0, 86_400);
        let mut rng = StdRng::seed_from_u64(1);
        let waits: Vec<u64> = (0..5)
            .map(|n| backoff(&policy, n, &mut rng).as_secs())
            .collect();
        assert_eq!(waits, vec![5, 30, 120, 120, 120]);
    }

    #[test]
    fn permanent_refusals_fail_at_once_and_successes_are_sent() {
        let policy = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(1);
        for verdict in [
            Verdict::ContentBlocked,
            Verdict::RecipientInvalid,
            Verdict::AccountDisabled,
        ] {
            assert_eq!(
                decide(&policy, &verdict, 0, 0, i64::MAX, &mut rng),
                Next::Failed
            );
        }
        assert_eq!(
            decide(&policy, &Verdict::Delivered, 3, 0, 0, &mut rng),
            Next::Sent
        );
    }

    #[test]
    fn a_provider_hint_longer_than_the_schedule_is_honoured() {
        let policy = policy(&[5], 0.0, 86_400);
        let mut rng = StdRng::seed_from_u64(1);
        let verdict = Verdict::Retryable {
            after: Some(Duration::from_secs(90)),
        };
        assert_eq!(
            decide(&policy, &verdict, 0, 1_000, i64::MAX, &mut rng),
            Next::Retry {
                run_at: 91_000,
                counts_as_failure: true
            }
        );
    }

    #[test]
    fn rate_limits_wait_without_counting_and_retries_stop_at_max_age() {
        let policy = policy(&[60], 0.0, 86_400);
        let mut rng = StdRng::seed_from_u64(1);
        let limited = Verdict::RateLimited {
            wait: Duration::from_secs(600),
        };
        assert_eq!(
            decide(&policy, &limited, 0, 0, i64::MAX, &mut rng),
            Next::Retry {
                run_at: 600_000,
                counts_as_failure: false
            }
        );
        let retryable = Verdict::Retryable { after: None };
        assert_eq!(
            decide(&policy, &retryable, 9, 0, 59_999, &mut rng),
            Next::Dead
        );
        assert_eq!(
            decide(&policy, &limited, 0, 0, 599_999, &mut rng),
            Next::Dead
        );
    }

    proptest! {
        #[test]
        fn jittered_waits_stay_within_the_stated_spread(
            base in 1u64..100_000, jitter in 0.0f64..0.99, failures in 0i64..50, seed: u64,
        ) {
            let policy = RetryPolicy {
                schedule: vec![Duration::from_millis(base)],
                jitter,
                max_age: Duration::from_secs(1),
            };
            let mut rng = StdRng::seed_from_u64(seed);
            let wait = backoff(&policy, failures, &mut rng).as_secs_f64() * 1000.0;
            let base = base as f64;
            prop_assert!(wait >= base * (1.0 - jitter) - 1.0);
            prop_assert!(wait <= base * (1.0 + jitter) + 1.0);
        }

        #[test]
        fn retry_times_never_precede_now(
            failures in 0i64..1_000, now in 0i64..4_000_000_000_000, seed: u64,
        ) {
            let policy = RetryPolicy::default();
            let mut rng = StdRng::seed_from_u64(seed);
            let next = decide(&policy, &Verdict::Retryable { after: None }, failures, now, i64::MAX, &mut rng);
            match next {
                Next::Retry { run_at, .. } => prop_assert!(run_at >= now),
                other => prop_assert!(false, "unexpected {other:?}"),
            }
        }
    }
}
