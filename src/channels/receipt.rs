//! Delivery receipts: what a provider reports after it accepted a message (Twilio status
//! callbacks, SendGrid events), parsed into one shape. Verifying and parsing are pure
//! functions in each provider's file; the HTTP route and storage live elsewhere.

/// One status report about one sent message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The id the send returned as `SendResult::provider_ref`, which finds the attempt.
    pub provider_ref: String,
    /// The provider's own word for the status (`delivered`, `undelivered`, `bounce`, …).
    pub status: String,
    /// What the status means for delivery.
    pub outcome: ReceiptOutcome,
    /// The provider's error code on failures (Twilio `ErrorCode`).
    pub error_code: Option<String>,
    /// Identifies this report, so a report delivered twice is recorded once (providers
    /// retry callbacks and may send them out of order).
    pub event_key: String,
    /// The recipient address as the provider reports it.
    pub recipient: Option<String>,
    /// When the event happened, per the provider (Unix milliseconds).
    pub at_ms: Option<i64>,
}

/// The delivery meaning of a receipt, common to every provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptOutcome {
    /// Still on its way (queued, sent to the carrier, deferred).
    InTransit,
    Delivered,
    /// Will not arrive (undelivered, failed, bounced, dropped).
    Failed,
    /// Opened or read by the person.
    Opened,
    Clicked,
    /// The person unsubscribed or reported spam: stop sending to them here.
    OptedOut,
    /// A status this version does not interpret.
    Other,
}

/// Why a receipt could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ReceiptError(pub String);
