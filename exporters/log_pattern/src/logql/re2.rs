//! Go's RE2 regex dialect on top of the `regex` crate.
//!
//! Loki compiles every regex of a query with Go's `regexp` package; users copy those regexes
//! here. The `regex` crate is RE2-like but differs where it matters for counting: its `\d`,
//! `\w`, `\s` and `\b` are Unicode-aware (Go's are ASCII), it refuses a `{` that Go reads as a
//! literal (`^{`, `a{,5}`), it lacks `\Q...\E`, it accepts flags Go refuses (`x`, `u`, `R`) and
//! nested classes and class set operations (`[a[b]]`, `&&`, `--`, `~~`) where Go reads plain
//! characters. [`translate`] rewrites a Go pattern into a `regex` crate pattern with Go's
//! meaning, or refuses what Go refuses, so the compiled regex matches exactly the strings
//! Go's would.

/// Go's largest repetition count.
const MAX_REPEAT: u32 = 1000;

/// Go's `\d`, `\s`, `\w` (ASCII), as the body of a class.
fn perl_class(c: char) -> Option<(&'static str, bool)> {
    match c {
        'd' => Some(("0-9", false)),
        'D' => Some(("0-9", true)),
        's' => Some((r"\t\n\x0C\r ", false)),
        'S' => Some((r"\t\n\x0C\r ", true)),
        'w' => Some(("0-9A-Za-z_", false)),
        'W' => Some(("0-9A-Za-z_", true)),
        _ => None,
    }
}

/// Whether `chars[i..]` starts a Go repetition `{n}`, `{n,}` or `{n,m}`; returns its end
/// (exclusive) and the counts.
fn repeat_at(chars: &[char], i: usize) -> Option<(usize, u32, Option<u32>)> {
    let mut j = i + 1;
    let num = |j: &mut usize| -> Option<u32> {
        let start = *j;
        while chars.get(*j).is_some_and(char::is_ascii_digit) {
            *j += 1;
        }
        if *j == start {
            return None;
        }
        chars[start..*j]
            .iter()
            .collect::<String>()
            .parse()
            .ok()
            .or(Some(u32::MAX))
    };
    let min = num(&mut j)?;
    let max = match chars.get(j) {
        Some('}') => Some(min),
        Some(',') => {
            j += 1;
            if chars.get(j) == Some(&'}') {
                None
            } else {
                Some(num(&mut j)?)
            }
        }
        _ => return None,
    };
    (chars.get(j) == Some(&'}')).then_some((j + 1, min, max))
}

/// Checks that a repetition operator has an argument and records that one was seen.
fn repetition(repeatable: &mut bool, after_repeat: &mut u8, op: &str) -> Result<(), String> {
    if !*repeatable {
        return Err(format!("missing argument to repetition operator: `{op}`"));
    }
    *after_repeat = 1;
    Ok(())
}

fn push_literal(out: &mut String, c: char) {
    let mut b = [0; 4];
    out.push_str(&regex::escape(c.encode_utf8(&mut b)));
}

