/*!
`lint`: multi-tenant hazards in a migration set, found without a database.

A migration that is fine for a single-schema diesel application can be wrong for a fleet of
tenant schemas: a `CREATE EXTENSION` lands in the first tenant's schema, a `CREATE SCHEMA utils`
fails on the second tenant, a `public.users` reference reads the shared schema instead of the
tenant's. [`lint`] reads a tenant set's `up.sql` and `down.sql` files and reports each such
statement as a [`Finding`]: the file and exact line, a [`Severity`], why it is a problem for a
fleet and how to fix it. Every rule has a stable kebab-case id ([`Rule::all`]).

A finding is allowed (not reported, but counted in [`LintReport::allowed`]) when its rule id
is in [`LintConfig::allow`], or when the file it is in holds a comment naming it:

```sql
-- migrate-tenants: allow(public-reference, blocking-index)
```

Such a comment anywhere in a file (before, between or inside statements) allows those rules
for the whole file. A finding about an empty `down.sql` is reported on the `up.sql` statement
it is about, so it is allowed in `up.sql` (an empty `down.sql` keeps no comment).

Lint the tenant set only: the shared-schema set is where extensions, shared schemas and
roles belong. Each file is split once by the set's lexer and each statement scanned once, so
sets of hundreds of migrations take milliseconds. Statements inside `DO` blocks and function
bodies are not looked into.
*/

use migrate_tenants_set::sql_lexer::for_each_statement;
use migrate_tenants_set::{DownSql, Migration, MigrationSet};
use serde::{Deserialize, Serialize};
use std::fmt;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Works, but is likely wrong or costly on a fleet (shared state, long locks).
    Warning,
    /// Fails, or silently does the wrong thing, on every tenant but the first.
    Error,
}

impl Severity {
    /// `"warning"` or `"error"` (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A lint rule: one multi-tenant hazard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Stable kebab-case id, as used in `allow(...)` comments and [`LintConfig::allow`].
    pub id: &'static str,
    /// The severity of its findings (`public-reference` findings are errors when the
    /// statement creates its object in `public`, warnings otherwise).
    pub severity: Severity,
    /// What it detects, in one line.
    pub summary: &'static str,
}

impl Rule {
    /// Every rule, in a stable order.
    pub fn all() -> &'static [Rule] {
        RULES
    }

    /// The rule with this id (ASCII case-insensitive).
    pub fn find(id: &str) -> Option<&'static Rule> {
        RULES.iter().find(|rule| rule.id.eq_ignore_ascii_case(id.trim()))
    }
}

const EXTENSION_WITHOUT_SCHEMA: Rule = Rule {
    id: "extension-without-schema",
    severity: Severity::Error,
    summary: "CREATE EXTENSION without SCHEMA in a tenant migration",
};
const EXTENSION_IN_TENANT: Rule = Rule {
    id: "extension-in-tenant",
    severity: Severity::Warning,
    summary: "CREATE EXTENSION ... SCHEMA, ALTER or DROP EXTENSION in a tenant migration",
};
const FIXED_SCHEMA: Rule = Rule {
    id: "fixed-schema",
    severity: Severity::Error,
    summary: "CREATE, ALTER or DROP SCHEMA with a fixed name in a tenant migration",
};
const PUBLIC_REFERENCE: Rule = Rule {
    id: "public-reference",
    severity: Severity::Warning,
    summary: "a name qualified with public. in a tenant migration (an error when it creates the object in public)",
};
const EMPTY_DOWN_AFTER_CREATE: Rule = Rule {
    id: "empty-down-after-create",
    severity: Severity::Warning,
    summary: "an empty or comment-only down.sql for an up.sql that creates or adds something",
};
const DATABASE_WIDE_STATEMENT: Rule = Rule {
    id: "database-wide-statement",
    severity: Severity::Warning,
    summary: "a database-wide statement (roles, role membership, LISTEN/NOTIFY, publications, event triggers, ...) \
              in a tenant migration",
};
const BLOCKING_INDEX: Rule = Rule {
    id: "blocking-index",
    severity: Severity::Warning,
    summary: "CREATE INDEX without CONCURRENTLY on a table this migration did not create",
};

/// Every rule, in a stable order (also [`Rule::all`]).
pub const RULES: &[Rule] = &[
    EXTENSION_WITHOUT_SCHEMA,
    EXTENSION_IN_TENANT,
    FIXED_SCHEMA,
    PUBLIC_REFERENCE,
    EMPTY_DOWN_AFTER_CREATE,
    DATABASE_WIDE_STATEMENT,
    BLOCKING_INDEX,
];

const WHY_EXTENSION_WITHOUT_SCHEMA: &str =
    "without SCHEMA, an extension is installed into the first schema on search_path, which is the tenant's: the \
     first tenant gets it, and since an extension exists once per database every later tenant skips it (IF NOT \
     EXISTS) or fails (\"already exists\") and cannot see its types and functions";
const FIX_EXTENSION_WITHOUT_SCHEMA: &str = "add SCHEMA public (a schema on every tenant's search_path), or better \
                                            move it to the shared migrations";
const WHY_EXTENSION_IN_TENANT: &str = "an extension is a database-wide object in a per-tenant set: every tenant \
                                       runs the statement against the same extension, and one tenant's down.sql \
                                       (DROP EXTENSION) removes it from every tenant";
const FIX_MOVE_TO_SHARED: &str = "move it to the shared migrations";
const WHY_FIXED_SCHEMA: &str = "a schema name written in a tenant migration names the same schema for every \
                                tenant: CREATE SCHEMA fails on the second tenant with \"schema already exists\" \
                                (or, with IF NOT EXISTS, all tenants share it), and one tenant's ALTER or DROP \
                                SCHEMA changes it for all";
const FIX_FIXED_SCHEMA: &str = "create shared schemas in the shared migrations; a tenant's own objects go \
                                unqualified into the tenant's schema";
const WHY_PUBLIC_REFERENCE: &str = "a name qualified with public reads or writes the shared schema, not the \
                                    tenant's: every tenant's migration touches the same object";
const WHY_PUBLIC_CREATE: &str = "this creates its object in the shared schema public, not in the tenant's: the \
                                 first tenant creates it, every later tenant fails with \"already exists\" (or, \
                                 with IF NOT EXISTS / OR REPLACE, all tenants share one object)";
const FIX_PUBLIC_REFERENCE: &str = "qualify nothing: unqualified names resolve to the tenant's schema; shared \
                                    objects belong in the shared migrations (when a reference to a shared object \
                                    is intended, allow the rule in this file)";
const WHY_EMPTY_DOWN: &str = "down.sql is empty or comments only: reverting \"succeeds\" as a no-op that leaves \
                              this object in place, and the next up fails with \"already exists\" on every \
                              tenant that was reverted";
