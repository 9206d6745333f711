//! The operator's error page: upstream's `html_error_template_file`.
//!
//! When the option is set, upstream renders every router-generated error (A.5) through a Go
//! `html/template` whose data is `{ Status int, StatusText string, Message string, Header
//! http.Header }`, `Header` being the response headers at that point (`X-Cf-Routererror` is
//! already set). This module owns that template for parity: a small subset of Go's template
//! language, parsed once at startup into an [`ErrorPage`] so that a bad template is a
//! configuration error rather than a broken response, and rendered per error by
//! [`ErrorPage::render`], which cannot fail.
//!
//! The subset, with Go's semantics:
//!
//! - text outside actions is copied verbatim;
//! - actions `{{ … }}`, with the trim markers `{{- ` and ` -}}` (they remove all the adjacent
//!   whitespace of the neighbouring text; the space next to the dash is required, as in Go,
//!   so `{{-3}}` prints `-3`) and comments `{{/* … */}}` (trim markers allowed too);
//! - the values `.Status`, `.StatusText`, `.Message` and `.Header.Get "Name"` (the first
//!   value of that response header, looked up case-insensitively, empty if absent);
//! - decimal integer literals, `true`/`false`, double-quoted strings with Go's single-letter
//!   escapes (`\"`, `\\`, `\n`, `\t`, …) and back-quoted raw strings;
//! - `{{ if P }} … {{ else if P }} … {{ else }} … {{ end }}` with Go's truthiness (0, the
//!   empty string and `false` are false);
//! - the functions `eq` (two or more arguments: the first equals any of the others) and `ne`
//!   (two arguments), and parenthesised sub-pipelines as arguments, e.g.
//!   `{{ if ne (.Header.Get "X-Cf-Routererror") "" }}`.
//!
//! Everything else (other fields or functions, `range`, `with`, `define`, `template`,
//! `block`, variables, `|` pipes, comparisons of different types, …) is refused by
//! [`ErrorPage::parse`] with the line and column of the problem. Go would report some of
//! those only while executing; here the types are known up front, so they are all found at
//! startup.
//!
//! Escaping is simplified: `html/template` escapes by context (HTML text, attribute, URL,
//! JavaScript, CSS), whereas here every interpolated value goes through the escaper Go uses
//! for HTML text and quoted attribute values (`&`, `<`, `>`, `"`, `'`, `+` become entities,
//! NUL becomes U+FFFD). That is safe in text and in quoted attributes, which is where an
//! error page puts its values; a value inside `<script>`, `<style>`, an unquoted attribute or
//! a URL is not escaped for that context. Likewise HTML comments in the template text are
//! kept (`html/template` strips them).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

const SUPPORTED: &str = "supported: .Status, .StatusText, .Message, .Header.Get \"Name\", \
                         if/else/end, eq, ne";

/// How deep `if`s and parentheses may nest (bounds the parser's and renderer's recursion).
const MAX_DEPTH: usize = 100;

/// Go's space characters around trim markers and inside actions.
const SPACE: [char; 4] = [' ', '\t', '\r', '\n'];

/// Why the template could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("html_error_template_file: cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The text is outside the supported subset; `line` and `column` count from 1, the
    /// column in characters.
    #[error("html_error_template_file{}: line {line}, column {column}: {message}", in_file(.path))]
    Syntax {
        path: Option<PathBuf>,
        line: usize,
        column: usize,
        message: String,
    },
}

fn in_file(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!(" {}", p.display()))
        .unwrap_or_default()
}

/// A compiled error-page template.
#[derive(Debug, Clone)]
pub struct ErrorPage {
    nodes: Vec<Node>,
    /// The length of the text outside actions, to size the output.
    text_len: usize,
}

impl ErrorPage {
    /// Compiles `text`, refusing anything outside the supported subset.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let syntax = |SyntaxError { at, message }: SyntaxError| {
            let (line, column) = line_column(text, at);
            TemplateError::Syntax {
                path: None,
                line,
                column,
                message,
            }
        };
        let items = lex(text).map_err(syntax)?;
        let text_len = items
            .iter()
            .map(|i| match i {
                Item::Text(t) => t.len(),
                Item::Action { .. } => 0,
            })
            .sum();
        let nodes = Parser {
            items: items.into_iter(),
        }
        .template()
        .map_err(syntax)?;
        Ok(ErrorPage { nodes, text_len })
    }

    /// Reads and compiles the template file at `path`.
    pub fn load(path: &Path) -> Result<Self, TemplateError> {
        let text = std::fs::read_to_string(path).map_err(|source| TemplateError::Read {
            path: path.to_owned(),
            source,
        })?;
        ErrorPage::parse(&text).map_err(|e| match e {
            TemplateError::Syntax {
                line,
                column,
                message,
                ..
            } => TemplateError::Syntax {
                path: Some(path.to_owned()),
                line,
                column,
                message,
            },
            read => read,
        })
    }

    /// The page for an error; `StatusText` is the status's canonical reason, or empty.
    pub fn render(&self, status: StatusCode, message: &str, headers: &HeaderMap) -> String {
        let data = Data {
            status,
            status_text: status.canonical_reason().unwrap_or(""),
            message,
            headers,
        };
        let mut out = String::with_capacity(self.text_len + message.len() + 16);
        render_nodes(&self.nodes, &data, &mut out);
        out
    }
}

// ---- compiled form and rendering ----

#[derive(Debug, Clone)]
enum Node {
    Text(Box<str>),
    Output(Expr),
    If {
        /// `if` and each `else if`, in order.
        branches: Vec<(Expr, Vec<Node>)>,
        otherwise: Vec<Node>,
    },
}

#[derive(Debug, Clone)]
enum Expr {
    Status,
    StatusText,
    Message,
    Header(HeaderKey),
    Int(i64),
    Str(Box<str>),
    Bool(bool),
    /// The first equals any of the others (Go's `eq`); type-checked, at least two.
    Eq(Vec<Expr>),
    Ne(Box<(Expr, Expr)>),
}

