//! Lexer and parser for the subset of Xen's `xl.cfg` syntax that manifests use.
//!
//! Grammar (informal):
//!
//! ```text
//! file    = { line }
//! line    = [ setting [ ";" ] ] [ "#" comment ] newline
//! setting = key "=" value
//! key     = [A-Za-z_] { [A-Za-z0-9_] }
//! value   = string | integer | list
//! string  = '"' chars '"' | "'" chars "'"       (one line; escapes \\ \" \')
//! integer = decimal digits | "0x" hex digits     (fits in 64 bits)
//! list    = "[" [ string { "," string } [ "," ] ] "]"   (may span lines, may hold comments)
//! ```
//!
//! The parser only checks the shape; what each key means is checked by the domain and system
//! readers. It never panics, whatever the input (see the property test and the fuzz target).

use std::path::Path;

use crate::error::{ManifestError, Problem};

/// One `key = value` setting and the line its key is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Setting {
    pub key: String,
    pub line: usize,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Value {
    Str(String),
    Int(u64),
    List(Vec<ListItem>),
}

/// One string of a list, with its own line (lists may span several lines).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ListItem {
    pub text: String,
    pub line: usize,
}

impl Value {
    /// How the value reads in an error message: `"lots"`, `16`, `a list`.
    pub fn describe(&self) -> String {
        match self {
            Value::Str(text) => format!("{text:?}"),
            Value::Int(number) => number.to_string(),
            Value::List(_) => "a list".to_owned(),
        }
    }
}

/// Splits `text` into settings, in file order. Duplicate and unknown keys are the caller's
/// business (see `table`).
pub(crate) fn parse_settings(file: &Path, text: &str) -> Result<Vec<Setting>, ManifestError> {
    let mut cursor = Cursor {
        file,
        text,
        pos: 0,
        line: 1,
    };
    if cursor.peek() == Some('\u{feff}') {
        cursor.bump();
    }
    let mut settings = Vec::new();
    loop {
        cursor.skip_blanks();
        cursor.skip_comment();
        match cursor.peek() {
            None => return Ok(settings),
            Some('\n') => {
                cursor.bump();
                continue;
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
            Some(_) => {
                return Err(cursor.error(
                    None,
                    Problem::ExpectedKey {
                        found: cursor.found(),
                    },
                ))
            }
        }
        let line = cursor.line;
        let key = cursor
            .take_while(|c| c.is_ascii_alphanumeric() || c == '_')
            .to_owned();
        cursor.skip_blanks();
        if cursor.peek() != Some('=') {
            return Err(cursor.error(
                Some(&key),
                Problem::ExpectedEquals {
                    found: cursor.found(),
                },
            ));
        }
        cursor.bump();
        cursor.skip_blanks();
        let value = parse_value(&mut cursor, &key)?;
        cursor.skip_blanks();
        if cursor.peek() == Some(';') {
            cursor.bump();
            cursor.skip_blanks();
        }
        cursor.skip_comment();
        if !matches!(cursor.peek(), None | Some('\n')) {
            return Err(cursor.error(
                Some(&key),
                Problem::TrailingText {
                    found: cursor.found(),
                },
            ));
        }
        settings.push(Setting { key, line, value });
    }
}

fn parse_value(cursor: &mut Cursor<'_>, key: &str) -> Result<Value, ManifestError> {
    match cursor.peek() {
        Some(quote @ ('"' | '\'')) => parse_string(cursor, key, quote).map(Value::Str),
        Some('[') => parse_list(cursor, key),
        Some(c) if c.is_ascii_digit() => parse_integer(cursor, key),
        None | Some('\n' | '#' | ';') => Err(cursor.error(Some(key), Problem::MissingValue)),
        Some(_) => Err(cursor.error(
            Some(key),
            Problem::ExpectedValue {
                found: cursor.found(),
            },
        )),
    }
}

/// Parses a quoted string; the cursor is on the opening quote.
fn parse_string(cursor: &mut Cursor<'_>, key: &str, quote: char) -> Result<String, ManifestError> {
    let line = cursor.line;
    let unterminated = |cursor: &Cursor<'_>| {
        ManifestError::new(
            cursor.file,
            Some(line),
            Some(key),
            Problem::UnterminatedString { quote },
        )
    };
    cursor.bump();
    let mut text = String::new();
    loop {
        match cursor.peek() {
            None | Some('\n') => return Err(unterminated(cursor)),
            Some('\\') => {
                cursor.bump();
                match cursor.peek() {
                    None | Some('\n') => return Err(unterminated(cursor)),
                    Some(escaped @ ('\\' | '"' | '\'')) => text.push(escaped),
                    Some(escape) => {
                        return Err(cursor.error(Some(key), Problem::UnknownEscape { escape }))
                    }
                }
            }
            Some(c) if c == quote => {
                cursor.bump();
                return Ok(text);
            }
            Some(c) => text.push(c),
        }
        cursor.bump();
    }
}