const FIX_EMPTY_DOWN: &str = "write the down.sql that undoes up.sql (DROP ..., ALTER TABLE ... DROP COLUMN ...), \
                              or delete down.sql to make the migration explicitly irreversible";
const WHY_DATABASE_WIDE: &str = "roles, role membership, publications, subscriptions, event triggers, languages, \
                                 casts, servers, tablespaces and LISTEN/NOTIFY are database-wide, not per schema: \
                                 every tenant runs the statement against the same object (the second fails with \
                                 \"already exists\", or each tenant repeats it: one NOTIFY per tenant)";
const FIX_DATABASE_WIDE: &str = "move it to the shared migrations, or to provisioning outside the migrations";
const WHY_BLOCKING_INDEX: &str = "CREATE INDEX without CONCURRENTLY on a table this migration did not create \
                                  (so it likely holds data) blocks writes to the table for the whole build, on \
                                  every tenant in turn";
const FIX_BLOCKING_INDEX: &str = "CREATE INDEX CONCURRENTLY in its own migration with run_in_transaction = false \
                                  (metadata.toml)";

/// One hazard found in a migration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The rule's id (see [`Rule::all`]).
    pub rule: &'static str,
    /// How bad it is.
    pub severity: Severity,
    /// The migration's directory name.
    pub migration: String,
    /// `"up.sql"` or `"down.sql"`.
    pub file: &'static str,
    /// 1-based line in that file: the statement's first line, or for a `public.` reference
    /// the line of the reference.
    pub line: usize,
    /// The SQL on that line (from the statement's start), trimmed and cut to about 80
    /// characters.
    pub statement: String,
    /// Why it is a problem for a fleet.
    pub why: &'static str,
    /// How to fix it.
    pub fix: &'static str,
}

impl fmt::Display for Finding {
    /// `<migration>/<file>:<line>: <severity>[<rule>]: <statement>` (`why` and `fix` are
    /// left to the caller).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}:{}: {}[{}]: {}",
            self.migration, self.file, self.line, self.severity, self.rule, self.statement
        )
    }
}

/// What to lint, beyond the rules themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LintConfig {
    /// Rule ids allowed everywhere (their findings are counted in [`LintReport::allowed`],
    /// not reported). Unknown ids are ignored: check them with [`LintConfig::unknown_rules`].
    pub allow: Vec<String>,
}

impl LintConfig {
    /// The ids in [`LintConfig::allow`] that name no rule (typos, to report to the user).
    pub fn unknown_rules(&self) -> Vec<&str> {
        self.allow
            .iter()
            .map(String::as_str)
            .filter(|id| Rule::find(id).is_none())
            .collect()
    }

    fn allows(&self, rule: &str) -> bool {
        self.allow.iter().any(|id| id.trim().eq_ignore_ascii_case(rule))
    }
}

/// The result of [`lint`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LintReport {
    /// Findings in migration order, then `up.sql` before `down.sql`, then by line.
    pub findings: Vec<Finding>,
    /// How many migrations were linted.
    pub migrations: usize,
    /// How many findings were allowed (by configuration or an `allow(...)` comment).
    pub allowed: usize,
}

impl LintReport {
    /// Findings of severity [`Severity::Error`].
    pub fn errors(&self) -> usize {
        self.count(Severity::Error)
    }

    /// Findings of severity [`Severity::Warning`].
    pub fn warnings(&self) -> usize {
        self.count(Severity::Warning)
    }

    /// Whether nothing was found.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    fn count(&self, severity: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity == severity).count()
    }

    /// Keeps a file's findings that neither the configuration nor the file allows.
    fn keep(&mut self, mut scan: FileScan, config: &LintConfig) {
        scan.findings.sort_by_key(|f| f.line);
        for finding in scan.findings {
            let allowed =
                config.allows(finding.rule) || scan.allows.iter().any(|id| id.eq_ignore_ascii_case(finding.rule));
            if allowed {
                self.allowed += 1;
            } else {
                self.findings.push(finding);
            }
        }
    }
}

/// Lints a tenant migration set for multi-tenant hazards (no database involved).
pub fn lint(set: &MigrationSet, config: &LintConfig) -> LintReport {
    let mut report = LintReport {
        migrations: set.migrations().len(),
        ..LintReport::default()
    };
    let mut tokens = Vec::new();
    for migration in set.migrations() {
        let mut up = FileScan::run(migration, UP, &migration.up, &mut tokens);
        if migration.down == DownSql::NoOp {
            if let Some((line, statement)) = up.first_create.take() {
                up.push(
                    &EMPTY_DOWN_AFTER_CREATE,
                    Severity::Warning,
                    line,
                    statement,
                    WHY_EMPTY_DOWN,
                    FIX_EMPTY_DOWN,
                );
            }
        }
        report.keep(up, config);
        if let DownSql::Sql(down) = &migration.down {
            let down = FileScan::run(migration, DOWN, down, &mut tokens);
            report.keep(down, config);
        }
    }
    report
}

const UP: &str = "up.sql";
const DOWN: &str = "down.sql";
const IF_NOT_EXISTS: &[&str] = &["if", "not", "exists"];
/// Words between `CREATE` and the kind of object.
const CREATE_MODIFIERS: &[&str] = &[
    "unique",
    "unlogged",
    "global",
    "local",
    "recursive",
    "trusted",
    "procedural",
    "constraint",
    "default",
];
/// Kinds of object, named right after `CREATE` (or its modifiers), that live in a schema.
const SCHEMA_OBJECTS: &[&str] = &[
    "table",
    "view",
    "function",
    "procedure",
    "type",
    "domain",
    "sequence",
    "aggregate",
];

/// One file's findings (before allowing), with what the file-wide rules need.
struct FileScan {
    migration: String,
    file: &'static str,
    findings: Vec<Finding>,
    /// Rule ids named by `migrate-tenants: allow(...)` comments in the file.
    allows: Vec<String>,
    /// Tables created so far in the file (normalized names).
    created_tables: Vec<String>,
    /// The first statement that creates or adds something and would fail when run again.
    first_create: Option<(usize, String)>,
}

impl FileScan {
    /// Splits `sql` once and scans each statement once; `tokens` is a reused buffer.
    fn run(migration: &Migration, file: &'static str, sql: &str, tokens: &mut Vec<Token>) -> FileScan {
        let mut scan = FileScan {
            migration: migration.dir_name.clone(),
            file,
            findings: Vec::new(),
            allows: Vec::new(),
            created_tables: Vec::new(),
            first_create: None,
        };
        // Between statements there is only whitespace, `;` and comments: allow comments are
        // looked for there, and inside statements by the tokenizer.
        let mut gap_start = 0;
        // A set that skipped validation may hold a file the lexer cannot split: the
        // statements before the error are still linted.
        let _ = for_each_statement(sql, |stmt| {
            let start = stmt.text.as_ptr() as usize - sql.as_ptr() as usize;
            parse_allows(&sql[gap_start..start], &mut scan.allows);
            gap_start = start + stmt.text.len();
            tokenize(stmt.text, tokens, &mut scan.allows);
            scan.statement(&Stmt {
                text: stmt.text,
                line: stmt.line,
                toks: tokens,
            });
        });
        parse_allows(&sql[gap_start..], &mut scan.allows);
        scan
    }

