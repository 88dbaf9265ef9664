//! Signed inbound callbacks per second: a real `qunfa serve` answering `/whoami` (verified,
//! de-duplicated, routed, audited) beside a bare axum handler that verifies one HMAC-SHA256,
//! both driven by `wrk` (2 threads, 32 connections) in the same run on the same machine.
//!
//! Two cases: Standard Webhooks (the wrk Lua script signs every request, since each needs its
//! own `webhook-id`; the Lua signer is checked against Rust's hmac crate first) and DingTalk
//! (the `sign` header covers only the timestamp, so each request just carries its own
//! `msgId`). qunfa runs on SQLite, and also on a fresh PostgreSQL database when
//! `QUNFA_TEST_POSTGRES_URL` is set. After each qunfa run the server is stopped with SIGTERM,
//! which must drain what it still had queued for the database: a run only counts when every
//! answer was 2xx and `command_audit` then holds a row for every request wrk counted;
//! otherwise the benchmark says why and exits 1.
//!
//! Run with: `cargo bench --bench inbound` (needs the `wrk` Debian package);
//! `QUNFA_BENCH_SECONDS` sets each wrk run's duration (default 10).

#[path = "inbound/support.rs"]
mod support;

/// The reference server gets the allocator qunfa ships with, so the comparison is of the
/// request handling alone.
#[cfg(unix)]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use support::{
    Database, Qunfa, ReferenceServer, WRK_CONNECTIONS, WRK_THREADS, WrkSummary, dingtalk_sign,
    standard_signature, wrk,
};

const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const DINGTALK_SECRET: &str = "SECbench0dingtalk0app0secret0for0the0inbound0benchmark";
/// The share of wrk's counted requests that must show up in `command_audit` once the server
/// has stopped: all of them, since the audit row of every answered request was queued before
/// the answer and shutdown drains the queue. Requests still in flight when wrk stops may be
/// audited without being counted, never the other way round.
const MIN_AUDITED_SHARE: f64 = 1.0;
/// Requests sent before measuring (and audited), per qunfa run.
const WARM_UPS: i64 = 1;
const TARGET_RATIO: f64 = 0.5;

const WHOAMI: &str = r#"
[[command]]
name = "whoami"
role = "anyone"
summary = "Show your platform, user id and role"
usage = ""
"#;

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("benches/wrk/{name}.lua"))
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// One measured line of the table.
struct Row {
    case: &'static str,
    server: String,
    summary: WrkSummary,
    audited: Option<i64>,
}

/// Drives the Lua signer once with a fixed input against `/capture` and compares its
/// signature with Rust's; a wrong signer would make every qunfa answer a 401.
async fn check_lua_signer(reference: &ReferenceServer, key_hex: &str, key: &[u8]) {
    let url = format!("{}/capture", reference.root);
    let fixed_ts = "1764079200";
    wrk(
        &url,
        &script("standard"),
        &[key_hex, "selftest", "fixed", fixed_ts],
        1,
        (1, 1),
    )
    .await;
    let captured = reference
        .captured()
        .expect("the Lua signer sent no request to /capture");
    let expected = standard_signature(key, &captured.id, &captured.timestamp, &captured.body);
    assert_eq!(
        captured.timestamp, fixed_ts,
        "the fixed timestamp was not used"
    );
    assert_eq!(
        captured.signature,
        expected,
        "benches/wrk/standard.lua signs differently from Rust's hmac crate for id {:?}, body {}",
        captured.id,
        String::from_utf8_lossy(&captured.body)
    );
    println!("Lua HMAC-SHA256 signer matches Rust: {expected}");
}

/// One signed request from Rust before measuring: the rules, secret and route are right.
async fn warm_up(url: &str, headers: &[(&str, String)], body: String, qunfa: &Qunfa) {
    let mut request = reqwest::Client::new().post(url).body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.expect("warm-up request");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(
        status.is_success() && text.contains("u-bench"),
        "qunfa answered the warm-up /whoami with {status}: {text}\nlog:\n{}",
        qunfa.log()
    );
}

