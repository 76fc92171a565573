//! The `wsgate` binary runs on jemalloc with the purge settings that keep
//! RSS following the live sessions after a burst of handshakes (background
//! thread, dirty pages returned within a second, no muzzy stage; compiled
//! in from `.cargo/config.toml`). jemalloc prints its effective options
//! when asked to print statistics at exit, which is what is checked here;
//! the memory effect itself is measured by `benches/compare/hold.sh`.

mod common;

#[cfg(not(target_env = "msvc"))]
#[test]
fn jemalloc_runs_with_the_compiled_in_purge_settings() {
    let mut command = common::wsgate_command(&["check", "--config", "config/wsgate.yaml"]);
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("_RJEM_MALLOC_CONF", "stats_print:true");
    let output = common::run_to_completion(command);
    assert!(output.status.success(), "check failed: {output:?}");
    let stats = String::from_utf8_lossy(&output.stderr);
    // Lines read `  opt.dirty_decay_ms: 1000 (arenas.dirty_decay_ms: 1000)`:
    // compare the whole value, so that 10000 (the default) is not taken for
    // 1000.
    let value = |option: &str| {
        stats
            .lines()
            .find_map(|line| line.trim().strip_prefix(option)?.strip_prefix(": "))
            .and_then(|rest| rest.split_whitespace().next())
    };
    for (option, expected) in [
        ("opt.background_thread", "true"),
        ("opt.dirty_decay_ms", "1000"),
        ("opt.muzzy_decay_ms", "0"),
    ] {
        assert_eq!(
            value(option),
            Some(expected),
            "jemalloc's {option}; its statistics:\n{stats}"
        );
    }
}
