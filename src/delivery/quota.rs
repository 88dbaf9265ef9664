//! Send quotas of channel accounts: how many sends an account (and each recipient on it)
//! had in the current minute, day and month, counted in the database so a restart or a
//! second instance does not reset them; and pacing within the minute, so an account's
//! minute quota is spread over the minute instead of spent in one burst.
//!
//! A reservation is committed before the provider is called: a crash after it wastes at
//! most what it reserved, and never lets a vendor's limit be exceeded.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;
use sqlx::{AnyConnection, Row};

use crate::clock::UnixMillis;
use crate::db::{Backend, Db};
use crate::rules::Limits;

/// Counters per multi-row statement: 4 parameters each (5 when adding), well inside
/// SQLite's 32766 and PostgreSQL's 65535 parameters.
const ROWS_PER_STATEMENT: usize = 1000;
const MINUTE_MS: i64 = 60_000;

/// The answer for one recipient of a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Counted against every window: send now.
    Granted,
    /// Nothing was counted. `until` is the start of the next window that frees room (the
    /// latest-ending of the full windows); `limit` names the rule that is full, as in the
    /// rules file (`per_minute`, `recipient_per_day`, ...).
    Wait {
        until: UnixMillis,
        limit: &'static str,
    },
}

impl Grant {
    /// Why a send waits, for the attempts log: "per_minute quota of 20 used".
    pub fn reason(&self, limits: &Limits) -> Option<String> {
        let Grant::Wait { limit, .. } = self else {
            return None;
        };
        let quota = Unit::ALL
            .into_iter()
            .flat_map(|unit| [(false, unit), (true, unit)])
            .find(|(per_recipient, unit)| limit_name(*per_recipient, *unit) == *limit)
            .and_then(|(per_recipient, unit)| limit_of(limits, per_recipient, unit));
        Some(match quota {
            Some(quota) => format!("{limit} quota of {quota} used"),
            None => format!("{limit} quota used"),
        })
    }
}

/// What an account has used and has left in its current windows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// One entry per account-wide limit that is set, minute first. Per-recipient limits
    /// have a counter per recipient and no single figure, so they are not listed.
    pub windows: Vec<WindowUsage>,
}

/// One window of an account's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WindowUsage {
    /// `per_minute`, `per_day` or `per_month`.
    pub limit: &'static str,
    pub quota: u32,
    pub used: u32,
    pub left: u32,
    /// When the next window starts.
    pub resets_at: UnixMillis,
}

/// The time zone named by `[delivery] quota_time_zone`. The rules loader checked the name;
/// this only guards a zone database that lost it since, and falls back to China time,
/// where most vendors count.
pub fn zone_named(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap_or_else(|error| {
        tracing::error!(zone = %name, %error, "unknown quota time zone; using UTC+8");
        TimeZone::fixed(jiff::tz::offset(8))
    })
}

/// Quota counters in the database plus the per-process pacers.
#[derive(Debug)]
pub struct Quotas {
    db: Db,
    zone: TimeZone,
    pacers: Pacers,
}

impl Quotas {
    /// `zone` is where days and months begin: Chinese vendors count in Asia/Shanghai.
    pub fn new(db: Db, zone: TimeZone) -> Self {
        Self {
            db,
            zone,
            pacers: Pacers::default(),
        }
    }

