//! Shell completions, the man page and the examples in `--help`: all made
//! from the same clap definitions as the parser.

use std::process::Command;

use crate::util::{bin, Scratch};

/// Runs `script` in bash with the completion script sourced, and returns
/// the words bash would offer for `words` (the last one being completed).
fn complete(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let current = words.len() - 1;
    let program = format!(
        "source '{}'\nCOMP_WORDS=({})\nCOMP_CWORD={current}\nCOMP_LINE='{}'\nCOMP_POINT=${{#COMP_LINE}}\n_sluice sluice '{}' '{}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        quoted.join(" "),
        words.join(" "),
        words[current],
        words[current.saturating_sub(1)],
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(program)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completion_parses_and_completes_commands_flags_and_values() {
    let s = Scratch::new();
    let out = s.sluice(&["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    let script = s.path("sluice.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        syntax.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    assert_eq!(complete(&script, &["sluice", "ex"]), vec!["export"]);
    assert_eq!(
        complete(&script, &["sluice", "export", "--fo"]),
        vec!["--format"]
    );
    assert_eq!(
        complete(&script, &["sluice", "export", "r", "--format", ""]),
        vec!["jsonl", "csv", "parquet"]
    );
    assert!(
        complete(&script, &["sluice", "run", "x.jsonl", "--include"])
            .contains(&"--include-item".to_string())
    );
}

#[test]
fn every_shell_gets_a_script_and_an_unknown_one_is_refused() {
    let s = Scratch::new();
    for (shell, marker) in [
        ("zsh", "#compdef sluice"),
        ("fish", "complete -c sluice"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = s.sluice(&["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(marker), "{shell}: {text:.200}");
        assert!(text.contains("include-item"), "{shell} lacks run's flags");
    }
    let bad = s.sluice(&["completions", "tcsh"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn the_man_page_covers_every_command_and_pages_per_command_are_written() {
    let s = Scratch::new();
    let out = s.sluice(&["man"]).output().unwrap();
    assert!(out.status.success());
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.contains(".TH sluice 1"), "{page:.300}");
    for command in ["run", "export", "completions", "serve"] {
        assert!(page.contains(command), "man page lacks {command}");
    }
    let dir = s.path("man1");
    let out = s
        .sluice(&["man", "--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let run_page = std::fs::read_to_string(dir.join("sluice-run.1")).unwrap();
    assert!(run_page.contains("include\\-item"), "{run_page:.400}");
    assert!(
        run_page.contains("Examples:"),
        "examples reach the man page"
    );
}

#[test]
fn every_command_shows_examples_that_parse() {
    // No scratch store here: the test's own time limit.
    let _limit = crate::watchdog::Watchdog::start();
    let help = Command::new(bin()).arg("--help").output().unwrap();
    let commands: Vec<String> = String::from_utf8_lossy(&help.stdout)
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 16, "{commands:?}");
    for command in &commands {
        let out = Command::new(bin())
            .args([command.as_str(), "--help"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let examples: Vec<&str> = text
            .lines()
            .skip_while(|l| *l != "Examples:")
            .filter(|l| l.trim_start().starts_with("sluice "))
            .collect();
        assert!(examples.len() >= 2, "{command} --help: {text}");
        for example in examples {
            // Each example's command line is one the parser accepts: the
            // part before any comment or shell operator, with `--help`
            // added so nothing runs.
            let line = example.split(['#', '>', '|', '&']).next().unwrap();
            let words: Vec<&str> = line
                .split_whitespace()
                .skip(1)
                .filter(|w| *w != "\\")
                .collect();
            let parsed = Command::new(bin())
                .args(&words)
                .arg("--help")
                .output()
                .unwrap();
            assert!(
                parsed.status.success(),
                "{command}: {example:?} does not parse: {}",
                String::from_utf8_lossy(&parsed.stderr)
            );
        }
    }
}
