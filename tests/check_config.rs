//! `markbase-nfs check-config`, as an operator (and the systemd unit's
//! ExecStartPre, deploy/markbase-nfs.service) runs it before serving.

mod common;

use std::process::Command;

use common::*;

#[test]
fn the_shipped_tuning_file_is_valid_and_every_setting_is_printed() {
    let out = cli(&["check-config", "--config", "tuning.toml"]);
    assert!(out.starts_with("# tuning.toml: valid"), "{out}");
    for section in [
        "[server]",
        "[export]",
        "[network]",
        "[nfs]",
        "[storage]",
        "[catalog]",
    ] {
        assert!(out.contains(section), "{section} missing:\n{out}");
    }
    assert!(out.contains("max_reply_bytes = 33554432"), "{out}");
    // What it prints is itself a tuning file that gives the same settings.
    let dir = tempfile::tempdir().unwrap();
    let again = dir.path().join("again.toml");
    std::fs::write(&again, &out).unwrap();
    let twice = cli(&["check-config", "--config", again.to_str().unwrap()]);
    assert_eq!(
        out.lines().skip(1).collect::<Vec<_>>(),
        twice.lines().skip(1).collect::<Vec<_>>()
    );
}

#[test]
fn a_bad_tuning_file_fails_and_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    for (text, says) in [
        (
            "[network]\nmax_inflight = 3\n",
            "unknown field `max_inflight`",
        ),
        (
            "[network]\nmax_reply_bytes = 1000\n",
            "one READ would not fit",
        ),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN)
            .args(["check-config", "--config", path.to_str().unwrap()])
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{text} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{text}: {err}");
    }
}