#[derive(Debug, Clone)]
enum HeaderKey {
    /// A literal name, resolved at parse time; `None` if it is no valid header name (then no
    /// response can have it, as in Go).
    Name(Option<HeaderName>),
    /// A computed name (a string-typed sub-pipeline).
    Dynamic(Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Int,
    Str,
    Bool,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Int => "int",
            Ty::Str => "string",
            Ty::Bool => "bool",
        }
    }
}

impl Expr {
    fn ty(&self) -> Ty {
        match self {
            Expr::Status | Expr::Int(_) => Ty::Int,
            Expr::StatusText | Expr::Message | Expr::Header(_) | Expr::Str(_) => Ty::Str,
            Expr::Bool(_) | Expr::Eq(_) | Expr::Ne(_) => Ty::Bool,
        }
    }

    fn eval<'a>(&'a self, d: &Data<'a>) -> Value<'a> {
        match self {
            Expr::Status => Value::Int(i64::from(d.status.as_u16())),
            Expr::StatusText => Value::Str(Cow::Borrowed(d.status_text)),
            Expr::Message => Value::Str(Cow::Borrowed(d.message)),
            Expr::Header(HeaderKey::Name(name)) => {
                header_text(name.as_ref().and_then(|n| d.headers.get(n)))
            }
            Expr::Header(HeaderKey::Dynamic(e)) => match e.eval(d) {
                Value::Str(name) => header_text(d.headers.get(name.as_ref())),
                // Type-checked at parse time.
                Value::Int(_) | Value::Bool(_) => Value::Str(Cow::Borrowed("")),
            },
            Expr::Int(n) => Value::Int(*n),
            Expr::Str(s) => Value::Str(Cow::Borrowed(s)),
            Expr::Bool(b) => Value::Bool(*b),
            Expr::Eq(args) => match args.split_first() {
                Some((first, rest)) => {
                    let first = first.eval(d);
                    Value::Bool(rest.iter().any(|a| a.eval(d) == first))
                }
                None => Value::Bool(false),
            },
            Expr::Ne(pair) => Value::Bool(pair.0.eval(d) != pair.1.eval(d)),
        }
    }
}

fn header_text(value: Option<&HeaderValue>) -> Value<'_> {
    Value::Str(value.map_or(Cow::Borrowed(""), |v| String::from_utf8_lossy(v.as_bytes())))
}

#[derive(Debug, PartialEq)]
enum Value<'a> {
    Int(i64),
    Str(Cow<'a, str>),
    Bool(bool),
}

impl Value<'_> {
    fn truthy(&self) -> bool {
        match self {
            Value::Int(n) => *n != 0,
            Value::Str(s) => !s.is_empty(),
            Value::Bool(b) => *b,
        }
    }
}

struct Data<'a> {
    status: StatusCode,
    status_text: &'a str,
    message: &'a str,
    headers: &'a HeaderMap,
}

fn render_nodes<'a>(nodes: &'a [Node], d: &Data<'a>, out: &mut String) {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Output(e) => match e.eval(d) {
                // Digits and `-`: nothing to escape. Writing to a String cannot fail.
                Value::Int(n) => {
                    let _ = write!(out, "{n}");
                }
                Value::Str(s) => escape_html(&s, out),
                Value::Bool(b) => out.push_str(if b { "true" } else { "false" }),
            },
            Node::If {
                branches,
                otherwise,
            } => {
                let taken = branches
                    .iter()
                    .find(|(cond, _)| cond.eval(d).truthy())
                    .map_or(otherwise, |(_, body)| body);
                render_nodes(taken, d, out);
            }
        }
    }
}

/// Go's `html/template` escaper for HTML text and quoted attribute values
/// (`htmlReplacementTable`).
fn escape_html(s: &str, out: &mut String) {
    let mut done = 0;
    for (i, b) in s.bytes().enumerate() {
        let entity = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&#34;",
            b'\'' => "&#39;",
            b'+' => "&#43;",
            0 => "\u{FFFD}",
            _ => continue,
        };
        // `b` is ASCII, so `i` and `i + 1` are character boundaries.
        out.push_str(&s[done..i]);
        out.push_str(entity);
        done = i + 1;
    }
    out.push_str(&s[done..]);
}

// ---- lexing ----

struct SyntaxError {
    /// Byte offset in the template.
    at: usize,
    message: String,
}

fn err<T>(at: usize, message: impl Into<String>) -> Result<T, SyntaxError> {
    Err(SyntaxError {
        at,
        message: message.into(),
    })
}

fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

enum Item {
    /// Text between actions, trim markers applied.
    Text(Box<str>),
    Action {
        /// Offset of its `{{`.
        at: usize,
        tokens: Vec<Token>,
    },
}

struct Token {
    tok: Tok,
    at: usize,
}

enum Tok {
    /// `.A.B`: the names without dots.
    Field(Vec<String>),
    /// `.` alone.
    Dot,
    Ident(String),
    Int(i64),
    Str(String),
    LParen,
    RParen,
    /// Lexed so that the parser can name them as unsupported.
    Variable(String),
    Pipe,
    Assign,
    Comma,
}

fn is_space(c: char) -> bool {
    SPACE.contains(&c)
}

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// At a right delimiter `}}` or ` -}}`: its length and whether it trims.
fn right_delim(rest: &str) -> Option<(usize, bool)> {
    let mut chars = rest.chars();
    if chars.next().is_some_and(is_space) && chars.as_str().starts_with("-}}") {
        return Some((4, true));
    }
    rest.starts_with("}}").then_some((2, false))
}

