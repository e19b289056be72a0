//! `provider = "{{ matrix.provider }}"`: a step whose provider is chosen per
//! unit from its matrix values. Every combination is rendered when the job is
//! loaded, so a value that names no provider (or a template that reads more
//! than the matrix) is an error at the key before anything is sent; each
//! provider it can name keeps its own limits, breakers and dialect.

use toml::Spanned;

use crate::ctx::Ctx;
use crate::model::{MatrixAxis, Provider};
use crate::template::Template;

/// The providers `template` names over every matrix combination (each once,
/// in the order met); what names none is reported.
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
                "{label}: a templated provider may read only matrix values, so that each can be checked before the run: {}",
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
