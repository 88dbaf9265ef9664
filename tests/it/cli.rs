//! The `qunfa` binary as a user meets it: the shell tracer bullet through a running
//! `serve`, rules reload on SIGHUP, and a clear one-line error (non-zero exit, no panic)
//! for each kind of bad input.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn qunfa() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_qunfa"));
    command
        .env_remove("QUNFA_RULES")
        .env_remove("QUNFA_DATABASE_URL")
        .env_remove("QUNFA_LISTEN");
    command.env("RUST_LOG", "warn");
    command
}

fn shipped_rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bot-rules")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_clear_failure(output: &Output, needle: &str) {
    let text = stderr(output);
    assert!(
        !output.status.success(),
        "expected failure, got success: {text}"
    );
    assert!(text.contains(needle), "`{needle}` not in: {text}");
    assert!(!text.contains("panicked"), "panic: {text}");
}

/// A running `qunfa serve` that is stopped (SIGTERM) when dropped.
struct Served {
    child: Child,
    dir: tempfile::TempDir,
}

impl Served {
    fn start(rules: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let child = qunfa()
            .args(["serve", "--listen", "127.0.0.1:0", "--rules"])
            .arg(rules)
            .arg("--database")
            .arg(dir.path().join("qunfa.db"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let served = Self { child, dir };
        let token = served.token_file();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !token.exists() {
            assert!(
                Instant::now() < deadline,
                "serve did not write its token file"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        served
    }

    fn token_file(&self) -> PathBuf {
        self.dir.path().join("qunfa.db.shell-token")
    }

    fn shell(&self, user: &str, input: &str) -> String {
        let mut child = qunfa()
            .args(["shell", "--as", user, "--database"])
            .arg(self.dir.path().join("qunfa.db"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "shell failed: {}", stderr(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }
}

#[test]
fn the_shell_answers_help_and_whoami_through_a_running_serve() {
    let served = Served::start(&shipped_rules());
    let out = served.shell("local", "/whoami\n/help\n帮助\n/hlep\n");
    assert!(out.contains("local"), "{out}");
    assert!(out.contains("admin"), "{out}");
    assert!(out.contains("/whoami"), "help lists whoami: {out}");
    assert!(out.contains("/help"), "{out}");
    assert!(out.contains("did you mean"), "{out}");
    let stranger = served.shell("someone-else", "/whoami\n/help\n");
    assert!(stranger.contains("someone-else"), "{stranger}");
    assert!(stranger.contains("viewer"), "help needs viewer: {stranger}");
    let token = served.token_file();
    assert!(served.stop().success(), "SIGTERM exits 0");
    assert!(!token.exists(), "the token file is removed on exit");
}

#[test]
fn a_shell_without_a_running_serve_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let output = qunfa()
        .args(["shell", "--database"])
        .arg(dir.path().join("qunfa.db"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_clear_failure(&output, "qunfa serve");
}

#[test]
fn sighup_reloads_the_rules_and_a_bad_reload_keeps_the_old_ones() {
    let rules_dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(shipped_rules()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&path, rules_dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    // Alerts go to the shipped log channel, so the rejected reload shows up in its file.
    let delivery = rules_dir.path().join("delivery.toml");
    let text = std::fs::read_to_string(&delivery).unwrap();
    let text = text.replacen(
        "[delivery]\n",
        "[delivery]\nalerts_channel = \"log\"\nalerts_to = \"ops-team\"\n",
        1,
    );
    std::fs::write(&delivery, text).unwrap();
    let served = Served::start(rules_dir.path());
    assert!(
        !served
            .shell("newbie", "/whoami\n")
            .contains("role: operator")
    );
    std::fs::write(
        rules_dir.path().join("zz-extra.toml"),
        "[[operator]]\nplatform = \"shell\"\nuser = \"newbie\"\nrole = \"operator\"\n",
    )
    .unwrap();
    Command::new("kill")
        .args(["-HUP", &served.child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !served
        .shell("newbie", "/whoami\n")
        .contains("role: operator")
    {
        assert!(Instant::now() < deadline, "the new operator never appeared");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::write(
        rules_dir.path().join("zz-extra.toml"),
        "[[operator]\nbroken",
    )
    .unwrap();
    Command::new("kill")
        .args(["-HUP", &served.child.id().to_string()])
        .status()
        .unwrap();
    let outbox_file = served.dir.path().join("qunfa-outbox.jsonl");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lines = std::fs::read_to_string(&outbox_file).unwrap_or_default();
        if lines.contains("rules reload rejected") {
            assert!(lines.contains("ops-team"), "{lines}");
            assert!(
                lines.contains("zz-extra.toml:1:"),
                "the alert names the problem: {lines}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ops chat never heard of the rejected reload"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        served
            .shell("newbie", "/whoami\n")
            .contains("role: operator"),
        "old rules kept"
    );
    assert!(served.stop().success());
}

#[test]
fn check_rules_accepts_the_shipped_rules_and_lists_every_problem_otherwise() {
    let ok = qunfa()
        .arg("check-rules")
        .arg(shipped_rules())
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.toml"),
        "[[channel]]\nid = \"x\"\nkind = \"log\"\npath = 3\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("b.toml"), "[[inbound]\n").unwrap();
    let bad = qunfa().arg("check-rules").arg(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert!(!bad.status.success());
    assert!(stdout.contains("a.toml:4:"), "{stdout}");
    assert!(stdout.contains("b.toml:1:"), "{stdout}");
}

#[test]
fn bad_input_gets_a_one_line_error_and_a_non_zero_exit() {
    let unknown_flag = qunfa().args(["serve", "--bogus"]).output().unwrap();
    assert_eq!(unknown_flag.status.code(), Some(2));
    assert!(stderr(&unknown_flag).contains("--bogus"));

    let dir = tempfile::tempdir().unwrap();
    let unreadable = qunfa()
        .args(["serve", "--listen", "127.0.0.1:0", "--rules"])
        .arg(shipped_rules())
        .arg("--database")
        .arg(dir.path().join("no/such/dir/qunfa.db"))
        .output()
        .unwrap();
    assert_clear_failure(&unreadable, "no/such/dir/qunfa.db");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let in_use = qunfa()
        .args(["serve", "--rules"])
        .arg(shipped_rules())
        .arg("--database")
        .arg(dir.path().join("qunfa.db"))
        .arg("--listen")
        .arg(taken.local_addr().unwrap().to_string())
        .output()
        .unwrap();
    assert_clear_failure(&in_use, "--listen");

    let broken_rules = dir.path().join("broken-rules");
    std::fs::create_dir_all(&broken_rules).unwrap();
    std::fs::write(
        broken_rules.join("x.toml"),
        "[[inbound]]\nid = \"shell\"\nplatform = \"pager\"\n",
    )
    .unwrap();
    let bad_rules = qunfa()
        .args(["serve", "--listen", "127.0.0.1:0", "--rules"])
        .arg(&broken_rules)
        .arg("--database")
        .arg(dir.path().join("qunfa.db"))
        .output()
        .unwrap();
    assert_clear_failure(&bad_rules, "x.toml:3:");

    let bad_url = qunfa()
        .args(["migrate", "--database", "mysql://x/y"])
        .output()
        .unwrap();
    assert_clear_failure(&bad_url, "unsupported database URL scheme");
}

#[test]
fn a_database_from_a_newer_qunfa_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("qunfa.db");
    let migrated = qunfa()
        .arg("migrate")
        .arg("--database")
        .arg(&db)
        .output()
        .unwrap();
    assert!(migrated.status.success(), "{}", stderr(&migrated));
    let again = qunfa()
        .arg("migrate")
        .arg("--database")
        .arg(&db)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("applied 0"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let url = qunfa::db::DatabaseUrl::Sqlite(db.clone());
        let handle = qunfa::db::Db::connect(&url).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99990101000000, 'future', TRUE, x'00', 0)",
        )
        .execute(handle.writer())
        .await
        .unwrap();
        handle.close().await;
    });
    let refused = qunfa()
        .arg("migrate")
        .arg("--database")
        .arg(&db)
        .output()
        .unwrap();
    assert_clear_failure(&refused, "newer qunfa");
}
