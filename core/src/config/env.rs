//! `${NAME}` expansion of the config text from the environment.

use std::collections::HashMap;

use super::error::ConfigError;

/// Replaces `${NAME}` with the variable's value. `$${` is a literal `${`.
pub(super) fn expand(text: &str, env: &HashMap<String, String>) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    for (line_index, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(stripped) = after.strip_prefix("${") {
                out.push_str("${");
                rest = stripped;
            } else if let Some(body) = after.strip_prefix('{') {
                let Some(end) = body.find('}') else {
                    out.push('$');
                    rest = after;
                    continue;
                };
                let name = &body[..end];
                let value =
                    env.get(name).ok_or_else(|| ConfigError::Env { line: line_index + 1, name: name.to_string() })?;
                out.push_str(value);
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
    }
    Ok(out)
}