/// Rewrites a Go RE2 pattern into an equivalent `regex` crate pattern; `Err` with Go's reason
/// where Go refuses the pattern (the `regex` crate reports the other errors when compiling).
pub fn translate(pattern: &str) -> Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut i = 0;
    // Whether the previous item can take a repetition (Go: "missing argument to repetition
    // operator" otherwise).
    let mut repeatable = false;
    // 1 right after a repetition operator (a lazy `?` may follow), 2 after its lazy `?`.
    let mut after_repeat = 0u8;
    while i < chars.len() {
        let c = chars[i];
        let was_repeat = after_repeat;
        after_repeat = 0;
        match c {
            '\\' => {
                let Some(&e) = chars.get(i + 1) else {
                    return Err("trailing backslash at end of expression".into());
                };
                i += 2;
                repeatable = true;
                if let Some((body, neg)) = perl_class(e) {
                    out.push_str(if neg { "[^" } else { "[" });
                    out.push_str(body);
                    out.push(']');
                    continue;
                }
                match e {
                    'b' => out.push_str(r"(?-u:\b)"),
                    'B' => out.push_str(r"(?-u:\B)"),
                    'Q' => {
                        // Literal text up to `\E` or the end.
                        let mut lit = String::new();
                        while i < chars.len() {
                            if chars[i] == '\\' && chars.get(i + 1) == Some(&'E') {
                                i += 2;
                                break;
                            }
                            lit.push(chars[i]);
                            i += 1;
                        }
                        if lit.is_empty() {
                            repeatable = false;
                        } else if lit.chars().count() > 1 {
                            // A repetition after `\Q..\E` applies to its last character.
                            let last = lit.pop().unwrap_or_default();
                            out.push_str(&regex::escape(&lit));
                            push_literal(&mut out, last);
                        } else {
                            out.push_str(&regex::escape(&lit));
                        }
                    }
                    'E' => repeatable = false,
                    'a' | 'A' | 'z' | 'f' | 't' | 'n' | 'r' | 'v' | 'x' | 'p' | 'P' => {
                        out.push('\\');
                        out.push(e);
                    }
                    '0'..='7' => {
                        // Go: octal `\123` (and `\0`); `\1`..`\9` alone are backreferences.
                        let mut j = i - 1;
                        let start = j;
                        while j < chars.len() && j < start + 3 && matches!(chars[j], '0'..='7') {
                            j += 1;
                        }
                        let digits: String = chars[start..j].iter().collect();
                        if e != '0' && digits.len() < 2 {
                            return Err(format!("invalid escape sequence: `\\{e}`"));
                        }
                        let v = u32::from_str_radix(&digits, 8).unwrap_or(0);
                        out.push_str(&format!(r"\x{{{v:X}}}"));
                        i = j;
                    }
                    c if c.is_ascii_alphanumeric() => {
                        return Err(format!("invalid escape sequence: `\\{c}`"));
                    }
                    c => push_literal(&mut out, c),
                }
            }
            '[' => {
                i = class(&chars, i, &mut out)?;
                repeatable = true;
            }
            '(' => {
                if chars.get(i + 1) == Some(&'?') {
                    // Flags `(?i)`, `(?i:`, named groups `(?P<n>` / `(?<n>`.
                    let mut j = i + 2;
                    if matches!(chars.get(j), Some('P' | '<')) {
                        let Some(close) = chars[j..].iter().position(|&c| c == '>') else {
                            return Err("invalid named capture: missing `>`".into());
                        };
                        let text: String = chars[i..=j + close].iter().collect();
                        out.push_str(&text);
                        i = j + close + 1;
                        repeatable = false;
                        continue;
                    }
                    while let Some(&f) = chars.get(j) {
                        match f {
                            'i' | 'm' | 's' | 'U' | '-' => j += 1,
                            ')' | ':' => break,
                            _ => {
                                let text: String = chars[i..=j].iter().collect();
                                return Err(format!(
                                    "invalid or unsupported Perl syntax: `{text}` (Go's flags are i, m, s and U)"
                                ));
                            }
                        }
                    }
                    if chars.get(j).is_none() {
                        return Err("missing closing ): unterminated flags".into());
                    }
                    let text: String = chars[i..=j].iter().collect();
                    out.push_str(&text);
                    repeatable = false;
                    after_repeat = 0;
                    i = j + 1;
                    continue;
                }
                out.push('(');
                i += 1;
                repeatable = false;
            }
            '{' => match repeat_at(&chars, i) {
                Some((end, min, max)) => {
                    let text: String = chars[i..end].iter().collect();
                    if min > MAX_REPEAT || max.is_some_and(|m| m > MAX_REPEAT || m < min) {
                        return Err(format!("invalid repeat count: `{text}`"));
                    }
                    if was_repeat > 0 {
                        return Err(format!("invalid nested repetition operator: `{text}`"));
                    }
                    repetition(&mut repeatable, &mut after_repeat, &text)?;
                    out.push_str(&text);
                    i = end;
                    continue;
                }
                None => {
                    out.push_str(r"\{");
                    i += 1;
                    repeatable = true;
                }
            },
            '}' => {
                out.push_str(r"\}");
                i += 1;
                repeatable = true;
            }
            '|' => {
                out.push(c);
                i += 1;
                repeatable = false;
            }
            ')' | '^' | '$' | '.' => {
                out.push(c);
                i += 1;
                repeatable = true;
            }
            '?' if was_repeat == 1 => {
                // `a*?`: the lazy form of the repetition before it.
                out.push(c);
                i += 1;
                after_repeat = 2;
                continue;
            }
            '*' | '+' | '?' => {
                if was_repeat > 0 {
                    return Err(format!("invalid nested repetition operator: `{c}`"));
                }
                repetition(&mut repeatable, &mut after_repeat, &c.to_string())?;
                out.push(c);
                i += 1;
                continue;
            }
            _ => {
                push_literal(&mut out, c);
                i += 1;
                repeatable = true;
            }
        }
    }
    Ok(out)
}