fn lex(src: &str) -> Result<Vec<Item>, SyntaxError> {
    let mut items = Vec::new();
    let mut text = String::new();
    // Where the text since the last action or comment starts in `text`: a trim marker trims
    // only that text, as in Go (a comment ends a text node).
    let mut segment = 0;
    let mut pos = 0;
    while let Some(found) = src[pos..].find("{{") {
        let start = pos + found;
        text.push_str(&src[pos..start]);
        let mut p = start + 2;
        let rest = &src[p..];
        if rest.starts_with('-') && rest[1..].starts_with(SPACE) {
            p += 2;
            let kept = text[segment..].trim_end_matches(SPACE).len();
            text.truncate(segment + kept);
        }
        let (tokens, end, trim) = if src[p..].starts_with("/*") {
            let Some(close) = src[p + 2..].find("*/") else {
                return err(start, "unclosed comment");
            };
            let q = p + 2 + close + 2;
            let Some((len, trim)) = right_delim(&src[q..]) else {
                return err(q, "comment ends before the closing `}}`");
            };
            (None, q + len, trim)
        } else {
            let (tokens, end, trim) = lex_action(src, start, p)?;
            (Some(tokens), end, trim)
        };
        if let Some(tokens) = tokens {
            if !text.is_empty() {
                items.push(Item::Text(std::mem::take(&mut text).into()));
            }
            items.push(Item::Action { at: start, tokens });
        }
        segment = text.len();
        pos = end;
        if trim {
            pos = src.len() - src[pos..].trim_start_matches(SPACE).len();
        }
    }
    text.push_str(&src[pos..]);
    if !text.is_empty() {
        items.push(Item::Text(text.into()));
    }
    Ok(items)
}

/// The tokens of the action whose `{{` is at `start` and whose content starts at `p`; the
/// offset after its `}}`, and whether that trims.
fn lex_action(
    src: &str,
    start: usize,
    mut p: usize,
) -> Result<(Vec<Token>, usize, bool), SyntaxError> {
    let mut tokens = Vec::new();
    loop {
        if let Some((len, trim)) = right_delim(&src[p..]) {
            return Ok((tokens, p + len, trim));
        }
        let rest = &src[p..];
        let Some(c) = rest.chars().next() else {
            return err(start, "unclosed action: no `}}`");
        };
        let at = p;
        let (tok, len) = match c {
            c if is_space(c) => {
                p += 1;
                continue;
            }
            '"' => lex_quoted(rest, at)?,
            '`' => match rest[1..].find('`') {
                Some(end) => (Tok::Str(rest[1..1 + end].to_owned()), end + 2),
                None => return err(at, "unterminated raw string"),
            },
            '.' => {
                let mut names = Vec::new();
                let mut len = 0;
                while rest[len..].starts_with('.') {
                    let name_len = rest[len + 1..]
                        .find(|c: char| !is_ident_char(c))
                        .unwrap_or(rest.len() - len - 1);
                    if name_len == 0 {
                        break;
                    }
                    names.push(rest[len + 1..len + 1 + name_len].to_owned());
                    len += 1 + name_len;
                }
                if names.is_empty() {
                    (Tok::Dot, 1)
                } else {
                    (Tok::Field(names), len)
                }
            }
            '$' => {
                let len = 1 + rest[1..]
                    .find(|c: char| !is_ident_char(c))
                    .unwrap_or(rest.len() - 1);
                (Tok::Variable(rest[..len].to_owned()), len)
            }
            '|' => (Tok::Pipe, 1),
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            ',' => (Tok::Comma, 1),
            '=' => (Tok::Assign, 1),
            ':' if rest.starts_with(":=") => (Tok::Assign, 2),
            '+' | '-' | '0'..='9' => {
                let len = 1 + rest[1..]
                    .find(|c: char| !(is_ident_char(c) || c == '.'))
                    .unwrap_or(rest.len() - 1);
                let number = &rest[..len];
                let digits = number.strip_prefix(['+', '-']).unwrap_or(number);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return err(
                        at,
                        format!(
                            "unsupported number `{number}`; only decimal integers are supported"
                        ),
                    );
                }
                match number.parse() {
                    Ok(n) => (Tok::Int(n), len),
                    Err(_) => return err(at, format!("number `{number}` out of range")),
                }
            }
            '\'' => return err(at, "character constants are not supported; use a string"),
            c if is_ident_char(c) => {
                let len = rest.find(|c: char| !is_ident_char(c)).unwrap_or(rest.len());
                (Tok::Ident(rest[..len].to_owned()), len)
            }
            c => return err(at, format!("unexpected character {c:?} in action")),
        };
        tokens.push(Token { tok, at });
        p += len;
    }
}

/// A double-quoted string at the start of `rest` (at offset `at`): its value and length.
fn lex_quoted(rest: &str, at: usize) -> Result<(Tok, usize), SyntaxError> {
    let mut value = String::new();
    let mut chars = rest.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((Tok::Str(value), i + 1)),
            '\n' => break,
            '\\' => {
                let unescaped = match chars.next() {
                    Some((_, '"')) => '"',
                    Some((_, '\\')) => '\\',
                    Some((_, 'n')) => '\n',
                    Some((_, 't')) => '\t',
                    Some((_, 'r')) => '\r',
                    Some((_, 'a')) => '\u{7}',
                    Some((_, 'b')) => '\u{8}',
                    Some((_, 'f')) => '\u{c}',
                    Some((_, 'v')) => '\u{b}',
                    Some((_, '\n')) | None => break,
                    Some((j, other)) => {
                        return err(
                            at + j - 1,
                            format!(
                                "unsupported escape `\\{other}` in string; \
                                 supported: \\\" \\\\ \\n \\t \\r \\a \\b \\f \\v"
                            ),
                        )
                    }
                };
                value.push(unescaped);
            }
            c => value.push(c),
        }
    }
    err(at, "unterminated quoted string")
}

// ---- parsing ----

struct Parser {
    items: std::vec::IntoIter<Item>,
}

/// What ended a list of nodes.
enum Stop {
    Eof,
    /// `else` (`None`) or `else if` (the condition), at an offset.
    Else(usize, Option<Expr>),
    End(usize),
}

enum Action {
    Output(Expr),
    If(Expr),
    Else(Option<Expr>),
    End,
}