    fn push(
        &mut self,
        rule: &Rule,
        severity: Severity,
        line: usize,
        statement: String,
        why: &'static str,
        fix: &'static str,
    ) {
        self.findings.push(Finding {
            rule: rule.id,
            severity,
            migration: self.migration.clone(),
            file: self.file,
            line,
            statement,
            why,
            fix,
        });
    }

    /// A finding about the whole statement, on its first line.
    fn flag(&mut self, st: &Stmt<'_>, rule: &Rule, why: &'static str, fix: &'static str) {
        self.push(rule, rule.severity, st.line, st.line_text(0), why, fix);
    }

    fn created(&mut self, st: &Stmt<'_>) {
        if self.first_create.is_none() {
            self.first_create = Some((st.line, st.line_text(0)));
        }
    }

    fn statement(&mut self, st: &Stmt<'_>) {
        let mut target = None;
        if st.is(0, "create") {
            target = self.create(st);
        } else if st.is(0, "alter") {
            self.alter(st);
        } else if st.is(0, "drop") {
            self.drop(st);
        } else if st.is(0, "comment") && st.is(1, "on") {
            if st.is(2, "extension") {
                self.flag(st, &EXTENSION_IN_TENANT, WHY_EXTENSION_IN_TENANT, FIX_MOVE_TO_SHARED);
            } else if st.is_any(2, &["role", "database", "tablespace", "publication", "subscription"]) {
                self.flag(st, &DATABASE_WIDE_STATEMENT, WHY_DATABASE_WIDE, FIX_DATABASE_WIDE);
            }
        } else if st.is_any(0, &["listen", "notify", "unlisten"])
            || st.seq(0, &["reassign", "owned"])
            || (st.is(0, "grant") && st.role_membership("to"))
            || (st.is(0, "revoke") && st.role_membership("from"))
        {
            self.flag(st, &DATABASE_WIDE_STATEMENT, WHY_DATABASE_WIDE, FIX_DATABASE_WIDE);
        }
        self.public_references(st, target);
    }

    /// `CREATE ...`; returns the token of the name of the object it creates (for `INDEX` and
    /// `TRIGGER`, of the table it is on), if it is a schema object.
    fn create(&mut self, st: &Stmt<'_>) -> Option<usize> {
        let mut at = 1;
        let mut idempotent = false;
        loop {
            if st.seq(at, &["or", "replace"]) {
                idempotent = true;
                at += 2;
            } else if st.is_any(at, &["temp", "temporary"]) {
                // Gone at the end of the session: nothing is left behind for a rerun.
                idempotent = true;
                at += 1;
            } else if st.is_any(at, CREATE_MODIFIERS) {
                at += 1;
            } else {
                break;
            }
        }
        let kind = at;
        let mut after = kind + 1;
        let mut target = None;
        if st.is(kind, "index") {
            let concurrently = st.is(after, "concurrently");
            after += usize::from(concurrently);
            if st.seq(after, IF_NOT_EXISTS) {
                idempotent = true;
                after += 3;
            }
            if !st.is(after, "on") {
                after += 1; // the index's name
            }
            if st.is(after, "on") {
                after += 1 + usize::from(st.is(after + 1, "only"));
                target = Some(after);
                if let Some(table) = st.name(after) {
                    if !concurrently && !self.created_tables.contains(&table) {
                        self.flag(st, &BLOCKING_INDEX, WHY_BLOCKING_INDEX, FIX_BLOCKING_INDEX);
                    }
                }
            }
        } else {
            if st.seq(kind, &["materialized", "view"]) || st.seq(kind, &["foreign", "table"]) {
                after += 1;
            }
            if st.seq(after, IF_NOT_EXISTS) {
                idempotent = true;
                after += 3;
            }
            if st.is(kind, "extension") {
                if st.word_from(after, "schema") {
                    self.flag(st, &EXTENSION_IN_TENANT, WHY_EXTENSION_IN_TENANT, FIX_MOVE_TO_SHARED);
                } else {
                    self.flag(
                        st,
                        &EXTENSION_WITHOUT_SCHEMA,
                        WHY_EXTENSION_WITHOUT_SCHEMA,
                        FIX_EXTENSION_WITHOUT_SCHEMA,
                    );
                }
            } else if st.is(kind, "schema") {
                self.flag(st, &FIXED_SCHEMA, WHY_FIXED_SCHEMA, FIX_FIXED_SCHEMA);
            } else if st.database_wide_kind(kind) {
                self.flag(st, &DATABASE_WIDE_STATEMENT, WHY_DATABASE_WIDE, FIX_DATABASE_WIDE);
            } else if st.is(kind, "trigger") {
                target = st.top_level_word(after, "on").map(|on| on + 1);
            } else if st.is_any(kind, SCHEMA_OBJECTS) || st.is_any(kind, &["materialized", "foreign"]) {
                target = Some(after);
                if !st.is_any(
                    kind,
                    &["function", "procedure", "aggregate", "type", "domain", "sequence"],
                ) {
                    if let Some(name) = st.name(after) {
                        self.created_tables.push(name);
                    }
                }
            }
        }
        if !idempotent {
            self.created(st);
        }
        target
    }

    fn alter(&mut self, st: &Stmt<'_>) {
        if st.is(1, "extension") {
            self.flag(st, &EXTENSION_IN_TENANT, WHY_EXTENSION_IN_TENANT, FIX_MOVE_TO_SHARED);
        } else if st.is(1, "schema") {
            self.flag(st, &FIXED_SCHEMA, WHY_FIXED_SCHEMA, FIX_FIXED_SCHEMA);
        } else if st.database_wide_kind(1) || st.is(1, "system") {
            self.flag(st, &DATABASE_WIDE_STATEMENT, WHY_DATABASE_WIDE, FIX_DATABASE_WIDE);
        } else if st.is_any(1, &["table", "type"]) || st.seq(1, &["foreign", "table"]) {
            // `ADD [COLUMN | VALUE | ATTRIBUTE | CONSTRAINT ...]` fails when run again, unless
            // it says IF NOT EXISTS.
            let adds_again = (2..st.toks.len()).any(|i| {
                st.toks[i].depth == 0 && st.is(i, "add") && {
                    let next = i + 1 + usize::from(st.is_any(i + 1, &["column", "value", "attribute"]));
                    !st.seq(next, IF_NOT_EXISTS)
                }
            });
            if adds_again {
                self.created(st);
            }
        }
    }

