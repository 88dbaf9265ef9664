//! One integration-test binary (one link step instead of one per file).

mod cli;
mod crash;
mod delivery;
mod quota;
mod storage;
