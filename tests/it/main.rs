//! One integration-test binary (one link step instead of one per file).

mod delivery;
mod storage;