/// Translates the class starting at `chars[start]` (`[`); returns the index after it.
fn class(chars: &[char], start: usize, out: &mut String) -> Result<usize, String> {
    let mut i = start + 1;
    out.push('[');
    if chars.get(i) == Some(&'^') {
        out.push('^');
        i += 1;
    }
    // A `]` first in the class is a literal in Go.
    let mut first = true;
    loop {
        let Some(&c) = chars.get(i) else {
            let text: String = chars[start..].iter().collect();
            return Err(format!("missing closing ]: `{text}`"));
        };
        match c {
            ']' if !first => {
                out.push(']');
                return Ok(i + 1);
            }
            '[' if chars.get(i + 1) == Some(&':') => {
                // `[:alpha:]`: ASCII in both dialects.
                let rest: String = chars[i..].iter().collect();
                let Some(end) = rest.find(":]") else {
                    out.push_str(r"\[");
                    i += 1;
                    first = false;
                    continue;
                };
                let n = rest[..end + 2].chars().count();
                out.push_str(&rest[..end + 2]);
                i += n;
            }
            '\\' => {
                let Some(&e) = chars.get(i + 1) else {
                    return Err("trailing backslash at end of expression".into());
                };
                if let Some((body, neg)) = perl_class(e) {
                    if neg {
                        // `[^...]` inside a class: a nested negated class (the regex crate's
                        // union), Go's meaning.
                        out.push_str("[^");
                        out.push_str(body);
                        out.push(']');
                    } else {
                        out.push_str(body);
                    }
                    i += 2;
                } else if matches!(e, 'p' | 'P' | 'x' | 'a' | 'f' | 't' | 'n' | 'r' | 'v')
                    || e.is_ascii_punctuation()
                {
                    out.push('\\');
                    out.push(e);
                    i += 2;
                } else {
                    return Err(format!("invalid escape sequence: `\\{e}`"));
                }
            }
            '[' | '&' | '~' => {
                out.push('\\');
                out.push(c);
                i += 1;
            }
            '-' if chars.get(i + 1) == Some(&'-') => {
                // `--` is a set difference in the regex crate, two dashes for Go.
                out.push_str(r"\-");
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
        first = false;
    }
}

/// Compiles a Go pattern for `&str` haystacks.
pub fn compile(pattern: &str) -> Result<regex::Regex, String> {
    let t = translate(pattern)?;
    regex::RegexBuilder::new(&t)
        .build()
        .map_err(|e| e.to_string())
}

/// Compiles a Go pattern for byte haystacks (log lines).
pub fn compile_bytes(pattern: &str) -> Result<regex::bytes::Regex, String> {
    let t = translate(pattern)?;
    regex::bytes::RegexBuilder::new(&t)
        .build()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_meaning() {
        let yes = |p: &str, s: &str| compile(p).unwrap().is_match(s);
        assert!(yes(r"^\d+$", "123"));
        assert!(
            !yes(r"^\d+$", "١٢٣"),
            "Arabic-Indic digits are not Go's \\d"
        );
        assert!(!yes(r"^\w+$", "é"));
        assert!(yes(r"^\W$", "é"));
        assert!(!yes(r"^\s$", "\u{a0}"));
        assert!(yes(r"^[\d.]+$", "1.5"));
        assert!(!yes(r"^[\w]+$", "é"));
        assert!(yes(r"^[^\d]$", "x"));
        assert!(!yes(r"é\b", "é"), "é is no word character for Go's \\b");
        assert!(yes(r"\bcaf", "x café"));
        assert!(yes(r"^a*?b{2}?$", "abb"));
        assert!(yes(r"^{", "{x"));
        assert!(yes(r"^a{,5}$", "a{,5}"));
        assert!(yes(r"^a{2}$", "aa"));
        assert!(yes(r"^x{2,}$", "xxx"));
        assert!(yes(r"^\Qa.b*\E+$", "a.b**"));
        assert!(!yes(r"^\Qa.b\E$", "axb"));
        assert!(yes(r"^[a[]+$", "a[a"));
        assert!(yes(r"^[a&&b]+$", "&"));
        assert!(yes(r"^[]a]+$", "]a"));
        assert!(yes(r"^\101$", "A"));
        assert!(yes(r"(?i)^abc$", "ABC"));
        assert!(yes(r"^(?P<x>a)(?<y>b)$", "ab"));
        assert!(yes(r"^[[:alpha:]]+$", "abc"));
        assert!(yes(r"^}$", "}"));
        for bad in [
            r"(?x)a", r"(?u)a", r"a{1001}", r"\1", r"\y", r"[\y]", r"a{2,1}", r"[a", r"a**",
            r"a{2}*", r"(*a)", r"a|*b",
        ] {
            assert!(compile(bad).is_err(), "{bad}");
        }
    }
}
