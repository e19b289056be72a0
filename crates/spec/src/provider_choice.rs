//! `provider = "{{ matrix.provider }}"` or `"{{ item.vendor }}"`: a step whose
//! provider is chosen per unit. A template over the matrix alone is rendered
//! for every combination when the job is loaded; one that reads `item` or
//! `index` is rendered for every unit by the input check (`plan`, and `run`
//! before it sends anything). Either way a value that names no provider (or a
//! template that reads more than item, index and matrix) is an error at the
//! key before anything is sent; each provider it can name keeps its own
//! limits, breakers and dialect.

use toml::Spanned;

use crate::ctx::Ctx;
use crate::model::{MatrixAxis, Provider};
use crate::template::Template;

/// What a template may read: each unit's own values, known before the run.
const READABLE: [&str; 3] = ["matrix", "item", "index"];

/// The providers `template` names over every matrix combination (each once,
/// in the order met); what names none is reported. A template that reads the
/// item is checked against the input later (`check` in the engine), so none
/// is returned here: checking the step against every declared provider would
/// refuse jobs whose items never choose the one that does not fit.
pub(crate) fn values<'p>(
    template: &Spanned<String>,
    matrix: &[MatrixAxis],
    label: &str,
    providers: &'p [Provider],
    ctx: &mut Ctx,
) -> Vec<&'p Provider> {
    let Ok(compiled) = Template::standalone("provider", template.get_ref()) else {
        return Vec::new(); // its compile error is reported with the template
    };
    let roots: Vec<String> = compiled
        .variables()
        .iter()
        .map(|v| v.split('.').next().unwrap_or_default().to_owned())
        .collect();
    if let Some(other) = roots.iter().find(|r| !READABLE.contains(&r.as_str())) {
        let message = format!(
            "{label}: a templated provider may read only item, index and matrix values, so that each can be checked before the run; it reads `{other}`"
        );
        ctx.diags.at(template.span(), message);
        return Vec::new();
    }
    if roots.iter().any(|r| r != "matrix") {
        return Vec::new();
    }
    let mut found: Vec<&Provider> = Vec::new();
    let mut reported: Vec<String> = Vec::new();
    for combo in combinations(matrix) {
        let ctx_value = minijinja::Value::from(minijinja::value::Serde(
            serde_json::json!({ "matrix": combo }),
        ));
        let problem = match compiled.render(&ctx_value) {
            Ok(name) => match providers.iter().find(|p| p.name == name.trim()) {
                Some(p) => {
                    if !found.iter().any(|f| f.name == p.name) {
                        found.push(p);
                    }
                    None
                }
                None => Some(format!(
                    "{label}: provider renders {:?} for matrix {}, which is not a defined provider{}; defined: {}",
                    name.trim(),
                    serde_json::Value::Object(combo.clone()),
                    crate::suggest::did_you_mean(name.trim(), providers.iter().map(|p| p.name.as_str())),
                    providers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
                )),
            },
            Err(e) => Some(format!(
                "{label}: a templated provider may read only item, index and matrix values, so that each can be checked before the run: {}",
                e.message
            )),
        };
        if let Some(message) = problem {
            if !reported.contains(&message) {
                ctx.diags.at(template.span(), message.clone());
                reported.push(message);
            }
        }
    }
    found
}

/// Every combination of the matrix's values (one empty one without a matrix).
fn combinations(matrix: &[MatrixAxis]) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let mut out = vec![serde_json::Map::new()];
    for axis in matrix {
        out = out
            .into_iter()
            .flat_map(|combo| {
                axis.values.iter().map(move |v| {
                    let mut next = combo.clone();
                    next.insert(axis.name.clone(), v.clone());
                    next
                })
            })
            .collect();
    }
    out
}
