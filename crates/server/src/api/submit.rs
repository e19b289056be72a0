//! Reading a submitted run: a job file (TOML) as the body, or JSON with the
//! same keys as a job file plus inline `items` (and the shorthands `provider`
//! and `step` for a one-provider, one-step job). Either way it is validated
//! by sluice-spec, so problems come back as `job.toml:LINE:COL: message`.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value as Json};
use sluice_spec::Job;

use super::super::error::{ApiError, ApiResult};
use crate::leftovers::Leftovers;
use crate::policy::{JobPolicy, Submission};
use crate::runner::SavedJob;

/// The name problems in a submitted job file are reported under.
const SHOWN_AS: &str = "job.toml";

/// 415 unless the body is a job file (`application/toml`), the JSON form
/// (`application/json`) or a form (`multipart/form-data`): a browser can
/// send none of these to another site without a preflight, which the
/// server refuses for pages of other sites.
pub(crate) fn check_type(content_type: Option<&str>) -> ApiResult<()> {
    let essence = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if matches!(
        essence.as_str(),
        "application/toml" | "application/json" | "multipart/form-data"
    ) {
        return Ok(());
    }
    let sent = if essence.is_empty() {
        "no Content-Type".to_owned()
    } else {
        format!("Content-Type {essence}")
    };
    Err(ApiError::new(
        axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!(
            "a run is submitted as application/toml (a job file), application/json or multipart/form-data, not with {sent}; e.g. curl -H 'content-type: application/toml' --data-binary @job.toml"
        ),
    ))
}

/// Whether the body is the JSON form (by its content type).
pub(crate) fn is_json(content_type: Option<&str>) -> bool {
    content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .is_some_and(|c| c.eq_ignore_ascii_case("application/json") || c.ends_with("+json"))
}

/// A job as submitted, held to the server's policy.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) job: Job,
    /// What to keep so it can be resumed.
    pub(crate) saved: SavedJob,
    /// What the run's view tells about how the server adjusted it.
    pub(crate) notices: Vec<String>,
    /// The files written for it, removed unless its run opens.
    pub(crate) written: Leftovers,
}

/// The job a body describes, held to `policy` (see [`crate::policy`]). Its
/// relative paths resolve in `uploads` (the files sent with it), else in
/// `workdir`; inline items are spooled to `spool_dir`, the job kept beside.
pub(crate) fn parse(
    body: &[u8],
    json: bool,
    workdir: &Path,
    spool_dir: &Path,
    uploads: Option<&Path>,
    policy: &JobPolicy,
) -> ApiResult<Parsed> {
    let base = uploads.unwrap_or(workdir);
    // Dropped on every early return below: a refused submission leaves no file.
    let mut written = Leftovers::default();
    let (text, spooled) = if json {
        json_to_toml(body, spool_dir, &mut written)?
    } else {
        let text = std::str::from_utf8(body)
            .map_err(|e| {
                ApiError::bad_request(
                    "invalid_body",
                    format!("the job file is not UTF-8 text ({e}); send TOML, or JSON with Content-Type: application/json"),
                )
            })?
            .to_owned();
        (text, None)
    };
    if text.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the body is empty; send a job file (TOML) or JSON with items and a step",
        ));
    }
    let mut job = sluice_spec::parse_str(&text, &base.join(SHOWN_AS), &[]).map_err(|e| {
        let mut error = ApiError::invalid_job(e, base);
        if json {
            // Positions are in the job file the JSON became: show it.
            let problems = error.details.take().unwrap_or(Json::Null);
            error.details = Some(serde_json::json!({ "problems": problems, "job_toml": text }));
        }
        error
    })?;
    let store_dir = spool_dir.parent().unwrap_or(spool_dir);
    let store_dir = std::path::absolute(store_dir).unwrap_or(store_dir.to_path_buf());
    let shown_from: Vec<PathBuf> = uploads
        .into_iter()
        .map(Path::to_path_buf)
        .chain([workdir.to_path_buf()])
        .collect();
    let notices = crate::policy::confine(
        policy,
        &mut job,
        &Submission {
            text: &text,
            json,
            scratch: uploads,
            spooled: spooled.as_deref(),
            store_dir: &store_dir,
            shown_from: &shown_from,
        },
    )?;
    // Each submission is its own job (a new run, found again by this path on
    // resume), named after the job and a hash of the text and the time.
    let nonce = xxhash_rust::xxh3::xxh3_64(
        format!(
            "{text}{}{:?}",
            sluice_engine::now_ms(),
            std::thread::current().id()
        )
        .as_bytes(),
    );
    // The job file is also kept on disk beside the spooled inputs: on a
    // shared store the run's definition is read from it for the workers
    // (relative input paths then resolve against that directory: use
    // absolute paths or inline items for runs other machines work on).
    let kept = spool_dir
        .parent()
        .unwrap_or(spool_dir)
        .join("jobs")
        .join(format!("{}.{nonce:016x}.toml", job.name));
    if let Some(dir) = kept.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ApiError::internal("keeping the job", e))?;
    }
    written.add(kept.clone());
    std::fs::write(&kept, &text).map_err(|e| ApiError::internal("keeping the job", e))?;
    job.path = std::path::absolute(&kept).unwrap_or(kept);
    let saved = SavedJob {
        text,
        shown_as: SHOWN_AS.into(),
        path: job.path.clone(),
        uploads: uploads.map(Path::to_path_buf),
        spooled,
    };
    Ok(Parsed {
        job,
        saved,
        notices,
        written,
    })
}

