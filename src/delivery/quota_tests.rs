use proptest::prelude::*;

use super::*;

fn at(zone: &TimeZone, date: (i16, i8, i8), time: (i8, i8, i8)) -> UnixMillis {
    jiff::civil::date(date.0, date.1, date.2)
        .at(time.0, time.1, time.2, 0)
        .to_zoned(zone.clone())
        .expect("valid test instant")
        .timestamp()
        .as_millisecond()
}

fn utc(date: (i16, i8, i8), time: (i8, i8, i8)) -> UnixMillis {
    at(&TimeZone::UTC, date, time)
}

/// Asia/Shanghai has been UTC+8 without daylight saving since 1991; a fixed offset keeps
/// the tests independent of the host's zoneinfo files.
fn shanghai() -> TimeZone {
    TimeZone::fixed(jiff::tz::offset(8))
}

fn new_york() -> TimeZone {
    TimeZone::posix("EST5EDT,M3.2.0,M11.1.0").expect("valid POSIX zone")
}

fn window(now: UnixMillis, zone: &TimeZone, unit: Unit) -> Window {
    Windows::at(now, zone).expect("in range").get(unit)
}

#[test]
fn minute_window_is_the_utc_minute() {
    let now = utc((2026, 11, 25), (10, 30, 45)) + 500;
    let minute = window(now, &shanghai(), Unit::Minute);
    assert_eq!(minute.start, utc((2026, 11, 25), (10, 30, 0)));
    assert_eq!(minute.end, utc((2026, 11, 25), (10, 31, 0)));
    // Before the epoch the minute still starts at or before the instant.
    let before_epoch = window(-1, &shanghai(), Unit::Minute);
    assert_eq!((before_epoch.start, before_epoch.end), (-60_000, 0));
}

#[test]
fn day_window_rolls_over_at_local_midnight() {
    let zone = shanghai();
    // 23:59:59 in Shanghai on the 25th is 15:59:59 UTC.
    let last_second = utc((2026, 11, 25), (15, 59, 59));
    let day = window(last_second, &zone, Unit::Day);
    assert_eq!(day.start, utc((2026, 11, 24), (16, 0, 0)));
    assert_eq!(day.end, utc((2026, 11, 25), (16, 0, 0)));
    let next_day = window(last_second + 1000, &zone, Unit::Day);
    assert_eq!(next_day.start, day.end);
    assert_eq!(next_day.end, utc((2026, 11, 26), (16, 0, 0)));
}

#[test]
fn day_windows_follow_clock_changes() {
    let zone = new_york();
    let spring = window(at(&zone, (2026, 3, 8), (12, 0, 0)), &zone, Unit::Day);
    assert_eq!(spring.end - spring.start, 23 * 3_600_000);
    let autumn = window(at(&zone, (2026, 11, 1), (12, 0, 0)), &zone, Unit::Day);
    assert_eq!(autumn.end - autumn.start, 25 * 3_600_000);
}

#[test]
fn month_window_is_the_local_calendar_month() {
    let zone = shanghai();
    // 00:00 on 1 December in Shanghai, still 30 November in UTC.
    let first_instant = utc((2026, 11, 30), (16, 0, 0));
    let month = window(first_instant, &zone, Unit::Month);
    assert_eq!(month.start, first_instant);
    assert_eq!(month.end, utc((2026, 12, 31), (16, 0, 0)));
    let november = window(first_instant - 1, &zone, Unit::Month);
    assert_eq!(november.start, utc((2026, 10, 31), (16, 0, 0)));
    assert_eq!(november.end, first_instant);
    let leap_february = window(utc((2028, 2, 15), (0, 0, 0)), &zone, Unit::Month);
    assert_eq!(
        leap_february.end - leap_february.start,
        29 * 86_400_000,
        "February 2028 has 29 days"
    );
}

#[test]
fn instants_outside_the_calendar_are_an_error_not_a_panic() {
    assert!(Windows::at(i64::MAX, &shanghai()).is_err());
    assert!(Windows::at(i64::MIN, &shanghai()).is_err());
}

fn windows() -> Windows {
    Windows::at(utc((2026, 11, 25), (10, 30, 0)), &shanghai()).expect("in range")
}

fn minute_end() -> UnixMillis {
    windows().get(Unit::Minute).end
}

#[test]
fn a_full_minute_window_makes_the_rest_wait_for_the_next_minute() {
    let limits = Limits {
        per_minute: Some(3),
        ..Limits::default()
    };
    let used = HashMap::from([(("", Unit::Minute), 1)]);
    let (grants, added) = plan(&["a", "b", "c", "d"], &limits, &windows(), used);
    let wait = Grant::Wait {
        until: minute_end(),
        limit: "per_minute",
    };
    assert_eq!(grants, [Grant::Granted, Grant::Granted, wait, wait]);
    assert_eq!(added, BTreeMap::from([(("", Unit::Minute), 2)]));
}