fn parse_integer(cursor: &mut Cursor<'_>, key: &str) -> Result<Value, ManifestError> {
    let word = cursor.take_while(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    let parsed = match word.strip_prefix("0x").or_else(|| word.strip_prefix("0X")) {
        Some(hex) if hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u64::from_str_radix(hex, 16).ok()
        }
        Some(_) => None,
        None if word.bytes().all(|b| b.is_ascii_digit()) => word.parse().ok(),
        None => None,
    };
    match parsed {
        Some(number) => Ok(Value::Int(number)),
        None => {
            let found = format!("`{word}`");
            Err(cursor.error(Some(key), Problem::BadInteger { found }))
        }
    }
}

/// Parses a list of strings; the cursor is on `[`.
fn parse_list(cursor: &mut Cursor<'_>, key: &str) -> Result<Value, ManifestError> {
    let opened_line = cursor.line;
    let unclosed = |cursor: &Cursor<'_>| {
        ManifestError::new(
            cursor.file,
            Some(opened_line),
            Some(key),
            Problem::UnclosedList { opened_line },
        )
    };
    cursor.bump();
    let mut items = Vec::new();
    loop {
        cursor.skip_space_and_comments();
        match cursor.peek() {
            None => return Err(unclosed(cursor)),
            Some(']') => break,
            Some(quote @ ('"' | '\'')) => {
                let line = cursor.line;
                let text = parse_string(cursor, key, quote)?;
                items.push(ListItem { text, line });
            }
            Some(_) => {
                let found = cursor.found();
                return Err(cursor.error(Some(key), Problem::ExpectedListItem { found }));
            }
        }
        cursor.skip_space_and_comments();
        match cursor.peek() {
            None => return Err(unclosed(cursor)),
            Some(',') => {
                cursor.bump();
            }
            Some(']') => break,
            Some(_) => {
                let found = cursor.found();
                return Err(cursor.error(Some(key), Problem::ExpectedListSeparator { found }));
            }
        }
    }
    cursor.bump(); // the `]`
    Ok(Value::List(items))
}

