//! Edits `gatekeeper.yaml` in place, changing only the lines it must and keeping
//! comments and layout (`gatekeeper keys revoke`).

use std::path::Path;

use anyhow::{bail, Context as _};

use super::error::ConfigError;
use super::Config;
use crate::keys::JTI_BYTES_MAX;

/// What [`revoke_in_file`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// The key id was already in `keys.revoked`; the file is untouched.
    Already,
    /// The key id was added.
    Added,
}

/// Adds `key_id` to `keys.revoked` of the config file at `path`. The edited text is
/// checked by loading it under a temporary name beside the file, then renamed over
/// it: a bad edit never replaces a good config.
pub fn revoke_in_file(path: &Path, key_id: &str) -> anyhow::Result<Revoked> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let Some(edited) = add_revocation(&text, key_id).with_context(|| format!("{}", path.display()))? else {
        return Ok(Revoked::Already);
    };
    // Validate the edited file under a temporary name beside it, then rename over the
    // original: a bad edit never replaces a good config.
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.revoke-{}", std::process::id()));
    // 0600 from the first byte: the config may hold secrets; the original's mode is
    // applied before the rename.
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("{}: cannot create", tmp.display()))?;
        f.write_all(edited.as_bytes()).with_context(|| format!("{}: cannot write", tmp.display()))?;
    }
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&tmp, meta.permissions());
    }
    // Only `keys` changed; secrets used elsewhere need not be set here.
    match Config::load_sections(&tmp, Some(&["keys"])) {
        Ok(_) => {}
        Err(ConfigError::Env { missing }) => {
            let names: Vec<&str> = missing.iter().map(|m| m.name.as_str()).collect();
            eprintln!("warning: {} not set here, so the edited config was checked only as YAML", names.join(", "));
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            bail!("{}: the config would not load after the edit: {e}", path.display());
        }
    }
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot replace", path.display()))?;
    Ok(Revoked::Added)
}

/// Whether `id` can be written into YAML as a plain scalar.
fn plain_yaml_ok(id: &str) -> bool {
    let keyword =
        matches!(id.to_ascii_lowercase().as_str(), "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n");
    let first_ok = id.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok && !keyword
}

/// `id` as it is written into the file.
fn yaml_scalar(id: &str) -> String {
    if plain_yaml_ok(id) {
        id.to_string()
    } else {
        format!("\"{id}\"")
    }
}

