//! Finds where a field path (`routes[2].consent.subject.path_param`) is
//! written in the YAML text, so validation errors can name a line. Pure and
//! forgiving: it understands block mappings and sequences, one-line and
//! multi-line flow collections, quoted keys, comments and block scalars;
//! anything it cannot follow simply has no entry, and a lookup falls back to
//! the nearest enclosing field that has one.

use std::collections::HashMap;

/// A 1-based line and column in the config text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// Every field path found in one YAML text, with where it starts.
#[derive(Debug, Default)]
pub struct LineIndex {
    positions: HashMap<String, Position>,
}

impl LineIndex {
    /// Indexes the whole text once (linear in its size).
    pub fn new(text: &str) -> Self {
        let mut builder = Builder::default();
        builder.run(text);
        LineIndex {
            positions: builder.positions,
        }
    }

    /// Where `path` is written, or else its nearest enclosing field.
    pub fn locate(&self, path: &str) -> Option<Position> {
        let mut current = path;
        loop {
            if let Some(position) = self.positions.get(current) {
                return Some(*position);
            }
            current = parent_path(current)?;
        }
    }

    /// Where exactly `path` is written, without falling back.
    pub fn exact(&self, path: &str) -> Option<Position> {
        self.positions.get(path).copied()
    }
}

/// `a.b[2].c` -> `a.b[2]` -> `a.b` -> `a` -> None.
fn parent_path(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '['])?;
    Some(&path[..cut])
}

fn child_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

fn child_index(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

#[derive(Debug)]
enum FrameKind {
    Map,
    Seq { next: usize },
}

#[derive(Debug)]
struct Frame {
    indent: usize,
    path: String,
    kind: FrameKind,
}

/// A key whose value starts on a later line.
#[derive(Debug)]
struct Pending {
    path: String,
    indent: usize,
}

#[derive(Default)]
struct Builder {
    positions: HashMap<String, Position>,
    stack: Vec<Frame>,
    pending: Option<Pending>,
}

/// Removes a trailing `# comment` (outside quotes) and trailing blanks.
fn strip_comment(text: &str) -> &str {
    let bytes = text.as_bytes();
    let mut quote: Option<u8> = None;
    for (i, &b) in bytes.iter().enumerate() {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == b'#' && (i == 0 || bytes[i - 1] == b' ' || bytes[i - 1] == b'\t') => {
                return text[..i].trim_end();
            }
            None => {}
        }
    }
    text.trim_end()
}

/// Splits `key: rest` at the first `:` followed by a blank or the end, outside
/// quotes and flow brackets. Returns the unquoted key and the rest.
fn split_key(content: &str) -> Option<(String, &str)> {
    let bytes = content.as_bytes();
    if let Some(&q @ (b'"' | b'\'')) = bytes.first() {
        let close = content[1..].find(q as char)? + 1;
        let after = content[close + 1..].trim_start();
        let rest = after.strip_prefix(':')?;
        if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
            return None;
        }
        return Some((content[1..close].to_string(), rest.trim_start()));
    }
    if matches!(bytes.first(), Some(b'[' | b'{' | b'|' | b'>')) {
        return None;
    }
    for (i, &b) in bytes.iter().enumerate() {
        if b == b':' && (i + 1 == bytes.len() || bytes[i + 1] == b' ' || bytes[i + 1] == b'\t') {
            return Some((
                content[..i].trim_end().to_string(),
                content[i + 1..].trim_start(),
            ));
        }
    }
    None
}

impl Builder {
    fn record(&mut self, path: String, line: usize, column: usize) {
        self.positions
            .entry(path)
            .or_insert(Position { line, column });
    }

    fn run(&mut self, text: &str) {
        let lines: Vec<&str> = text.lines().collect();
        let mut index = 0;
        let mut block_scalar_indent: Option<usize> = None;
        while index < lines.len() {
            let raw = lines[index];
            let indent = raw.len() - raw.trim_start_matches(' ').len();
            let content = strip_comment(&raw[indent..]);
            if let Some(owner_indent) = block_scalar_indent {
                if content.is_empty() || indent > owner_indent {
                    index += 1;
                    continue;
                }
                block_scalar_indent = None;
            }
            if content.is_empty() || content == "---" || content == "..." {
                index += 1;
                continue;
            }
            let consumed = self.line(&lines, index, indent, content, &mut block_scalar_indent);
            index += consumed.max(1);
        }
    }

