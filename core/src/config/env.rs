//! `${NAME}` expansion from the environment, on the string values of the parsed
//! YAML only: a secret holding `#`, `: ` or a newline can never change the
//! document's structure, and keys and non-string values are never touched.
//! `$${` is a literal `${`.

use std::collections::HashMap;

use serde_yaml::Value;

use super::error::UnsetVar;

/// Expands every string value below `value` in place; returns the unset variables
/// with the path of each value that names one.
pub(super) fn expand_values(value: &mut Value, env: &HashMap<String, String>) -> Vec<UnsetVar> {
    let mut missing = Vec::new();
    walk(value, &mut String::new(), env, &mut missing);
    missing
}

fn walk(value: &mut Value, path: &mut String, env: &HashMap<String, String>, missing: &mut Vec<UnsetVar>) {
    match value {
        Value::String(s) if s.contains('$') => {
            if let Some(expanded) = expand(s, env, path, missing) {
                *s = expanded;
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(item, path, env, missing);
                path.truncate(len);
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                match k {
                    Value::String(k) => path.push_str(k),
                    other => path.push_str(serde_yaml::to_string(other).unwrap_or_default().trim_end()),
                }
                walk(v, path, env, missing);
                path.truncate(len);
            }
        }
        Value::Tagged(t) => walk(&mut t.value, path, env, missing),
        _ => {}
    }
}

/// `text` with each `${NAME}` replaced; `None` (and `missing` extended) when a
/// variable is unset.
fn expand(text: &str, env: &HashMap<String, String>, path: &str, missing: &mut Vec<UnsetVar>) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut complete = true;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix("${") {
            out.push_str("${");
            rest = stripped;
        } else if let Some((name, tail)) = after.strip_prefix('{').and_then(|b| b.split_once('}')) {
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => {
                    complete = false;
                    missing.push(UnsetVar { path: path.to_string(), name: name.to_string() });
                }
            }
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    complete.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HashMap<String, String> {
        [("X", "y"), ("SECRET", "a: b # not a comment\nc: d")].into_iter().map(|(a, b)| (a.into(), b.into())).collect()
    }

    #[test]
    fn literal_dollar_brace_survives() {
        let mut v = Value::String("$${X} ${X} $5 ${".into());
        assert!(expand_values(&mut v, &env()).is_empty());
        assert_eq!(v, Value::String("${X} y $5 ${".into()));
    }

    #[test]
    fn secrets_cannot_change_the_document() {
        let mut v: Value = serde_yaml::from_str("a: ${SECRET}\nb: [1, '${X}']\n${X}: 2\n").expect("yaml");
        assert!(expand_values(&mut v, &env()).is_empty());
        assert_eq!(v["a"], Value::String("a: b # not a comment\nc: d".into()));
        assert_eq!(v["b"][1], Value::String("y".into()));
        assert_eq!(v["b"][0], Value::Number(1.into()));
        assert!(v.get("${X}").is_some(), "keys are not expanded");
    }

    #[test]
    fn every_unset_variable_is_named_with_its_path() {
        let mut v: Value = serde_yaml::from_str("p:\n  - k: ${A}\n  - { k: '${B}${X}' }\n").expect("yaml");
        let missing = expand_values(&mut v, &env());
        let got: Vec<(String, String)> = missing.into_iter().map(|m| (m.path, m.name)).collect();
        assert_eq!(got, [("p[0].k".to_string(), "A".to_string()), ("p[1].k".to_string(), "B".to_string())]);
    }
}