/// Splits `text` into (value, comment) at a ` #` outside quotes.
fn split_comment(text: &str) -> (&str, &str) {
    let mut quote: Option<char> = None;
    let mut prev_space = true;
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && prev_space => return (text[..i].trim_end(), &text[i..]),
            None => {}
        }
        prev_space = c.is_whitespace();
    }
    (text.trim_end(), "")
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_blank_or_comment(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// Adds `id` to `keys.revoked` in the YAML `text`, editing only the lines it must.
/// `Ok(None)` when `id` is already revoked.
pub fn add_revocation(text: &str, id: &str) -> anyhow::Result<Option<String>> {
    if id.is_empty() || id.len() > JTI_BYTES_MAX {
        bail!("key id must be 1 to {JTI_BYTES_MAX} bytes");
    }
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) {
        bail!("key id `{id}` has characters other than letters, digits, `-`, `_`, `.`, `:`");
    }
    // The YAML's own view first: already revoked means nothing to do.
    let doc: serde_yaml::Value = serde_yaml::from_str(text).context("not valid YAML")?;
    let keys = doc.get("keys");
    if keys.is_none_or(serde_yaml::Value::is_null) {
        bail!("no `keys:` section; add one with an issuer (see `gatekeeper keys gen-issuer`) first");
    }
    if let Some(list) = keys.and_then(|k| k.get("revoked")).and_then(|r| r.as_sequence()) {
        if list.iter().any(|v| v.as_str() == Some(id)) {
            return Ok(None);
        }
    }

    let eol = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let keys_at = lines
        .iter()
        .position(|l| l.starts_with("keys:"))
        .context("`keys:` must be a top-level key at the start of a line")?;
    let (after_keys, _) = split_comment(lines[keys_at].get("keys:".len()..).unwrap_or(""));
    if !after_keys.trim().is_empty() {
        bail!("`keys:` is written in flow style (`keys: {{ … }}`); add `{id}` to its `revoked` list by hand");
    }
    // The keys block: following lines that are indented, blank or comments.
    let block_end = (keys_at + 1..lines.len())
        .find(|&i| !is_blank_or_comment(&lines[i]) && indent_of(&lines[i]) == 0)
        .unwrap_or(lines.len());
    let child_indent = (keys_at + 1..block_end)
        .find(|&i| !is_blank_or_comment(&lines[i]))
        .map(|i| indent_of(&lines[i]))
        .context("`keys:` has no entries")?;
    let revoked_at = (keys_at + 1..block_end)
        .find(|&i| indent_of(&lines[i]) == child_indent && lines[i].trim_start().starts_with("revoked:"));
    let pad = " ".repeat(child_indent);
    let item = yaml_scalar(id);

    let Some(at) = revoked_at else {
        lines.insert(keys_at + 1, format!("{pad}revoked: [{item}]"));
        return Ok(Some(lines.join(eol) + eol));
    };
    let line = lines[at].clone();
    let rest = line.trim_start().get("revoked:".len()..).unwrap_or("");
    let (value, comment) = split_comment(rest);
    let value = value.trim();
    let comment = if comment.is_empty() { String::new() } else { format!(" {comment}") };
    if let Some(inner) = value.strip_prefix('[') {
        let Some(inner) = inner.strip_suffix(']') else {
            bail!("`keys.revoked` spans several lines in flow style; add `{id}` by hand");
        };
        let inner = inner.trim();
        let items = if inner.is_empty() { item } else { format!("{inner}, {item}") };
        lines[at] = format!("{pad}revoked: [{items}]{comment}");
    } else if value.is_empty() || value == "~" || value == "null" {
        // A block list follows (items indented, or at the key's own indent), or nothing.
        let mut last_item = None;
        let mut item_indent = None;
        for (i, l) in lines.iter().enumerate().take(block_end).skip(at + 1) {
            if is_blank_or_comment(l) {
                continue;
            }
            let t = l.trim_start();
            let ind = indent_of(l);
            if (t == "-" || t.starts_with("- ")) && ind >= child_indent {
                item_indent.get_or_insert(ind);
                last_item = Some(i);
            } else if ind <= child_indent {
                break;
            }
        }
        match (last_item, item_indent) {
            (Some(last), Some(ind)) => {
                // Continuation lines of the last item (deeper indent) stay with it.
                let mut insert_at = last + 1;
                while insert_at < block_end
                    && !is_blank_or_comment(&lines[insert_at])
                    && indent_of(&lines[insert_at]) > ind
                {
                    insert_at += 1;
                }
                lines.insert(insert_at, format!("{}- {item}", " ".repeat(ind)));
            }
            _ => lines[at] = format!("{pad}revoked: [{item}]{comment}"),
        }
    } else {
        bail!("`keys.revoked` is not a list");
    }
    Ok(Some(lines.join(eol) + eol))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "# gateway config\nlisten: 127.0.0.1:8080\nkeys:\n  # trusted issuers\n  issuers: [ { public_key: k4.public.AAAA } ]\n";

    fn revoked_of(text: &str) -> Vec<String> {
        let doc: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
        doc["keys"]["revoked"].as_sequence().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
    }

    #[test]
    fn revoke_into_empty_flow_list() {
        let text = format!("{BASE}  revoked: []   # none yet\n  leeway_s: 30\naudit: {{ data_dir: ./d }}\n");
        let out = add_revocation(&text, "key_1").unwrap().unwrap();
        assert!(out.contains("  revoked: [key_1] # none yet\n"), "{out}");
        assert_eq!(revoked_of(&out), ["key_1"]);
        let again = add_revocation(&out, "key_2").unwrap().unwrap();
        assert!(again.contains("  revoked: [key_1, key_2] # none yet\n"), "{again}");
        assert_eq!(add_revocation(&again, "key_2").unwrap(), None, "idempotent");
        // Everything else is untouched.
        let strip = |s: &str| s.lines().filter(|l| !l.contains("revoked")).collect::<Vec<_>>().join("\n");
        assert_eq!(strip(&again), strip(&text));
    }

    #[test]
    fn revoke_into_block_list() {
        let text =
            format!("{BASE}  revoked:\n    - old_1   # leaked\n    - \"2024\"\n  leeway_s: 30\nnats: {{ url: x }}\n");
        let out = add_revocation(&text, "key_9").unwrap().unwrap();
        assert_eq!(revoked_of(&out), ["old_1", "2024", "key_9"]);
        assert!(out.contains("    - old_1   # leaked\n    - \"2024\"\n    - key_9\n  leeway_s: 30\n"), "{out}");
        assert_eq!(add_revocation(&out, "old_1").unwrap(), None);
        // Same-indent block sequence (valid YAML) too.
        let text = format!("{BASE}  revoked:\n  - a1\n  leeway_s: 30\n");
        let out = add_revocation(&text, "b2").unwrap().unwrap();
        assert_eq!(revoked_of(&out), ["a1", "b2"]);
    }

    #[test]
    fn revoke_adds_missing_revoked_and_quotes_odd_ids() {
        let out = add_revocation(BASE, "123").unwrap().unwrap();
        assert_eq!(revoked_of(&out), ["123"]);
        assert!(out.contains("keys:\n  revoked: [\"123\"]\n  # trusted issuers\n"), "{out}");
        let text = format!("{BASE}  revoked:   # nothing\n  leeway_s: 1\n");
        let out = add_revocation(&text, "yes").unwrap().unwrap();
        assert_eq!(revoked_of(&out), ["yes"]);
        let crlf = BASE.replace('\n', "\r\n");
        let out = add_revocation(&crlf, "k").unwrap().unwrap();
        assert!(out.ends_with("\r\n") && !out.replace("\r\n", "").contains('\n'), "{out:?}");
    }

    #[test]
    fn revoke_refuses_what_it_cannot_edit() {
        let err = |text: &str, id: &str| add_revocation(text, id).unwrap_err().to_string();
        assert!(err("listen: 0.0.0.0:1\n", "k").contains("no `keys:` section"));
        assert!(err("keys:\nlisten: x\n", "k").contains("no `keys:` section"));
        assert!(err("keys: { issuers: [], revoked: [] }\n", "k").contains("flow style"));
        assert!(err(&format!("{BASE}  revoked: [a,\n    b]\n"), "k").contains("by hand"));
        assert!(err(BASE, "bad id").contains("characters"));
        assert!(err(BASE, "").contains("1 to"));
        assert!(err("keys: [\n", "k").contains("YAML"));
    }
}
