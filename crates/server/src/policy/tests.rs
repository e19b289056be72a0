//! The policy on parsed jobs: each capability refused by default with its
//! key, line and flag, allowed by the flag; concurrency defaulted and clamped.

use std::path::{Path, PathBuf};

use super::*;

struct Case {
    dir: tempfile::TempDir,
    store: PathBuf,
    work: PathBuf,
}

impl Case {
    fn new() -> Case {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&store).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        Case { dir, store, work }
    }

    /// Checks `text` (a job file) under `policy`, with files sent in `scratch`.
    fn check(
        &self,
        text: &str,
        policy: &JobPolicy,
        scratch: Option<&Path>,
    ) -> (Job, Result<Vec<String>, ApiError>) {
        let base = scratch.unwrap_or(&self.work);
        let mut job = sluice_spec::parse_str(text, &base.join("job.toml"), &[])
            .unwrap_or_else(|e| panic!("{e}"));
        let shown_from = vec![self.work.clone()];
        let result = confine(
            policy,
            &mut job,
            &Submission {
                text,
                json: false,
                scratch,
                spooled: None,
                store_dir: &self.store,
                shown_from: &shown_from,
            },
        );
        (job, result)
    }
}

const PROVIDER: &str = "[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\n";

fn chat_step() -> &'static str {
    "[[steps]]\nname = \"a\"\nkind = \"chat\"\nprovider = \"p\"\nmodel = \"m\"\nmessages = [{ role = \"user\", content = \"hi\" }]\n"
}

fn refusals(e: &ApiError) -> Vec<serde_json::Value> {
    assert_eq!((e.status.as_u16(), e.code), (403, "forbidden_job"), "{e}");
    e.details.as_ref().unwrap().as_array().unwrap().clone()
}

#[test]
fn a_command_step_is_refused_at_its_kind_unless_commands_are_allowed() {
    let c = Case::new();
    std::fs::write(c.work.join("items.jsonl"), "{}\n").unwrap();
    let text = "name = \"x\"\n[input]\npath = \"items.jsonl\"\n\n[[steps]]\nname = \"run\"\nkind = \"command\"\ncommand = [\"touch\", \"/tmp/pwned\"]\n";
    let mut policy = JobPolicy::default();
    policy.allow_dir(&c.work).unwrap();
    let (_, result) = c.check(text, &policy, None);
    let e = result.unwrap_err();
    let r = refusals(&e);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["key"], "steps[0].kind");
    assert_eq!(r[0]["line"], 7);
    assert_eq!(r[0]["flag"], "--allow-commands");
    assert!(
        e.message
            .starts_with("job.toml:7:1: step \"run\" is a command step"),
        "{}",
        e.message
    );
    assert!(e.message.contains("nothing was run"), "{}", e.message);
    policy.allow_commands = true;
    assert!(c.check(text, &policy, None).1.is_ok());
}

#[test]
fn files_outside_the_job_are_refused_unless_their_directory_is_allowed() {
    let c = Case::new();
    std::fs::write(c.work.join("items.jsonl"), "{}\n").unwrap();
    let inside = format!("[input]\npath = \"items.jsonl\"\n{PROVIDER}{}", chat_step());
    let (_, result) = c.check(&inside, &JobPolicy::default(), None);
    let e = result.unwrap_err();
    let r = refusals(&e);
    assert_eq!(r[0]["key"], "input.path");
    assert_eq!(r[0]["line"], 2);
    assert_eq!(
        r[0]["flag"], "--allow-dir .",
        "shown relative to the server's directory"
    );
    assert!(
        !e.message.contains(c.work.to_str().unwrap()),
        "no server path: {}",
        e.message
    );
    let mut policy = JobPolicy::default();
    policy.allow_dir(&c.work).unwrap();
    assert!(c.check(&inside, &policy, None).1.is_ok());

    for text in [
        format!(
            "[input]\npath = \"/etc/passwd\"\nformat = \"csv\"\n{PROVIDER}{}",
            chat_step()
        ),
        format!(
            "[input]\npath = \"../store/x.jsonl\"\n{PROVIDER}{}",
            chat_step()
        ),
        format!("[input]\nglob = \"/etc/passw*\"\n{PROVIDER}{}", chat_step()),
        format!("[input]\nglob = \"sub/../../*\"\n{PROVIDER}{}", chat_step()),
        format!("[input]\npath = \"-\"\n{PROVIDER}{}", chat_step()),
    ] {
        let (_, result) = c.check(&text, &policy, None);
        let e = result.unwrap_err();
        let r = refusals(&e);
        assert!(
            r[0]["key"] == "input.path" || r[0]["key"] == "input.glob",
            "{text}: {r:?}"
        );
        assert_eq!(r[0]["line"], 2, "{text}");
    }
}