    /// Handles one content line; returns how many lines it consumed.
    fn line(
        &mut self,
        lines: &[&str],
        index: usize,
        indent: usize,
        content: &str,
        block_scalar: &mut Option<usize>,
    ) -> usize {
        let is_item = content == "-" || content.starts_with("- ");
        // Leave frames this line is no longer inside of.
        while let Some(top) = self.stack.last() {
            let leave = match top.kind {
                FrameKind::Map => top.indent > indent,
                FrameKind::Seq { .. } => top.indent > indent || (top.indent == indent && !is_item),
            };
            if !leave {
                break;
            }
            self.stack.pop();
        }
        // A key ending in `:` owns this line when it is deeper (or a same-indent sequence).
        if let Some(pending) = self.pending.take() {
            if indent > pending.indent || (indent == pending.indent && is_item) {
                let kind = if is_item {
                    FrameKind::Seq { next: 0 }
                } else {
                    FrameKind::Map
                };
                self.stack.push(Frame {
                    indent,
                    path: pending.path,
                    kind,
                });
            }
        }
        if self.stack.is_empty() {
            let kind = if is_item {
                FrameKind::Seq { next: 0 }
            } else {
                FrameKind::Map
            };
            self.stack.push(Frame {
                indent,
                path: String::new(),
                kind,
            });
        }
        self.entry(lines, index, indent, content, block_scalar)
    }

    /// A `- item` or `key: value` at column `indent` (0-based).
    fn entry(
        &mut self,
        lines: &[&str],
        index: usize,
        indent: usize,
        content: &str,
        block_scalar: &mut Option<usize>,
    ) -> usize {
        let Some(top) = self.stack.last_mut() else {
            return 1;
        };
        if top.indent != indent {
            return 1;
        }
        let line_no = index + 1;
        let is_item = content == "-" || content.starts_with("- ");
        match (&mut top.kind, is_item) {
            (FrameKind::Seq { next }, true) => {
                let item_path = child_index(&top.path, *next);
                *next += 1;
                self.record(item_path.clone(), line_no, indent + 1);
                let after_dash = &content[1..];
                let rest = after_dash.trim_start();
                if rest.is_empty() {
                    self.pending = Some(Pending {
                        path: item_path,
                        indent,
                    });
                    return 1;
                }
                let rest_indent = indent + 1 + (after_dash.len() - rest.len());
                if rest.starts_with('[') || rest.starts_with('{') {
                    return self.flow(lines, index, rest_indent, &item_path);
                }
                if rest == "-" || rest.starts_with("- ") {
                    self.stack.push(Frame {
                        indent: rest_indent,
                        path: item_path,
                        kind: FrameKind::Seq { next: 0 },
                    });
                    return self.entry(lines, index, rest_indent, rest, block_scalar);
                }
                if split_key(rest).is_some() {
                    self.stack.push(Frame {
                        indent: rest_indent,
                        path: item_path,
                        kind: FrameKind::Map,
                    });
                    return self.entry(lines, index, rest_indent, rest, block_scalar);
                }
                if rest.starts_with('|') || rest.starts_with('>') {
                    *block_scalar = Some(indent);
                }
                1
            }
            (FrameKind::Map, false) => {
                let Some((key, value)) = split_key(content) else {
                    return 1;
                };
                let key_path = child_key(&top.path, &key);
                self.record(key_path.clone(), line_no, indent + 1);
                let value = strip_properties(value);
                if value.is_empty() {
                    self.pending = Some(Pending {
                        path: key_path,
                        indent,
                    });
                    return 1;
                }
                if value.starts_with('[') || value.starts_with('{') {
                    let column = column_of(lines[index], value);
                    return self.flow(lines, index, column, &key_path);
                }
                if value.starts_with('|') || value.starts_with('>') {
                    *block_scalar = Some(indent);
                }
                1
            }
            _ => 1,
        }
    }

    /// Indexes a flow collection starting at `lines[index]`, 0-based byte
    /// column `column`; returns how many lines it spans.
    fn flow(&mut self, lines: &[&str], index: usize, column: usize, path: &str) -> usize {
        let mut scanner = FlowScanner {
            lines,
            line: index,
            column,
        };
        scanner.value(self, path);
        scanner.line - index + 1
    }
}

