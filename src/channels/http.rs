//! Pieces every HTTP adapter shares: one hardened client per account, reading a bounded
//! part of a provider's answer, and the `Retry-After` header.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::{DETAIL_LIMIT, SendResult, Verdict, truncate};

/// A client with connect and total timeouts, so one stalled provider cannot hold a worker
/// past its lease.
pub fn client(total_timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("qunfa/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(total_timeout.min(Duration::from_secs(10)))
        .timeout(total_timeout)
        .pool_max_idle_per_host(64)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// The delay a provider asked for: delta-seconds or an HTTP date, per RFC 9110 §10.2.3.
pub fn retry_after(headers: &HeaderMap, now_ms: i64) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let wait_ms = at.as_millisecond().saturating_sub(now_ms);
    Some(Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0)))
}

/// Reads at most [`DETAIL_LIMIT`] bytes of the body for the attempts log, without
/// buffering a huge error page.
pub async fn body_excerpt(mut response: reqwest::Response) -> String {
    let mut collected = Vec::new();
    while collected.len() <= DETAIL_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => collected.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    truncate(&String::from_utf8_lossy(&collected), DETAIL_LIMIT)
}

/// A transport failure (DNS, connect, TLS, timeout): the request may not have arrived.
pub fn transport_failure(error: &reqwest::Error) -> SendResult {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    // The URL may carry a credential in its query (robot keys), so it is left out.
    let error = error.without_url_ref();
    SendResult::new(
        Verdict::Retryable { after: None },
        None,
        format!("{kind}: {error}"),
    )
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let mut text = self.to_string();
        if let Some(url) = self.url() {
            text = text.replace(url.as_str(), "<url>");
        }
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("120"));
        assert_eq!(retry_after(&headers, 0), Some(Duration::from_secs(120)));

        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Thu, 01 Jan 1970 00:01:40 GMT"),
        );
        assert_eq!(retry_after(&headers, 40_000), Some(Duration::from_secs(60)));
        // A date already past means "now", never a negative wait.
        assert_eq!(retry_after(&headers, 200_000), Some(Duration::ZERO));

        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers, 0), None);
    }
}