/// The JSON form as a job file: `items` spooled to a JSONL file that
/// `[input] path` names (returned too), `provider` as `[providers.default]`,
/// `step` as the one `[[steps]]` entry (named `main`, on that provider
/// unless it names one). An items file it creates is added to `written`.
fn json_to_toml(
    body: &[u8],
    spool_dir: &Path,
    written: &mut Leftovers,
) -> ApiResult<(String, Option<PathBuf>)> {
    let value: Json = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!(
                "the body is not valid JSON: {e} (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    let Json::Object(mut doc) = value else {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the body must be a JSON object: {\"items\": [...], \"provider\": {...}, \"step\": {...}}",
        ));
    };
    let mut spooled = None;
    if let Some(items) = doc.remove("items") {
        let Json::Array(items) = items else {
            return Err(ApiError::bad_request(
                "invalid_json",
                "`items` must be an array of objects",
            ));
        };
        if doc.contains_key("input") {
            return Err(ApiError::bad_request(
                "invalid_json",
                "give either `items` or `input`, not both",
            ));
        }
        let path = spool(&items, spool_dir, written)?;
        spooled = Some(PathBuf::from(&path));
        let mut input = Map::new();
        input.insert("path".into(), Json::String(path));
        if let Some(id) = doc.remove("id") {
            input.insert("id".into(), id);
        }
        doc.insert("input".into(), Json::Object(input));
    }
    if let Some(provider) = doc.remove("provider") {
        let mut providers = match doc.remove("providers") {
            Some(Json::Object(p)) => p,
            _ => Map::new(),
        };
        providers.insert("default".into(), provider);
        doc.insert("providers".into(), Json::Object(providers));
    }
    if let Some(step) = doc.remove("step") {
        let Json::Object(mut step) = step else {
            return Err(ApiError::bad_request(
                "invalid_json",
                "`step` must be an object, e.g. {\"kind\": \"chat\", \"model\": \"m\", \"messages\": [...]}",
            ));
        };
        step.entry("name")
            .or_insert_with(|| Json::String("main".into()));
        let single_provider = doc
            .get("providers")
            .and_then(Json::as_object)
            .filter(|p| p.len() == 1)
            .and_then(|p| p.keys().next().cloned());
        if let Some(name) = single_provider {
            step.entry("provider").or_insert(Json::String(name));
        }
        doc.insert("steps".into(), Json::Array(vec![Json::Object(step)]));
    }
    doc.entry("name")
        .or_insert_with(|| Json::String("api".into()));
    let table: toml::Table = to_toml(&Json::Object(doc), "")?
        .try_into()
        .map_err(|e| ApiError::bad_request("invalid_json", format!("{e}")))?;
    let text = toml::to_string(&table).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("the job cannot be written as a job file: {e}"),
        )
    })?;
    Ok((text, spooled))
}

