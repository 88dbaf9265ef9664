//! Access tokens that providers hand out for an hour or two (WeCom `gettoken`, DingTalk,
//! Feishu tenant tokens, WeChat OA): fetched once, shared by every send, refreshed shortly
//! before they expire or as soon as the provider refuses one.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use secrecy::SecretString;

/// Refresh this long before the provider's stated expiry, so a token never dies in flight.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct TokenCache {
    entries: tokio::sync::Mutex<HashMap<String, (SecretString, Instant)>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCache([redacted])")
    }
}

impl TokenCache {
    /// The cached token, or the result of `fetch` (the token and how long it lives). The
    /// lock is held across the fetch on purpose: concurrent senders wait for one fetch
    /// instead of each asking the provider, which rate-limits token calls.
    pub async fn get_or_fetch<E, Fut>(
        &self,
        key: &str,
        fetch: impl FnOnce() -> Fut,
    ) -> Result<SecretString, E>
    where
        Fut: Future<Output = Result<(SecretString, Duration), E>>,
    {
        let mut entries = self.entries.lock().await;
        if let Some((token, expires)) = entries.get(key)
            && Instant::now() < *expires
        {
            return Ok(token.clone());
        }
        let (token, lifetime) = fetch().await?;
        let expires = Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN);
        entries.insert(key.to_string(), (token.clone(), expires));
        Ok(token)
    }

    /// Forgets a token the provider refused (expired early, revoked), so the next call
    /// fetches a fresh one.
    pub async fn invalidate(&self, key: &str) {
        self.entries.lock().await.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[tokio::test]
    async fn a_token_is_fetched_once_until_invalidated() {
        let cache = TokenCache::default();
        let mut fetches = 0;
        for round in 0..4 {
            if round == 2 {
                cache.invalidate("k").await;
            }
            let token = cache
                .get_or_fetch::<(), _>("k", || {
                    fetches += 1;
                    let value = format!("t{fetches}");
                    async move { Ok((SecretString::from(value), Duration::from_secs(7200))) }
                })
                .await
                .unwrap();
            let expected = if round < 2 { "t1" } else { "t2" };
            assert_eq!(token.expose_secret(), expected);
        }
        assert_eq!(fetches, 2);
    }

    #[tokio::test]
    async fn a_failed_fetch_is_not_cached() {
        let cache = TokenCache::default();
        let failed = cache
            .get_or_fetch("k", || async { Err::<(SecretString, Duration), _>("down") })
            .await;
        assert!(failed.is_err());
        let token = cache
            .get_or_fetch::<&str, _>("k", || async {
                Ok((SecretString::from("fresh"), Duration::from_secs(10)))
            })
            .await
            .unwrap();
        assert_eq!(token.expose_secret(), "fresh");
    }
}