    /// Reserves one send per recipient on `channel` at `now`, in one transaction that is
    /// committed before this returns. Recipients are granted in order while every window
    /// has room; a recipient whose own counter is full waits without using the account's
    /// quota. Unlimited limits make no database call.
    pub async fn reserve(
        &self,
        channel: &str,
        limits: &Limits,
        recipients: &[&str],
        now: UnixMillis,
    ) -> Result<Vec<Grant>, sqlx::Error> {
        let account_units = limited_units(limits, false);
        let recipient_units = limited_units(limits, true);
        if recipients.is_empty() || (account_units.is_empty() && recipient_units.is_empty()) {
            return Ok(vec![Grant::Granted; recipients.len()]);
        }
        let windows = Windows::at(now, &self.zone)?;
        let backend = self.db.backend();
        let mut tx = self.db.writer().begin().await?;
        // Every counter is locked in one global order (account rows, then recipients by
        // address, each by unit), so concurrent reservers on PostgreSQL queue instead of
        // deadlocking.
        let account_keys: Vec<Key<'_>> = account_units.iter().map(|u| ("", *u)).collect();
        let mut used = lock_counters(&mut tx, backend, channel, &account_keys, &windows).await?;
        if let Some(wait) = first_full(limits, &used, &windows, "") {
            // The common state of a throttled channel: answer without touching (or
            // creating) a counter per recipient.
            tx.rollback().await?;
            return Ok(vec![wait; recipients.len()]);
        }
        let mut scopes: Vec<&str> = recipients
            .iter()
            .copied()
            .filter(|r| !r.is_empty())
            .collect();
        scopes.sort_unstable();
        scopes.dedup();
        let recipient_keys: Vec<Key<'_>> = scopes
            .iter()
            .flat_map(|scope| recipient_units.iter().map(move |unit| (*scope, *unit)))
            .collect();
        used.extend(lock_counters(&mut tx, backend, channel, &recipient_keys, &windows).await?);
        let (grants, added) = plan(recipients, limits, &windows, used);
        if added.is_empty() {
            tx.rollback().await?;
        } else {
            add_counts(&mut tx, backend, channel, &added, &windows).await?;
            tx.commit().await?;
        }
        Ok(grants)
    }

    /// What `channel` has used and has left in each limited window at `now`.
    pub async fn usage(
        &self,
        channel: &str,
        limits: &Limits,
        now: UnixMillis,
    ) -> Result<Usage, sqlx::Error> {
        let units = limited_units(limits, false);
        if units.is_empty() {
            return Ok(Usage {
                windows: Vec::new(),
            });
        }
        let windows = Windows::at(now, &self.zone)?;
        let rows = sqlx::query(
            "SELECT unit, used FROM channel_quota WHERE channel = $1 AND scope = '' AND \
             ((unit = 'minute' AND window_start = $2) OR (unit = 'day' AND window_start = $3) \
             OR (unit = 'month' AND window_start = $4))",
        )
        .bind(channel)
        .bind(windows.get(Unit::Minute).start)
        .bind(windows.get(Unit::Day).start)
        .bind(windows.get(Unit::Month).start)
        .fetch_all(self.db.reader())
        .await?;
        let mut counted = HashMap::new();
        for row in rows {
            let unit: String = row.try_get(0)?;
            if let Some(unit) = Unit::parse(&unit) {
                counted.insert(unit, row.try_get::<i64, _>(1)?);
            }
        }
        let windows = units
            .into_iter()
            .filter_map(|unit| {
                let quota = limit_of(limits, false, unit)?;
                let used = clamp_u32(counted.get(&unit).copied().unwrap_or(0));
                Some(WindowUsage {
                    limit: limit_name(false, unit),
                    quota,
                    used,
                    left: quota.saturating_sub(used),
                    resets_at: windows.get(unit).end,
                })
            })
            .collect();
        Ok(Usage { windows })
    }

    /// Deletes the counters of windows that ended more than a calendar month before `now`;
    /// answers how many. Nothing reads an ended window, so this only bounds the table.
    pub async fn purge_before(&self, now: UnixMillis) -> Result<u64, sqlx::Error> {
        let cutoff = Timestamp::from_millisecond(now)
            .map(|t| t.to_zoned(self.zone.clone()))
            .and_then(|z| z.checked_sub(jiff::Span::new().months(1)))
            .map(|z| z.timestamp().as_millisecond())
            .map_err(|e| out_of_range(now, &e))?;
        // A window ended by `cutoff` exactly when it started before the window of its
        // unit that contains `cutoff`.
        let current = Windows::at(cutoff, &self.zone)?;
        let done = sqlx::query(
            "DELETE FROM channel_quota WHERE (unit = 'minute' AND window_start < $1) \
             OR (unit = 'day' AND window_start < $2) OR (unit = 'month' AND window_start < $3)",
        )
        .bind(current.get(Unit::Minute).start)
        .bind(current.get(Unit::Day).start)
        .bind(current.get(Unit::Month).start)
        .execute(self.db.writer())
        .await?;
        Ok(done.rows_affected())
    }

