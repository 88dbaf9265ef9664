//! qunfa (群发, "mass send"): a chat-bot framework for mass-messaging campaigns driven by
//! enterprise chat webhooks.
//!
//! Data flows one way: `inbound` (verify, decrypt, de-duplicate, normalise callbacks into
//! `ChatEvent`s) → `bot` (parse commands from the rules, check roles, audit, reply) →
//! `delivery` (durable outbox, leases, retry policy, workers) → `channels` (one file per
//! provider). `rules` loads and validates `bot-rules/`; `db` owns the pools and migrations;
//! `http` assembles the router; `app` wires everything for `qunfa serve`.

pub mod app;
pub mod bot;
pub mod channels;
pub mod clock;
pub mod console;
pub mod db;
pub mod delivery;
pub mod error;
pub mod http;
pub mod inbound;
pub mod read_mostly;
pub mod rules;
pub mod shutdown;
pub mod telemetry;