/// JSON → TOML values; `null` has no TOML form and is refused with its place.
fn to_toml(v: &Json, at: &str) -> ApiResult<toml::Value> {
    Ok(match v {
        Json::Null => {
            return Err(ApiError::bad_request(
                "invalid_json",
                format!(
                    "null at {} has no meaning in a job; leave the key out",
                    if at.is_empty() { "/" } else { at }
                ),
            ))
        }
        Json::Bool(b) => toml::Value::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => toml::Value::String(s.clone()),
        Json::Array(a) => toml::Value::Array(
            a.iter()
                .enumerate()
                .map(|(i, v)| to_toml(v, &format!("{at}/{i}")))
                .collect::<ApiResult<_>>()?,
        ),
        Json::Object(o) => {
            let mut t = toml::Table::new();
            for (k, v) in o {
                t.insert(k.clone(), to_toml(v, &format!("{at}/{k}"))?);
            }
            toml::Value::Table(t)
        }
    })
}

/// Writes inline items as JSONL under the store's directory; returns the path.
/// The file is named by its content, so an earlier submission of the same
/// items may have written it already: only a file this call creates is
/// added to `written` (a refusal must not take another run's items).
fn spool(items: &[Json], dir: &Path, written: &mut Leftovers) -> ApiResult<String> {
    if items.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_json",
            "`items` is empty; give at least one item",
        ));
    }
    let mut text = String::new();
    for (i, item) in items.iter().enumerate() {
        if !item.is_object() {
            return Err(ApiError::bad_request(
                "invalid_json",
                format!("items/{i} is not an object; every item is a JSON object"),
            ));
        }
        text.push_str(&item.to_string());
        text.push('\n');
    }
    std::fs::create_dir_all(dir).map_err(|e| ApiError::internal("keeping the items", e))?;
    let hash = xxhash_rust::xxh3::xxh3_64(text.as_bytes());
    let path = dir.join(format!("api-{hash:016x}.jsonl"));
    if !path.exists() {
        // Its own temporary name: submissions are parsed on several threads.
        static TMP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = TMP.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(
            "api-{hash:016x}.jsonl.tmp{}-{n}",
            std::process::id()
        ));
        // A hard link creates the file only if no one else did meanwhile, so
        // exactly one submission owns it.
        let created = std::fs::write(&tmp, &text).and_then(|_| {
            let linked = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        });
        if created.map_err(|e| ApiError::internal("keeping the items", e))? {
            written.add(path.clone());
        }
    }
    let absolute = std::path::absolute(&path).unwrap_or(path);
    Ok(absolute.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_form_becomes_a_one_step_job() {
        let dir = tempfile::tempdir().unwrap();
        let body = serde_json::json!({
            "items": [{"q": "a"}, {"q": "b"}],
            "provider": {"base_url": "http://127.0.0.1:9/v1", "concurrency": 4},
            "step": {"kind": "chat", "model": "m", "messages": [{"role": "user", "content": "{{ item.q }}"}]},
        });
        let Parsed {
            job,
            saved,
            written,
            ..
        } = parse(
            body.to_string().as_bytes(),
            true,
            dir.path(),
            &dir.path().join("inputs"),
            None,
            &JobPolicy::default(),
        )
        .unwrap();
        // As when its run opens (dropped, the files would go).
        written.keep();
        assert_eq!(job.name, "api");
        assert_eq!(job.steps[0].name, "main");
        assert_eq!(job.steps[0].provider.as_deref(), Some("default"));
        assert_eq!(job.providers[0].concurrency, Some(4));
        assert!(saved.text.contains("[providers.default]"));
        assert_eq!(
            std::fs::read_to_string(&job.path).unwrap(),
            saved.text,
            "kept on disk"
        );
        let reloaded = saved.load(dir.path()).unwrap();
        assert_eq!(reloaded.path, job.path);
    }

    #[test]
    fn a_job_sent_with_files_resolves_in_their_directory_until_it_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = dir.path().join("uploads/run");
        std::fs::create_dir_all(&uploads).unwrap();
        let body = "name = \"img\"\n[input]\nglob = \"*.png\"\n[providers.p]\nbase_url = \"http://127.0.0.1:9\"\n[[steps]]\nname = \"s\"\nkind = \"http\"\nprovider = \"p\"\npath = \"/x\"\nupload = { file = \"{{ item.path }}\" }\n";
        let Parsed {
            job,
            saved,
            written,
            ..
        } = parse(
            body.as_bytes(),
            false,
            dir.path(),
            &dir.path().join("inputs"),
            Some(&uploads),
            &JobPolicy::default(),
        )
        .unwrap();
        written.keep();
        let sluice_spec::InputSource::Glob { pattern } = &job.input.source else {
            panic!("{:?}", job.input.source);
        };
        assert!(pattern.starts_with(uploads.to_str().unwrap()), "{pattern}");
        assert!(saved.load(dir.path()).is_ok());
        std::fs::remove_dir_all(&uploads).unwrap();
        let e = saved.load(dir.path()).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (409, "conflict"));
        assert!(
            e.message.contains("submit the batch again"),
            "{}",
            e.message
        );
        // A bad job sent with files names no server path either.
        let e = parse(
            b"name = \"x\"\n[input]\nglob = \"[\"\n",
            false,
            dir.path(),
            &dir.path().join("inputs"),
            Some(&dir.path().join("uploads")),
            &JobPolicy::default(),
        )
        .unwrap_err();
        assert!(e.message.starts_with("job.toml:"), "{}", e.message);
        assert!(
            !e.message.contains(dir.path().to_str().unwrap()),
            "{}",
            e.message
        );
    }

    #[test]
    fn toml_problems_name_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let body =
            "name = \"x\"\n[input]\npath = \"a.jsonl\"\n[[steps]]\nname = \"s\"\nkind = \"nope\"\n";
        let e = parse(
            body.as_bytes(),
            false,
            dir.path(),
            &dir.path().join("inputs"),
            None,
            &JobPolicy::default(),
        )
        .unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(e.code, "invalid_job");
        assert!(e.message.starts_with("job.toml:6:"), "{}", e.message);
        let details = e.details.unwrap();
        assert_eq!(details[0]["line"], 6);
    }

    #[test]
    fn json_problems_come_with_the_job_file_they_refer_to() {
        let dir = tempfile::tempdir().unwrap();
        let body = br#"{"items":[{"q":"a"}],"step":{"kind":"chat","model":"m","messages":[]}}"#;
        let e = parse(
            body,
            true,
            dir.path(),
            &dir.path().join("inputs"),
            None,
            &JobPolicy::default(),
        )
        .unwrap_err();
        assert_eq!(e.code, "invalid_job");
        let details = e.details.unwrap();
        let toml = details["job_toml"].as_str().unwrap();
        assert!(toml.contains("[[steps]]"), "{toml}");
        let line = details["problems"][0]["line"].as_u64().unwrap() as usize;
        assert!(line >= 1 && line <= toml.lines().count(), "{details}");
    }

    #[test]
    fn json_nulls_and_bad_items_are_refused_with_their_place() {
        let dir = tempfile::tempdir().unwrap();
        let e = parse(
            br#"{"items":[{"a":1}],"concurrency":null}"#,
            true,
            dir.path(),
            dir.path(),
            None,
            &JobPolicy::default(),
        )
        .unwrap_err();
        assert!(e.message.contains("/concurrency"), "{}", e.message);
        let e = parse(
            br#"{"items":[1]}"#,
            true,
            dir.path(),
            &dir.path().join("inputs"),
            None,
            &JobPolicy::default(),
        )
        .unwrap_err();
        assert!(e.message.contains("items/0"), "{}", e.message);
        let e = parse(
            b"{not json",
            true,
            dir.path(),
            &dir.path().join("inputs"),
            None,
            &JobPolicy::default(),
        )
        .unwrap_err();
        assert_eq!(e.code, "invalid_json");
    }
}