    /// The delay before the next send of `channel` may start, so its `per_minute` sends
    /// are spaced evenly (60 s / per_minute apart) instead of bursting. Each call books
    /// the next slot (GCRA virtual scheduling without burst tolerance). In memory per
    /// process: the database count is the hard cap across instances.
    pub fn pace(&self, channel: &str, limits: &Limits, now: UnixMillis) -> Duration {
        self.pacers.book(channel, limits.per_minute, 1, now, None)
    }

    /// [`Quotas::pace`] for one provider call that carries `sends` recipients: the call
    /// starts at the next free slot and books `sends` slots. When that slot is more than
    /// `max_wait` away nothing is booked (the caller hands the sends back for later, and a
    /// booking would push every later send further out) and the wait is returned as is.
    pub fn pace_batch(
        &self,
        channel: &str,
        limits: &Limits,
        sends: u32,
        now: UnixMillis,
        max_wait: Duration,
    ) -> Duration {
        self.pacers
            .book(channel, limits.per_minute, sends, now, Some(max_wait))
    }
}

/// The spacing of `per_minute` sends, rounded up so that `per_minute` of them never fit
/// in less than a minute.
fn interval_us(per_minute: u32) -> i64 {
    let per_minute = i64::from(per_minute.max(1));
    (MINUTE_MS * 1000 + per_minute - 1) / per_minute
}

/// Per channel: the theoretical arrival time (µs) of its next send.
#[derive(Debug, Default)]
struct Pacers(Mutex<HashMap<String, i64>>);

