use proptest::prelude::*;

use super::*;

const T0: UnixMillis = 1_700_000_000_000;
const SECOND: UnixMillis = 1000;

fn settings() -> BreakerSettings {
    BreakerSettings::default()
}

fn retryable() -> Verdict {
    Verdict::Retryable { after: None }
}

fn fail_times(breakers: &Breakers, n: u32, now: UnixMillis) -> Vec<Option<Transition>> {
    (0..n)
        .map(|_| breakers.record("robot", &settings(), &retryable(), now))
        .collect()
}

#[test]
fn an_unknown_channel_is_closed() {
    assert_eq!(
        Breakers::new().admit("robot", &settings(), T0),
        Admission::Closed
    );
}

#[test]
fn account_disabled_opens_at_once_for_the_disabled_cooldown() {
    let breakers = Breakers::new();
    let until = T0 + 600 * SECOND;
    assert_eq!(
        breakers.record("robot", &settings(), &Verdict::AccountDisabled, T0),
        Some(Transition::Opened {
            reason: DISABLED_REASON.to_string(),
            until,
        })
    );
    assert_eq!(
        breakers.admit("robot", &settings(), until - 1),
        Admission::Open { until }
    );
    assert_eq!(
        breakers.admit("other", &settings(), T0),
        Admission::Closed,
        "breakers are per channel"
    );
}

#[test]
fn a_run_of_retryable_failures_opens_for_the_cooldown() {
    let breakers = Breakers::new();
    assert_eq!(fail_times(&breakers, 4, T0), vec![None; 4]);
    assert_eq!(breakers.admit("robot", &settings(), T0), Admission::Closed);
    assert_eq!(
        breakers.record("robot", &settings(), &retryable(), T0),
        Some(Transition::Opened {
            reason: "5 retryable failures in a row".to_string(),
            until: T0 + 60 * SECOND,
        })
    );
    assert_eq!(
        breakers.admit("robot", &settings(), T0 + 59 * SECOND),
        Admission::Open {
            until: T0 + 60 * SECOND
        }
    );
}

#[test]
fn any_answer_that_shows_the_account_works_resets_the_run() {
    for works in [
        Verdict::Delivered,
        Verdict::RecipientInvalid,
        Verdict::ContentBlocked,
        Verdict::RateLimited {
            wait: Duration::from_secs(1),
        },
    ] {
        let breakers = Breakers::new();
        fail_times(&breakers, 4, T0);
        assert_eq!(breakers.record("robot", &settings(), &works, T0), None);
        assert_eq!(fail_times(&breakers, 4, T0), vec![None; 4], "{works:?}");
        assert_eq!(breakers.admit("robot", &settings(), T0), Admission::Closed);
    }
}

#[test]
fn one_probe_after_the_cooldown_and_its_success_closes() {
    let breakers = Breakers::new();
    fail_times(&breakers, 5, T0);
    let after = T0 + 60 * SECOND;
    assert_eq!(
        breakers.admit("robot", &settings(), after),
        Admission::Probe
    );
    assert_eq!(
        breakers.admit("robot", &settings(), after + 1),
        Admission::Open {
            until: after + 60 * SECOND
        },
        "only one probe at a time"
    );
    assert_eq!(
        breakers.record("robot", &settings(), &Verdict::Delivered, after + 2),
        Some(Transition::Closed)
    );
    assert_eq!(
        breakers.admit("robot", &settings(), after + 3),
        Admission::Closed
    );
    assert_eq!(
        fail_times(&breakers, 4, after + 4),
        vec![None; 4],
        "closing starts a new run"
    );
}

#[test]
fn a_failed_probe_reopens_without_a_second_alert() {
    let breakers = Breakers::new();
    fail_times(&breakers, 5, T0);
    let probe_at = T0 + 60 * SECOND;
    assert_eq!(
        breakers.admit("robot", &settings(), probe_at),
        Admission::Probe
    );
    assert_eq!(
        breakers.record("robot", &settings(), &retryable(), probe_at + SECOND),
        None
    );
    let reopened_until = probe_at + 61 * SECOND;
    assert_eq!(
        breakers.admit("robot", &settings(), probe_at + 2 * SECOND),
        Admission::Open {
            until: reopened_until
        }
    );
    assert_eq!(
        breakers.admit("robot", &settings(), reopened_until),
        Admission::Probe
    );
    assert_eq!(
        breakers.record(
            "robot",
            &settings(),
            &Verdict::AccountDisabled,
            reopened_until
        ),
        None
    );
    assert_eq!(
        breakers.admit("robot", &settings(), reopened_until + 1),
        Admission::Open {
            until: reopened_until + 600 * SECOND
        },
        "a probe refused as disabled waits the disabled cooldown"
    );
}

#[test]
fn a_probe_that_never_reports_is_replaced_after_the_cooldown() {
    let breakers = Breakers::new();
    breakers.record("robot", &settings(), &Verdict::AccountDisabled, T0);
    let probe_at = T0 + 600 * SECOND;
    assert_eq!(
        breakers.admit("robot", &settings(), probe_at),
        Admission::Probe
    );
    let lost_at = probe_at + 60 * SECOND;
    assert_eq!(
        breakers.admit("robot", &settings(), lost_at - 1),
        Admission::Open { until: lost_at }
    );
    assert_eq!(
        breakers.admit("robot", &settings(), lost_at),
        Admission::Probe
    );
}

