//! Statement fingerprints, like `pg_stat_statements`' query ids: literals and
//! parameters count as one placeholder, whitespace and comments do not count,
//! unquoted words are case-folded. One linear scan, no allocation; the display
//! text (`… WHERE id = $1`) is built only the first time a fingerprint is seen.
//!
//! Both backends use this scan, so a statement has the same fingerprint on
//! SQLite and on PostgreSQL; SQLite's literal normalisation (which turns some
//! literals into `$n`) does not change it either.

/// What kind of statement, for metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Command {
    Select,
    Insert,
    Update,
    Delete,
    Copy,
    Ddl,
    Tcl,
    Other,
}

impl Command {
    pub const ALL: [Command; 8] = [
        Command::Select,
        Command::Insert,
        Command::Update,
        Command::Delete,
        Command::Copy,
        Command::Ddl,
        Command::Tcl,
        Command::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Select => "SELECT",
            Command::Insert => "INSERT",
            Command::Update => "UPDATE",
            Command::Delete => "DELETE",
            Command::Copy => "COPY",
            Command::Ddl => "DDL",
            Command::Tcl => "TCL",
            Command::Other => "OTHER",
        }
    }

    fn from_word(w: &[u8]) -> Command {
        let mut buf = [0u8; 12];
        if w.len() > buf.len() {
            return Command::Other;
        }
        for (b, c) in buf.iter_mut().zip(w) {
            *b = c.to_ascii_uppercase();
        }
        match &buf[..w.len()] {
            b"SELECT" | b"WITH" | b"VALUES" | b"TABLE" | b"SHOW" | b"EXPLAIN" => Command::Select,
            b"INSERT" => Command::Insert,
            b"UPDATE" => Command::Update,
            b"DELETE" => Command::Delete,
            b"COPY" => Command::Copy,
            b"CREATE" | b"ALTER" | b"DROP" | b"TRUNCATE" | b"COMMENT" | b"GRANT" | b"REVOKE" => {
                Command::Ddl
            }
            b"BEGIN" | b"START" | b"COMMIT" | b"END" | b"ROLLBACK" | b"ABORT" | b"SAVEPOINT"
            | b"RELEASE" | b"PREPARE" => Command::Tcl,
            _ => Command::Other,
        }
    }
}

/// A statement's fingerprint: `id` is never 0 (0 is the folded `<other>` entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fp {
    pub id: u64,
    pub command: Command,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

#[inline]
fn mix(h: u64, b: u8) -> u64 {
    (h ^ b as u64).wrapping_mul(FNV_PRIME)
}

/// Longest display text kept for a fingerprint.
const DISPLAY_LIMIT: usize = 4096;

enum Tok {
    /// A word (keyword or unquoted identifier), case-folded.
    Word,
    /// A literal or a `$n` parameter.
    Placeholder,
    /// A quoted identifier, kept exactly.
    Quoted,
    /// One punctuation or operator byte.
    Punct,
}

/// Words after which a `-` is a sign, not a subtraction (`WHERE -x`, `THEN -1`).
const SIGN_AFTER: &[&[u8]] = &[
    b"select", b"where", b"and", b"or", b"not", b"then", b"else", b"when", b"case", b"by",
    b"limit", b"offset", b"in", b"is", b"between", b"return", b"having", b"on",
];

/// Whether a `-` after this token is a subtraction: the token ends a value.
fn ends_value(tok: &Tok, text: &[u8]) -> bool {
    match tok {
        Tok::Word => !SIGN_AFTER.iter().any(|w| text.eq_ignore_ascii_case(w)),
        Tok::Quoted | Tok::Placeholder => true,
        Tok::Punct => matches!(text, b")" | b"]"),
    }
}

/// Hands tokens on, folding a sign into the number after it.
struct Emit<G> {
    g: G,
    /// Whitespace or a comment since the last token.
    gap: bool,
    /// The last token ends a value: a `-` after it subtracts.
    after_value: bool,
    /// A `-` that may be a sign, held until the next token says (with whether a
    /// gap came before it).
    sign: Option<bool>,
}