/// A position in the text, with its 1-based line.
struct Cursor<'a> {
    file: &'a Path,
    text: &'a str,
    pos: usize,
    line: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        self.text.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) {
        if let Some(c) = self.peek() {
            self.pos += c.len_utf8();
            if c == '\n' {
                self.line += 1;
            }
        }
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> &'a str {
        let rest = self.rest();
        let end = rest.find(|c: char| !keep(c)).unwrap_or(rest.len());
        self.pos += end;
        &rest[..end]
    }

    /// Spaces and tabs (and the `\r` of CRLF line ends), not newlines.
    fn skip_blanks(&mut self) {
        self.take_while(|c| matches!(c, ' ' | '\t' | '\r'));
    }

    /// A `#` comment up to (not including) the newline.
    fn skip_comment(&mut self) {
        if self.peek() == Some('#') {
            self.take_while(|c| c != '\n');
        }
    }

    /// Blanks, newlines and comments: the space between list items.
    fn skip_space_and_comments(&mut self) {
        loop {
            self.skip_blanks();
            self.skip_comment();
            if self.peek() != Some('\n') {
                return;
            }
            self.bump();
        }
    }

    /// What is at the cursor, for "found ..." in messages: the next string or word, or the
    /// next character, or the end of the line or file.
    fn found(&self) -> String {
        let rest = self.rest();
        match rest.chars().next() {
            None => "the end of the file".to_owned(),
            Some('\n' | '\r') => "the end of the line".to_owned(),
            Some(quote @ ('"' | '\'')) => {
                let line = rest.split('\n').next().unwrap_or(rest);
                let end = line[1..].find(quote).map_or(line.len(), |at| at + 2);
                format!("`{}`", line[..end].trim_end())
            }
            Some(first) => {
                let is_break = |c: char| c.is_whitespace() || "=;#,[]\"'".contains(c);
                let end = rest.find(is_break).unwrap_or(rest.len());
                let word = if end == 0 {
                    &rest[..first.len_utf8()]
                } else {
                    &rest[..end]
                };
                format!("`{word}`")
            }
        }
    }

    fn error(&self, key: Option<&str>, problem: Problem) -> ManifestError {
        ManifestError::new(self.file, Some(self.line), key, problem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Setting>, ManifestError> {
        parse_settings(Path::new("t.cfg"), text)
    }

    fn message(text: &str) -> String {
        parse(text).expect_err("should not parse").to_string()
    }

    fn setting(key: &str, line: usize, value: Value) -> Setting {
        Setting {
            key: key.to_owned(),
            line,
            value,
        }
    }

    fn item(text: &str, line: usize) -> ListItem {
        ListItem {
            text: text.to_owned(),
            line,
        }
    }

    #[test]
    fn empty_and_comment_only_files_have_no_settings() {
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(parse("\n\n  # just a comment\n\t\n").unwrap(), vec![]);
    }

    #[test]
    fn reads_strings_integers_and_lists_with_lines() {
        let text = "# header\nname = \"hello\"\nmemory=16;\nvcpus = 0x2 # two\n\nd = [ 'a.cfg',\n  # c\n  \"b.cfg\", ]\n";
        assert_eq!(
            parse(text).unwrap(),
            vec![
                setting("name", 2, Value::Str("hello".into())),
                setting("memory", 3, Value::Int(16)),
                setting("vcpus", 4, Value::Int(2)),
                setting(
                    "d",
                    6,
                    Value::List(vec![item("a.cfg", 6), item("b.cfg", 8)])
                ),
            ]
        );
    }

    #[test]
    fn reads_the_last_line_without_a_newline_and_crlf_line_ends() {
        assert_eq!(
            parse("a = 1\r\nb = 'x'").unwrap(),
            vec![
                setting("a", 1, Value::Int(1)),
                setting("b", 2, Value::Str("x".into())),
            ]
        );
    }

    #[test]
    fn strings_keep_hashes_and_handle_escapes() {
        let text = r#"s = "a # not a comment \"q\" \\ \' x""#;
        assert_eq!(
            parse(text).unwrap()[0].value,
            Value::Str(r#"a # not a comment "q" \ ' x"#.into())
        );
        assert_eq!(
            parse("s = 'say \"hi\"'").unwrap()[0].value,
            Value::Str("say \"hi\"".into())
        );
    }

    #[test]
    fn empty_list_and_empty_string() {
        assert_eq!(parse("d = []").unwrap()[0].value, Value::List(vec![]));
        assert_eq!(parse("d = [\n]").unwrap()[0].value, Value::List(vec![]));
        assert_eq!(parse("s = ''").unwrap()[0].value, Value::Str(String::new()));
    }

    #[test]
    fn integers_decimal_and_hex_up_to_64_bits() {
        assert_eq!(parse("n = 0").unwrap()[0].value, Value::Int(0));
        assert_eq!(parse("n = 0XfF").unwrap()[0].value, Value::Int(255));
        assert_eq!(
            parse("n = 18446744073709551615").unwrap()[0].value,
            Value::Int(u64::MAX)
        );
        assert_eq!(
            message("n = 18446744073709551616"),
            "t.cfg:1: key `n`: `18446744073709551616` is not an integer (write decimal digits, or 0x and hex digits)"
        );
        assert!(message("n = 16M").contains("`16M` is not an integer"));
        assert!(message("n = 1.5").contains("`1.5` is not an integer"));
        assert!(message("n = 0x").contains("`0x` is not an integer"));
        assert!(message("n = 0xg").contains("`0xg` is not an integer"));
    }

    #[test]
    fn syntax_errors_name_line_and_key() {
        assert_eq!(message("\n= 3"), "t.cfg:2: expected a key name, found `=`");
        assert_eq!(
            message("9a = 3"),
            "t.cfg:1: expected a key name, found `9a`"
        );
        assert_eq!(
            message("memory 16"),
            "t.cfg:1: key `memory`: expected `=` after the key, found `16`"
        );
        assert_eq!(
            message("memory\n"),
            "t.cfg:1: key `memory`: expected `=` after the key, found the end of the line"
        );
        assert_eq!(
            message("memory ="),
            "t.cfg:1: key `memory`: missing value after `=`"
        );
        assert_eq!(
            message("memory = # c"),
            "t.cfg:1: key `memory`: missing value after `=`"
        );
        assert_eq!(
            message("memory = lots"),
            "t.cfg:1: key `memory`: expected a value (a quoted string, an integer or a list), found `lots`"
        );
        assert_eq!(
            message("a = 1 2"),
            "t.cfg:1: key `a`: unexpected `2` after the value (one setting per line)"
        );
        assert_eq!(
            message("a = 1; b = 2"),
            "t.cfg:1: key `a`: unexpected `b` after the value (one setting per line)"
        );
    }

    #[test]
    fn string_errors() {
        assert_eq!(
            message("a = 1\ns = \"open\nb = 2"),
            "t.cfg:2: key `s`: unterminated string: the closing \" must be on the same line"
        );
        assert_eq!(
            message("s = 'x\\"),
            "t.cfg:1: key `s`: unterminated string: the closing ' must be on the same line"
        );
        assert_eq!(
            message(r#"s = "a\n""#),
            r#"t.cfg:1: key `s`: unknown escape `\n` in a string (the escapes are \\, \" and \')"#
        );
    }

    #[test]
    fn list_errors() {
        assert_eq!(
            message("d = [\n'a',\n"),
            "t.cfg:1: key `d`: the list opened on line 1 is never closed with `]`"
        );
        assert_eq!(
            message("d = [ 'a'"),
            "t.cfg:1: key `d`: the list opened on line 1 is never closed with `]`"
        );
        assert_eq!(
            message("d = [\n 3 ]"),
            "t.cfg:2: key `d`: list items must be quoted strings, found `3`"
        );
        assert_eq!(
            message("d = [ , ]"),
            "t.cfg:1: key `d`: list items must be quoted strings, found `,`"
        );
        assert_eq!(
            message("d = [ 'a',, ]"),
            "t.cfg:1: key `d`: list items must be quoted strings, found `,`"
        );
        assert_eq!(
            message("d = [ 'a'\n 'b' ]"),
            "t.cfg:2: key `d`: expected `,` or `]` after a list item, found `'b'`"
        );
        assert_eq!(
            message("d = [ [ 'a' ] ]"),
            "t.cfg:1: key `d`: list items must be quoted strings, found `[`"
        );
        assert_eq!(
            message("d = [ 'a' ] x"),
            "t.cfg:1: key `d`: unexpected `x` after the value (one setting per line)"
        );
    }

    #[test]
    fn non_ascii_text_is_fine_in_strings_and_reported_whole_elsewhere() {
        assert_eq!(
            parse("s = 'ünï'").unwrap()[0].value,
            Value::Str("ünï".into())
        );
        assert_eq!(message("ü = 1"), "t.cfg:1: expected a key name, found `ü`");
        assert_eq!(
            message("\u{feff}a = é"),
            "t.cfg:1: key `a`: expected a value (a quoted string, an integer or a list), found `é`"
        );
    }
}