#[test]
fn files_sent_with_the_job_are_its_own() {
    let c = Case::new();
    let scratch = c.store.join("uploads/s/r");
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::write(scratch.join("a.png"), "x").unwrap();
    let text = format!(
        "[input]\nglob = \"*.png\"\n{PROVIDER}[[steps]]\nname = \"up\"\nkind = \"http\"\nprovider = \"p\"\npath = \"/x\"\nupload = {{ file = \"{{{{ item.path }}}}\" }}\nsave = \"file\"\n"
    );
    let (job, result) = c.check(&text, &JobPolicy::default(), Some(&scratch));
    assert_eq!(result.unwrap(), Vec::<String>::new());
    assert_eq!(
        job.output.dir,
        scratch.join("output"),
        "saved files stay with it"
    );
}

#[test]
fn writes_go_to_the_store_or_an_allowed_directory_never_into_the_store_itself() {
    let c = Case::new();
    let base = format!(
        "[input]\nurl = \"http://127.0.0.1:9/items\"\n{PROVIDER}{}",
        chat_step()
    );
    let (job, result) = c.check(&base, &JobPolicy::default(), None);
    assert!(result.is_ok());
    assert_eq!(
        job.output.dir,
        c.store.join("outputs"),
        "not the server's workdir"
    );

    let out = c.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let text = format!(
        "{base}[output]\npath = \"{}/r.jsonl\"\ndir = \"{}\"\n",
        out.display(),
        out.display()
    );
    let (_, result) = c.check(&text, &JobPolicy::default(), None);
    let r = refusals(&result.unwrap_err());
    let keys: Vec<_> = r.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["output.path", "output.dir"]);
    let mut policy = JobPolicy::default();
    policy.allow_dir(&out).unwrap();
    assert!(c.check(&text, &policy, None).1.is_ok());

    // An allowed directory holding the store still cannot reach into it.
    let mut wide = JobPolicy::default();
    wide.allow_dir(c.dir.path()).unwrap();
    let text = format!(
        "{base}[output]\npath = \"{}/sluice.db\"\n",
        c.store.display()
    );
    let r = refusals(&c.check(&text, &wide, None).1.unwrap_err());
    assert_eq!(r[0]["key"], "output.path");
}

#[test]
fn environment_variables_need_the_operators_leave() {
    let c = Case::new();
    let text = format!(
        "env = [\"HOME\"]\n[input]\nurl = \"http://127.0.0.1:9/items\"\n[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\napi_key_env = \"SERVER_DB_PASSWORD\"\n{}[webhook]\nurl = \"http://127.0.0.1:9/h\"\nsecret_env = \"HOOK_KEY\"\n",
        chat_step()
    );
    let (_, result) = c.check(&text, &JobPolicy::default(), None);
    let r = refusals(&result.unwrap_err());
    let got: Vec<_> = r
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap(),
                r["line"].as_u64().unwrap(),
                r["flag"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("env[0]", 1, "--allow-env HOME"),
            (
                "providers.p.api_key_env",
                6,
                "--allow-env SERVER_DB_PASSWORD"
            ),
            ("webhook.secret_env", 15, "--allow-env HOOK_KEY"),
        ]
    );
    let policy = JobPolicy {
        allow_env: vec![
            "HOME".into(),
            "SERVER_DB_PASSWORD".into(),
            "HOOK_KEY".into(),
        ],
        ..JobPolicy::default()
    };
    assert!(c.check(&text, &policy, None).1.is_ok());
}

#[test]
fn concurrency_is_defaulted_and_clamped_with_a_notice() {
    let c = Case::new();
    let base = format!(
        "[input]\nurl = \"http://127.0.0.1:9/items\"\n{PROVIDER}{}",
        chat_step()
    );
    let policy = JobPolicy {
        default_concurrency: Some(2),
        max_concurrency: Some(4),
        ..JobPolicy::default()
    };
    let (job, result) = c.check(&base, &policy, None);
    assert_eq!(result.unwrap(), Vec::<String>::new());
    assert_eq!((job.concurrency, job.concurrency_set), (2, true));
    let (job, result) = c.check(&format!("concurrency = 64\n{base}"), &policy, None);
    let notices = result.unwrap();
    assert_eq!(job.concurrency, 4);
    assert!(
        notices[0].contains("concurrency 64 asked, 4 allowed"),
        "{notices:?}"
    );
    assert!(notices[0].contains("--max-concurrency"), "{notices:?}");
    let (job, result) = c.check(&format!("concurrency = 3\n{base}"), &policy, None);
    assert_eq!((job.concurrency, result.unwrap().len()), (3, 0));
    // Only a cap: a job that sets nothing gets the cap, fixed.
    let cap = JobPolicy {
        max_concurrency: Some(4),
        ..JobPolicy::default()
    };
    let (job, _) = c.check(&base, &cap, None);
    assert_eq!((job.concurrency, job.concurrency_set), (4, true));
}