impl<G: FnMut(Tok, &[u8], bool)> Emit<G> {
    fn tok(&mut self, tok: Tok, text: &[u8]) {
        let spaced = std::mem::take(&mut self.gap);
        if let Some(sign_spaced) = self.sign.take() {
            if matches!(tok, Tok::Placeholder) {
                (self.g)(Tok::Placeholder, b"", sign_spaced);
                self.after_value = true;
                return;
            }
            (self.g)(Tok::Punct, b"-", sign_spaced);
        } else if !self.after_value && matches!(tok, Tok::Punct) && text == b"-" {
            self.sign = Some(spaced);
            return;
        }
        self.after_value = ends_value(&tok, text);
        (self.g)(tok, text, spaced);
    }

    /// A `-` held as a sign that nothing followed.
    fn finish(mut self) {
        if let Some(spaced) = self.sign {
            (self.g)(Tok::Punct, b"-", spaced);
        }
    }
}

/// Scans `sql` token by token, calling `f(kind, text, spaced)` for each, where
/// `spaced` says whether whitespace or a comment came before the token. A signed
/// number is one literal, as PostgreSQL's parser folds it: `v + -5` is `v + $1`
/// like `v + 5`.
fn scan(sql: &[u8], g: impl FnMut(Tok, &[u8], bool)) {
    let n = sql.len();
    let mut i = 0;
    let mut e = Emit {
        g,
        gap: false,
        after_value: false,
        sign: None,
    };
    while i < n {
        let c = sql[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => {
                e.gap = true;
                i += 1;
            }
            b'-' if sql.get(i + 1) == Some(&b'-') => {
                e.gap = true;
                while i < n && sql[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if sql.get(i + 1) == Some(&b'*') => {
                e.gap = true;
                let mut depth = 0usize;
                while i < n {
                    if sql[i] == b'/' && sql.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if sql[i] == b'*' && sql.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'\'' => {
                i = skip_string(sql, i + 1, false);
                e.tok(Tok::Placeholder, b"");
            }
            b'"' => {
                let start = i;
                i += 1;
                while i < n {
                    if sql[i] == b'"' {
                        if sql.get(i + 1) == Some(&b'"') {
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    i += 1;
                }
                e.tok(Tok::Quoted, &sql[start..i]);
            }
            b'$' => {
                let start = i;
                i += 1;
                while i < n && sql[i].is_ascii_digit() {
                    i += 1;
                }
                if i > start + 1 {
                    e.tok(Tok::Placeholder, b"");
                    continue;
                }
                // Dollar quoting: $tag$ … $tag$.
                while i < n && (sql[i].is_ascii_alphanumeric() || sql[i] == b'_') {
                    i += 1;
                }
                if i < n && sql[i] == b'$' {
                    let tag = &sql[start..=i];
                    i += 1;
                    match find(&sql[i..], tag) {
                        Some(end) => i += end + tag.len(),
                        None => i = n,
                    }
                    e.tok(Tok::Placeholder, b"");
                } else {
                    e.tok(Tok::Punct, &sql[start..start + 1]);
                    i = start + 1;
                }
            }
            _ if starts_number(sql, i) => {
                i = skip_number(sql, i);
                e.tok(Tok::Placeholder, b"");
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let start = i;
                while i < n && is_word_byte(sql[i]) {
                    i += 1;
                }
                let word = &sql[start..i];
                // E'…', B'…', X'…', N'…' string literals.
                if i < n && sql[i] == b'\'' && word.len() == 1 {
                    let escapes = word[0].eq_ignore_ascii_case(&b'e');
                    if matches!(word[0].to_ascii_lowercase(), b'e' | b'b' | b'x' | b'n') {
                        i = skip_string(sql, i + 1, escapes);
                        e.tok(Tok::Placeholder, b"");
                        continue;
                    }
                }
                e.tok(Tok::Word, word);
            }
            _ => {
                i += 1;
                e.tok(Tok::Punct, &sql[i - 1..i]);
            }
        }
    }
    e.finish();
}

fn skip_string(sql: &[u8], mut i: usize, backslash_escapes: bool) -> usize {
    let n = sql.len();
    while i < n {
        match sql[i] {
            b'\\' if backslash_escapes => i += 2,
            b'\'' if sql.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return i + 1,
            _ => i += 1,
        }
    }
    n
}

fn skip_number(sql: &[u8], mut i: usize) -> usize {
    let n = sql.len();
    while i < n {
        let c = sql[i];
        let exponent_sign = (c == b'+' || c == b'-') && matches!(sql[i - 1], b'e' | b'E');
        if c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || exponent_sign {
            i += 1;
        } else {
            break;
        }
    }
    i
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whether `sql` has the fingerprint of `known` because it is `known` with other
/// numeric literals: the same bytes but for whole numbers that start a token in
/// both. Much cheaper than [`fingerprint`] (a comparison, eight bytes at a time),
/// and never true when the fingerprints differ. `known` must hold no `"`: the
/// digits of a quoted identifier count in its fingerprint.
pub fn same_but_numbers(known: &[u8], sql: &[u8]) -> bool {
    let (mut i, mut j) = (0, 0);
    loop {
        let k = common_prefix(&known[i..], &sql[j..]);
        let (ei, ej) = (i + k, j + k);
        if ei == known.len() && ej == sql.len() {
            return true;
        }
        // Back to the start of the number the first difference is in. Everything
        // before it is the same in both, so the scan is in the same state there.
        let mut back = 0;
        while back < k && matches!(known[ei - back - 1], b'0'..=b'9' | b'.') {
            back += 1;
        }
        if back == k && i > 0 {
            // Runs on from the number skipped before: not a token of its own.
            return false;
        }
        let (si, sj) = (ei - back, ej - back);
        // A digit after a word byte belongs to the word (`t1`, `$1`, `1e5`'s 5).
        if si > 0 && is_word_byte(known[si - 1]) {
            return false;
        }
        // Where the difference itself starts, a sign on one side only is folded
        // into the number as the scan folds it: after an operator.
        let signed = back == 0 && sign_may_follow(&known[i..si]);
        let (Some(ni), Some(nj)) = (number_at(known, si, signed), number_at(sql, sj, signed))
        else {
            return false;
        };
        i = skip_number(known, ni);
        j = skip_number(sql, nj);
    }
}

/// Where the number at `i` starts: `i`, or past a sign (and spaces) when
/// `signed`; `None` when no number is there.
fn number_at(sql: &[u8], i: usize, signed: bool) -> Option<usize> {
    if starts_number(sql, i) {
        return Some(i);
    }
    if !signed || sql.get(i) != Some(&b'-') {
        return None;
    }
    let mut k = i + 1;
    while sql.get(k) == Some(&b' ') {
        k += 1;
    }
    starts_number(sql, k).then_some(k)
}

/// Whether `before` (the text before a `-`) ends, but for spaces, with an
/// operator that the scan always sees as one, so that a `-` after it is a sign.
/// (Not `-` or `/`, which may end a comment, nor the `+` of an exponent.)
fn sign_may_follow(before: &[u8]) -> bool {
    let text = before.trim_ascii_end();
    match text.split_last() {
        Some((b'=' | b',' | b'(' | b'<' | b'>', _)) => true,
        Some((b'+', rest)) => !matches!(rest.last(), Some(b'e' | b'E')),
        _ => false,
    }
}

/// The length of the longest common prefix of `a` and `b`.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut i = 0;
    while let (Some(x), Some(y)) = (a[i..].first_chunk::<8>(), b[i..].first_chunk::<8>()) {
        let diff = u64::from_le_bytes(*x) ^ u64::from_le_bytes(*y);
        if diff != 0 {
            return i + diff.trailing_zeros() as usize / 8;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// A byte the scanner keeps inside a word: a digit after one is not a number.
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Whether a numeric literal starts at `i`.
fn starts_number(sql: &[u8], i: usize) -> bool {
    match sql.get(i) {
        Some(b'0'..=b'9') => true,
        Some(b'.') => sql.get(i + 1).is_some_and(u8::is_ascii_digit),
        _ => false,
    }
}

/// The fingerprint of `sql`.
pub fn fingerprint(sql: &[u8]) -> Fp {
    let mut h = FNV_OFFSET;
    let mut first: Option<Command> = None;
    let mut pending_semicolons = 0u32;
    scan(sql, |tok, text, _| {
        if first.is_none() {
            first = Some(match tok {
                Tok::Word => Command::from_word(text),
                _ => Command::Other,
            });
        }
        // Trailing semicolons do not count: hash them only when something follows.
        if matches!(tok, Tok::Punct) && text == b";" {
            pending_semicolons += 1;
            return;
        }
        for _ in 0..pending_semicolons {
            h = mix(h, b';');
        }
        pending_semicolons = 0;
        match tok {
            Tok::Word => {
                h = mix(h, 0xfe);
                for &b in text {
                    h = mix(h, b.to_ascii_lowercase());
                }
            }
            Tok::Quoted => {
                h = mix(h, 0xfd);
                for &b in text {
                    h = mix(h, b);
                }
            }
            Tok::Placeholder => h = mix(h, 0xfc),
            Tok::Punct => h = mix(h, text[0]),
        }
    });
    Fp {
        id: h.max(1),
        command: first.unwrap_or(Command::Other),
    }
}

/// The text shown for a fingerprint: literals and parameters as `$1…$n` in order,
/// whitespace and comments folded to single spaces, trailing semicolons dropped.
pub fn display(sql: &[u8]) -> String {
    let mut out = String::with_capacity(sql.len().min(DISPLAY_LIMIT));
    let mut placeholders = 0u32;
    let mut semicolons = 0u32;
    scan(sql, |tok, text, spaced| {
        if out.len() >= DISPLAY_LIMIT {
            return;
        }
        if matches!(tok, Tok::Punct) && text == b";" {
            semicolons += 1;
            return;
        }
        for _ in 0..semicolons {
            out.push(';');
        }
        semicolons = 0;
        // Whitespace as written, each run folded to one space.
        if spaced && !out.is_empty() {
            out.push(' ');
        }
        match tok {
            Tok::Placeholder => {
                placeholders += 1;
                out.push('$');
                out.push_str(itoa::Buffer::new().format(placeholders));
            }
            _ => out.push_str(&String::from_utf8_lossy(text)),
        }
    });
    if out.len() > DISPLAY_LIMIT {
        let mut cut = DISPLAY_LIMIT;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(s: &str) -> u64 {
        fingerprint(s.as_bytes()).id
    }

    #[test]
    fn literals_whitespace_and_case_do_not_matter() {
        let a = fp("SELECT abalance FROM pgbench_accounts WHERE aid = 42;");
        assert_eq!(
            a,
            fp("select  abalance\n FROM pgbench_accounts where aid=$1")
        );
        assert_eq!(
            a,
            fp("SELECT abalance FROM pgbench_accounts WHERE aid = '42' -- x")
        );
        assert_ne!(
            a,
            fp("SELECT bbalance FROM pgbench_accounts WHERE aid = 42")
        );
        assert_ne!(fp("SELECT \"A\" FROM t"), fp("SELECT \"a\" FROM t"));
        assert_eq!(fp("SELECT a FROM t"), fp("SELECT A FROM T"));
        assert_eq!(
            fp("SELECT E'it''s\\n', 1.5e-3, $x$dollar$x$"),
            fp("SELECT 'x', 7, 8")
        );
        assert_ne!(fp("SELECT 1; SELECT 2"), fp("SELECT 1"));
    }

    /// `same_but_numbers(a, b)`: whether it says `b` has `a`'s fingerprint;
    /// when it does, the fingerprints must agree.
    fn check_same(a: &str, b: &str, expect: bool) {
        let same = same_but_numbers(a.as_bytes(), b.as_bytes());
        assert_eq!(same, expect, "same_but_numbers({a:?}, {b:?})");
        if same {
            assert_eq!(fp(a), fp(b), "{a:?} and {b:?} were called the same");
        }
    }

    #[test]
    fn same_but_numbers_only_when_the_fingerprint_is_the_same() {
        let q = "SELECT abalance FROM pgbench_accounts WHERE aid = 42;";
        check_same(q, q, true);
        check_same(
            q,
            "SELECT abalance FROM pgbench_accounts WHERE aid = 7;",
            true,
        );
        check_same(
            q,
            "SELECT abalance FROM pgbench_accounts WHERE aid = 4299;",
            true,
        );
        check_same(
            q,
            "SELECT abalance FROM pgbench_accounts WHERE aid = 43;",
            true,
        );
        check_same("SELECT 1.5, .25, 3", "SELECT 2.75, .5, 12", true);
        check_same("SELECT 5", "SELECT 55", true);
        check_same("SELECT 55", "SELECT 5", true);
        check_same("SELECT 1e5", "SELECT 2e5", true);
        check_same(
            "UPDATE t SET v = v + -3 WHERE id = 9",
            "UPDATE t SET v = v + -12 WHERE id = 10",
            true,
        );
        check_same("SELECT '1' -- 2\n", "SELECT '9' -- 8\n", true);
        // Not numbers of their own: the fingerprint may differ.
        check_same("SELECT t1.a FROM t1", "SELECT t2.a FROM t2", false);
        check_same("SELECT $1", "SELECT $2", false);
        check_same("SELECT 1e5", "SELECT 1e6", false);
        check_same("SELECT 0x1F", "SELECT 0x2F", false);
        check_same("SELECT a FROM t", "SELECT b FROM t", false);
        check_same("SELECT 1", "SELECT 'a'", false);
        check_same("SELECT 1", "SELECT 1 FROM t", false);
        check_same("SELECT 1 FROM t", "SELECT 1", false);
        check_same(
            q,
            "SELECT abalance FROM pgbench_accounts WHERE aid = x;",
            false,
        );
        check_same(
            "SELECT a FROM t WHERE x = 1.",
            "SELECT a FROM t WHERE x = 1.5",
            true,
        );
        check_same("SELECT 1", "SELECT 1, 2", false);
        check_same("", "", true);
        check_same("", "1", false);
        let update = "UPDATE pgbench_accounts SET abalance = abalance + 12 WHERE aid = 5;";
        check_same(
            update,
            "UPDATE pgbench_accounts SET abalance = abalance + -7 WHERE aid = 5;",
            true,
        );
        check_same(
            update,
            "UPDATE pgbench_accounts SET abalance = abalance + - 7 WHERE aid = -5;",
            true,
        );
        check_same(
            "SELECT a FROM t WHERE b IN (-1, -2)",
            "SELECT a FROM t WHERE b IN (3, 4)",
            true,
        );
        // A subtraction, or a sign that is not folded: not the same.
        check_same("SELECT a - 1", "SELECT a 1", false);
        check_same("SELECT 1e+ -5", "SELECT 1e+ 5", false);
        check_same("SELECT 2 - -3", "SELECT 2 - 3", false);
        check_same("SELECT x = -y", "SELECT x = y", false);
    }

    /// Generated statements and copies with digits changed: whenever
    /// `same_but_numbers` says two have one fingerprint, they do.
    #[test]
    fn same_but_numbers_never_joins_different_fingerprints() {
        const PIECES: &[&str] = &[
            "SELECT", " ", "1", "12", ".5", "1.", "1e5", "1e-5", "'a1'", "E'\\'1'", "t1", "$1",
            "$q$", "$q1$", "--", "\n", "/*", "*/", "x", "+", "-", ",", "0x1F", "_2", "é3", "'",
            "=", "(", ")", ";", " -", "+ -", "= - ", "e+", "e", "WHERE", "*", "<>",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) as usize % n
        };
        let mut joined = 0;
        for _ in 0..20_000 {
            let mut a = String::new();
            for _ in 0..1 + next(12) {
                a.push_str(PIECES[next(PIECES.len())]);
            }
            // Digits changed, signs put before digits or taken away.
            let mut b = String::new();
            let mut chars = a.chars().peekable();
            while let Some(c) = chars.next() {
                let digit_next = chars.peek().is_some_and(char::is_ascii_digit);
                match c {
                    '-' if digit_next && next(3) == 0 => {}
                    '0'..='9' if next(3) == 0 => b.push(char::from(b'0' + next(10) as u8)),
                    c => b.push(c),
                }
                if c != '-' && digit_next && next(5) == 0 {
                    b.push('-');
                }
            }
            let b = if next(4) == 0 { format!("{b}7") } else { b };
            if same_but_numbers(a.as_bytes(), b.as_bytes()) {
                joined += 1;
                assert_eq!(fp(&a), fp(&b), "{a:?} and {b:?} were called the same");
            }
        }
        assert!(joined > 5_000, "only {joined} pairs joined");
    }

    #[test]
    fn a_signed_number_is_one_literal() {
        let plus = fp("UPDATE pgbench_accounts SET abalance = abalance + 4 WHERE aid = 1;");
        assert_eq!(
            plus,
            fp("UPDATE pgbench_accounts SET abalance = abalance + -4 WHERE aid = 1;")
        );
        assert_eq!(
            plus,
            fp("UPDATE pgbench_accounts SET abalance = abalance + - 4 WHERE aid = -1;")
        );
        assert_eq!(fp("SELECT -1"), fp("SELECT 1"));
        assert_eq!(
            fp("SELECT a FROM t WHERE b IN (-1, 2)"),
            fp("SELECT a FROM t WHERE b IN (1, 2)")
        );
        assert_eq!(
            fp("SELECT CASE WHEN x THEN -1 ELSE -2 END"),
            fp("SELECT CASE WHEN x THEN 1 ELSE 2 END")
        );
        // A subtraction stays one.
        assert_ne!(fp("SELECT a - 1 FROM t"), fp("SELECT a 1 FROM t"));
        assert_ne!(fp("SELECT (a) - 1"), fp("SELECT (a) 1"));
        assert_ne!(fp("SELECT x - y"), fp("SELECT x y"));
        assert_ne!(fp("SELECT 1 -"), fp("SELECT 1"));
        assert_ne!(fp("SELECT -x"), fp("SELECT x"));
        assert_eq!(
            display(b"UPDATE t SET v = v + -5, w = -x WHERE id = - 7 -- c"),
            "UPDATE t SET v = v + $1, w = -x WHERE id = $2"
        );
        assert_eq!(display(b"SELECT 2 - -3"), "SELECT $1 - $2");
    }

    #[test]
    fn display_numbers_placeholders_in_order() {
        assert_eq!(
            display(b"SELECT  a,b FROM t\n WHERE x = 5 AND y='q' /* c */ LIMIT 10;"),
            "SELECT a,b FROM t WHERE x = $1 AND y=$2 LIMIT $3"
        );
        assert_eq!(
            display(b"update t set v=v+1 where id = $1 returning v::text"),
            "update t set v=v+$1 where id = $2 returning v::text"
        );
        assert_eq!(
            display(b"SELECT f(1, 2) FROM s.t"),
            "SELECT f($1, $2) FROM s.t"
        );
    }

    #[test]
    fn commands_are_classified() {
        assert_eq!(fingerprint(b"  select 1").command, Command::Select);
        assert_eq!(
            fingerprint(b"INSERT INTO t VALUES (1)").command,
            Command::Insert
        );
        assert_eq!(fingerprint(b"create table t (a int)").command, Command::Ddl);
        assert_eq!(fingerprint(b"BEGIN").command, Command::Tcl);
        assert_eq!(fingerprint(b"VACUUM").command, Command::Other);
        assert_eq!(fingerprint(b"").command, Command::Other);
    }

    #[test]
    fn unterminated_input_does_not_panic() {
        for s in [
            "'abc",
            "\"abc",
            "$tag$ abc",
            "/* abc",
            "E'\\",
            "1e",
            "$",
            "--",
        ] {
            let _ = fingerprint(s.as_bytes());
            let _ = display(s.as_bytes());
        }
    }
}
