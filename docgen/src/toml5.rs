//! `mosix.toml(5)`, made from `mosix.toml.example`, which documents every
//! key beside its default: its comment blocks become the key's paragraph,
//! so the page and the example never disagree.

/// The whole page, in roff.
pub fn page(example: &str) -> String {
    let mut out = String::from(
        ".TH MOSIX.TOML 5 \"\" \"mosix\" \"mosix\"\n\
         .SH NAME\nmosix.toml \\- configuration of a mosix node\n\
         .SH SYNOPSIS\n.I /etc/mosix/mosix.toml\n\
         .SH DESCRIPTION\n",
    );
    let mut comment: Vec<String> = Vec::new();
    let mut section = String::new();
    let mut in_keys = false;
    for line in example.lines() {
        let line = line.trim_end();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if !in_keys {
                paragraph(&mut out, &comment);
                out.push_str(".SH KEYS\n");
                in_keys = true;
            }
            comment.clear();
            section = name.to_string();
            out.push_str(&format!(".SS [{}]\n", escape(name)));
        } else if let Some((key, value)) = key_line(line).filter(|_| in_keys) {
            out.push_str(&format!(".TP\n.B {}.{}\n", escape(&section), escape(key)));
            paragraph(&mut out, &comment);
            out.push_str(&format!(
                ".RS\n.EX\n{} = {}\n.EE\n.RE\n",
                escape(key),
                escape(value)
            ));
            comment.clear();
        } else if let Some(text) = line.strip_prefix('#') {
            comment.push(text.strip_prefix(' ').unwrap_or(text).to_string());
        } else if line.is_empty() && in_keys {
            // A comment block not followed by a key (a section's preamble).
            if !comment.is_empty() {
                paragraph(&mut out, &comment);
                comment.clear();
            }
        }
    }
    out.push_str(
        ".SH RELOADING\n\
         \\fBsystemctl reload mosix\\-remoted\\fR (SIGHUP) applies the run-time \
         parameters of \\fB[balancer]\\fR (those \\fBmosctl params\\fR lists); any other \
         change is logged as needing a restart of the daemon that reads it.\n\
         .SH SEE ALSO\n\\fBhomed\\fR(8), \\fBremoted\\fR(8), \\fBmosctl\\fR(1)\n",
    );
    out
}

/// `key = value` or a commented `# key = value`: a key and its value.
fn key_line(line: &str) -> Option<(&str, &str)> {
    let bare = line.strip_prefix("# ").unwrap_or(line);
    let (key, value) = bare.split_once(" = ")?;
    key.chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        .then_some((key, value))
        .filter(|(k, _)| !k.is_empty())
}

fn paragraph(out: &mut String, lines: &[String]) {
    let text: Vec<String> = lines
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| escape(l))
        .collect();
    if !text.is_empty() {
        out.push_str(&text.join("\n"));
        out.push('\n');
    }
}

/// Makes text safe in roff: backslashes, and a leading `.` or `'`.
fn escape(text: &str) -> String {
    let t = text.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_the_example_has_an_entry() {
        let page = page(include_str!("../../mosix.toml.example"));
        for key in [
            "node.name",
            "node.key_file",
            "balancer.margin",
            "metrics.listen",
        ] {
            assert!(
                page.contains(&format!(".B {}\n", escape(key))),
                "{key} missing"
            );
        }
        assert!(page.contains(".SS [view]"));
    }
}