impl Pacers {
    fn book(
        &self,
        channel: &str,
        per_minute: Option<u32>,
        sends: u32,
        now: UnixMillis,
        max_wait: Option<Duration>,
    ) -> Duration {
        // 0 a minute: `reserve` refuses every send, there is nothing to space out.
        let Some(per_minute) = per_minute.filter(|n| *n > 0) else {
            return Duration::ZERO;
        };
        if sends == 0 {
            return Duration::ZERO;
        }
        let interval_us = interval_us(per_minute);
        let now_us = now.saturating_mul(1000);
        let mut next_by_channel = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let next = next_by_channel
            .entry(channel.to_string())
            .or_insert(i64::MIN);
        let start = (*next).max(now_us);
        let wait = Duration::from_micros(u64::try_from(start.saturating_sub(now_us)).unwrap_or(0));
        if max_wait.is_none_or(|max| wait <= max) {
            *next = start.saturating_add(interval_us.saturating_mul(i64::from(sends)));
        }
        wait
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Unit {
    Minute,
    Day,
    Month,
}

impl Unit {
    const ALL: [Unit; 3] = [Unit::Minute, Unit::Day, Unit::Month];

    fn as_str(self) -> &'static str {
        match self {
            Unit::Minute => "minute",
            Unit::Day => "day",
            Unit::Month => "month",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Unit::ALL.into_iter().find(|unit| unit.as_str() == text)
    }
}

fn limit_of(limits: &Limits, per_recipient: bool, unit: Unit) -> Option<u32> {
    match (per_recipient, unit) {
        (false, Unit::Minute) => limits.per_minute,
        (false, Unit::Day) => limits.per_day,
        (false, Unit::Month) => limits.per_month,
        (true, Unit::Minute) => limits.recipient_per_minute,
        (true, Unit::Day) => limits.recipient_per_day,
        (true, Unit::Month) => limits.recipient_per_month,
    }
}

fn limit_name(per_recipient: bool, unit: Unit) -> &'static str {
    match (per_recipient, unit) {
        (false, Unit::Minute) => "per_minute",
        (false, Unit::Day) => "per_day",
        (false, Unit::Month) => "per_month",
        (true, Unit::Minute) => "recipient_per_minute",
        (true, Unit::Day) => "recipient_per_day",
        (true, Unit::Month) => "recipient_per_month",
    }
}

fn limited_units(limits: &Limits, per_recipient: bool) -> Vec<Unit> {
    Unit::ALL
        .into_iter()
        .filter(|unit| limit_of(limits, per_recipient, *unit).is_some())
        .collect()
}

fn clamp_u32(value: i64) -> u32 {
    u32::try_from(value.max(0)).unwrap_or(u32::MAX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    start: UnixMillis,
    end: UnixMillis,
}

/// The windows containing one instant: the UTC minute, and the calendar day and month in
/// the quota time zone (so a day can be 23 or 25 hours long where clocks change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Windows([Window; 3]);

impl Windows {
    fn at(now: UnixMillis, zone: &TimeZone) -> Result<Self, sqlx::Error> {
        Self::compute(now, zone).map_err(|e| out_of_range(now, &e))
    }

    fn compute(now: UnixMillis, zone: &TimeZone) -> Result<Self, jiff::Error> {
        // Checked first: within the calendar's range the minute arithmetic cannot overflow.
        let date = Timestamp::from_millisecond(now)?
            .to_zoned(zone.clone())
            .date();
        let minute_start = now - now.rem_euclid(MINUTE_MS);
        let midnight = |date: jiff::civil::Date| -> Result<UnixMillis, jiff::Error> {
            // A midnight skipped by a clock change resolves to the first instant of the day.
            Ok(date.to_zoned(zone.clone())?.timestamp().as_millisecond())
        };
        let first = date.first_of_month();
        Ok(Self([
            Window {
                start: minute_start,
                end: minute_start.saturating_add(MINUTE_MS),
            },
            Window {
                start: midnight(date)?,
                end: midnight(date.tomorrow()?)?,
            },
            Window {
                start: midnight(first)?,
                end: midnight(date.last_of_month().tomorrow()?)?,
            },
        ]))
    }

    fn get(&self, unit: Unit) -> Window {
        self.0[unit as usize]
    }
}

fn out_of_range(now: UnixMillis, error: &jiff::Error) -> sqlx::Error {
    sqlx::Error::InvalidArgument(format!(
        "quota windows of instant {now} ms are outside the calendar: {error}"
    ))
}

/// A counter: its scope ('' for the account, else the recipient) and unit. The window is
/// the current one of the unit.
type Key<'a> = (&'a str, Unit);

/// Creates the missing counters at 0 and locks them all for the rest of the transaction,
/// answering their counts. On PostgreSQL the no-op `DO UPDATE` takes the row lock and
/// returns the latest committed count even when a concurrent reserver committed after this
/// transaction's snapshot; on SQLite the single writer serialises reservers anyway.
async fn lock_counters<'a>(
    conn: &mut AnyConnection,
    backend: Backend,
    channel: &str,
    keys: &[Key<'a>],
    windows: &Windows,
) -> Result<HashMap<Key<'a>, i64>, sqlx::Error> {
    let mut found: Vec<Option<i64>> = vec![None; keys.len()];
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO channel_quota (channel, scope, unit, window_start, used) VALUES {} \
             ON CONFLICT (channel, scope, unit, window_start) DO UPDATE \
             SET used = channel_quota.used RETURNING scope, unit, used",
            values_list(backend, chunk.len(), 4, ", 0")
        );
        let mut query = sqlx::query(&sql);
        for (scope, unit) in chunk {
            query = query
                .bind(channel)
                .bind(*scope)
                .bind(unit.as_str())
                .bind(windows.get(*unit).start);
        }
        for row in query.fetch_all(&mut *conn).await? {
            let scope: String = row.try_get(0)?;
            let unit: String = row.try_get(1)?;
            let Some(unit) = Unit::parse(&unit) else {
                continue;
            };
            if let Ok(index) = keys.binary_search(&(scope.as_str(), unit)) {
                found[index] = Some(row.try_get(2)?);
            }
        }
    }
    keys.iter()
        .zip(found)
        .map(|(key, used)| {
            // Without the address: error details end up in logs.
            used.map(|used| (*key, used)).ok_or_else(|| {
                sqlx::Error::Protocol(format!(
                    "the database returned no quota counter for a {} window",
                    key.1.as_str()
                ))
            })
        })
        .collect()
}

