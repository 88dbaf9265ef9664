//! Reading a provider's whole answer when the adapter must parse it (ids, per-recipient
//! status lists), bounded so a misconfigured `base_url` cannot make a worker buffer an
//! endless body. `body_excerpt` stays the tool for answers that are only logged.

/// Answers past this size are not a provider's JSON (Tencent's 200-number status list
/// is about 40 KiB, Twilio's message resource a few KiB).
pub(super) const ANSWER_LIMIT: usize = 1024 * 1024;

/// The body, or `None` when the connection failed midway or the body exceeds `limit`
/// (either way it cannot be parsed with confidence).
pub(super) async fn read_answer(mut response: reqwest::Response, limit: usize) -> Option<Vec<u8>> {
    let mut collected = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if collected.len() + chunk.len() > limit {
                    return None;
                }
                collected.extend_from_slice(&chunk);
            }
            Ok(None) => return Some(collected),
            Err(_) => return None,
        }
    }
}
