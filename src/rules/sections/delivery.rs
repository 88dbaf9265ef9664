//! Reads `[delivery]` and `[delivery.retry]`: every key optional, defaults from
//! [`DeliverySettings::default`], ranges and the lease rule checked here.

use std::time::Duration;

use toml_edit::TableLike;

use super::{parse_duration_at, read_duration};
use crate::rules::duration;
use crate::rules::model::{AlertsTarget, CircuitSettings, DeliverySettings, RetryPolicy};
use crate::rules::problem::{At, Pos, Problem, Source};
use crate::rules::reader::Fields;

const MAX_CONCURRENCY: i64 = 1024;

pub(in crate::rules) fn read_delivery(
    source: &Source<'_>,
    table: &dyn TableLike,
    pos: Pos,
    problems: &mut Vec<Problem>,
) -> DeliverySettings {
    let defaults = DeliverySettings::default();
    let mut fields = Fields::new(source, table, "[delivery]", pos);
    let http_timeout = read_duration(&mut fields, "http_timeout", problems);
    let lease = read_duration(&mut fields, "lease", problems);
    let poll_interval = read_duration(&mut fields, "poll_interval", problems);
    let concurrency = fields.integer("concurrency", problems).and_then(|number| {
        if (1..=MAX_CONCURRENCY).contains(&number.value) {
            usize::try_from(number.value).ok()
        } else {
            problems.push(Problem::at(
                &number.pos,
                format!(
                    "`concurrency` must be between 1 and {MAX_CONCURRENCY}, found {}",
                    number.value
                ),
            ));
            None
        }
    });
    let retry = fields
        .table("retry", problems)
        .map(|(retry, pos)| read_retry(source, retry, pos, problems))
        .unwrap_or_else(|| defaults.retry.clone());
    let circuit = fields
        .table("circuit", problems)
        .map(|(circuit, pos)| read_circuit(source, circuit, pos, problems))
        .unwrap_or_else(|| defaults.circuit.clone());
    let alerts_channel = fields.string("alerts_channel", problems);
    let alerts_to = fields.string("alerts_to", problems);
    if alerts_to.is_some() && alerts_channel.is_none() {
        let pos = fields.key_pos("alerts_to");
        problems.push(Problem::at(
            &pos,
            "`alerts_to` needs `alerts_channel`, the channel that carries the alerts",
        ));
    }
    let alerts = alerts_channel.map(|channel| AlertsTarget {
        channel: channel.value,
        to: alerts_to.map(|to| to.value).unwrap_or_default(),
    });
    let zone = fields.string("quota_time_zone", problems).and_then(|zone| {
        match jiff::tz::TimeZone::get(&zone.value) {
            Ok(_) => Some(zone.value),
            Err(error) => {
                problems.push(Problem::at(
                    &zone.pos,
                    format!(
                        "`quota_time_zone` must be an IANA time zone such as \"Asia/Shanghai\" or \"UTC\": {error}"
                    ),
                ));
                None
            }
        }
    });
    check_lease(
        &fields,
        http_timeout.as_ref(),
        lease.as_ref(),
        &defaults,
        problems,
    );
    fields.finish(problems);
    DeliverySettings {
        http_timeout: http_timeout.map_or(defaults.http_timeout, |at| at.value),
        lease: lease.map_or(defaults.lease, |at| at.value),
        concurrency: concurrency.unwrap_or(defaults.concurrency),
        poll_interval: poll_interval.map_or(defaults.poll_interval, |at| at.value),
        retry,
        circuit,
        alerts,
        quota_time_zone: zone.unwrap_or(defaults.quota_time_zone),
    }
}

fn read_circuit(
    source: &Source<'_>,
    table: &dyn TableLike,
    pos: Pos,
    problems: &mut Vec<Problem>,
) -> CircuitSettings {
    let defaults = CircuitSettings::default();
    let mut fields = Fields::new(source, table, "[delivery.circuit]", pos);
    let failures =
        fields
            .integer("failures", problems)
            .and_then(|number| match u32::try_from(number.value) {
                Ok(failures) if (1..=1000).contains(&failures) => Some(failures),
                _ => {
                    problems.push(Problem::at(
                        &number.pos,
                        format!(
                            "`failures` must be between 1 and 1000, found {}",
                            number.value
                        ),
                    ));
                    None
                }
            });
    let cooldown = read_duration(&mut fields, "cooldown", problems);
    let disabled_cooldown = read_duration(&mut fields, "disabled_cooldown", problems);
    fields.finish(problems);
    CircuitSettings {
        failures: failures.unwrap_or(defaults.failures),
        cooldown: cooldown.map_or(defaults.cooldown, |at| at.value),
        disabled_cooldown: disabled_cooldown.map_or(defaults.disabled_cooldown, |at| at.value),
    }
}

/// A lease shorter than the call it protects would let a second worker claim a job that
/// is still being sent, and the recipient would get it twice.
fn check_lease(
    fields: &Fields<'_, '_>,
    http_timeout: Option<&At<Duration>>,
    lease: Option<&At<Duration>>,
    defaults: &DeliverySettings,
    problems: &mut Vec<Problem>,
) {
    let describe = |value: Option<&At<Duration>>, default: Duration| match value {
        Some(at) => duration::format(at.value),
        None => format!("{}, the default", duration::format(default)),
    };
    let timeout_value = http_timeout.map_or(defaults.http_timeout, |at| at.value);
    let lease_value = lease.map_or(defaults.lease, |at| at.value);
    if lease_value > timeout_value {
        return;
    }
    let pos = lease
        .or(http_timeout)
        .map_or_else(|| fields.pos().clone(), |at| at.pos.clone());
    problems.push(Problem::at(
        &pos,
        format!(
            "`lease` ({}) must be longer than `http_timeout` ({}) in [delivery], or a job still \
             being sent could be claimed and sent again; raise lease or lower http_timeout",
            describe(lease, defaults.lease),
            describe(http_timeout, defaults.http_timeout),
        ),
    ));
}

fn read_retry(
    source: &Source<'_>,
    table: &dyn TableLike,
    pos: Pos,
    problems: &mut Vec<Problem>,
) -> RetryPolicy {
    let defaults = RetryPolicy::default();
    let mut fields = Fields::new(source, table, "[delivery.retry]", pos);
    let schedule = fields.string_array("schedule", problems).map(|entries| {
        if entries.is_empty() {
            let pos = fields.key_pos("schedule");
            problems.push(Problem::at(
                &pos,
                "`schedule` in [delivery.retry] is empty; list at least one wait, such as [\"5s\", \"1m\", \"10m\"]",
            ));
        }
        entries
            .into_iter()
            .filter_map(|entry| parse_duration_at(entry, "schedule", "[delivery.retry]", problems))
            .map(|at| at.value)
            .collect::<Vec<_>>()
    });
    let jitter = fields.number("jitter", problems).and_then(|jitter| {
        if (0.0..1.0).contains(&jitter.value) {
            Some(jitter.value)
        } else {
            problems.push(Problem::at(
                &jitter.pos,
                format!(
                    "`jitter` must be at least 0 and below 1 (0.2 means ±20 %), found {}",
                    jitter.value
                ),
            ));
            None
        }
    });
    let max_age = read_duration(&mut fields, "max_age", problems);
    fields.finish(problems);
    RetryPolicy {
        schedule: schedule
            .filter(|schedule| !schedule.is_empty())
            .unwrap_or(defaults.schedule),
        jitter: jitter.unwrap_or(defaults.jitter),
        max_age: max_age.map_or(defaults.max_age, |at| at.value),
    }
}