impl Parser {
    fn template(mut self) -> Result<Vec<Node>, SyntaxError> {
        match self.list(0)? {
            (nodes, Stop::Eof) => Ok(nodes),
            (_, Stop::Else(at, _)) => err(at, "`else` without `if`"),
            (_, Stop::End(at)) => err(at, "`end` without `if`"),
        }
    }

    /// Nodes up to the end of the template or an `else`/`end`.
    fn list(&mut self, depth: usize) -> Result<(Vec<Node>, Stop), SyntaxError> {
        let mut nodes = Vec::new();
        while let Some(item) = self.items.next() {
            let (at, tokens) = match item {
                Item::Text(t) => {
                    nodes.push(Node::Text(t));
                    continue;
                }
                Item::Action { at, tokens } => (at, tokens),
            };
            match action(at, &tokens)? {
                Action::Output(e) => nodes.push(Node::Output(e)),
                Action::If(cond) => nodes.push(self.if_node(at, cond, depth + 1)?),
                Action::Else(cond) => return Ok((nodes, Stop::Else(at, cond))),
                Action::End => return Ok((nodes, Stop::End(at))),
            }
        }
        Ok((nodes, Stop::Eof))
    }

    /// The rest of the `if` at `at`, up to its `end`.
    fn if_node(&mut self, at: usize, cond: Expr, depth: usize) -> Result<Node, SyntaxError> {
        if depth > MAX_DEPTH {
            return err(at, format!("`if` nested more than {MAX_DEPTH} deep"));
        }
        let unclosed = || err(at, "`if` without `end`");
        let mut branches = Vec::new();
        let mut cond = cond;
        loop {
            let (body, stop) = self.list(depth)?;
            branches.push((cond, body));
            match stop {
                Stop::End(_) => {
                    return Ok(Node::If {
                        branches,
                        otherwise: Vec::new(),
                    })
                }
                Stop::Else(_, Some(next)) => cond = next,
                Stop::Else(_, None) => {
                    return match self.list(depth)? {
                        (otherwise, Stop::End(_)) => Ok(Node::If {
                            branches,
                            otherwise,
                        }),
                        (_, Stop::Else(at, _)) => err(at, "`else` after the final `else`"),
                        (_, Stop::Eof) => unclosed(),
                    }
                }
                Stop::Eof => return unclosed(),
            }
        }
    }
}

/// Classifies one action and compiles its pipeline.
fn action(at: usize, tokens: &[Token]) -> Result<Action, SyntaxError> {
    let keyword = match tokens.first() {
        None => return err(at, "empty action"),
        Some(Token {
            tok: Tok::Ident(word),
            ..
        }) => word.as_str(),
        Some(_) => "",
    };
    let end_at = |tokens: &[Token]| tokens.last().map_or(at, |t| t.at);
    match keyword {
        "if" => Ok(Action::If(condition("if", end_at(tokens), &tokens[1..])?)),
        "else" => match tokens.get(1) {
            None => Ok(Action::Else(None)),
            Some(Token {
                tok: Tok::Ident(word),
                ..
            }) if word == "if" => Ok(Action::Else(Some(condition(
                "else if",
                end_at(tokens),
                &tokens[2..],
            )?))),
            Some(Token {
                tok: Tok::Ident(word),
                at,
            }) if is_unsupported_action(word) => err(*at, unsupported_action(word)),
            Some(t) => err(t.at, "unexpected token after `else`; expected `}}` or `if`"),
        },
        "end" => match tokens.get(1) {
            None => Ok(Action::End),
            Some(t) => err(t.at, "unexpected token after `end`; expected `}}`"),
        },
        word if is_unsupported_action(word) => err(at, unsupported_action(word)),
        _ => Ok(Action::Output(pipeline_of(at, tokens)?)),
    }
}

fn condition(what: &str, at: usize, tokens: &[Token]) -> Result<Expr, SyntaxError> {
    if tokens.is_empty() {
        return err(at, format!("missing condition after `{what}`"));
    }
    pipeline_of(at, tokens)
}

fn is_unsupported_action(word: &str) -> bool {
    matches!(
        word,
        "range" | "with" | "define" | "template" | "block" | "break" | "continue"
    )
}

fn unsupported_action(word: &str) -> String {
    format!("unsupported action `{word}`; {SUPPORTED}")
}

/// A whole action's tokens as one pipeline.
fn pipeline_of(at: usize, tokens: &[Token]) -> Result<Expr, SyntaxError> {
    let mut c = Cursor { tokens, i: 0, at };
    let e = c.pipeline(0)?;
    match c.peek() {
        None => Ok(e),
        Some(t) => err(t.at, "unexpected `)`"),
    }
}

struct Cursor<'t> {
    tokens: &'t [Token],
    i: usize,
    /// Where the action starts, for errors at its end.
    at: usize,
}