#[test]
fn the_wait_is_for_the_latest_ending_full_window() {
    let limits = Limits {
        per_minute: Some(1),
        per_day: Some(1),
        per_month: Some(10),
        ..Limits::default()
    };
    let used = HashMap::from([(("", Unit::Minute), 1), (("", Unit::Day), 1)]);
    let (grants, added) = plan(&["a"], &limits, &windows(), used);
    assert_eq!(
        grants,
        [Grant::Wait {
            until: windows().get(Unit::Day).end,
            limit: "per_day",
        }]
    );
    assert!(added.is_empty());
}

#[test]
fn a_recipient_at_its_limit_waits_without_using_the_account_quota() {
    let limits = Limits {
        per_minute: Some(2),
        recipient_per_minute: Some(1),
        ..Limits::default()
    };
    let (grants, added) = plan(&["a", "a", "b", "c"], &limits, &windows(), HashMap::new());
    assert_eq!(
        grants,
        [
            Grant::Granted,
            Grant::Wait {
                until: minute_end(),
                limit: "recipient_per_minute",
            },
            Grant::Granted,
            Grant::Wait {
                until: minute_end(),
                limit: "per_minute",
            },
        ]
    );
    assert_eq!(
        added,
        BTreeMap::from([
            (("", Unit::Minute), 2),
            (("a", Unit::Minute), 1),
            (("b", Unit::Minute), 1),
        ])
    );
}

#[test]
fn recipient_counts_carry_over_from_earlier_reservations() {
    let limits = Limits {
        recipient_per_month: Some(4),
        ..Limits::default()
    };
    let used = HashMap::from([(("a", Unit::Month), 4), (("b", Unit::Month), 3)]);
    let (grants, added) = plan(&["a", "b", "b"], &limits, &windows(), used);
    let wait = Grant::Wait {
        until: windows().get(Unit::Month).end,
        limit: "recipient_per_month",
    };
    assert_eq!(grants, [wait, Grant::Granted, wait]);
    assert_eq!(added, BTreeMap::from([(("b", Unit::Month), 1)]));
}

#[test]
fn an_empty_address_counts_against_the_account_only() {
    let limits = Limits {
        per_day: Some(5),
        recipient_per_day: Some(1),
        ..Limits::default()
    };
    let (grants, added) = plan(&["", ""], &limits, &windows(), HashMap::new());
    assert_eq!(grants, [Grant::Granted, Grant::Granted]);
    assert_eq!(added, BTreeMap::from([(("", Unit::Day), 2)]));
}

#[test]
fn a_zero_limit_grants_nothing() {
    let limits = Limits {
        per_month: Some(0),
        ..Limits::default()
    };
    let (grants, added) = plan(&["a"], &limits, &windows(), HashMap::new());
    assert!(matches!(
        grants[..],
        [Grant::Wait {
            limit: "per_month",
            ..
        }]
    ));
    assert!(added.is_empty());
}

#[test]
fn wait_reasons_name_the_limit_and_its_size() {
    let limits = Limits {
        per_minute: Some(20),
        recipient_per_day: Some(500),
        ..Limits::default()
    };
    let wait = |limit| Grant::Wait { until: 0, limit };
    assert_eq!(
        wait("per_minute").reason(&limits).as_deref(),
        Some("per_minute quota of 20 used")
    );
    assert_eq!(
        wait("recipient_per_day").reason(&limits).as_deref(),
        Some("recipient_per_day quota of 500 used")
    );
    assert_eq!(Grant::Granted.reason(&limits), None);
}

fn limit_strategy() -> impl Strategy<Value = Option<u32>> {
    prop::option::of(0u32..4)
}