#[test]
fn late_answers_while_open_change_nothing_but_disabled_lengthens_the_wait() {
    let breakers = Breakers::new();
    fail_times(&breakers, 5, T0);
    let until = T0 + 60 * SECOND;
    assert_eq!(
        breakers.record("robot", &settings(), &Verdict::Delivered, T0 + 1),
        None
    );
    assert_eq!(
        breakers.record("robot", &settings(), &retryable(), T0 + 2),
        None
    );
    assert_eq!(
        breakers.admit("robot", &settings(), T0 + 3),
        Admission::Open { until }
    );
    assert_eq!(
        breakers.record("robot", &settings(), &Verdict::AccountDisabled, T0 + 4),
        None
    );
    assert_eq!(
        breakers.admit("robot", &settings(), until),
        Admission::Open {
            until: T0 + 4 + 600 * SECOND
        }
    );
}

#[test]
fn a_zero_threshold_opens_on_the_first_failure() {
    let breakers = Breakers::new();
    let eager = BreakerSettings {
        failure_threshold: 0,
        ..settings()
    };
    assert!(matches!(
        breakers.record("robot", &eager, &retryable(), T0),
        Some(Transition::Opened { .. })
    ));
}

#[test]
fn snapshot_lists_each_reporting_channel_and_its_state() {
    let breakers = Breakers::new();
    breakers.record("wecom", &settings(), &Verdict::AccountDisabled, T0);
    breakers.record("sms", &settings(), &retryable(), T0);
    breakers.record("dingtalk", &settings(), &Verdict::AccountDisabled, T0);
    breakers.admit("dingtalk", &settings(), T0 + 600 * SECOND);
    let snapshot = breakers.snapshot();
    assert_eq!(
        snapshot,
        vec![
            (
                "dingtalk".to_string(),
                BreakerView {
                    state: BreakerState::Probing,
                    since: T0,
                    until: Some(T0 + 660 * SECOND),
                    reason: Some(DISABLED_REASON.to_string()),
                    consecutive_failures: 0,
                }
            ),
            (
                "sms".to_string(),
                BreakerView {
                    state: BreakerState::Closed,
                    since: T0,
                    until: None,
                    reason: None,
                    consecutive_failures: 1,
                }
            ),
            (
                "wecom".to_string(),
                BreakerView {
                    state: BreakerState::Open,
                    since: T0,
                    until: Some(T0 + 600 * SECOND),
                    reason: Some(DISABLED_REASON.to_string()),
                    consecutive_failures: 0,
                }
            ),
        ]
    );
}

#[test]
fn report_sets_the_open_gauge_per_channel() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let breakers = Breakers::new();
    breakers.record("wecom", &settings(), &Verdict::AccountDisabled, T0);
    breakers.record("sms", &settings(), &Verdict::Delivered, T0);
    metrics::with_local_recorder(&recorder, || breakers.report());
    let text = handle.render();
    assert!(
        text.contains(r#"qunfa_channel_circuit_open{channel="wecom"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"qunfa_channel_circuit_open{channel="sms"} 0"#),
        "{text}"
    );
}

#[derive(Debug, Clone)]
enum Step {
    Admit,
    Record(Verdict),
    Wait(i64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Admit),
        1 => Just(Step::Record(Verdict::Delivered)),
        3 => Just(Step::Record(Verdict::Retryable { after: None })),
        1 => Just(Step::Record(Verdict::AccountDisabled)),
        1 => Just(Step::Record(Verdict::RecipientInvalid)),
        2 => (0i64..700_000).prop_map(Step::Wait),
    ]
}

proptest! {
    /// Operators hear of each opening once: Opened and Closed alternate, starting with
    /// Opened. Between them no caller is admitted as if closed, and a second probe goes
    /// only after the first reported or a cooldown passed.
    #[test]
    fn openings_and_closings_alternate(
        threshold in 1u32..4,
        steps in prop::collection::vec(step(), 0..200),
    ) {
        let settings = BreakerSettings { failure_threshold: threshold, ..BreakerSettings::default() };
        let breakers = Breakers::new();
        let mut now = T0;
        let mut open = false;
        let mut outstanding_probe: Option<UnixMillis> = None;
        for step in steps {
            match step {
                Step::Wait(by) => now += by,
                Step::Admit => match breakers.admit("robot", &settings, now) {
                    Admission::Closed => prop_assert!(!open),
                    Admission::Probe => {
                        prop_assert!(open);
                        if let Some(started) = outstanding_probe {
                            prop_assert!(now - started >= millis(settings.cooldown));
                        }
                        outstanding_probe = Some(now);
                    }
                    Admission::Open { until } => {
                        prop_assert!(open);
                        prop_assert!(until > now);
                    }
                },
                Step::Record(verdict) => {
                    outstanding_probe = None;
                    match breakers.record("robot", &settings, &verdict, now) {
                        Some(Transition::Opened { until, .. }) => {
                            prop_assert!(!open, "opened twice without closing");
                            prop_assert!(until > now);
                            open = true;
                        }
                        Some(Transition::Closed) => {
                            prop_assert!(open, "closed without having opened");
                            open = false;
                        }
                        None => {}
                    }
                }
            }
        }
    }
}
