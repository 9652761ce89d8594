//! The README's walk-through, run as printed: every ```sh block, in order, in one shell
//! (so the variables one block sets serve the next), in a fresh directory whose `docs`
//! is the repository's (the examples read `docs/examples/`). Each command must exit 0,
//! must not print an error answer (`"status":"error"`) unless the README shows one, and
//! must print every line the README shows under it after `#> ` (in order; `…` stands for
//! anything).
//!
//! Three things differ from a reader's run, and only these: `cargo run --release -p
//! tollbook --` is the binary under test (built by cargo for this test, debug or
//! release), the server listens on a free port rather than 8080 (`localhost:8080` in the
//! text becomes that port), and the server's outgoing HTTP (the example webhook's
//! deliveries) goes to a closed loopback port, so nothing leaves the machine.
//! A block right after a `<!-- readme-test: skip (reason) -->` line is not run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SKIP_MARKER: &str = "<!-- readme-test: skip";
const EXPECTED_PREFIX: &str = "#> ";
/// The whole walk-through; it takes seconds, the rest is for a busy machine.
const WALK_THROUGH_TIMEOUT: Duration = Duration::from_secs(300);

/// One command as printed (continuation lines joined) and what it must print.
#[derive(Debug)]
struct Step {
    command: String,
    expected: Vec<String>,
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// The commands of every `sh` block that is not marked to skip.
fn steps(readme: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut lines = readme.lines();
    let mut previous = "";
    while let Some(line) = lines.next() {
        if line.trim_end() != "```sh" {
            if !line.trim().is_empty() {
                previous = line;
            }
            continue;
        }
        let skip = previous.trim_start().starts_with(SKIP_MARKER);
        let mut pending = String::new();
        for line in lines.by_ref() {
            if line.starts_with("```") {
                break;
            }
            if skip {
                continue;
            }
            if !pending.is_empty() {
                pending.push('\n');
                pending.push_str(line);
            } else if let Some(expected) = line.strip_prefix(EXPECTED_PREFIX) {
                steps.last_mut().expect("an expected output follows a command").expected.push(expected.to_owned());
                continue;
            } else if line.trim_start().starts_with('#') || line.trim().is_empty() {
                continue;
            } else {
                pending.push_str(line);
            }
            if !pending.ends_with('\\') {
                steps.push(Step { command: std::mem::take(&mut pending), expected: Vec::new() });
            }
        }
        assert!(pending.is_empty(), "a block ends in a continuation line: {pending}");
        previous = "```";
    }
    steps
}

/// Whether `text` holds the fragments of `pattern` (split at `…`) in order.
fn shows(text: &str, pattern: &str) -> Option<usize> {
    let mut at = 0;
    for fragment in pattern.split('…') {
        at += text[at..].find(fragment)? + fragment.len();
    }
    Some(at)
}

#[test]
fn the_parser_reads_commands_continuations_expectations_and_skips() {
    let readme = "intro\n<!-- readme-test: skip (why) -->\n```sh\nnot run\n```\n\n```sh\n# a comment\nA=1\n\
                  curl one \\\n  two\n#> first…last\n#> more\n```\n```python\nno\n```\n";
    let steps = steps(readme);
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert_eq!(steps[0].command, "A=1");
    assert_eq!(steps[1].command, "curl one \\\n  two");
    assert_eq!(steps[1].expected, ["first…last", "more"]);
    assert!(shows("a first b last c", "first…last").is_some());
    assert!(shows("a last b first c", "first…last").is_none());
}

#[test]
fn the_readme_walk_through_works_as_printed() {
    let readme = std::fs::read_to_string(repository().join("README.md")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let readme = readme.replace("localhost:8080", &format!("localhost:{port}"));
    let steps = steps(&readme);
    assert!(steps.len() > 20, "the README's walk-through: {steps:?}");

    let work = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(repository().join("docs"), work.path().join("docs")).unwrap();
    let outputs = work.path().join("outputs");
    std::fs::create_dir(&outputs).unwrap();
    let binary = env!("CARGO_BIN_EXE_tollbook");
    // The server the README starts in the background ends with the shell, however the
    // shell ends (a timeout sends it SIGTERM).
    let mut script = String::from("trap 'kill $(jobs -p) 2>/dev/null' EXIT\ntrap 'exit 1' TERM\n");
    for (index, step) in steps.iter().enumerate() {
        let command = step.command.replace("cargo run --release -p tollbook --", binary);
        let output = outputs.join(index.to_string());
        let output = output.display();
        script.push_str(&format!("{{ {command}\n}} >{output}.out 2>{output}.err; echo $? >{output}.rc\n"));
    }
    let mut shell = Command::new("bash");
    shell.arg("-c").arg(&script).current_dir(work.path());
    shell.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    for (name, _) in std::env::vars() {
        if name.starts_with("TOLLBOOK_") || name.to_lowercase().ends_with("_proxy") {
            shell.env_remove(name);
        }
    }
    let closed = "http://127.0.0.1:9";
    shell
        .env("TOLLBOOK_LISTEN", format!("127.0.0.1:{port}"))
        .env("TOLLBOOK_LOG", "warn")
        .env("HTTP_PROXY", closed)
        .env("HTTPS_PROXY", closed)
        .env("ALL_PROXY", closed)
        .env("NO_PROXY", "localhost,127.0.0.1")
        .env("no_proxy", "localhost,127.0.0.1");
    let mut child = shell.spawn().unwrap();
    let started = Instant::now();
    let finished = loop {
        if child.try_wait().unwrap().is_some() {
            break true;
        }
        if started.elapsed() > WALK_THROUGH_TIMEOUT {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if !finished {
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        std::thread::sleep(Duration::from_secs(3));
        let _ = child.kill();
    }
    let _ = child.wait();

    let read = |index: usize, suffix: &str| {
        std::fs::read_to_string(outputs.join(format!("{index}.{suffix}"))).unwrap_or_default()
    };
    for (index, step) in steps.iter().enumerate() {
        let (status, stdout, stderr) = (read(index, "rc"), read(index, "out"), read(index, "err"));
        let context = || format!("$ {}\nexit: {status}\nstdout: {stdout}\nstderr: {stderr}", step.command);
        assert!(finished || !status.is_empty(), "the walk-through took over {WALK_THROUGH_TIMEOUT:?}:\n{}", context());
        // The background server's own status is the shell's (0 once started).
        assert_eq!(status.trim(), "0", "the command failed:\n{}", context());
        let error_shown = step.expected.iter().any(|line| line.contains("\"status\":\"error\""));
        assert!(error_shown || !stdout.contains("\"status\":\"error\""), "an error answer:\n{}", context());
        let mut at = 0;
        for expected in &step.expected {
            let Some(end) = shows(&stdout[at..], expected) else {
                panic!("the README says it prints\n{expected}\n{}", context());
            };
            at += end;
        }
    }
}