/// Drops a leading anchor (`&name`) or tag (`!tag`) from a value.
fn strip_properties(mut value: &str) -> &str {
    while value.starts_with('&') || value.starts_with('!') {
        match value.find([' ', '\t']) {
            Some(end) => value = value[end..].trim_start(),
            None => return "",
        }
    }
    value
}

/// Byte column (0-based) where `part`, a subslice of `line`, starts.
fn column_of(line: &str, part: &str) -> usize {
    (part.as_ptr() as usize).saturating_sub(line.as_ptr() as usize)
}

/// A cursor over flow-style text (`[a, {b: c}]`), possibly spanning lines.
struct FlowScanner<'a> {
    lines: &'a [&'a str],
    line: usize,
    column: usize,
}

impl FlowScanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.lines
            .get(self.line)
            .and_then(|l| l.as_bytes().get(self.column).copied())
    }

    /// Skips blanks, line ends and comments.
    fn skip_blank(&mut self) {
        loop {
            let Some(line) = self.lines.get(self.line) else {
                return;
            };
            let bytes = line.as_bytes();
            while self.column < bytes.len()
                && (bytes[self.column] == b' ' || bytes[self.column] == b'\t')
            {
                self.column += 1;
            }
            if self.column >= bytes.len() || bytes[self.column] == b'#' {
                if self.line + 1 >= self.lines.len() {
                    self.column = bytes.len();
                    return;
                }
                self.line += 1;
                self.column = 0;
                continue;
            }
            return;
        }
    }

    fn position(&self) -> Position {
        Position {
            line: self.line + 1,
            column: self.column + 1,
        }
    }

    /// Reads a scalar (plain or quoted) and returns its text.
    fn scalar(&mut self) -> String {
        let Some(line) = self.lines.get(self.line) else {
            return String::new();
        };
        let bytes = line.as_bytes();
        let start = self.column;
        if let Some(&q @ (b'"' | b'\'')) = bytes.get(start) {
            let mut end = start + 1;
            while end < bytes.len() && bytes[end] != q {
                end += if bytes[end] == b'\\' && q == b'"' {
                    2
                } else {
                    1
                };
            }
            let text = line
                .get(start + 1..end.min(bytes.len()))
                .unwrap_or("")
                .to_string();
            self.column = (end + 1).min(bytes.len());
            return text;
        }
        let mut end = start;
        while end < bytes.len() {
            let b = bytes[end];
            if matches!(b, b',' | b']' | b'}')
                || (b == b':'
                    && matches!(bytes.get(end + 1), None | Some(b' ' | b',' | b']' | b'}')))
            {
                break;
            }
            end += 1;
        }
        self.column = end;
        line.get(start..end).unwrap_or("").trim().to_string()
    }

    /// One value at the cursor: a flow sequence, a flow mapping or a scalar.
    fn value(&mut self, builder: &mut Builder, path: &str) {
        self.skip_blank();
        match self.peek() {
            Some(b'[') => {
                self.column += 1;
                let mut item = 0;
                loop {
                    self.skip_blank();
                    match self.peek() {
                        None => return,
                        Some(b']') => {
                            self.column += 1;
                            return;
                        }
                        Some(b',') => {
                            self.column += 1;
                            continue;
                        }
                        Some(_) => {
                            let item_path = child_index(path, item);
                            item += 1;
                            let at = self.position();
                            builder.record(item_path.clone(), at.line, at.column);
                            let before = (self.line, self.column);
                            self.value(builder, &item_path);
                            if (self.line, self.column) == before {
                                self.column += 1;
                            }
                        }
                    }
                }
            }
            Some(b'{') => {
                self.column += 1;
                loop {
                    self.skip_blank();
                    match self.peek() {
                        None => return,
                        Some(b'}') => {
                            self.column += 1;
                            return;
                        }
                        Some(b',') => {
                            self.column += 1;
                            continue;
                        }
                        Some(_) => {
                            let at = self.position();
                            let before = (self.line, self.column);
                            let key = self.scalar();
                            let key_path = child_key(path, &key);
                            builder.record(key_path.clone(), at.line, at.column);
                            self.skip_blank();
                            if self.peek() == Some(b':') {
                                self.column += 1;
                                self.value(builder, &key_path);
                            }
                            if (self.line, self.column) == before {
                                self.column += 1;
                            }
                        }
                    }
                }
            }
            Some(_) => {
                self.scalar();
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# comment
server:
  listen: [\"0.0.0.0:8080\", \"0.0.0.0:8081\"]   # two
  limits:
    header_read_timeout: 10s
issuers:
  - name: mp
    algorithms:
      - RS256
      - HS256
routes:
- name: a
  path: /a/{x}
  consent:
    subject: { path_param: y }
    metadata:
      match:
        inntektsaar: {path_param: year}
- name: b   # second
  description: |
    text: not a key
    - not an item
  upstream: u
  \"quoted\": 1
";

    fn line(index: &LineIndex, path: &str) -> Option<usize> {
        index.exact(path).map(|p| p.line)
    }

    #[test]
    fn block_keys_and_items() {
        let index = LineIndex::new(TEXT);
        assert_eq!(line(&index, "server"), Some(2));
        assert_eq!(line(&index, "server.listen"), Some(3));
        assert_eq!(line(&index, "server.limits.header_read_timeout"), Some(5));
        assert_eq!(line(&index, "issuers[0]"), Some(7));
        assert_eq!(line(&index, "issuers[0].name"), Some(7));
        assert_eq!(line(&index, "issuers[0].algorithms[1]"), Some(10));
        assert_eq!(line(&index, "routes[0].path"), Some(13));
        assert_eq!(line(&index, "routes[1]"), Some(19));
        assert_eq!(line(&index, "routes[1].upstream"), Some(23));
        assert_eq!(line(&index, "routes[1].quoted"), Some(24));
    }

    #[test]
    fn columns_are_one_based() {
        let index = LineIndex::new(TEXT);
        assert_eq!(
            index.exact("issuers[0].name"),
            Some(Position { line: 7, column: 5 })
        );
        assert_eq!(
            index.exact("routes[0].path"),
            Some(Position {
                line: 13,
                column: 3
            })
        );
    }

    #[test]
    fn flow_collections() {
        let index = LineIndex::new(TEXT);
        assert_eq!(line(&index, "server.listen[1]"), Some(3));
        assert_eq!(
            line(&index, "routes[0].consent.subject.path_param"),
            Some(15)
        );
        assert_eq!(
            line(
                &index,
                "routes[0].consent.metadata.match.inntektsaar.path_param"
            ),
            Some(18)
        );
        let col = index.exact("server.listen[1]").map(|p| p.column);
        assert_eq!(col, Some(28));
    }

    #[test]
    fn block_scalars_are_skipped() {
        let index = LineIndex::new(TEXT);
        assert_eq!(line(&index, "routes[1].description.text"), None);
        assert_eq!(line(&index, "routes[2]"), None);
    }

    #[test]
    fn lookups_fall_back_to_the_enclosing_field() {
        let index = LineIndex::new(TEXT);
        assert_eq!(index.locate("routes[1].consent").map(|p| p.line), Some(19));
        assert_eq!(
            index
                .locate("routes[0].consent.subject.header")
                .map(|p| p.line),
            Some(15)
        );
        assert_eq!(index.locate("nothing.at.all"), None);
    }

    #[test]
    fn multi_line_flow() {
        let text = "a:\n  b: [x,\n     y, {c: 1,\n       d: 2}]\ne: 1\n";
        let index = LineIndex::new(text);
        assert_eq!(line(&index, "a.b[1]"), Some(3));
        assert_eq!(line(&index, "a.b[2].d"), Some(4));
        assert_eq!(line(&index, "e"), Some(5));
    }

    #[test]
    fn nested_sequences_and_empty_items() {
        let text = "a:\n  -\n    k: 1\n  - - x\n    - y\nb: 2\n";
        let index = LineIndex::new(text);
        assert_eq!(line(&index, "a[0].k"), Some(3));
        assert_eq!(line(&index, "a[1][1]"), Some(5));
        assert_eq!(line(&index, "b"), Some(6));
    }

    #[test]
    fn parent_paths() {
        assert_eq!(parent_path("a.b[2].c"), Some("a.b[2]"));
        assert_eq!(parent_path("a.b[2]"), Some("a.b"));
        assert_eq!(parent_path("a"), None);
        assert_eq!(parent_path(""), None);
    }
}