proptest! {
    /// Over many batches against the same windows, no counter passes its limit, and every
    /// wait names a window that is full at the end of its batch.
    #[test]
    fn plans_never_exceed_a_limit_and_only_wait_on_full_windows(
        account in (limit_strategy(), limit_strategy(), limit_strategy()),
        own in (limit_strategy(), limit_strategy(), limit_strategy()),
        batches in prop::collection::vec(
            prop::collection::vec(prop::sample::select(vec!["a", "b", "c", ""]), 0..8),
            1..6,
        ),
    ) {
        let limits = Limits {
            per_minute: account.0,
            per_day: account.1,
            per_month: account.2,
            recipient_per_minute: own.0,
            recipient_per_day: own.1,
            recipient_per_month: own.2,
        };
        let windows = windows();
        let mut counts: HashMap<Key<'static>, i64> = HashMap::new();
        for batch in batches {
            let (grants, added) = plan(&batch, &limits, &windows, counts.clone());
            for (key, count) in added {
                *counts.entry(key).or_insert(0) += count;
            }
            for (recipient, grant) in batch.iter().zip(&grants) {
                let Grant::Wait { limit, .. } = grant else { continue };
                let per_recipient = limit.starts_with("recipient_");
                let unit = Unit::ALL
                    .into_iter()
                    .find(|unit| limit_name(per_recipient, *unit) == *limit)
                    .expect("a known limit name");
                let scope = if per_recipient { *recipient } else { "" };
                let quota = limit_of(&limits, per_recipient, unit).expect("a set limit");
                prop_assert!(counts.get(&(scope, unit)).copied().unwrap_or(0) >= i64::from(quota));
            }
        }
        for ((scope, unit), count) in counts {
            let quota = limit_of(&limits, !scope.is_empty(), unit).expect("counted only if limited");
            prop_assert!(count <= i64::from(quota), "{scope:?} {unit:?}: {count} > {quota}");
        }
    }

    /// Whatever the call times, no 60 s span holds more than per_minute booked starts.
    #[test]
    fn paced_starts_never_exceed_the_minute_quota(
        per_minute in 1u32..50,
        steps in prop::collection::vec((0i64..5_000, 1u32..4), 1..120),
    ) {
        let pacers = Pacers::default();
        let mut now = 1_700_000_000_000;
        let mut starts = Vec::new();
        for (step, sends) in steps {
            now += step;
            let delay = pacers.book("robot", Some(per_minute), sends, now, None);
            let start = now * 1000 + i64::try_from(delay.as_micros()).expect("small delay");
            starts.push(start);
            // A batch's later recipients occupy the slots after its start.
            let interval = interval_us(per_minute);
            starts.extend((1..i64::from(sends)).map(|slot| start + slot * interval));
        }
        let quota = usize::try_from(per_minute).expect("small");
        for (first, later) in starts.iter().zip(starts.iter().skip(quota)) {
            prop_assert!(later - first >= MINUTE_MS * 1000);
        }
    }
}

#[test]
fn pacing_spreads_sends_over_the_minute() {
    let pacers = Pacers::default();
    let now = 1_700_000_000_000;
    let delays: Vec<Duration> = (0..4)
        .map(|_| pacers.book("robot", Some(20), 1, now, None))
        .collect();
    assert_eq!(
        delays,
        [0, 3, 6, 9].map(Duration::from_secs),
        "20 a minute is one every 3 s"
    );
    // Five seconds later the next free slot is 12 s after the first, 7 s from now.
    assert_eq!(
        pacers.book("robot", Some(20), 1, now + 5_000, None),
        Duration::from_secs(7)
    );
}

#[test]
fn an_idle_channel_sends_at_once_and_channels_are_paced_separately() {
    let pacers = Pacers::default();
    let now = 1_700_000_000_000;
    assert_eq!(pacers.book("robot", Some(20), 1, now, None), Duration::ZERO);
    assert_eq!(pacers.book("other", Some(20), 1, now, None), Duration::ZERO);
    assert_eq!(
        pacers.book("robot", Some(20), 1, now + 60_000, None),
        Duration::ZERO
    );
}

#[test]
fn a_batch_books_one_slot_per_recipient() {
    let pacers = Pacers::default();
    let now = 1_700_000_000_000;
    assert_eq!(pacers.book("app", Some(60), 10, now, None), Duration::ZERO);
    assert_eq!(
        pacers.book("app", Some(60), 1, now, None),
        Duration::from_secs(10)
    );
}

#[test]
fn unlimited_or_closed_channels_are_not_paced() {
    let pacers = Pacers::default();
    for _ in 0..3 {
        assert_eq!(pacers.book("log", None, 1, 0, None), Duration::ZERO);
        assert_eq!(pacers.book("off", Some(0), 1, 0, None), Duration::ZERO);
        assert_eq!(pacers.book("robot", Some(20), 0, 0, None), Duration::ZERO);
    }
    assert_eq!(pacers.book("robot", Some(20), 1, 0, None), Duration::ZERO);
}

#[test]
fn uneven_intervals_round_up() {
    let pacers = Pacers::default();
    let delays: Vec<Duration> = (0..8)
        .map(|_| pacers.book("sms", Some(7), 1, 0, None))
        .collect();
    // 60 s / 7 = 8.571428.. s, rounded up to the microsecond.
    assert_eq!(delays[1], Duration::from_micros(8_571_429));
    assert!(delays[7] >= Duration::from_secs(60));
}

#[test]
fn a_slot_beyond_the_caller_s_patience_is_not_booked() {
    let pacers = Pacers::default();
    assert_eq!(
        pacers.book("sms", Some(2), 1, 0, Some(Duration::from_secs(10))),
        Duration::ZERO
    );
    // The next slot is 30 s away: handed back, not booked, so the one after stays at 30 s.
    let max = Some(Duration::from_secs(10));
    assert_eq!(
        pacers.book("sms", Some(2), 1, 0, max),
        Duration::from_secs(30)
    );
    assert_eq!(
        pacers.book("sms", Some(2), 1, 0, max),
        Duration::from_secs(30)
    );
    assert_eq!(
        pacers.book("sms", Some(2), 1, 25_000, max),
        Duration::from_secs(5)
    );
    assert_eq!(
        pacers.book("sms", Some(2), 1, 25_000, max),
        Duration::from_secs(35)
    );
}
