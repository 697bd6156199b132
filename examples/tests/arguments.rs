//! The examples' command line: `--help` prints the usage and a mistyped option is an error;
//! neither creates a database file.

use std::path::PathBuf;
use std::process::Command;

const ONBOARDING: &str = env!("CARGO_BIN_EXE_onboarding");

/// A fresh directory to run the example in, so a stray file would show.
fn empty_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("example-args-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn files_in(dir: &PathBuf) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn help_prints_the_usage_and_creates_no_file() {
    for flag in ["--help", "-h"] {
        let dir = empty_dir(flag.trim_start_matches('-'));
        let out = Command::new(ONBOARDING)
            .arg(flag)
            .current_dir(&dir)
            .env_remove("DURABLE_EXAMPLE_DB")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{flag}: {stdout}");
        assert!(stdout.contains("usage: onboarding [DATABASE]"), "{stdout}");
        assert!(stdout.contains("onboarding.db"), "{stdout}");
        assert_eq!(
            files_in(&dir),
            Vec::<String>::new(),
            "{flag} created a file"
        );
    }
}

#[test]
fn an_unknown_option_is_an_error_and_creates_no_file() {
    let dir = empty_dir("unknown");
    let out = Command::new(ONBOARDING)
        .arg("--verbose")
        .current_dir(&dir)
        .env_remove("DURABLE_EXAMPLE_DB")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown option `--verbose`"), "{stderr}");
    assert!(stderr.contains("usage: onboarding"), "{stderr}");
    assert_eq!(files_in(&dir), Vec::<String>::new());
}