/// Measures qunfa on one case: wrk, then a graceful stop and the audit count of the
/// commands run.
async fn measure_qunfa(
    case: &'static str,
    qunfa: Qunfa,
    url: &str,
    script_name: &str,
    args: &[&str],
    seconds: u64,
) -> Row {
    let server = format!("qunfa {}", qunfa.database_name());
    let summary = wrk(
        url,
        &script(script_name),
        args,
        seconds,
        (WRK_THREADS, WRK_CONNECTIONS),
    )
    .await;
    let audited = qunfa.stop_and_count_audited().await - WARM_UPS;
    Row {
        case,
        server,
        summary,
        audited: Some(audited),
    }
}

/// The databases qunfa runs on: SQLite, and PostgreSQL when `QUNFA_TEST_POSTGRES_URL` is
/// set (a fresh database per run).
async fn databases() -> Vec<Database> {
    let mut databases = vec![Database::Sqlite];
    databases.extend(Database::postgres().await);
    databases
}

async fn standard_case(reference: &ReferenceServer, key: &[u8], seconds: u64) -> Vec<Row> {
    let key_hex = hex::encode(key);
    let mut rows = vec![Row {
        case: "standard",
        server: "bare axum + HMAC".to_string(),
        summary: wrk(
            &format!("{}/standard", reference.root),
            &script("standard"),
            &[&key_hex, "ref"],
            seconds,
            (WRK_THREADS, WRK_CONNECTIONS),
        )
        .await,
        audited: None,
    }];
    let rules = format!(
        "[[inbound]]\nid = \"crm\"\nplatform = \"standard\"\nsecret_env = \"QUNFA_BENCH_STANDARD_SECRET\"\n\n\
         [[operator]]\nplatform = \"standard\"\nuser = \"u-bench\"\nrole = \"operator\"\n{WHOAMI}"
    );
    for database in databases().await {
        let qunfa = Qunfa::start(
            &rules,
            &[("QUNFA_BENCH_STANDARD_SECRET", STANDARD_SECRET)],
            database,
        );
        let url = format!("{}/webhooks/crm", qunfa.root);
        let timestamp = (now_ms() / 1000).to_string();
        let body = format!(
            r#"{{"type":"message","timestamp":"{}","data":{{"chat":"bench","user":"u-bench","text":"/whoami","message_id":"warm-up"}}}}"#,
            jiff::Timestamp::now()
        );
        let signature = standard_signature(key, "warm-up", &timestamp, body.as_bytes());
        let headers = [
            ("content-type", "application/json".to_string()),
            ("webhook-id", "warm-up".to_string()),
            ("webhook-timestamp", timestamp),
            ("webhook-signature", signature),
        ];
        warm_up(&url, &headers, body, &qunfa).await;
        let args = [key_hex.as_str(), "q"];
        rows.push(measure_qunfa("standard", qunfa, &url, "standard", &args, seconds).await);
    }
    rows
}

async fn dingtalk_case(reference: &ReferenceServer, seconds: u64) -> Vec<Row> {
    // Signed once: the signature stays valid for an hour whatever the body.
    let timestamp = now_ms().to_string();
    let sign = dingtalk_sign(DINGTALK_SECRET.as_bytes(), &timestamp);
    let mut rows = vec![Row {
        case: "dingtalk",
        server: "bare axum + HMAC".to_string(),
        summary: wrk(
            &format!("{}/dingtalk", reference.root),
            &script("dingtalk"),
            &[&timestamp, &sign, "ref"],
            seconds,
            (WRK_THREADS, WRK_CONNECTIONS),
        )
        .await,
        audited: None,
    }];
    let rules = format!(
        "[[inbound]]\nid = \"ding\"\nplatform = \"dingtalk\"\napp_secret_env = \"QUNFA_BENCH_DINGTALK_SECRET\"\n\n\
         [[operator]]\nplatform = \"dingtalk\"\nuser = \"u-bench\"\nrole = \"operator\"\n{WHOAMI}"
    );
    for database in databases().await {
        let qunfa = Qunfa::start(
            &rules,
            &[("QUNFA_BENCH_DINGTALK_SECRET", DINGTALK_SECRET)],
            database,
        );
        let url = format!("{}/webhooks/ding", qunfa.root);
        let body = r#"{"conversationId":"cid-bench","msgId":"warm-up","senderNick":"Bench","senderStaffId":"u-bench","conversationType":"2","text":{"content":" /whoami"},"msgtype":"text"}"#;
        let headers = [
            ("content-type", "application/json".to_string()),
            ("timestamp", timestamp.clone()),
            ("sign", sign.clone()),
        ];
        warm_up(&url, &headers, body.to_string(), &qunfa).await;
        let args = [timestamp.as_str(), sign.as_str(), "q"];
        rows.push(measure_qunfa("dingtalk", qunfa, &url, "dingtalk", &args, seconds).await);
    }
    rows
}

