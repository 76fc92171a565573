//! The `wsgate` binary's log lines: plain text when they go to a file or a
//! pipe (a journal, a log shipper), with no terminal colour codes in them, so
//! that `key=value` fields can be grepped and parsed as written.

mod common;

use std::io::{BufRead, BufReader};

/// Kills the child on drop, so that a failed assertion leaves nothing running.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let child = common::wsgate_command(&["echo", "--listen", "127.0.0.1:0"])
        .spawn()
        .expect("cannot start the wsgate binary");
    let mut running = Running(child);
    let stdout = running.0.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("reading the first log line");
    assert!(
        line.contains("echo server listening"),
        "unexpected first line: {line:?}"
    );
    assert!(
        !line.contains('\u{1b}'),
        "colour codes in a piped log: {line:?}"
    );
    assert!(
        line.contains(" addr=127.0.0.1:"),
        "the field is not written as key=value: {line:?}"
    );
}
