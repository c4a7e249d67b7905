//! Physical lines to instructions: directives, comments, continuations, heredoc bodies.

use std::path::Path;

use super::instructions::parse_instruction;
use super::{Dockerfile, Heredoc, Instruction, InstructionKind, ParseError};

/// Directives recognised at the top of the file. `check` is accepted and ignored.
const DIRECTIVES: &[&str] = &["syntax", "escape", "check"];

struct Ctx<'a> {
    file: &'a Path,
    lines: Vec<&'a str>,
}

impl Ctx<'_> {
    fn error(&self, line: usize, text: &str, message: impl Into<String>) -> ParseError {
        ParseError {
            file: self.file.to_path_buf(),
            line,
            text: text.to_string(),
            message: message.into(),
        }
    }
}

/// Splits a `# key=value` line into a lower-cased key and the value, if it has the form of
/// a parser directive.
fn directive(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix('#')?.trim_start();
    let eq = rest.find('=')?;
    let key = rest[..eq].trim_end();
    let value = rest[eq + 1..].trim();
    let mut chars = key.chars();
    if !chars.next()?.is_ascii_alphabetic() || !chars.all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    if value.is_empty() {
        return None;
    }
    Some((key.to_ascii_lowercase(), value.to_string()))
}

/// If `line` ends with the escape character (trailing whitespace allowed), the line
/// without it.
fn continued(line: &str, escape: char) -> Option<&str> {
    line.trim_end().strip_suffix(escape)
}

fn is_blank_or_comment(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// The heredocs of an instruction (including an `ONBUILD` trigger), if it takes any.
fn heredocs_mut(kind: &mut InstructionKind) -> Option<&mut Vec<Heredoc>> {
    match kind {
        InstructionKind::Run(r) => Some(&mut r.heredocs),
        InstructionKind::Copy(c) | InstructionKind::Add(c) => Some(&mut c.heredocs),
        InstructionKind::Onbuild(inner) => heredocs_mut(&mut inner.kind),
        _ => None,
    }
}

fn set_end_line(ins: &mut Instruction, end_line: usize) {
    ins.end_line = end_line;
    if let InstructionKind::Onbuild(inner) = &mut ins.kind {
        set_end_line(inner, end_line);
    }
}

pub(super) fn parse_file(text: &str, file: &Path) -> Result<Dockerfile, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let ctx = Ctx { file, lines };

    // Parser directives: only at the very top.
    let mut escape = '\\';
    let mut syntax = None;
    let mut seen: Vec<String> = Vec::new();
    for (idx, line) in ctx.lines.iter().enumerate() {
        let Some((key, value)) = directive(line) else {
            break;
        };
        if !DIRECTIVES.contains(&key.as_str()) {
            break;
        }
        if seen.contains(&key) {
            return Err(ctx.error(
                idx + 1,
                line,
                format!("only one {key} parser directive can be used"),
            ));
        }
        match key.as_str() {
            "escape" => {
                escape = match value.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(ctx.error(
                            idx + 1,
                            line,
                            format!("invalid escape token '{value}': must be ` or \\"),
                        ))
                    }
                };
            }
            "syntax" => syntax = Some(value),
            _ => {}
        }
        seen.push(key);
    }

    let mut instructions = Vec::new();
    let mut seen_from = false;
    let n = ctx.lines.len();
    let mut i = 0;
    while i < n {
        if is_blank_or_comment(ctx.lines[i]) {
            i += 1;
            continue;
        }
        // Gather the logical line.
        let start = i;
        let mut last;
        let mut logical = String::new();
        loop {
            let line = ctx.lines[i];
            last = i;
            i += 1;
            match continued(line, escape) {
                Some(body) => {
                    logical.push_str(body);
                    while i < n && is_blank_or_comment(ctx.lines[i]) {
                        i += 1;
                    }
                    if i >= n {
                        break;
                    }
                }
                None => {
                    logical.push_str(line);
                    break;
                }
            }
        }
        let original = logical.trim().to_string();
        let line_no = start + 1;
        let kind = parse_instruction(&original, escape, line_no)
            .map_err(|m| ctx.error(line_no, &original, m))?;

        let mut ins = Instruction {
            line: line_no,
            end_line: last + 1,
            original,
            kind,
        };

        match &ins.kind {
            InstructionKind::From { .. } => seen_from = true,
            InstructionKind::Arg(_) => {}
            _ if !seen_from => {
                let keyword = ins
                    .original
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_ascii_uppercase();
                return Err(ctx.error(
                    line_no,
                    &ins.original,
                    format!("{keyword} must come after FROM (only ARG may precede the first FROM)"),
                ));
            }
            _ => {}
        }

        // Heredoc bodies follow the instruction, one after the other.
        if let Some(docs) = heredocs_mut(&mut ins.kind) {
            for doc in docs.iter_mut() {
                let mut content = String::new();
                loop {
                    let Some(line) = ctx.lines.get(i) else {
                        return Err(ctx.error(
                            line_no,
                            &ins.original,
                            format!(
                                "unterminated heredoc <<{}: no line equal to \"{}\" found",
                                doc.name, doc.name
                            ),
                        ));
                    };
                    i += 1;
                    let line = if doc.chomp {
                        line.trim_start_matches('\t')
                    } else {
                        line
                    };
                    if line == doc.name {
                        break;
                    }
                    content.push_str(line);
                    content.push('\n');
                }
                doc.content = content;
                last = i - 1;
            }
        }
        set_end_line(&mut ins, last + 1);
        instructions.push(ins);
    }

    if !seen_from {
        let line = text.lines().count().max(1);
        return Err(ctx.error(line, "", "no FROM instruction"));
    }

    Ok(Dockerfile {
        file: file.to_path_buf(),
        escape,
        syntax,
        instructions,
    })
}
