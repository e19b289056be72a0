//! The examples shown after each command's `--help` (and in the man page):
//! real command lines, two or three per command.

pub(crate) const RUN: &str = "\
Examples:
  # quick mode: one request per line, to a local OpenAI-compatible server
  sluice run requests.jsonl --url http://127.0.0.1:8080/v1/chat/completions \\
      --concurrency 200 --rpm 3000 --out results.jsonl
  # the OpenAI API with $OPENAI_API_KEY (or $OPENAI_BASE_URL's server); rerun to resume
  sluice run prompts.jsonl --tpm 1000000 --out answers.parquet --include-item
  # a job file, with its matrix set from the command line
  sluice run eval.toml --set matrix.model=gpt-4o,qwen-72b --set matrix.run=1,2,3";

pub(crate) const PLAN: &str = "\
Examples:
  sluice plan eval.toml
  sluice plan eval.toml --set matrix.model=a,b --set providers.openai.rpm=600 --json";

pub(crate) const RETRY: &str = "\
Examples:
  sluice retry eval-1                # every failed unit
  sluice retry eval-1 --step judge   # only the failures of step `judge`";

pub(crate) const STATUS: &str = "\
Examples:
  sluice status                      # the latest run in .sluice/sluice.db
  sluice status requests-2 --json
  sluice status --store postgres://sluice@db/sluice";

pub(crate) const RUNS: &str = "\
Examples:
  sluice runs
  sluice runs --json --store .sluice/sluice.db";

pub(crate) const EXPORT: &str = "\
Examples:
  sluice export requests-1 --out results.csv
  sluice export eval-1 --out eval.parquet --include-item     # typed columns, item fields
  sluice export requests-1 --flat --include-item | head -3   # flat JSON objects for data frames";

pub(crate) const PAUSE: &str = "\
Examples:
  sluice pause eval-1
  sluice pause eval-1 --store postgres://sluice@db/sluice";

pub(crate) const RESUME: &str = "\
Examples:
  sluice resume eval-1
  sluice resume eval-1 --store postgres://sluice@db/sluice";

pub(crate) const CANCEL: &str = "\
Examples:
  sluice cancel eval-1               # ends interrupted; `sluice run` again finishes it
  sluice cancel eval-1 --store postgres://sluice@db/sluice";

pub(crate) const MOCK: &str = "\
Examples:
  sluice mock --port 0                                   # prints listening on 127.0.0.1:PORT
  sluice mock --port 8080 --latency-ms 100 --rpm 600     # a slow, rate-limited provider
  sluice mock --fail-rate 0.05 --reset-rate 0.01 --seed 7";

pub(crate) const DEMO: &str = "\
Examples:
  sluice demo
  sluice demo --items 20 --serve     # then open the dashboard URL it prints";

pub(crate) const WORKER: &str = "\
Examples:
  sluice worker --store postgres://sluice@db/sluice
  sluice worker --store postgres://sluice@db/sluice --run eval-1 --exit-when-idle";

pub(crate) const BENCH: &str = "\
Examples:
  sluice bench --quick
  sluice bench --only latency rpm --json";

pub(crate) const SERVE: &str = "\
Examples:
  sluice serve
  sluice serve --bind 127.0.0.1:9000 --store postgres://sluice@db/sluice";

pub(crate) const COMPLETIONS: &str = "\
Examples:
  sluice completions bash > ~/.local/share/bash-completion/completions/sluice
  sluice completions zsh > \"${fpath[1]}/_sluice\"
  sluice completions fish > ~/.config/fish/completions/sluice.fish";

pub(crate) const MAN: &str = "\
Examples:
  sluice man > sluice.1 && man ./sluice.1
  sluice man --dir /usr/local/share/man/man1   # sluice.1, sluice-run.1, ...";
