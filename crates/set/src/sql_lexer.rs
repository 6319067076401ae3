/*!
A small SQL lexer: splits a migration file into top-level statements.

It understands what can hide a `;` or a keyword from a naive scan: `--` and nested
`/* */` comments, string literals (standard, `E'...'` with backslash escapes), quoted
identifiers, dollar-quoted bodies (`$$ ... $$`, `$fn$ ... $fn$`) and SQL-standard function
bodies (`BEGIN ATOMIC ... END`). It does not parse SQL: each statement only carries its
text and its first few words, which is enough to find top-level transaction control or
`SET search_path`, to count statements, and to send a file statement by statement.
*/

/// One top-level statement of a SQL file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement<'a> {
    /// The statement text, without the terminating `;`, trimmed.
    pub text: &'a str,
    /// 1-based line where the statement starts.
    pub line: usize,
    /// Its first (up to three) words, lower-cased (quoted identifiers unquoted).
    pub words: Vec<String>,
}

impl Statement<'_> {
    /// Whether the statement's leading words are exactly `prefix`.
    pub fn starts_with(&self, prefix: &[&str]) -> bool {
        self.words.len() >= prefix.len() && self.words.iter().zip(prefix).all(|(w, p)| w == p)
    }
}

/// A construct that never ends (the file would not run either).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unterminated {what} starting on line {line}")]
pub struct LexError {
    /// What was left open: "string literal", "dollar-quoted body", ...
    pub what: &'static str,
    /// 1-based line where it starts.
    pub line: usize,
}

/// Splits `sql` into its top-level statements (comments and empty statements dropped).
pub fn split_statements(sql: &str) -> Result<Vec<Statement<'_>>, LexError> {
    let mut out = Vec::new();
    for_each_statement(sql, |stmt| out.push(stmt))?;
    Ok(out)
}

/// Like [`split_statements`], but hands each statement to `each` as soon as it is found
/// instead of collecting them (a large file's statements are never all in memory at once).
/// On an error, `each` has already seen the statements before it.
pub fn for_each_statement<'a>(sql: &'a str, each: impl FnMut(Statement<'a>)) -> Result<(), LexError> {
    Lexer::new(sql, each).run()
}

/// A single forward pass over the file: every scan starts where the previous one stopped
/// (the only look-ahead, `next_word_is`, reads just the gap to the next word), and line
/// numbers are counted incrementally, so splitting takes time linear in the file's size.
struct Lexer<'a, F> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// Line numbers are counted incrementally: `line` is the 1-based line of byte offset
    /// `line_offset`. The offsets asked for only grow (each statement's start, then maybe the
    /// start of an unterminated construct), so the whole file is counted once in total.
    line: usize,
    line_offset: usize,
    each: F,
    // Current statement: start offset of its first token, its words, BEGIN ATOMIC depth.
    start: Option<usize>,
    words: Vec<String>,
    tokens: usize,
    depth: usize,
    /// The statement is `CREATE [OR REPLACE] FUNCTION|PROCEDURE` (may hold `BEGIN ATOMIC`).
    routine: bool,
    /// The previous token was `.` (after a name) or `AS`: the next word is a name
    /// (`p.end`, `AS case`), never a keyword.
    name_next: bool,
    /// The previous token was a word, a quoted identifier or `)`: a `.` now selects a field.
    after_name: bool,
}

impl<'a, F: FnMut(Statement<'a>)> Lexer<'a, F> {
    fn new(src: &'a str, each: F) -> Self {
        Lexer {
            src,
            bytes: src.as_bytes(),
            pos: 0,
            line: 1,
            line_offset: 0,
            each,
            start: None,
            words: Vec::new(),
            tokens: 0,
            depth: 0,
            routine: false,
            name_next: false,
            after_name: false,
        }
    }

    fn run(mut self) -> Result<(), LexError> {
        while self.pos < self.bytes.len() {
            let b = self.bytes[self.pos];
            let name_next = std::mem::take(&mut self.name_next);
            match b {
                b if b.is_ascii_whitespace() => {
                    self.pos += 1;
                    self.name_next = name_next;
                }
                b'-' if self.peek(1) == Some(b'-') => {
                    self.line_comment();
                    self.name_next = name_next;
                }
                b'/' if self.peek(1) == Some(b'*') => {
                    self.block_comment()?;
                    self.name_next = name_next;
                }
                b';' if self.depth == 0 => {
                    self.finish(self.pos);
                    self.pos += 1;
                }
                b'\'' => {
                    self.token_start();
                    self.tokens += 1;
                    self.quoted(b'\'', false, "string literal")?;
                    self.after_name = false;
                }
                b'"' => {
                    self.token_start();
                    let begin = self.pos;
                    self.quoted(b'"', false, "quoted identifier")?;
                    let ident = &self.src[begin + 1..self.pos - 1];
                    self.word(|| ident.replace("\"\"", "\""));
                    self.after_name = true;
                }
                b'$' if self.dollar_tag().is_some() => {
                    self.dollar_body()?;
                    self.after_name = false;
                }
                b if is_ident_start(b) => self.identifier(name_next)?,
                _ => {
                    self.token_start();
                    self.tokens += 1;
                    self.pos += 1;
                    // `x.end`, `"t".end`, `(r).end` name a field; the `.` of `1.` does not.
                    self.name_next = b == b'.' && self.after_name;
                    self.after_name = b == b')';
                }
            }
        }
        self.finish(self.bytes.len());
        Ok(())
    }

    fn peek(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.pos + ahead).copied()
    }

    /// The 1-based line of byte `offset`, counting only the newlines since the previous call.
    fn line_at(&mut self, offset: usize) -> usize {
        if offset >= self.line_offset {
            self.line += count_newlines(&self.bytes[self.line_offset..offset]);
        } else {
            self.line -= count_newlines(&self.bytes[offset..self.line_offset]);
        }
        self.line_offset = offset;
        self.line
    }

    fn token_start(&mut self) {
        if self.start.is_none() {
            self.start = Some(self.pos);
        }
    }

    fn finish(&mut self, end: usize) {
        if let Some(start) = self.start.take() {
            let text = self.src[start..end].trim();
            let line = self.line_at(start);
            (self.each)(Statement {
                text,
                line,
                words: std::mem::take(&mut self.words),
            });
        }
        self.tokens = 0;
        self.depth = 0;
        self.routine = false;
    }

    fn line_comment(&mut self) {
        self.pos = find_byte(self.bytes, self.pos, |b| b == b'\n');
    }

    fn block_comment(&mut self) -> Result<(), LexError> {
        let begin = self.pos;
        let mut nesting = 0usize;
        while self.pos < self.bytes.len() {
            if self.bytes[self.pos] == b'/' && self.peek(1) == Some(b'*') {
                nesting += 1;
                self.pos += 2;
            } else if self.bytes[self.pos] == b'*' && self.peek(1) == Some(b'/') {
                nesting -= 1;
                self.pos += 2;
                if nesting == 0 {
                    return Ok(());
                }
            } else {
                self.pos = find_byte(self.bytes, self.pos + 1, |b| b == b'/' || b == b'*');
            }
        }
        Err(LexError {
            what: "block comment",
            line: self.line_at(begin),
        })
    }

    /// Scans a `'...'` or `"..."` token (doubled quote = escaped quote); with
    /// `backslashes`, a backslash escapes the next byte (`E'...'`).
    fn quoted(&mut self, quote: u8, backslashes: bool, what: &'static str) -> Result<(), LexError> {
        let begin = self.pos;
        self.pos += 1;
        loop {
            // Jump to the next byte that can end or escape the token.
            self.pos = find_byte(self.bytes, self.pos, |b| b == quote || (backslashes && b == b'\\'));
            if self.pos >= self.bytes.len() {
                break;
            }
            let b = self.bytes[self.pos];
            let escaped = (backslashes && b == b'\\') || (b == quote && self.peek(1) == Some(quote));
            if escaped {
                self.pos += 2;
            } else {
                self.pos += 1;
                return Ok(());
            }
        }
        Err(LexError {
            what,
            line: self.line_at(begin),
        })
    }

    /// The `$tag$` opening at the current position, if it is one (`$1` is a parameter).
    fn dollar_tag(&self) -> Option<&'a str> {
        let rest = &self.bytes[self.pos + 1..];
        let len = rest.iter().position(|&b| !(is_ident_start(b) || b.is_ascii_digit()))?;
        if rest[len] != b'$' || rest.first().is_some_and(u8::is_ascii_digit) {
            return None;
        }
        Some(&self.src[self.pos..self.pos + len + 2])
    }

    fn dollar_body(&mut self) -> Result<(), LexError> {
        let tag = self.dollar_tag().expect("caller checked");
        self.token_start();
        self.tokens += 1;
        let begin = self.pos;
        let body_start = self.pos + tag.len();
        match self.src[body_start..].find(tag) {
            Some(at) => {
                self.pos = body_start + at + tag.len();
                Ok(())
            }
            None => Err(LexError {
                what: "dollar-quoted body",
                line: self.line_at(begin),
            }),
        }
    }

    /// A word; `name_next`: it follows `.` or `AS`, so it is a name, never a keyword.
    fn identifier(&mut self, name_next: bool) -> Result<(), LexError> {
        self.token_start();
        let begin = self.pos;
        while self.pos < self.bytes.len() && is_ident_part(self.bytes[self.pos]) {
            self.pos += 1;
        }
        // Compared case-insensitively in place: only the statement's first words are lower-cased
        // into new strings.
        let word = &self.src[begin..self.pos];
        let is = |keyword: &str| word.eq_ignore_ascii_case(keyword);
        if is("e") && self.peek(0) == Some(b'\'') {
            self.tokens += 1;
            self.after_name = false;
            return self.quoted(b'\'', true, "string literal");
        }
        let routine_head = (self.tokens == 1 && self.words == ["create"])
            || (self.tokens == 3 && self.words == ["create", "or", "replace"]);
        if !name_next {
            if (is("function") || is("procedure")) && routine_head {
                self.routine = true;
            } else if (is("begin") && self.routine && self.next_word_is("atomic")) || (is("case") && self.depth > 0) {
                self.depth += 1;
            } else if is("end") && self.depth > 0 {
                self.depth -= 1;
            }
        }
        self.name_next = is("as");
        self.after_name = true;
        self.word(|| word.to_ascii_lowercase());
        Ok(())
    }

    /// Whether the next word (after whitespace and comments) is `expected`, case-insensitively.
    fn next_word_is(&self, expected: &str) -> bool {
        let mut rest = &self.src[self.pos..];
        loop {
            rest = rest.trim_start();
            if let Some(comment) = rest.strip_prefix("--") {
                rest = comment.split_once('\n').map_or("", |(_, after)| after);
            } else if let Some(comment) = rest.strip_prefix("/*") {
                rest = comment.split_once("*/").map_or("", |(_, after)| after);
            } else {
                break;
            }
        }
        let end = rest.bytes().position(|b| !is_ident_part(b)).unwrap_or(rest.len());
        rest[..end].eq_ignore_ascii_case(expected)
    }

    /// Counts a word token; `word` makes its text only if it is one of the statement's first words.
    fn word(&mut self, word: impl FnOnce() -> String) {
        self.tokens += 1;
        if self.words.len() < 3 && self.tokens == self.words.len() + 1 {
            self.words.push(word());
        }
    }
}

fn count_newlines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

/// The offset of the first byte at or after `from` matching `pred`, or `bytes.len()`.
fn find_byte(bytes: &[u8], from: usize, pred: impl Fn(u8) -> bool) -> usize {
    bytes
        .get(from..)
        .and_then(|rest| rest.iter().position(|&b| pred(b)))
        .map_or(bytes.len(), |at| from + at)
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_part(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(sql: &str) -> Vec<Vec<String>> {
        split_statements(sql).unwrap().into_iter().map(|s| s.words).collect()
    }

    #[test]
    fn splits_on_top_level_semicolons_only() {
        let sql = "CREATE TABLE a (x text DEFAULT ';'); -- ; comment\n/* ; /* nested ; */ */ SELECT \"a;b\" FROM t;\nSELECT E'it\\'s ;';";
        let stmts = split_statements(sql).unwrap();
        assert_eq!(stmts.len(), 3, "{stmts:?}");
        assert_eq!(stmts[0].text, "CREATE TABLE a (x text DEFAULT ';')");
        assert_eq!(stmts[1].line, 2);
        assert_eq!(stmts[1].words, ["select", "a;b", "from"]);
    }

    #[test]
    fn dollar_quoted_bodies_hide_their_contents() {
        let sql = "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $fn$ BEGIN COMMIT; END; $fn$;\nDO $$ BEGIN ROLLBACK; END $$;\nSELECT $1";
        assert_eq!(
            words(sql),
            vec![vec!["create", "function", "f"], vec!["do"], vec!["select"]]
        );
    }

    #[test]
    fn begin_atomic_bodies_are_one_statement() {
        let sql = "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; SELECT 2; END; COMMIT;";
        let w = words(sql);
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(w[1], ["commit"]);
    }

    #[test]
    fn begin_atomic_outside_a_routine_does_not_hide_what_follows() {
        let w = words("CREATE TABLE p (id int, begin date); SELECT begin atomic FROM p; COMMIT; SELECT 1;");
        assert_eq!(w.len(), 4, "{w:?}");
        assert_eq!(w[2], ["commit"]);
        let w = words("CREATE OR REPLACE PROCEDURE p() LANGUAGE sql BEGIN -- body\n ATOMIC SELECT 1; END; SELECT 2;");
        assert_eq!(w.len(), 2, "{w:?}");
    }

    #[test]
    fn case_and_end_used_as_names_inside_begin_atomic() {
        let sql = "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1 AS case; END;\nCOMMIT;\n\
                   CREATE FUNCTION g() RETURNS date LANGUAGE sql BEGIN ATOMIC SELECT max(p.end) AS end FROM p; END;\nSELECT 1;";
        let w = words(sql);
        assert_eq!(w.len(), 4, "{w:?}");
        assert_eq!(w[1], ["commit"]);
        assert_eq!(w[3], ["select"]);
        // The `.` of a numeric literal does not make the next word a name.
        let w = words("CREATE FUNCTION f(x int) RETURNS numeric LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN x > 0 THEN 1. ELSE 0. END; END;\nCOMMIT;\nSET search_path TO other;");
        assert_eq!(w.len(), 3, "{w:?}");
        let w =
            words("CREATE FUNCTION g() RETURNS date LANGUAGE sql BEGIN ATOMIC SELECT (r).end FROM t r; END; COMMIT;");
        assert_eq!(w.len(), 2, "{w:?}");
        // `function` as a table name is not a routine.
        let w = words("CREATE TABLE function (begin atomic); COMMIT;");
        assert_eq!(w.len(), 2, "{w:?}");
    }

    #[test]
    fn a_column_named_begin_does_not_hide_what_follows() {
        let w =
            words("CREATE TABLE period (id int, begin date, \"end\" date); COMMIT; SELECT CASE WHEN true THEN 1 END;");
        assert_eq!(w.len(), 3, "{w:?}");
        assert_eq!(w[1], ["commit"]);
    }

    #[test]
    fn transaction_control_is_found_at_statement_start() {
        let w = words("begin; create table t (); END;\nset search_path = x;");
        assert_eq!(
            w,
            vec![
                vec!["begin"],
                vec!["create", "table", "t"],
                vec!["end"],
                vec!["set", "search_path"]
            ]
        );
    }

    #[test]
    fn comments_only_means_no_statements() {
        assert!(split_statements("-- Your SQL goes here\n/* nothing */\n ; ;")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn line_numbers_count_every_newline_before_the_statement() {
        let sql = "-- header; with a semicolon\n\
                   /* block\n   comment; /* nested\n */ */\n\
                   CREATE TABLE t (\n  note text DEFAULT 'a;\nb'\n);\n\
                   \n\
                   INSERT INTO t VALUES ('x;\n\ny', E'it\\'s\n;', \"odd\n;name\"); SELECT 1;\n\
                   CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $fn$\nBEGIN\n  RETURN 1;\nEND;\n$fn$;\n\
                   DO $$ BEGIN\n PERFORM 1;\n END $$; -- trailing; comment\n\
                   CREATE FUNCTION g() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1;\nEND;\n\
                   /* before */ COMMIT;\n\
                   \n\
                   SELECT 'last'";
        let stmts = split_statements(sql).unwrap();
        let found: Vec<(usize, &str)> = stmts.iter().map(|s| (s.line, s.words[0].as_str())).collect();
        assert_eq!(
            found,
            [
                (5, "create"),
                (10, "insert"),
                (14, "select"),
                (15, "create"),
                (20, "do"),
                (23, "create"),
                (27, "commit"),
                (29, "select"),
            ]
        );
        // Each line is the one the statement's first character is on.
        for stmt in &stmts {
            let offset = stmt.text.as_ptr() as usize - sql.as_ptr() as usize;
            assert_eq!(stmt.line, sql[..offset].matches('\n').count() + 1, "{stmt:?}");
        }
        // Streaming sees the same statements.
        let mut streamed = Vec::new();
        for_each_statement(sql, |s| streamed.push(s)).unwrap();
        assert_eq!(streamed, stmts);
        // An unterminated construct is reported on the line where it starts.
        let err = split_statements("SELECT 1;\n-- ;\nSELECT 'a\nb';\nSELECT $x$\n;\n").unwrap_err();
        assert_eq!(
            err,
            LexError {
                what: "dollar-quoted body",
                line: 5
            }
        );
        let err = split_statements("SELECT 1;\n\n/* a /* b */\n;\n").unwrap_err();
        assert_eq!(
            err,
            LexError {
                what: "block comment",
                line: 3
            }
        );
        let err = split_statements("SELECT 1;\nSELECT 2,\n  E'x\\'\n;\n").unwrap_err();
        assert_eq!(
            err,
            LexError {
                what: "string literal",
                line: 3
            }
        );
    }

    #[test]
    fn unterminated_constructs_are_errors() {
        for sql in ["SELECT 'x", "SELECT $$ x", "/* x", "SELECT \"x"] {
            assert!(split_statements(sql).is_err(), "{sql}");
        }
    }
}