    fn drop(&mut self, st: &Stmt<'_>) {
        if st.is(1, "extension") {
            self.flag(st, &EXTENSION_IN_TENANT, WHY_EXTENSION_IN_TENANT, FIX_MOVE_TO_SHARED);
        } else if st.is(1, "schema") {
            self.flag(st, &FIXED_SCHEMA, WHY_FIXED_SCHEMA, FIX_FIXED_SCHEMA);
        } else if st.database_wide_kind(1) || st.seq(1, &["owned", "by"]) {
            self.flag(st, &DATABASE_WIDE_STATEMENT, WHY_DATABASE_WIDE, FIX_DATABASE_WIDE);
        }
    }

    /// One finding per statement naming `public.something`: an error at the name of the
    /// object the statement creates (`target`), else a warning at the first reference.
    fn public_references(&mut self, st: &Stmt<'_>, target: Option<usize>) {
        let mut first = None;
        for i in 0..st.toks.len() {
            if st.is_public_qualifier(i) {
                if Some(i) == target {
                    first = Some((i, true));
                    break;
                }
                if first.is_none() {
                    first = Some((i, false));
                    if target.is_none_or(|t| t < i) {
                        break;
                    }
                }
            }
        }
        if let Some((i, creates)) = first {
            let offset = st.toks[i].start;
            let (severity, why) = if creates {
                (Severity::Error, WHY_PUBLIC_CREATE)
            } else {
                (Severity::Warning, WHY_PUBLIC_REFERENCE)
            };
            self.push(
                &PUBLIC_REFERENCE,
                severity,
                st.line_of(offset),
                st.line_text(offset),
                why,
                FIX_PUBLIC_REFERENCE,
            );
        }
    }
}

/// Collects the rule ids of every `migrate-tenants: allow(a, b)` in `comments`.
fn parse_allows(comments: &str, out: &mut Vec<String>) {
    const MARKER: &str = "migrate-tenants:";
    for (at, _) in comments.match_indices(MARKER) {
        let rest = comments[at + MARKER.len()..].trim_start();
        let Some(rest) = rest.strip_prefix("allow") else {
            continue;
        };
        let Some(rest) = rest.trim_start().strip_prefix('(') else {
            continue;
        };
        let Some((ids, _)) = rest.split_once(')') else {
            continue;
        };
        out.extend(
            ids.split(',')
                .map(|id| id.trim().to_ascii_lowercase())
                .filter(|id| !id.is_empty()),
        );
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An unquoted word (keyword or name).
    Word,
    /// A `"quoted identifier"`.
    Quoted,
    /// A string, dollar-quoted body or number.
    Literal,
    /// Any other single character.
    Punct(u8),
}

/// A token of a statement: its kind, byte range in the statement's text, and parenthesis
/// depth (0: top level).
#[derive(Debug, Clone, Copy)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
    depth: u32,
}

/// Splits one statement's text into tokens (into `out`), skipping comments (whose
/// `allow(...)` markers go to `allows`) and keeping strings and dollar-quoted bodies whole.
fn tokenize(text: &str, out: &mut Vec<Token>, allows: &mut Vec<String>) {
    out.clear();
    let b = text.as_bytes();
    let mut i = 0;
    let mut depth = 0u32;
    while i < b.len() {
        let c = b[i];
        let start = i;
        let kind = if c.is_ascii_whitespace() {
            i += 1;
            continue;
        } else if c == b'-' && b.get(i + 1) == Some(&b'-') {
            i = find(b, i, |x| x == b'\n');
            parse_allows(&text[start..i], allows);
            continue;
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i = block_comment_end(b, i);
            parse_allows(&text[start..i], allows);
            continue;
        } else if c == b'\'' {
            i = quoted_end(b, i, b'\'', false);
            Kind::Literal
        } else if c == b'"' {
            i = quoted_end(b, i, b'"', false);
            Kind::Quoted
        } else if c == b'$' {
            match dollar_tag_len(b, i) {
                Some(len) => {
                    let tag = &text[i..i + len];
                    i = text[i + len..].find(tag).map_or(b.len(), |at| i + len + at + len);
                    Kind::Literal
                }
                None => {
                    i += 1;
                    Kind::Punct(c)
                }
            }
        } else if is_ident_start(c) {
            i = find(b, i, |x| !is_ident_part(x));
            if i == start + 1 && (c == b'e' || c == b'E') && b.get(i) == Some(&b'\'') {
                i = quoted_end(b, i, b'\'', true);
                Kind::Literal
            } else {
                Kind::Word
            }
        } else if c.is_ascii_digit() {
            i = find(b, i, |x| !(x.is_ascii_alphanumeric() || x == b'_' || x == b'.'));
            Kind::Literal
        } else {
            i += 1;
            Kind::Punct(c)
        };
        let token_depth = match kind {
            Kind::Punct(b'(') => {
                depth += 1;
                depth - 1
            }
            Kind::Punct(b')') => {
                depth = depth.saturating_sub(1);
                depth
            }
            _ => depth,
        };
        out.push(Token {
            kind,
            start,
            end: i,
            depth: token_depth,
        });
    }
}

/// The offset of the first byte at or after `from` matching `pred`, or `bytes.len()`.
fn find(bytes: &[u8], from: usize, pred: impl Fn(u8) -> bool) -> usize {
    bytes[from..]
        .iter()
        .position(|&x| pred(x))
        .map_or(bytes.len(), |at| from + at)
}