async fn add_counts(
    conn: &mut AnyConnection,
    backend: Backend,
    channel: &str,
    added: &BTreeMap<Key<'_>, i64>,
    windows: &Windows,
) -> Result<(), sqlx::Error> {
    let rows: Vec<_> = added.iter().collect();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO channel_quota (channel, scope, unit, window_start, used) VALUES {} \
             ON CONFLICT (channel, scope, unit, window_start) DO UPDATE \
             SET used = channel_quota.used + excluded.used",
            values_list(backend, chunk.len(), 5, "")
        );
        let mut query = sqlx::query(&sql);
        for ((scope, unit), count) in chunk {
            query = query
                .bind(channel)
                .bind(*scope)
                .bind(unit.as_str())
                .bind(windows.get(*unit).start)
                .bind(**count);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// `rows` parenthesised tuples of `params_per_row` placeholders, each followed by `extra`.
/// SQLite gets anonymous `?`: it resolves each numbered `$N` by a linear search of the
/// statement's parameter names, which makes binding thousands of them quadratic.
fn values_list(backend: Backend, rows: usize, params_per_row: usize, extra: &str) -> String {
    let mut sql = String::with_capacity(rows * (params_per_row * 7 + extra.len() + 4));
    let mut number = 0;
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for param in 0..params_per_row {
            if param > 0 {
                sql.push_str(", ");
            }
            number += 1;
            backend.push_param(&mut sql, number);
        }
        sql.push_str(extra);
        sql.push(')');
    }
    sql
}

/// The wait for a send that one of `scope`'s full windows blocks, if any: the latest-ending
/// full window decides, since an earlier one freeing up does not make room.
fn first_full(
    limits: &Limits,
    used: &HashMap<Key<'_>, i64>,
    windows: &Windows,
    scope: &str,
) -> Option<Grant> {
    let per_recipient = !scope.is_empty();
    let mut wait: Option<Grant> = None;
    for unit in Unit::ALL {
        let Some(quota) = limit_of(limits, per_recipient, unit) else {
            continue;
        };
        let count = used.get(&(scope, unit)).copied().unwrap_or(0);
        if count < i64::from(quota) {
            continue;
        }
        let until = windows.get(unit).end;
        if !matches!(wait, Some(Grant::Wait { until: later, .. }) if later >= until) {
            wait = Some(Grant::Wait {
                until,
                limit: limit_name(per_recipient, unit),
            });
        }
    }
    wait
}

/// Decides each recipient in order against the locked counts; answers the grants and what
/// to add to each counter.
fn plan<'a>(
    recipients: &[&'a str],
    limits: &Limits,
    windows: &Windows,
    mut used: HashMap<Key<'a>, i64>,
) -> (Vec<Grant>, BTreeMap<Key<'a>, i64>) {
    let account_units = limited_units(limits, false);
    let recipient_units = limited_units(limits, true);
    let mut added: BTreeMap<Key<'a>, i64> = BTreeMap::new();
    let grants = recipients
        .iter()
        .map(|recipient| {
            let account = first_full(limits, &used, windows, "");
            // An empty address cannot be told apart from the account's own counters; it
            // is counted against the account only.
            let own = if recipient.is_empty() {
                None
            } else {
                first_full(limits, &used, windows, recipient)
            };
            match (account, own) {
                (None, None) => {
                    let own_units = if recipient.is_empty() {
                        &[][..]
                    } else {
                        &recipient_units[..]
                    };
                    let keys = account_units
                        .iter()
                        .map(|unit| ("", *unit))
                        .chain(own_units.iter().map(|unit| (*recipient, *unit)));
                    for key in keys {
                        *used.entry(key).or_insert(0) += 1;
                        *added.entry(key).or_insert(0) += 1;
                    }
                    Grant::Granted
                }
                (Some(wait), None) | (None, Some(wait)) => wait,
                (Some(account), Some(own)) => later(account, own),
            }
        })
        .collect();
    (grants, added)
}

fn later(first: Grant, second: Grant) -> Grant {
    match (first, second) {
        (Grant::Wait { until: a, .. }, Grant::Wait { until: b, .. }) if b > a => second,
        _ => first,
    }
}

#[cfg(test)]
#[path = "quota_tests.rs"]
mod tests;