/// Why a row does not count, if it does not.
fn invalid_reason(row: &Row) -> Option<String> {
    let summary = &row.summary;
    if summary.requests == 0 {
        return Some("wrk completed no request".into());
    }
    if summary.non_2xx > 0 {
        return Some(format!("{} answers were not 2xx", summary.non_2xx));
    }
    let audited = row.audited?;
    let share = audited as f64 / summary.requests as f64;
    (share < MIN_AUDITED_SHARE).then(|| {
        format!(
            "only {audited} of {} requests ran the command (de-duplicated or refused?)",
            summary.requests
        )
    })
}

fn print_table(rows: &[Row]) -> bool {
    println!(
        "\n{:<9} {:<17} {:>10} {:>8} {:>9} {:>9} {:>10}",
        "case", "server", "requests", "non-2xx", "audited", "latency", "req/s"
    );
    let mut valid = true;
    for row in rows {
        let summary = &row.summary;
        let audited = row.audited.map_or("-".to_string(), |n| n.to_string());
        println!(
            "{:<9} {:<17} {:>10} {:>8} {:>9} {:>9} {:>10.0}",
            row.case,
            row.server,
            summary.requests,
            summary.non_2xx,
            audited,
            summary.latency_avg,
            summary.per_second
        );
        if let Some(errors) = &summary.socket_errors {
            println!("          socket errors: {errors}");
        }
        if let Some(reason) = invalid_reason(row) {
            println!("          INVALID: {reason}");
            valid = false;
        }
    }
    for qunfa in rows.iter().filter(|row| row.audited.is_some()) {
        let Some(reference) = rows
            .iter()
            .find(|row| row.case == qunfa.case && row.audited.is_none())
        else {
            continue;
        };
        let ratio = qunfa.summary.per_second / reference.summary.per_second;
        let verdict = if ratio >= TARGET_RATIO {
            "meets"
        } else {
            "BELOW"
        };
        println!(
            "ratio {:<9} {:<17} / reference = {ratio:.2} ({verdict} the target of {TARGET_RATIO:.2})",
            qunfa.case, qunfa.server
        );
    }
    valid
}

#[tokio::main]
async fn main() {
    let seconds: u64 = match std::env::var("QUNFA_BENCH_SECONDS") {
        Ok(value) => value.parse().ok().filter(|&s| s > 0).unwrap_or_else(|| {
            panic!("QUNFA_BENCH_SECONDS must be a whole number of seconds > 0, got {value:?}")
        }),
        Err(_) => 10,
    };
    let key = STANDARD_SECRET
        .strip_prefix("whsec_")
        .and_then(|encoded| BASE64.decode(encoded).ok())
        .expect("the benchmark's whsec_ secret");
    let reference = ReferenceServer::start(&key, DINGTALK_SECRET.as_bytes()).await;
    println!(
        "inbound benchmark: wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{seconds}s, signed /whoami callbacks"
    );
    check_lua_signer(&reference, &hex::encode(&key), &key).await;
    let mut rows = Vec::new();
    rows.extend(standard_case(&reference, &key, seconds).await);
    rows.extend(dingtalk_case(&reference, seconds).await);
    if !print_table(&rows) {
        eprintln!("the run is invalid: see the INVALID lines above");
        std::process::exit(1);
    }
}