/// The end of the (nested) block comment starting at `from`.
fn block_comment_end(b: &[u8], from: usize) -> usize {
    let mut i = from;
    let mut nesting = 0usize;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            nesting += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            nesting -= 1;
            i += 2;
            if nesting == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// The end of the `quote`-delimited token starting at `from` (a doubled quote is an escaped
/// quote; with `backslashes`, so is a backslash).
fn quoted_end(b: &[u8], from: usize, quote: u8, backslashes: bool) -> usize {
    let mut i = from + 1;
    while i < b.len() {
        if backslashes && b[i] == b'\\' {
            i += 2;
        } else if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// The length of the `$tag$` opening at `at`, if it is one (`$1` is a parameter).
fn dollar_tag_len(b: &[u8], at: usize) -> Option<usize> {
    let rest = &b[at + 1..];
    let len = rest.iter().position(|&x| !(is_ident_start(x) || x.is_ascii_digit()))?;
    (rest[len] == b'$' && !rest.first().is_some_and(u8::is_ascii_digit)).then_some(len + 2)
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_part(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// A statement with its tokens.
struct Stmt<'s> {
    text: &'s str,
    /// 1-based line of the statement's start in its file.
    line: usize,
    toks: &'s [Token],
}

impl Stmt<'_> {
    fn tok_text(&self, i: usize) -> &str {
        let t = self.toks[i];
        &self.text[t.start..t.end]
    }

    /// Whether token `i` is the unquoted word `keyword` (case-insensitive).
    fn is(&self, i: usize, keyword: &str) -> bool {
        self.toks
            .get(i)
            .is_some_and(|t| t.kind == Kind::Word && self.text[t.start..t.end].eq_ignore_ascii_case(keyword))
    }

    fn is_any(&self, i: usize, keywords: &[&str]) -> bool {
        keywords.iter().any(|k| self.is(i, k))
    }

    /// Whether the tokens from `i` are the words `keywords`.
    fn seq(&self, i: usize, keywords: &[&str]) -> bool {
        keywords.iter().enumerate().all(|(n, k)| self.is(i + n, k))
    }

    fn punct(&self, i: usize, c: u8) -> bool {
        self.toks.get(i).is_some_and(|t| t.kind == Kind::Punct(c))
    }

    fn is_ident(&self, i: usize) -> bool {
        self.toks
            .get(i)
            .is_some_and(|t| matches!(t.kind, Kind::Word | Kind::Quoted))
    }

    /// The identifier at `i`, normalized as PostgreSQL does (unquoted: lower-cased).
    fn ident(&self, i: usize) -> Option<String> {
        let t = self.toks.get(i)?;
        match t.kind {
            Kind::Word => Some(self.tok_text(i).to_ascii_lowercase()),
            Kind::Quoted => {
                let quoted = self.tok_text(i);
                let inner = quoted.get(1..quoted.len().saturating_sub(1)).unwrap_or("");
                Some(inner.replace("\"\"", "\""))
            }
            _ => None,
        }
    }

    /// The (possibly qualified) name starting at `i`, normalized, parts joined with `.`.
    fn name(&self, i: usize) -> Option<String> {
        let mut name = self.ident(i)?;
        let mut at = i + 1;
        while self.punct(at, b'.') {
            let Some(part) = self.ident(at + 1) else { break };
            name.push('.');
            name.push_str(&part);
            at += 2;
        }
        Some(name)
    }

    /// Whether token `i` is the schema `public` qualifying a name (`public.x`,
    /// `"public"."X"`), and not itself a qualified part (`x.public.y`).
    fn is_public_qualifier(&self, i: usize) -> bool {
        let is_public = match self.toks[i].kind {
            Kind::Word => self.tok_text(i).eq_ignore_ascii_case("public"),
            Kind::Quoted => self.tok_text(i) == "\"public\"",
            _ => false,
        };
        is_public && self.punct(i + 1, b'.') && self.is_ident(i + 2) && !(i > 0 && self.punct(i - 1, b'.'))
    }

    /// Whether the word `keyword` appears at or after token `from`, at the top level.
    fn word_from(&self, from: usize, keyword: &str) -> bool {
        self.top_level_word(from, keyword).is_some()
    }

    /// The first top-level token at or after `from` that is the word `keyword`.
    fn top_level_word(&self, from: usize, keyword: &str) -> Option<usize> {
        (from..self.toks.len()).find(|&i| self.toks[i].depth == 0 && self.is(i, keyword))
    }

    /// `GRANT`/`REVOKE` of a role (membership) rather than of privileges `ON` an object:
    /// `to` (`TO` or `FROM`) comes before any top-level `ON`.
    fn role_membership(&self, to: &str) -> bool {
        for i in 1..self.toks.len() {
            if self.toks[i].depth == 0 {
                if self.is(i, "on") {
                    return false;
                }
                if self.is(i, to) {
                    return true;
                }
            }
        }
        false
    }

    /// Whether the object kind named at `i` (after `CREATE`, `ALTER` or `DROP`) exists once
    /// per database (or cluster), not per schema.
    fn database_wide_kind(&self, i: usize) -> bool {
        self.is_any(
            i,
            &[
                "role",
                "user",
                "group",
                "publication",
                "subscription",
                "database",
                "tablespace",
                "server",
                "cast",
                "language",
            ],
        ) || self.seq(i, &["event", "trigger"])
            || self.seq(i, &["foreign", "data"])
            || self.seq(i, &["access", "method"])
    }

    /// The 1-based file line of byte `offset` of the statement.
    fn line_of(&self, offset: usize) -> usize {
        self.line + self.text.as_bytes()[..offset].iter().filter(|&&b| b == b'\n').count()
    }

    /// The statement's text on the line holding byte `offset` (from the statement's start
    /// on its first line), trimmed and cut to about 80 characters.
    fn line_text(&self, offset: usize) -> String {
        let start = self.text[..offset].rfind('\n').map_or(0, |at| at + 1);
        let end = self.text[offset..].find('\n').map_or(self.text.len(), |at| offset + at);
        let line = self.text[start..end].trim();
        const MAX: usize = 80;
        match line.char_indices().nth(MAX) {
            Some((cut, _)) => format!("{}…", line[..cut].trim_end()),
            None => line.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use migrate_tenants_set::Origin;
    use std::path::Path;

    fn migration(dir: &str, up: &str, down: DownSql) -> Migration {
        Migration {
            dir_name: dir.into(),
            version: migrate_tenants_set::version_of(dir),
            up: up.into(),
            down,
            run_in_transaction: true,
        }
    }

    fn down(sql: &str) -> DownSql {
        DownSql::Sql(sql.into())
    }

    fn set(migrations: Vec<Migration>) -> MigrationSet {
        MigrationSet::__unchecked(Origin::Directory("t".into()), migrations)
    }

    /// Lints one migration with this up.sql and a harmless down.sql.
    fn lint_up(up: &str) -> LintReport {
        lint(
            &set(vec![migration("1_m", up, down("SELECT 1;"))]),
            &LintConfig::default(),
        )
    }

    /// `(rule, file, line, severity)` of each finding.
    fn found(report: &LintReport) -> Vec<(&'static str, &'static str, usize, Severity)> {
        report
            .findings
            .iter()
            .map(|f| (f.rule, f.file, f.line, f.severity))
            .collect()
    }

    fn rules(report: &LintReport) -> Vec<&'static str> {
        report.findings.iter().map(|f| f.rule).collect()
    }

    fn fixture(name: &str) -> MigrationSet {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
        MigrationSet::from_dir(&dir).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_sample_and_test_sets_are_clean() {
        for dir in ["migrations", "tests/fixtures/basic", "tests/fixtures/lint_clean"] {
            let report = lint(&fixture(dir), &LintConfig::default());
            assert!(report.is_clean(), "{dir}: {:#?}", report.findings);
            assert_eq!(report.allowed, 0, "{dir}");
            assert!(report.migrations >= 3, "{dir}");
        }
    }

    #[test]
    fn the_hazards_fixture_triggers_every_rule() {
        let report = lint(&fixture("tests/fixtures/lint_hazards"), &LintConfig::default());
        let all: Vec<(&str, &str, &str, usize, Severity)> = report
            .findings
            .iter()
            .map(|f| {
                (
                    f.migration.split_once('_').unwrap().1,
                    f.rule,
                    f.file,
                    f.line,
                    f.severity,
                )
            })
            .collect();
        use Severity::{Error, Warning};
        assert_eq!(
            all,
            [
                ("enable_ltree", "extension-without-schema", "up.sql", 2, Error),
                ("enable_ltree", "extension-in-tenant", "down.sql", 1, Warning),
                ("enable_pgcrypto", "extension-in-tenant", "up.sql", 1, Warning),
                ("enable_pgcrypto", "extension-in-tenant", "down.sql", 1, Warning),
                ("create_utils_schema", "fixed-schema", "up.sql", 1, Error),
                ("create_utils_schema", "fixed-schema", "down.sql", 2, Error),
                ("create_posts", "public-reference", "up.sql", 3, Warning),
                ("create_audit_log", "public-reference", "up.sql", 2, Error),
                ("create_audit_log", "public-reference", "down.sql", 1, Warning),
                ("add_posts_featured", "empty-down-after-create", "up.sql", 1, Warning),
                ("create_reporting_role", "database-wide-statement", "up.sql", 1, Warning),
                ("create_reporting_role", "database-wide-statement", "up.sql", 3, Warning),
                (
                    "create_reporting_role",
                    "database-wide-statement",
                    "down.sql",
                    1,
                    Warning
                ),
                (
                    "create_reporting_role",
                    "database-wide-statement",
                    "down.sql",
                    3,
                    Warning
                ),
                ("notify_post_events", "database-wide-statement", "up.sql", 14, Warning),
                ("index_posts_title", "blocking-index", "up.sql", 1, Warning),
            ],
            "{:#?}",
            report.findings
        );
        for rule in Rule::all() {
            assert!(
                report.findings.iter().any(|f| f.rule == rule.id),
                "{} never fires",
                rule.id
            );
        }
        assert_eq!((report.errors(), report.warnings()), (4, 12));
        // Allowing everything leaves nothing, and counts it.
        let config = LintConfig {
            allow: Rule::all().iter().map(|r| r.id.to_string()).collect(),
        };
        let allowed = lint(&fixture("tests/fixtures/lint_hazards"), &config);
        assert!(allowed.is_clean());
        assert_eq!(allowed.allowed, report.findings.len());
    }

    #[test]
    fn rule_ids_are_stable_and_unique() {
        let ids: Vec<&str> = Rule::all().iter().map(|r| r.id).collect();
        assert_eq!(
            ids,
            [
                "extension-without-schema",
                "extension-in-tenant",
                "fixed-schema",
                "public-reference",
                "empty-down-after-create",
                "database-wide-statement",
                "blocking-index",
            ]
        );
        assert_eq!(Rule::find("Blocking-Index").map(|r| r.id), Some("blocking-index"));
        assert!(Rule::find("nope").is_none());
    }

    #[test]
    fn extension_without_schema() {
        let r = lint_up("-- Enable trees.\n\nCREATE EXTENSION IF NOT EXISTS ltree;\nCREATE EXTENSION \"uuid-ossp\";");
        assert_eq!(
            found(&r),
            [
                ("extension-without-schema", UP, 3, Severity::Error),
                ("extension-without-schema", UP, 4, Severity::Error)
            ]
        );
        assert_eq!(r.findings[0].statement, "CREATE EXTENSION IF NOT EXISTS ltree");
        assert_eq!(r.findings[0].fix, FIX_EXTENSION_WITHOUT_SCHEMA);
        assert_eq!(r.findings[0].migration, "1_m");
    }

    #[test]
    fn extension_with_schema_public_is_only_in_tenant() {
        let r = lint_up(
            "CREATE EXTENSION IF NOT EXISTS pgcrypto SCHEMA public;\n\
             CREATE EXTENSION hstore WITH SCHEMA public VERSION '1.8' CASCADE;\n\
             ALTER EXTENSION hstore UPDATE;\nCOMMENT ON EXTENSION hstore IS 'kv';",
        );
        assert_eq!(
            found(&r),
            [
                ("extension-in-tenant", UP, 1, Severity::Warning),
                ("extension-in-tenant", UP, 2, Severity::Warning),
                ("extension-in-tenant", UP, 3, Severity::Warning),
                ("extension-in-tenant", UP, 4, Severity::Warning),
            ]
        );
        // DROP EXTENSION in down.sql.
        let r = lint(
            &set(vec![migration(
                "1_m",
                "SELECT 1;",
                down("\n\nDROP EXTENSION IF EXISTS pgcrypto;"),
            )]),
            &LintConfig::default(),
        );
        assert_eq!(found(&r), [("extension-in-tenant", DOWN, 3, Severity::Warning)]);
    }

    #[test]
    fn fixed_schema() {
        let r =
            lint_up("CREATE TABLE t (id int);\nCREATE SCHEMA IF NOT EXISTS utils;\nCREATE SCHEMA AUTHORIZATION app;");
        assert_eq!(
            found(&r),
            [
                ("fixed-schema", UP, 2, Severity::Error),
                ("fixed-schema", UP, 3, Severity::Error)
            ]
        );
        let r = lint_up("ALTER SCHEMA utils RENAME TO tools;\nDROP SCHEMA tools CASCADE;");
        assert_eq!(rules(&r), ["fixed-schema", "fixed-schema"]);
        // `SCHEMA` elsewhere in a statement is not a schema being created.
        assert!(lint_up("GRANT USAGE ON SCHEMA utils TO app;\nALTER TABLE t SET SCHEMA x;").is_clean());
    }

    #[test]
    fn public_references_warn_at_their_own_line() {
        let up = "CREATE TABLE posts (\n    id BIGSERIAL PRIMARY KEY,\n    author_id BIGINT NOT NULL REFERENCES public.users (id),\n    editor_id BIGINT REFERENCES public.users (id)\n);\nSELECT public.some_function(1);\nINSERT INTO \"public\".\"Audit\" VALUES (1);\nSELECT * FROM public . things;";
        let r = lint_up(up);
        assert_eq!(
            found(&r),
            [
                ("public-reference", UP, 3, Severity::Warning),
                ("public-reference", UP, 6, Severity::Warning),
                ("public-reference", UP, 7, Severity::Warning),
                ("public-reference", UP, 8, Severity::Warning),
            ]
        );
        assert_eq!(
            r.findings[0].statement,
            "author_id BIGINT NOT NULL REFERENCES public.users (id),"
        );
        assert_eq!(r.findings[0].why, WHY_PUBLIC_REFERENCE);
    }

    #[test]
    fn creating_in_public_is_an_error() {
        let up = "CREATE TABLE public.audit_log (id int);\n\
                  CREATE TABLE IF NOT EXISTS \"public\".flags (id int REFERENCES public.audit_log (id));\n\
                  CREATE OR REPLACE FUNCTION public.now_utc() RETURNS timestamp LANGUAGE sql AS $$ SELECT now() $$;\n\
                  CREATE INDEX CONCURRENTLY flags_id ON public.flags (id);\n\
                  CREATE MATERIALIZED VIEW public.totals AS SELECT 1;\n\
                  CREATE TYPE public.mood AS ENUM ('ok');\n\
                  CREATE TABLE notes (id int REFERENCES public.audit_log (id));\n\
                  CREATE TRIGGER flags_touch BEFORE UPDATE ON public.flags FOR EACH ROW EXECUTE FUNCTION f();\n\
                  CREATE VIEW v AS SELECT * FROM public.flags;\n\
                  ALTER TABLE public.users ADD COLUMN tenant_note text;";
        let r = lint_up(up);
        let sev: Vec<(usize, Severity)> = r
            .findings
            .iter()
            .filter(|f| f.rule == "public-reference")
            .map(|f| (f.line, f.severity))
            .collect();
        use Severity::{Error, Warning};
        assert_eq!(
            sev,
            [
                (1, Error),
                (2, Error),
                (3, Error),
                (4, Error),
                (5, Error),
                (6, Error),
                (7, Warning),
                (8, Error),
                (9, Warning),
                (10, Warning)
            ]
        );
        assert_eq!(r.findings[0].why, WHY_PUBLIC_CREATE);
    }

    #[test]
    fn public_in_strings_comments_and_bodies_is_not_a_reference() {
        let up = "-- reads public.users\n\
                  /* public.users /* nested public.x */ */\n\
                  CREATE TABLE t (\n  note text DEFAULT 'see public.users', -- public.users\n  other text DEFAULT E'it\\'s public.x'\n);\n\
                  CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN PERFORM public.g(); RETURN 1; END $$;\n\
                  CREATE FUNCTION g() RETURNS int LANGUAGE sql AS $body$ SELECT count(*) FROM public.users $body$;\n\
                  DO $$ BEGIN PERFORM 1 FROM public.users; END $$;\n\
                  COMMENT ON TABLE t IS 'copied from public.t';\n\
                  GRANT SELECT ON t TO PUBLIC;\n\
                  ALTER FUNCTION f() SET search_path = public, pg_temp;\n\
                  SELECT \"public.users\" FROM t;\n\
                  SELECT x.public.y, \"PUBLIC\".z FROM t;\n\
                  CREATE TABLE republic.towns (id int); SELECT publicity.x FROM publicity;";
        let r = lint_up(up);
        assert!(r.is_clean(), "{:#?}", r.findings);
    }

    #[test]
    fn empty_down_after_create() {
        let noop = |up: &str| lint(&set(vec![migration("1_m", up, DownSql::NoOp)]), &LintConfig::default());
        let r =
            noop("UPDATE posts SET x = 1;\n\nALTER TABLE posts ADD COLUMN featured boolean NOT NULL DEFAULT false;");
        assert_eq!(found(&r), [("empty-down-after-create", UP, 3, Severity::Warning)]);
        assert_eq!(
            r.findings[0].statement,
            "ALTER TABLE posts ADD COLUMN featured boolean NOT NULL DEFAULT false"
        );
        for up in [
            "CREATE TABLE t (id int);",
            "CREATE UNIQUE INDEX CONCURRENTLY t_x ON t (x);",
            "CREATE TYPE mood AS ENUM ('ok');",
            "ALTER TABLE t ADD CONSTRAINT t_x_key UNIQUE (x);",
            "ALTER TABLE t ADD x int;",
            "ALTER TYPE mood ADD VALUE 'meh';",
            "ALTER TABLE t ADD COLUMN IF NOT EXISTS a int, ADD COLUMN b int;",
        ] {
            assert_eq!(rules(&noop(up)), ["empty-down-after-create"], "{up}");
        }
        // Nothing created, or created so that running it again succeeds.
        for up in [
            "UPDATE t SET x = 1;",
            "ALTER TABLE t DROP COLUMN x;",
            "CREATE TABLE IF NOT EXISTS t (id int);",
            "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';",
            "CREATE TEMP TABLE scratch (id int);",
            "ALTER TABLE t ADD COLUMN IF NOT EXISTS x int;",
            "ALTER TYPE mood ADD VALUE IF NOT EXISTS 'meh';",
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS t_x ON t (x);",
            "ALTER TABLE t ALTER COLUMN x SET DEFAULT 1;",
        ] {
            assert!(noop(up).is_clean(), "{up}: {:#?}", noop(up).findings);
        }
        // A missing down.sql is explicit: irreversible.
        let r = lint(
            &set(vec![migration("1_m", "CREATE TABLE t (id int);", DownSql::Missing)]),
            &LintConfig::default(),
        );
        assert!(r.is_clean());
    }

    #[test]
    fn database_wide_statements() {
        let up = "LISTEN events;\nNOTIFY events, 'x';\nUNLISTEN *;\n\
                  CREATE ROLE reporting NOLOGIN;\nALTER ROLE reporting SET statement_timeout = '5s';\nDROP ROLE IF EXISTS old;\n\
                  CREATE USER app_ro;\nALTER USER app_ro WITH PASSWORD 'x';\nDROP USER app_ro;\nCREATE GROUP readers;\n\
                  GRANT reporting TO app;\nREVOKE reporting FROM app;\n\
                  CREATE PUBLICATION posts_pub FOR TABLE posts;\nALTER PUBLICATION posts_pub ADD TABLE tags;\nDROP PUBLICATION posts_pub;\n\
                  CREATE SUBSCRIPTION s CONNECTION 'x' PUBLICATION p;\n\
                  CREATE EVENT TRIGGER ddl ON ddl_command_end EXECUTE FUNCTION log_ddl();\n\
                  CREATE OR REPLACE TRUSTED LANGUAGE plfoo HANDLER h;\nCREATE CAST (text AS mood) WITH INOUT;\n\
                  CREATE SERVER remote FOREIGN DATA WRAPPER postgres_fdw;\nCREATE USER MAPPING FOR app SERVER remote;\n\
                  ALTER SYSTEM SET work_mem = '8MB';\nDROP OWNED BY old;\nREASSIGN OWNED BY old TO app;";
        let r = lint_up(up);
        let lines: Vec<usize> = r.findings.iter().map(|f| f.line).collect();
        assert_eq!(lines, (1..=24).collect::<Vec<_>>(), "{:#?}", r.findings);
        assert!(r.findings.iter().all(|f| f.rule == "database-wide-statement"));
        // Granting privileges on objects is per schema.
        let fine = "GRANT SELECT, INSERT ON posts TO app;\nGRANT SELECT (id) ON posts TO app;\n\
                    REVOKE ALL ON posts FROM app;\nGRANT USAGE ON SEQUENCE posts_id_seq TO app;\n\
                    CREATE TABLE role (id int);\nCREATE TABLE users (id int);\nALTER TABLE users ADD COLUMN role text;\n\
                    SELECT pg_notify('events', 'x');\nCREATE FOREIGN TABLE remote_posts (id int) SERVER remote;";
        assert!(lint_up(fine).is_clean(), "{:#?}", lint_up(fine).findings);
    }

    #[test]
    fn blocking_index() {
        let r = lint(
            &set(vec![
                migration(
                    "1_posts",
                    "CREATE TABLE posts (id int, title text);\nCREATE INDEX posts_title ON posts (title);\n\
                     CREATE UNIQUE INDEX IF NOT EXISTS posts_id ON ONLY \"posts\" USING btree (id);\n\
                     CREATE MATERIALIZED VIEW totals AS SELECT count(*) AS n FROM posts;\nCREATE INDEX ON totals (n);",
                    down("DROP MATERIALIZED VIEW totals;\nDROP TABLE posts;"),
                ),
                migration(
                    "2_index",
                    "-- Titles are searched.\nCREATE INDEX idx_posts_title ON posts (title);\n\
                     CREATE UNIQUE INDEX posts_lower ON public.posts (lower(title));",
                    down("DROP INDEX idx_posts_title;"),
                ),
                migration(
                    "3_concurrently",
                    "CREATE INDEX CONCURRENTLY idx_posts_body ON posts (body);",
                    down("DROP INDEX CONCURRENTLY idx_posts_body;\nCREATE INDEX old_idx ON posts (x);"),
                ),
            ]),
            &LintConfig::default(),
        );
        let all: Vec<(&str, &str, &str, usize)> = r
            .findings
            .iter()
            .map(|f| (f.migration.as_str(), f.rule, f.file, f.line))
            .collect();
        assert_eq!(
            all,
            [
                ("2_index", "blocking-index", UP, 2),
                ("2_index", "blocking-index", UP, 3),
                ("2_index", "public-reference", UP, 3),
                ("3_concurrently", "blocking-index", DOWN, 2),
            ]
        );
        assert_eq!(r.findings[0].statement, "CREATE INDEX idx_posts_title ON posts (title)");
        assert_eq!(r.findings[0].fix, FIX_BLOCKING_INDEX);
    }

    #[test]
    fn allow_comments_apply_to_their_file() {
        let up = "CREATE TABLE posts (author_id int REFERENCES public.users (id));\n\
                  -- migrate-tenants: allow(public-reference)\n\
                  CREATE INDEX posts_x ON users (x); /* migrate-tenants: allow( Blocking-Index , fixed-schema) */\n\
                  CREATE EXTENSION ltree;";
        let r = lint(
            &set(vec![migration(
                "1_m",
                up,
                down("DROP INDEX posts_x;\nDROP TABLE posts;\nSELECT public.f();\nDROP EXTENSION ltree;"),
            )]),
            &LintConfig::default(),
        );
        assert_eq!(
            found(&r),
            [
                ("extension-without-schema", UP, 4, Severity::Error),
                ("public-reference", DOWN, 3, Severity::Warning),
                ("extension-in-tenant", DOWN, 4, Severity::Warning),
            ]
        );
        assert_eq!(r.allowed, 2);
        // A marker inside a statement's comment counts; one inside a string does not.
        let r = lint_up("CREATE EXTENSION ltree -- migrate-tenants: allow(extension-without-schema)\n;");
        assert!(r.is_clean());
        let r = lint_up(
            "CREATE EXTENSION ltree;\nCOMMENT ON TABLE t IS 'migrate-tenants: allow(extension-without-schema)';",
        );
        assert_eq!(rules(&r), ["extension-without-schema"]);
        // The empty-down finding is on up.sql, so up.sql allows it.
        let r = lint(
            &set(vec![migration(
                "1_m",
                "-- migrate-tenants: allow(empty-down-after-create)\nCREATE TABLE t (id int);",
                DownSql::NoOp,
            )]),
            &LintConfig::default(),
        );
        assert!(r.is_clean());
        assert_eq!(r.allowed, 1);
    }

    #[test]
    fn config_allows_everywhere() {
        let config = LintConfig {
            allow: vec!["public-reference".into(), "no-such-rule".into()],
        };
        assert_eq!(config.unknown_rules(), ["no-such-rule"]);
        let s = set(vec![
            migration("1_a", "SELECT public.f();", down("SELECT public.g();")),
            migration("2_b", "CREATE SCHEMA x;", down("SELECT 1;")),
        ]);
        let r = lint(&s, &config);
        assert_eq!(found(&r), [("fixed-schema", UP, 1, Severity::Error)]);
        assert_eq!((r.allowed, r.migrations, r.errors(), r.warnings()), (2, 2, 1, 0));
        let parsed: LintConfig = serde_json::from_str(r#"{"allow": ["blocking-index"]}"#).unwrap();
        assert_eq!(parsed.allow, ["blocking-index"]);
        assert!(serde_json::from_str::<LintConfig>("{}").unwrap().allow.is_empty());
    }

    #[test]
    fn findings_serialize_and_display() {
        let r = lint_up("\nCREATE EXTENSION IF NOT EXISTS ltree;");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["migrations"], 1);
        assert_eq!(json["findings"][0]["rule"], "extension-without-schema");
        assert_eq!(json["findings"][0]["severity"], "error");
        assert_eq!(json["findings"][0]["file"], "up.sql");
        assert_eq!(json["findings"][0]["line"], 2);
        assert_eq!(
            r.findings[0].to_string(),
            "1_m/up.sql:2: error[extension-without-schema]: CREATE EXTENSION IF NOT EXISTS ltree"
        );
        assert!(Severity::Error > Severity::Warning);
    }

    #[test]
    fn long_statements_are_cut() {
        let long = format!("CREATE SCHEMA {};", "x".repeat(200));
        let r = lint_up(&long);
        assert_eq!(r.findings[0].statement.chars().count(), 81);
        assert!(r.findings[0].statement.ends_with('…'));
    }

    #[test]
    fn unsplittable_files_are_linted_up_to_the_error() {
        let r = lint_up("CREATE SCHEMA a;\nSELECT 'unterminated");
        assert_eq!(rules(&r), ["fixed-schema"]);
    }

    #[test]
    fn hundreds_of_migrations_lint_quickly() {
        let up = "CREATE TABLE t (\n  id BIGSERIAL PRIMARY KEY,\n  note text DEFAULT 'public.x',\n  owner BIGINT REFERENCES users (id)\n);\n\
                  CREATE INDEX t_owner ON t (owner);\n\
                  CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.x := now(); RETURN NEW; END $$;\n"
            .repeat(20);
        let migrations: Vec<Migration> = (0..1000)
            .map(|n| migration(&format!("{n:05}_m"), &up, down("DROP TABLE t;")))
            .collect();
        let s = set(migrations);
        let started = std::time::Instant::now();
        let r = lint(&s, &LintConfig::default());
        assert!(r.is_clean());
        assert_eq!(r.migrations, 1000);
        // About 3 MB of SQL; well under a second even unoptimized.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}
