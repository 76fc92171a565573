//! The `wsgate` binary's config handling: `check --config FILE` exits 0 on a
//! valid file (the shipped `config/wsgate.yaml` included) and non-zero on an
//! invalid one with a message naming the field and its line; `run --config`
//! refuses to start on the same file with the same message.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

/// A config file in a fresh temporary directory, removed on drop.
struct TempConfig {
    dir: PathBuf,
    path: PathBuf,
}

impl TempConfig {
    fn new(text: &str) -> TempConfig {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wsgate-config-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wsgate.yaml");
        std::fs::write(&path, text).unwrap();
        TempConfig { dir, path }
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the binary with `args` and `--config config` to completion.
fn run(args: &[&str], config: &Path) -> Output {
    let mut command = common::wsgate_command(args);
    command.arg("--config").arg(config);
    common::run_to_completion(command)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Line 5 names a backend that does not exist.
const UNKNOWN_BACKEND: &str = "\
listeners:
  - bind: \"127.0.0.1:0\"
routes:
  - path_prefix: /echo
    backend: ech
backends:
  echo:
    servers:
      - url: \"ws://127.0.0.1:9001\"
";

/// Line 6 holds a field the schema does not know.
const UNKNOWN_FIELD: &str = "\
listeners:
  - bind: \"127.0.0.1:0\"
routes:
  - path_prefix: /echo
    backend: echo
    colour: blue
backends:
  echo:
    servers:
      - url: \"ws://127.0.0.1:9001\"
";

/// Line 10 has a duration without a unit.
const DURATION_WITHOUT_UNIT: &str = "\
listeners:
  - bind: \"127.0.0.1:0\"
routes:
  - path_prefix: /echo
    backend: echo
backends:
  echo:
    servers:
      - url: \"ws://127.0.0.1:9001\"
    connect_timeout: 30
";

fn assert_names(message: &str, file: &Path, field: &str, line: usize) {
    assert!(message.contains(field), "should name {field}: {message}");
    let place = format!("{}:{line}:", file.display());
    assert!(message.contains(&place), "should name {place}: {message}");
}

#[test]
fn check_names_an_unknown_backend_and_its_line() {
    let config = TempConfig::new(UNKNOWN_BACKEND);
    let output = run(&["check"], &config.path);
    assert!(!output.status.success(), "check accepted a bad config");
    let message = stderr(&output);
    assert_names(&message, &config.path, "routes[0].backend", 5);
    assert!(message.contains("ech"), "{message}");
}

#[test]
fn check_names_an_unknown_field_and_its_line() {
    let config = TempConfig::new(UNKNOWN_FIELD);
    let output = run(&["check"], &config.path);
    assert!(!output.status.success(), "check accepted a bad config");
    assert_names(&stderr(&output), &config.path, "colour", 6);
}

#[test]
fn check_names_a_bad_duration_and_its_line() {
    let config = TempConfig::new(DURATION_WITHOUT_UNIT);
    let output = run(&["check"], &config.path);
    assert!(!output.status.success(), "check accepted a bad config");
    assert_names(
        &stderr(&output),
        &config.path,
        "backends.echo.connect_timeout",
        10,
    );
}

/// A valid file whose backend connects from an address that no host has
/// (192.0.2.0/24 is reserved for documentation).
const FOREIGN_SOURCE_ADDRESS: &str = "\
listeners:
  - bind: \"127.0.0.1:0\"
routes:
  - path_prefix: /echo
    backend: echo
backends:
  echo:
    servers:
      - url: \"ws://127.0.0.1:9001\"
    source_addresses: [127.0.0.2, 192.0.2.1]
";

#[test]
fn run_refuses_a_source_address_of_another_host() {
    let config = TempConfig::new(FOREIGN_SOURCE_ADDRESS);
    // `check` validates the file, which may be meant for another host.
    let output = run(&["check"], &config.path);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = run(&["run"], &config.path);
    assert!(
        !output.status.success(),
        "run started without its source address"
    );
    let message = stderr(&output);
    assert!(
        message.contains("backends.echo.source_addresses: cannot connect from 192.0.2.1: "),
        "{message}"
    );
}

#[test]
fn check_accepts_the_shipped_config() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/wsgate.yaml");
    let output = run(&["check"], &path);
    assert!(
        output.status.success(),
        "config/wsgate.yaml refused: {}",
        stderr(&output)
    );
}

/// `text` with every `cert:` and `key:` value replaced by the test PKI's files.
fn with_test_certificates(text: &str, pki: &common::TestPki) -> String {
    text.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            let indent = &line[..line.len() - trimmed.len()];
            if trimmed.starts_with("cert:") {
                format!("{indent}cert: \"{}\"", pki.cert.display())
            } else if trimmed.starts_with("key:") {
                format!("{indent}key: \"{}\"", pki.key.display())
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn check_accepts_the_example_configs_given_their_certificates() {
    let pki = common::TestPki::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let config = TempConfig::new(&with_test_certificates(&text, &pki));
            let output = run(&["check"], &config.path);
            assert!(
                output.status.success(),
                "{}: {}",
                path.display(),
                stderr(&output)
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no examples in {}", dir.display());
}

#[test]
fn check_names_a_missing_certificate_file() {
    let config = TempConfig::new(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n    tls:\n      cert: missing/cert.pem\n      key: missing/key.pem\n\
         routes:\n  - path_prefix: /\n    backend: b\nbackends:\n  b:\n    servers:\n      - url: \"ws://127.0.0.1:9001\"\n",
    );
    let output = run(&["check"], &config.path);
    assert!(
        !output.status.success(),
        "check accepted a missing certificate"
    );
    let message = stderr(&output);
    assert_names(&message, &config.path, "listeners[0].tls.cert", 4);
    assert!(message.contains("missing/cert.pem"), "{message}");
}

#[test]
fn check_fails_on_a_missing_file() {
    let output = run(&["check"], Path::new("/nonexistent/wsgate.yaml"));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("/nonexistent/wsgate.yaml"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn run_refuses_to_start_with_the_same_message() {
    let config = TempConfig::new(UNKNOWN_BACKEND);
    let checked = stderr(&run(&["check"], &config.path));
    let output = run(&["run"], &config.path);
    assert!(!output.status.success(), "run started on a bad config");
    let message = stderr(&output);
    assert_names(&message, &config.path, "routes[0].backend", 5);
    // The same diagnostic line as `check` prints.
    let line = checked
        .lines()
        .find(|l| l.contains("routes[0].backend"))
        .unwrap();
    assert!(message.contains(line), "run: {message}\ncheck: {checked}");
}

#[test]
fn run_refuses_an_unknown_field() {
    let config = TempConfig::new(UNKNOWN_FIELD);
    let output = run(&["run"], &config.path);
    assert!(!output.status.success(), "run started on a bad config");
    assert_names(&stderr(&output), &config.path, "colour", 6);
}
