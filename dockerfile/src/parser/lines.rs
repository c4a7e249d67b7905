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
    let ctx = Ctx {
        file,
        lines: physical_lines(text),
    };
    let (escape, syntax) = directives(&ctx)?;
    let instructions = instructions(&ctx, escape)?;
    if !instructions
        .iter()
        .any(|ins| matches!(ins.kind, InstructionKind::From { .. }))
    {
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

/// The file's lines, without `\n` or `\r\n`.
fn physical_lines(text: &str) -> Vec<&str> {
    text.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect()
}

/// The parser directives at the very top: the escape character (default `\`) and the
/// `syntax` value.
fn directives(ctx: &Ctx<'_>) -> Result<(char, Option<String>), ParseError> {
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
            "escape" => escape = escape_token(&value).map_err(|m| ctx.error(idx + 1, line, m))?,
            "syntax" => syntax = Some(value),
            _ => {}
        }
        seen.push(key);
    }
    Ok((escape, syntax))
}

/// The character an `escape` directive names.
fn escape_token(value: &str) -> Result<char, String> {
    match value {
        "\\" => Ok('\\'),
        "`" => Ok('`'),
        _ => Err(format!("invalid escape token '{value}': must be ` or \\")),
    }
}

/// The instructions, each with its heredoc bodies, checked to start with ARGs and a FROM.
fn instructions(ctx: &Ctx<'_>, escape: char) -> Result<Vec<Instruction>, ParseError> {
    let mut instructions = Vec::new();
    let mut seen_from = false;
    let mut i = 0;
    while i < ctx.lines.len() {
        if is_blank_or_comment(ctx.lines[i]) {
            i += 1;
            continue;
        }
        let start = i;
        let (logical, mut last) = logical_line(ctx, &mut i, escape);
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
        check_order(ctx, &ins, &mut seen_from)?;
        if let Some(end) = read_heredocs(ctx, &mut ins, &mut i)? {
            last = end;
        }
        set_end_line(&mut ins, last + 1);
        instructions.push(ins);
    }
    Ok(instructions)
}

/// Joins the physical lines from `*i` that continue each other (ending with the escape
/// character; blank and comment lines between them are skipped) into one logical line.
/// Leaves `*i` after them and returns the index of the last one.
fn logical_line(ctx: &Ctx<'_>, i: &mut usize, escape: char) -> (String, usize) {
    let n = ctx.lines.len();
    let mut logical = String::new();
    loop {
        let line = ctx.lines[*i];
        let last = *i;
        *i += 1;
        let Some(body) = continued(line, escape) else {
            logical.push_str(line);
            return (logical, last);
        };
        logical.push_str(body);
        while *i < n && is_blank_or_comment(ctx.lines[*i]) {
            *i += 1;
        }
        if *i >= n {
            return (logical, last);
        }
    }
}

/// Refuses an instruction other than ARG before the first FROM; notes when FROM is seen.
fn check_order(ctx: &Ctx<'_>, ins: &Instruction, seen_from: &mut bool) -> Result<(), ParseError> {
    match &ins.kind {
        InstructionKind::From { .. } => *seen_from = true,
        InstructionKind::Arg(_) => {}
        _ if !*seen_from => {
            let keyword = ins
                .original
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase();
            return Err(ctx.error(
                ins.line,
                &ins.original,
                format!("{keyword} must come after FROM (only ARG may precede the first FROM)"),
            ));
        }
        _ => {}
    }
    Ok(())
}

/// Reads the bodies of `ins`'s heredocs, which follow it one after the other from line
/// `*i`. Leaves `*i` after them and returns the index of the last line read, if any.
fn read_heredocs(
    ctx: &Ctx<'_>,
    ins: &mut Instruction,
    i: &mut usize,
) -> Result<Option<usize>, ParseError> {
    let (line_no, original) = (ins.line, ins.original.clone());
    let Some(docs) = heredocs_mut(&mut ins.kind) else {
        return Ok(None);
    };
    let mut last = None;
    for doc in docs.iter_mut() {
        doc.content = heredoc_body(ctx, doc, i).ok_or_else(|| {
            ctx.error(
                line_no,
                &original,
                format!(
                    "unterminated heredoc <<{}: no line equal to \"{}\" found",
                    doc.name, doc.name
                ),
            )
        })?;
        last = Some(*i - 1);
    }
    Ok(last)
}

/// The lines from `*i` up to the line equal to `doc`'s name (leading tabs removed first
/// with `<<-`), each ending with `\n`; `None` when the file ends first. Leaves `*i` after
/// the terminating line.
fn heredoc_body(ctx: &Ctx<'_>, doc: &Heredoc, i: &mut usize) -> Option<String> {
    let mut content = String::new();
    loop {
        let line = ctx.lines.get(*i)?;
        *i += 1;
        let line = if doc.chomp {
            line.trim_start_matches('\t')
        } else {
            line
        };
        if line == doc.name {
            return Some(content);
        }
        content.push_str(line);
        content.push('\n');
    }
}