impl<'t> Cursor<'t> {
    fn peek(&self) -> Option<&'t Token> {
        self.tokens.get(self.i)
    }

    fn next(&mut self) -> Option<&'t Token> {
        let t = self.tokens.get(self.i);
        self.i += 1;
        t
    }

    /// Where an error about a missing token is reported: the last token, or the action.
    fn end_at(&self) -> usize {
        self.tokens.last().map_or(self.at, |t| t.at)
    }

    /// A pipeline: one command (no `|`, no declarations), up to the end or a `)`.
    fn pipeline(&mut self, depth: usize) -> Result<Expr, SyntaxError> {
        let e = self.command(depth)?;
        match self.peek() {
            Some(Token { tok: Tok::Pipe, at }) => {
                err(*at, format!("pipes (`|`) are not supported; {SUPPORTED}"))
            }
            _ => Ok(e),
        }
    }

    fn command(&mut self, depth: usize) -> Result<Expr, SyntaxError> {
        let head = match self.peek() {
            None
            | Some(Token {
                tok: Tok::RParen, ..
            }) => return err(self.end_at(), "missing value"),
            Some(t) => t,
        };
        match &head.tok {
            Tok::Ident(f) if f == "eq" || f == "ne" => {
                self.i += 1;
                let args = self.args(depth)?;
                compare(f, head.at, args)
            }
            Tok::Field(names) if names == &["Header", "Get"] => {
                self.i += 1;
                let mut args = self.args(depth)?;
                let name = match (args.pop(), args.is_empty()) {
                    (Some(name), true) => name,
                    (None, _) => {
                        return err(head.at, "`.Header.Get` needs one argument, the header name")
                    }
                    (Some(_), false) => {
                        return err(
                            head.at,
                            format!("`.Header.Get` takes one argument; got {}", args.len() + 1),
                        )
                    }
                };
                match name {
                    Expr::Str(s) => Ok(Expr::Header(HeaderKey::Name(
                        HeaderName::from_bytes(s.as_bytes()).ok(),
                    ))),
                    e if e.ty() == Ty::Str => Ok(Expr::Header(HeaderKey::Dynamic(Box::new(e)))),
                    e => err(
                        head.at,
                        format!(
                            "`.Header.Get` needs a string argument; got {}",
                            e.ty().name()
                        ),
                    ),
                }
            }
            _ => {
                let e = self.operand(depth)?;
                match self.peek() {
                    Some(Token {
                        tok: Tok::RParen | Tok::Pipe,
                        ..
                    })
                    | None => Ok(e),
                    Some(t) => err(
                        t.at,
                        "unexpected argument: only `eq`, `ne` and `.Header.Get` take arguments",
                    ),
                }
            }
        }
    }

    /// Operands up to the end, a `)` or a `|`.
    fn args(&mut self, depth: usize) -> Result<Vec<Expr>, SyntaxError> {
        let mut args = Vec::new();
        while let Some(t) = self.peek() {
            if matches!(t.tok, Tok::RParen | Tok::Pipe) {
                break;
            }
            args.push(self.operand(depth)?);
        }
        Ok(args)
    }

    fn operand(&mut self, depth: usize) -> Result<Expr, SyntaxError> {
        let Some(t) = self.next() else {
            return err(self.end_at(), "missing value");
        };
        let at = t.at;
        match &t.tok {
            Tok::Field(names) => field(at, names),
            Tok::Int(n) => Ok(Expr::Int(*n)),
            Tok::Str(s) => Ok(Expr::Str(s.as_str().into())),
            Tok::Ident(w) if w == "true" => Ok(Expr::Bool(true)),
            Tok::Ident(w) if w == "false" => Ok(Expr::Bool(false)),
            Tok::LParen => {
                if depth >= MAX_DEPTH {
                    return err(at, format!("parentheses nested more than {MAX_DEPTH} deep"));
                }
                let e = self.pipeline(depth + 1)?;
                match self.next() {
                    Some(Token {
                        tok: Tok::RParen, ..
                    }) => Ok(e),
                    _ => err(at, "unclosed `(`"),
                }
            }
            Tok::RParen => err(at, "unexpected `)`"),
            Tok::Ident(f) if f == "eq" || f == "ne" => err(
                at,
                format!("`{f}` as an argument must be in parentheses: ({f} A B)"),
            ),
            Tok::Ident(w) if is_unsupported_action(w) => err(at, unsupported_action(w)),
            Tok::Ident(w) if matches!(w.as_str(), "if" | "else" | "end") => {
                err(at, format!("`{w}` must start its action"))
            }
            Tok::Ident(f) => err(at, format!("unsupported function `{f}`; {SUPPORTED}")),
            Tok::Dot => err(
                at,
                format!("`.` (the whole data) cannot be used; {SUPPORTED}"),
            ),
            Tok::Variable(v) => err(
                at,
                format!("variables (`{v}`) are not supported; {SUPPORTED}"),
            ),
            Tok::Assign => err(
                at,
                format!("variables (`:=`, `=`) are not supported; {SUPPORTED}"),
            ),
            Tok::Pipe => err(at, format!("pipes (`|`) are not supported; {SUPPORTED}")),
            Tok::Comma => err(at, "unexpected `,`"),
        }
    }
}

/// A field chain in argument position (`.Header.Get` with its argument is a command).
fn field(at: usize, names: &[String]) -> Result<Expr, SyntaxError> {
    let (first, rest) = match names {
        [first, rest @ ..] => (first.as_str(), rest),
        [] => return err(at, "missing field name"),
    };
    if first == "Header" {
        return match rest.first().map(String::as_str) {
            None => err(at, "`.Header` can only be used as `.Header.Get \"Name\"`"),
            Some("Get") => err(
                at,
                "`.Header.Get` as an argument must be in parentheses: (.Header.Get \"Name\")",
            ),
            Some(m) => err(
                at,
                format!("unsupported method `.Header.{m}`; only `.Header.Get \"Name\"`"),
            ),
        };
    }
    let e = match first {
        "Status" => Expr::Status,
        "StatusText" => Expr::StatusText,
        "Message" => Expr::Message,
        other => return err(at, format!("unknown field `.{other}`; {SUPPORTED}")),
    };
    match rest.first() {
        None => Ok(e),
        Some(more) => err(at, format!("`.{first}` has no field or method `{more}`")),
    }
}

/// `eq` or `ne`, type-checked: Go compares only values of the same kind.
fn compare(f: &str, at: usize, args: Vec<Expr>) -> Result<Expr, SyntaxError> {
    if args.len() < 2 {
        return err(at, format!("`{f}` needs two arguments"));
    }
    let first = args[0].ty();
    if let Some(other) = args.iter().map(Expr::ty).find(|t| *t != first) {
        return err(
            at,
            format!(
                "incompatible types for comparison in `{f}`: {} and {}",
                first.name(),
                other.name()
            ),
        );
    }
    if f == "eq" {
        return Ok(Expr::Eq(args));
    }
    match <[Expr; 2]>::try_from(args) {
        Ok([a, b]) => Ok(Expr::Ne(Box::new((a, b)))),
        Err(args) => err(at, format!("`{f}` takes two arguments; got {}", args.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::headers::header_map as headers;

    fn render(template: &str, status: u16, message: &str, h: &HeaderMap) -> String {
        let page = match ErrorPage::parse(template) {
            Ok(p) => p,
            Err(e) => panic!("{template:?} should parse: {e}"),
        };
        let status = StatusCode::from_u16(status).expect("a valid status in the test");
        page.render(status, message, h)
    }

    fn simple(template: &str) -> String {
        render(template, 404, "", &HeaderMap::new())
    }

    fn parse_error(template: &str) -> String {
        match ErrorPage::parse(template) {
            Ok(_) => panic!("{template:?} should not parse"),
            Err(e) => e.to_string(),
        }
    }

    #[track_caller]
    fn assert_parse_error(template: &str, expected: &str) {
        let e = parse_error(template);
        assert!(
            e.contains(expected),
            "error for {template:?} was {e:?}, expected {expected:?}"
        );
    }

    // -- upstream's example templates --

    #[test]
    fn renders_the_message() {
        assert_eq!(
            render(
                "<html><body>{{ .Message }}</body></html>",
                404,
                "Requested route does not exist.",
                &HeaderMap::new()
            ),
            "<html><body>Requested route does not exist.</body></html>"
        );
    }

    #[test]
    fn renders_the_status_and_a_response_header() {
        let h = headers(&[("x-cf-routererror", "unknown_route")]);
        assert_eq!(
            render(
                r#"<html><body>Code: {{ .Status }} ; Cause: {{ .Header.Get "X-Cf-RouterError" }}</body></html>"#,
                404,
                "",
                &h
            ),
            "<html><body>Code: 404 ; Cause: unknown_route</body></html>"
        );
    }

    #[test]
    fn renders_status_text_and_message() {
        assert_eq!(
            render(
                "{{ .Status }} {{ .StatusText }}: {{ .Message }}",
                502,
                "Registered endpoint failed to handle the request.",
                &HeaderMap::new()
            ),
            "502 Bad Gateway: Registered endpoint failed to handle the request."
        );
    }

    #[test]
    fn status_text_is_empty_for_a_status_without_a_reason() {
        assert_eq!(
            render("[{{ .StatusText }}]", 525, "", &HeaderMap::new()),
            "[]"
        );
    }

    #[test]
    fn text_without_actions_is_verbatim() {
        let text = "<p class=\"x\">a & b }} { } \n\t</p>";
        assert_eq!(simple(text), text);
    }

    // -- .Header.Get --

    #[test]
    fn header_lookup_ignores_case() {
        let h = headers(&[("x-cf-routererror", "endpoint_failure")]);
        for name in ["X-Cf-Routererror", "x-cf-routererror", "X-CF-ROUTERERROR"] {
            let template = format!("{{{{ .Header.Get {name:?} }}}}");
            assert_eq!(render(&template, 502, "", &h), "endpoint_failure", "{name}");
        }
    }

    #[test]
    fn absent_header_is_empty() {
        assert_eq!(simple(r#"[{{ .Header.Get "X-Missing" }}]"#), "[]");
    }

    #[test]
    fn invalid_header_name_is_absent() {
        assert_eq!(simple(r#"[{{ .Header.Get "a b" }}]"#), "[]");
    }

    #[test]
    fn header_lookup_gives_the_first_value() {
        let h = headers(&[("x-multi", "one"), ("x-multi", "two")]);
        assert_eq!(render(r#"{{ .Header.Get "X-Multi" }}"#, 200, "", &h), "one");
    }

    #[test]
    fn header_name_may_be_computed() {
        let h = headers(&[("x-named", "found")]);
        assert_eq!(
            render("{{ .Header.Get (.Message) }}", 404, "X-Named", &h),
            "found"
        );
    }

    // -- escaping --

    #[test]
    fn message_is_html_escaped() {
        assert_eq!(
            render(
                "<p>{{ .Message }}</p>",
                400,
                r#"<script>alert("x" + 'y') & more</script>"#,
                &HeaderMap::new()
            ),
            "<p>&lt;script&gt;alert(&#34;x&#34; &#43; &#39;y&#39;) &amp; more&lt;/script&gt;</p>"
        );
    }

    #[test]
    fn nul_becomes_the_replacement_character() {
        assert_eq!(
            render("{{ .Message }}", 400, "a\0b", &HeaderMap::new()),
            "a\u{FFFD}b"
        );
    }

    #[test]
    fn header_values_are_html_escaped() {
        let h = headers(&[("x-evil", "<b>\"hi\"</b>")]);
        assert_eq!(
            render(r#"{{ .Header.Get "X-Evil" }}"#, 400, "", &h),
            "&lt;b&gt;&#34;hi&#34;&lt;/b&gt;"
        );
    }

    #[test]
    fn string_literals_are_escaped_and_unescaped() {
        assert_eq!(simple(r#"{{ "a\"b\\c\td<" }}"#), "a&#34;b\\c\td&lt;");
    }

    #[test]
    fn raw_string_literals_keep_backslashes() {
        assert_eq!(simple(r"{{ `a\n}}b` }}"), "a\\n}}b");
    }

    #[test]
    fn non_utf8_header_value_is_rendered_lossily() {
        let mut h = HeaderMap::new();
        h.insert(
            HeaderName::from_static("x-bytes"),
            HeaderValue::from_bytes(b"a\xffb").expect("obs-text is a valid header value"),
        );
        assert_eq!(
            render(r#"{{ .Header.Get "X-Bytes" }}"#, 400, "", &h),
            "a\u{FFFD}b"
        );
    }

    // -- trim markers and comments --

    #[test]
    fn trim_markers_remove_adjacent_whitespace() {
        assert_eq!(simple("a \n\t {{- .Status -}} \r\n b"), "a404b");
    }

    #[test]
    fn trim_marker_needs_a_space() {
        assert_eq!(simple("a {{-3}} b"), "a -3 b");
    }

    #[test]
    fn left_trim_stops_at_a_comment() {
        assert_eq!(simple("a {{/* c */}} {{- .Status }}"), "a 404");
    }

    #[test]
    fn comments_produce_nothing() {
        assert_eq!(simple("a{{/* one\ntwo */}}b"), "ab");
    }

    #[test]
    fn comments_take_trim_markers() {
        assert_eq!(simple("a \n {{- /* c */ -}} \n b"), "ab");
    }

    #[test]
    fn actions_may_span_lines() {
        assert_eq!(simple("{{\n  .Status\n}}"), "404");
    }

    #[test]
    fn closing_braces_in_a_string_do_not_end_the_action() {
        assert_eq!(simple(r#"{{ "}}" }}"#), "}}");
    }

    // -- if / else / eq / ne --

    #[test]
    fn if_eq_else() {
        let t = "{{ if eq .Status 404 }}missing{{ else }}other{{ end }}";
        assert_eq!(render(t, 404, "", &HeaderMap::new()), "missing");
        assert_eq!(render(t, 502, "", &HeaderMap::new()), "other");
    }

    #[test]
    fn else_if_chain_takes_the_first_true_branch() {
        let t = "{{ if eq .Status 404 }}a{{ else if eq .Status 502 }}b\
                 {{ else if ne .Status 0 }}c{{ else }}d{{ end }}";
        assert_eq!(render(t, 404, "", &HeaderMap::new()), "a");
        assert_eq!(render(t, 502, "", &HeaderMap::new()), "b");
        assert_eq!(render(t, 503, "", &HeaderMap::new()), "c");
    }

    #[test]
    fn if_without_else_renders_nothing_when_false() {
        assert_eq!(simple("[{{ if eq .Status 200 }}ok{{ end }}]"), "[]");
    }

    #[test]
    fn truthiness_is_gos() {
        let t = "{{ if .Message }}m{{ else }}-{{ end }}{{ if 0 }}z{{ else }}-{{ end }}\
                 {{ if 7 }}n{{ end }}{{ if false }}f{{ else }}-{{ end }}";
        assert_eq!(render(t, 404, "", &HeaderMap::new()), "--n-");
        assert_eq!(render(t, 404, "x", &HeaderMap::new()), "m-n-");
    }

    #[test]
    fn ne_on_a_parenthesised_header() {
        let t = r#"{{ if ne (.Header.Get "X-Cf-Routererror") "" }}router{{ else }}app{{ end }}"#;
        let h = headers(&[("x-cf-routererror", "unknown_route")]);
        assert_eq!(render(t, 404, "", &h), "router");
        assert_eq!(render(t, 404, "", &HeaderMap::new()), "app");
    }

    #[test]
    fn eq_matches_any_of_several() {
        let t = "{{ if eq .Status 404 410 }}gone{{ else }}-{{ end }}";
        assert_eq!(render(t, 410, "", &HeaderMap::new()), "gone");
        assert_eq!(render(t, 500, "", &HeaderMap::new()), "-");
    }

    #[test]
    fn eq_compares_strings() {
        let t = r#"{{ if eq .StatusText "Not Found" }}nf{{ end }}"#;
        assert_eq!(simple(t), "nf");
    }

    #[test]
    fn comparison_result_prints_as_bool() {
        assert_eq!(
            simple("{{ eq .Status 404 }} {{ ne .Status 404 }}"),
            "true false"
        );
    }

    #[test]
    fn nested_ifs() {
        let t = "{{ if .Status }}{{ if eq .Status 404 }}in{{ else }}x{{ end }}{{ end }}";
        assert_eq!(simple(t), "in");
    }

    #[test]
    fn parenthesised_value_prints() {
        assert_eq!(render("{{ (.Message) }}", 404, "m", &HeaderMap::new()), "m");
    }

    // -- parse errors --

    #[test]
    fn error_names_line_and_column() {
        assert_eq!(
            parse_error("<html>\n<body>\n  {{ range .Items }}x{{ end }}"),
            "html_error_template_file: line 3, column 3: unsupported action `range`; supported: \
             .Status, .StatusText, .Message, .Header.Get \"Name\", if/else/end, eq, ne"
        );
    }

    #[test]
    fn unsupported_actions_are_errors() {
        for word in [
            "range", "with", "define", "template", "block", "break", "continue",
        ] {
            assert_parse_error(
                &format!("{{{{ {word} \"x\" }}}}"),
                &format!("unsupported action `{word}`"),
            );
        }
        assert_parse_error(
            "{{ if 1 }}{{ else with .Message }}{{ end }}",
            "unsupported action `with`",
        );
    }

    #[test]
    fn unknown_field_is_an_error() {
        assert_parse_error("{{ .Foo }}", "unknown field `.Foo`");
        assert_parse_error("{{ .status }}", "unknown field `.status`");
        assert_parse_error(
            "{{ .Status.Code }}",
            "`.Status` has no field or method `Code`",
        );
    }

    #[test]
    fn header_needs_get() {
        assert_parse_error(
            "{{ .Header }}",
            "`.Header` can only be used as `.Header.Get \"Name\"`",
        );
        assert_parse_error(
            r#"{{ .Header.Values "X" }}"#,
            "unsupported method `.Header.Values`",
        );
    }

    #[test]
    fn header_get_arguments_are_checked() {
        assert_parse_error("{{ .Header.Get }}", "needs one argument");
        assert_parse_error(r#"{{ .Header.Get "A" "B" }}"#, "takes one argument; got 2");
        assert_parse_error("{{ .Header.Get 5 }}", "needs a string argument; got int");
    }

    #[test]
    fn header_get_as_an_argument_needs_parentheses() {
        assert_parse_error(
            r#"{{ if ne .Header.Get "X" "" }}{{ end }}"#,
            "must be in parentheses: (.Header.Get \"Name\")",
        );
    }

    #[test]
    fn unknown_function_is_an_error() {
        assert_parse_error(
            r#"{{ printf "%s" .Message }}"#,
            "unsupported function `printf`",
        );
        assert_parse_error(
            "{{ if not .Message }}{{ end }}",
            "unsupported function `not`",
        );
    }

    #[test]
    fn variables_are_errors() {
        assert_parse_error("{{ $x }}", "variables (`$x`) are not supported");
        assert_parse_error("{{ $x := .Status }}", "variables (`$x`) are not supported");
    }

    #[test]
    fn pipes_are_errors() {
        assert_parse_error("{{ .Message | html }}", "pipes (`|`) are not supported");
    }

    #[test]
    fn unterminated_action_is_an_error() {
        assert_parse_error("a {{ .Status", "line 1, column 3: unclosed action");
        assert_parse_error("a {{", "unclosed action");
    }

    #[test]
    fn comment_errors() {
        assert_parse_error("{{/* never closed }}", "unclosed comment");
        assert_parse_error(
            "{{/* c */ .Status }}",
            "comment ends before the closing `}}`",
        );
    }

    #[test]
    fn unbalanced_if_end_is_an_error() {
        assert_parse_error("{{ if 1 }}x", "line 1, column 1: `if` without `end`");
        assert_parse_error("{{ if 1 }}x{{ else }}y", "`if` without `end`");
        assert_parse_error("x{{ end }}", "`end` without `if`");
        assert_parse_error("x{{ else }}", "`else` without `if`");
        assert_parse_error(
            "{{ if 1 }}{{ else }}{{ else }}{{ end }}",
            "`else` after the final `else`",
        );
        assert_parse_error("{{ if }}{{ end }}", "missing condition after `if`");
        assert_parse_error("{{ end 1 }}", "unexpected token after `end`");
    }

    #[test]
    fn bad_literals_are_errors() {
        assert_parse_error(r#"{{ "abc }}"#, "unterminated quoted string");
        assert_parse_error("{{ \"a\nb\" }}", "unterminated quoted string");
        assert_parse_error(r#"{{ "a\qb" }}"#, "unsupported escape `\\q`");
        assert_parse_error("{{ `abc }}", "unterminated raw string");
        assert_parse_error("{{ 0x10 }}", "unsupported number `0x10`");
        assert_parse_error("{{ 1.5 }}", "unsupported number `1.5`");
        assert_parse_error("{{ 99999999999999999999 }}", "out of range");
        assert_parse_error("{{ 'a' }}", "character constants are not supported");
        assert_parse_error("{{ .Status - }}", "unsupported number `-`");
    }

    #[test]
    fn mismatched_comparison_types_are_errors() {
        assert_parse_error(
            r#"{{ if eq .Status "404" }}{{ end }}"#,
            "incompatible types for comparison in `eq`: int and string",
        );
    }

    #[test]
    fn comparison_argument_counts_are_checked() {
        assert_parse_error("{{ eq .Status }}", "`eq` needs two arguments");
        assert_parse_error("{{ ne 1 2 3 }}", "`ne` takes two arguments; got 3");
        assert_parse_error(
            "{{ eq 1 eq 1 2 }}",
            "`eq` as an argument must be in parentheses",
        );
    }

    #[test]
    fn arguments_to_a_value_are_errors() {
        assert_parse_error("{{ .Status 4 }}", "unexpected argument");
    }

    #[test]
    fn empty_action_and_dot_are_errors() {
        assert_parse_error("{{ }}", "empty action");
        assert_parse_error("{{ . }}", "`.` (the whole data) cannot be used");
        assert_parse_error("{{ () }}", "missing value");
    }

    #[test]
    fn unbalanced_parentheses_are_errors() {
        assert_parse_error("{{ (.Status }}", "unclosed `(`");
        assert_parse_error("{{ .Status) }}", "unexpected `)`");
    }

    #[test]
    fn unexpected_character_is_an_error() {
        assert_parse_error("{{ .Status ; }}", "unexpected character ';' in action");
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "{{ if 1 }}".repeat(MAX_DEPTH + 1) + &"{{ end }}".repeat(MAX_DEPTH + 1);
        assert_parse_error(&deep, "`if` nested more than 100 deep");
        let ok = "{{ if 1 }}".repeat(MAX_DEPTH) + "x" + &"{{ end }}".repeat(MAX_DEPTH);
        assert_eq!(simple(&ok), "x");
        let parens = "(".repeat(MAX_DEPTH + 1) + "1" + &")".repeat(MAX_DEPTH + 1);
        assert_parse_error(
            &format!("{{{{ {parens} }}}}"),
            "parentheses nested more than 100 deep",
        );
    }

    // -- load --

    fn temp_file(name: &str, contents: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "gorouter-error-page-{}-{name}.html",
            std::process::id()
        ));
        std::fs::write(&path, contents).expect("write a temporary template");
        path
    }

    #[test]
    fn load_reads_and_compiles_the_file() {
        let path = temp_file("ok", "{{ .Status }}\n");
        let page = ErrorPage::load(&path);
        let _ = std::fs::remove_file(&path);
        let page = page.expect("the template loads");
        assert_eq!(
            page.render(StatusCode::NOT_FOUND, "", &HeaderMap::new()),
            "404\n"
        );
    }

    #[test]
    fn load_error_names_the_missing_file() {
        let path = std::env::temp_dir().join("gorouter-error-page-does-not-exist.html");
        let e = ErrorPage::load(&path)
            .expect_err("no such file")
            .to_string();
        assert!(
            e.starts_with(&format!(
                "html_error_template_file: cannot read {}: ",
                path.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn load_syntax_error_names_the_file() {
        let path = temp_file("bad", "ok\n{{ .Nope }}");
        let e = ErrorPage::load(&path)
            .expect_err("bad template")
            .to_string();
        let _ = std::fs::remove_file(&path);
        assert!(
            e.starts_with(&format!(
                "html_error_template_file {}: line 2, column 4: unknown field `.Nope`",
                path.display()
            )),
            "{e}"
        );
    }
}
